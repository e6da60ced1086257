// How an embeddings engine fits its inputs to the model and packs them into decodes, as llama-server
// does for its embedding slots: several inputs share one decode, one sequence each; llama.cpp pools each
// sequence's outputs. Pure: lengths in, steps out.
//
// Mean, cls and rank pooling read all of a sequence's outputs in one micro-batch, so such an input must
// fit one decode (the context's nBatch, which is its nUbatch: llama-server sets n_batch = n_ubatch for
// embeddings). Last-token pooling reads the last output only, with the earlier tokens in the KV cache,
// so a longer input goes through several decodes (llama-server's can_split).
import { ErrorCode, HearthError } from '../../common/errors.js';
import type { PoolingType } from '../../native/binding.js';

/** Part of one input in one decode: its tokens [from, to) at positions from.. in sequence `seq`. */
export interface EmbedPiece {
  input: number;
  seq: number;
  from: number;
  to: number;
}

export interface EmbedStep {
  /** Clear the KV cache first: no sequence of this step goes on from the step before. */
  fresh: boolean;
  pieces: EmbedPiece[];
  /** Inputs whose last token is in this step, with their sequence: their pooled outputs are read after it. */
  done: { input: number; seq: number }[];
}

/** llama-server's can_split: only last-token pooling may take an input in several decodes. */
export function splittable(pooling: PoolingType): boolean {
  return pooling === 'last';
}

/** The most tokens one input may have: the context per request, and for pooling that needs every output at once, one decode. */
export function inputLimit(pooling: PoolingType, nBatch: number, ctxPerInput: number): number {
  return splittable(pooling) ? ctxPerInput : Math.min(nBatch, ctxPerInput);
}

/**
 * An input's tokens within `limit`: as they are, cut to fit (`truncate`: the first tokens, and the
 * end-of-sequence token the tokenizer appended, which last-token pooling reads), or refused with both
 * sizes. `what` names the input ("input[2]").
 */
export function fitInput(tokens: readonly number[], limit: number, options: { truncate: boolean; what: string; appendedEos: number | null }): number[] {
  if (tokens.length === 0) throw new HearthError(ErrorCode.InvalidArgument, `${options.what}: is empty; give some text to embed`);
  if (tokens.length <= limit) return [...tokens];
  if (!options.truncate) {
    throw new HearthError(
      ErrorCode.InvalidArgument,
      `${options.what}: ${tokens.length} tokens, more than the ${limit} this model takes per input; shorten it, or ask for it to be truncated`,
    );
  }
  const eos = options.appendedEos;
  return eos !== null && tokens.at(-1) === eos ? [...tokens.slice(0, limit - 1), eos] : tokens.slice(0, limit);
}

/**
 * The decodes that compute inputs of these lengths (each within inputLimit). Inputs go in order into
 * decodes of at most nBatch tokens and nSeqMax sequences, a whole input per sequence; an input longer
 * than a decode (last-token pooling only) takes decodes of its own.
 */
export function embedSteps(lengths: readonly number[], limits: { nBatch: number; nSeqMax: number; splittable: boolean }): EmbedStep[] {
  const { nBatch, nSeqMax } = limits;
  const steps: EmbedStep[] = [];
  let open: { step: EmbedStep; tokens: number } | null = null;
  for (const [input, length] of lengths.entries()) {
    if (length <= 0) throw new HearthError(ErrorCode.Internal, `input ${input} has no tokens`);
    if (length > nBatch) {
      if (!limits.splittable) throw new HearthError(ErrorCode.Internal, `input ${input} (${length} tokens) does not fit one decode of ${nBatch}`);
      for (let from = 0; from < length; from += nBatch) {
        const to = Math.min(length, from + nBatch);
        steps.push({ fresh: from === 0, pieces: [{ input, seq: 0, from, to }], done: to === length ? [{ input, seq: 0 }] : [] });
      }
      open = null;
      continue;
    }
    if (!open || open.tokens + length > nBatch || open.step.pieces.length >= nSeqMax) {
      open = { step: { fresh: true, pieces: [], done: [] }, tokens: 0 };
      steps.push(open.step);
    }
    const seq = open.step.pieces.length;
    open.step.pieces.push({ input, seq, from: 0, to: length });
    open.step.done.push({ input, seq });
    open.tokens += length;
  }
  return steps;
}
