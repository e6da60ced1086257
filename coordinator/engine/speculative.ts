// Drafting for speculative decoding. A sequence's next few tokens are guessed cheaply (by a small draft
// model with the same vocabulary, or by looking the last tokens up earlier in the prompt and reply) and
// the target verifies the guess in one batch (Batch.verify): it samples each drafted position with the
// request's own sampler and keeps the draft up to the first token it would not have chosen. Every
// emitted token is the target's own choice, so the output is the target's (token for token when
// greedy), only sooner.
import { Batch, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import { commonPrefix } from './prefix.js';

/** How speculation runs; absent from an engine that does not speculate. */
export interface SpeculationSettings {
  /** The draft model's GGUF, or null (n-gram lookup only). */
  draftModel: string | null;
  /** The worker (by name) whose first device runs the draft; null: the coordinator's own CPU. */
  draftWorker: string | null;
  /** Set per load: that worker's RPC endpoint as the engine reaches it; null: the CPU. */
  draftEndpoint?: string | null;
  /** Length of the n-gram looked up in the sequence's own tokens; 0: no lookup. */
  ngram: number;
  /** Most tokens drafted per step. */
  draftMax: number;
  /** A shorter draft is not verified (the step decodes one token as usual). */
  draftMin: number;
  /** The draft model stops drafting when its top token's probability falls below this. */
  pMin: number;
  /** Speculation steps aside while more sequences than this generate (the batch is compute-bound then). */
  maxSequences: number;
}

/**
 * What a sequence needs drafted: all its tokens so far (the last one not yet decoded), a budget, and
 * the probability below which the draft model stops.
 */
export interface DraftRequest {
  seq: number;
  tokens: ArrayLike<number>;
  max: number;
  pMin: number;
}

/**
 * Prompt lookup: finds the most recent earlier occurrence of the last `n` tokens and proposes the
 * tokens that followed it (up to `max`). llama.cpp's ngram-simple does the same.
 */
export function ngramDraft(tokens: ArrayLike<number>, n: number, max: number): number[] {
  const len = tokens.length;
  if (n < 1 || max < 1 || len <= n) return [];
  const keyStart = len - n;
  for (let start = keyStart - 1; start >= 0; start--) {
    let j = 0;
    while (j < n && tokens[start + j] === tokens[keyStart + j]) j++;
    if (j < n) continue;
    const out: number[] = [];
    for (let k = start + n; k < len && out.length < max; k++) out.push(tokens[k]!);
    return out;
  }
  return [];
}

/**
 * A draft model in its own context, one sequence per target sequence. Each sequence's cells hold a
 * prefix of that sequence's tokens; a draft first catches up on what is missing (the prompt, tokens
 * the target emitted), then proposes tokens one at a time, greedily, for every drafting sequence in
 * the same batch.
 */
export class DraftModel {
  readonly model: LlamaModel;
  /** What the draft holds in memory: weights, KV cache and compute buffers. */
  readonly bytes: number;
  readonly #ctx: LlamaContext;
  readonly #samplers: Sampler[];
  /** The tokens each sequence's cells hold, positions 0..n-1. */
  readonly #held: number[][];

  constructor(model: LlamaModel, ctx: LlamaContext) {
    this.model = model;
    this.#ctx = ctx;
    this.bytes = ctx.memoryBreakdown().reduce((n, m) => n + m.modelBytes + m.contextBytes + m.computeBytes, 0);
    // Greedy, with the chosen token's log-probability (for pMin).
    this.#samplers = Array.from({ length: ctx.info.nSeqMax }, () => model.createSampler({ greedy: true, nProbs: 0 }));
    this.#held = Array.from({ length: ctx.info.nSeqMax }, () => []);
  }

  /** Drafts for each request; a sequence's draft stops early below its pMin. */
  async draft(requests: readonly DraftRequest[]): Promise<Map<number, number[]>> {
    const out = new Map<number, number[]>();
    const live = [...requests].filter((r) => r.max > 0 && r.tokens.length > 0).sort((a, b) => a.seq - b.seq);
    // Catch up: each sequence keeps its longest valid prefix and decodes the rest, its last token last.
    const feed = new Map<number, number>();
    for (const r of live) {
      const held = this.#held[r.seq]!;
      let keep = Math.min(commonPrefix(held, r.tokens), r.tokens.length - 1);
      if (keep < held.length && !(this.#ctx.removeSequence(r.seq, keep, -1) && this.#ctx.holdsPrefixFor(r.seq, keep))) {
        this.#ctx.removeSequence(r.seq);
        keep = 0;
      }
      held.length = keep;
      feed.set(r.seq, keep);
      out.set(r.seq, []);
    }
    const nBatch = this.#ctx.info.nBatch;
    let active = live;
    // The catch-up in batches of at most nBatch tokens, a sequence's last token in the final one.
    while (active.some((r) => feed.get(r.seq)! < r.tokens.length)) {
      const batch = new Batch();
      const sampled: DraftRequest[] = [];
      let room = nBatch;
      for (const r of active) {
        const from = feed.get(r.seq)!;
        const take = Math.min(r.tokens.length - from, room);
        if (take <= 0) continue;
        const chunk = Array.from({ length: take }, (_, i) => r.tokens[from + i]!);
        const last = batch.addSequence(chunk, from, r.seq, false);
        this.#held[r.seq]!.push(...chunk);
        feed.set(r.seq, from + take);
        room -= take;
        if (from + take === r.tokens.length) {
          batch.sample(last, this.#samplers[r.seq]!);
          sampled.push(r);
        }
      }
      const tokens = await this.#ctx.decode(batch);
      sampled.forEach((r, i) => this.#take(out.get(r.seq)!, tokens[i]!, i, r.pMin));
    }
    // Then one token per step for each sequence still drafting.
    for (;;) {
      active = active.filter((r) => {
        const d = out.get(r.seq)!;
        return d.length > 0 && d.length < r.max && d[d.length - 1] !== STOP;
      });
      if (active.length === 0) break;
      const batch = new Batch();
      for (const r of active) {
        const d = out.get(r.seq)!;
        const held = this.#held[r.seq]!;
        batch.sample(batch.add(d[d.length - 1]!, held.length, r.seq, true), this.#samplers[r.seq]!);
        held.push(d[d.length - 1]!);
      }
      const tokens = await this.#ctx.decode(batch);
      active.forEach((r, i) => this.#take(out.get(r.seq)!, tokens[i]!, i, r.pMin));
    }
    for (const [seq, d] of out) {
      if (d[d.length - 1] === STOP) d.pop();
      out.set(seq, d.slice(0, requests.find((r) => r.seq === seq)!.max));
    }
    return out;
  }

  /** Drops what a sequence's cells hold; its next draft catches up from the start. */
  forget(seq: number): void {
    this.#held[seq]!.length = 0;
    try {
      this.#ctx.removeSequence(seq);
    } catch {
      // the context is busy or gone: the next catch-up's own removal covers it
    }
  }

  /** Appends a drafted token, or the STOP mark when the draft is no longer sure enough. */
  #take(draft: number[], token: number, sample: number, pMin: number): void {
    if (pMin > 0) {
      const p = Math.exp(this.#ctx.logprobs(sample)?.logprob ?? 0);
      if (p < pMin) {
        draft.push(STOP);
        return;
      }
    }
    draft.push(this.model.isEndOfGeneration(token) ? STOP : token);
  }

  dispose(): void {
    for (const s of this.#samplers) s.dispose();
    this.#ctx.dispose();
    this.model.dispose();
  }
}

/** Marks a draft that ended (not a token id). */
const STOP = -1;
