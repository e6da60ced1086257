// A request in its sequence, from admission to its last token.
import type { ChatTemplateRequest, Sampler } from '../../native/llama.js';
import type { PreparedRequest } from './prepare-request.js';
import type { FinishReason, FromEngine, Usage } from './protocol.js';
import { SlotOutput } from './slot-output.js';

/**
 * Where a slot is: computing its prompt; in the batch being decoded, its next token not yet known;
 * generating, with the token to feed in the next step; or done (its sequence released).
 */
export type SlotPhase = { readonly kind: 'prompt' } | { readonly kind: 'decoding' } | { readonly kind: 'generating'; readonly pending: number } | { readonly kind: 'done' };

const PROMPT: SlotPhase = Object.freeze({ kind: 'prompt' });
export const DECODING: SlotPhase = Object.freeze({ kind: 'decoding' });
export const DONE: SlotPhase = Object.freeze({ kind: 'done' });

/** A request's own draft settings (the engine's, or the request's): most and fewest tokens, and the draft model's pMin. */
export interface DraftLimits {
  readonly max: number;
  readonly min: number;
  readonly pMin: number;
}

export interface Slot {
  readonly id: string;
  readonly seq: number;
  readonly sampler: Sampler;
  readonly prompt: Int32Array;
  readonly maxTokens: number;
  readonly logprobs: boolean;
  /** The rendering request of a chat whose reply is worth a warm-up afterwards; null otherwise. */
  readonly chat: ChatTemplateRequest | null;
  phase: SlotPhase;
  /**
   * Asked for between steps and acted on at the next one: a slot is never taken out of the batch
   * being decoded.
   */
  cancelled: boolean;
  /** Prompt tokens already decoded (the cached ones included). */
  fed: number;
  /**
   * Where the sequence's cells stop being computed as a fresh run computes them: null while its prompt
   * is (then in chunks of the exact rule, prompt-cache.ts); otherwise the exact part of the prefix it
   * reused, the rest of its prompt computed in chunks of any size.
   */
  readonly inexactFrom: number | null;
  /** Where its short last message begins, computed apart from the rest (PromptCache.lastSegment); null: none. */
  readonly split: number | null;
  /** Position of the next token in this sequence. */
  pos: number;
  /** Tokens emitted so far (the pending one last); with the prompt, what a draft continues. */
  readonly emitted: number[];
  readonly output: SlotOutput;
  readonly draft: DraftLimits;
  /** What the request is told at the end; completionTokens counts against maxTokens as it goes. */
  readonly usage: Usage;
}

/**
 * A slot for an admitted request, in sequence `seq` whose first `cached` prompt tokens are computed
 * already (exact up to `inexactFrom`, see Slot). A resumed request's output takes in what it had sent
 * (`pieceOf` spells a token), and its usage counts its rendered prompt and every token generated, before
 * the loss and after.
 */
export function openSlot(
  r: PreparedRequest,
  seq: number,
  cached: number,
  sampler: Sampler,
  draft: DraftLimits,
  pieceOf: (token: number) => Uint8Array,
  reuse: { inexactFrom: number | null; split: number | null } = { inexactFrom: null, split: null },
): Slot {
  const promptTokens = r.prompt.length - r.resumed;
  return {
    id: r.id,
    seq,
    sampler,
    prompt: r.prompt,
    maxTokens: r.params.maxTokens,
    logprobs: r.params.logprobs !== null,
    chat: r.chat,
    phase: PROMPT,
    cancelled: false,
    fed: cached,
    inexactFrom: reuse.inexactFrom,
    split: reuse.split,
    pos: cached,
    emitted: [],
    output: requestOutput(r, pieceOf),
    draft,
    usage: { promptTokens, completionTokens: r.resumed, cachedTokens: Math.min(cached, promptTokens), draftTokens: 0, draftAcceptedTokens: 0 },
  };
}

/** A request's output: for a resumed request, with what it had sent taken in. */
export function requestOutput(r: PreparedRequest, pieceOf: (token: number) => Uint8Array): SlotOutput {
  const output = new SlotOutput(r.stops, r.parser);
  if (r.resumed > 0) output.replay(Buffer.concat(Array.from(r.prompt.subarray(r.prompt.length - r.resumed), pieceOf)));
  return output;
}

/**
 * What a finished slot's sequence holds, for the prompt cache: its prompt as far as it was computed, then
 * the generated tokens whose cells it wrote; how many of them are exact, and where the prompt ends.
 */
export function cellsOf(slot: Slot): { tokens: Int32Array; exact: number; promptEnd: number } {
  const generated = slot.fed === slot.prompt.length ? Math.max(0, slot.pos - slot.fed) : 0;
  const tokens = new Int32Array(slot.fed + generated);
  tokens.set(slot.prompt.subarray(0, slot.fed));
  tokens.set(slot.emitted.slice(0, generated), slot.fed);
  return { tokens, exact: slot.inexactFrom ?? Math.min(slot.fed, slot.split ?? slot.fed), promptEnd: slot.fed };
}

/** A finished slot's last message: why it ended, its usage, its whole text and, for a chat, the reply. */
export function doneMessage(slot: Slot, reason: FinishReason): FromEngine {
  const reply = slot.output.reply;
  return {
    type: 'done',
    id: slot.id,
    finishReason: reason === 'stop' && reply && reply.toolCalls.length > 0 ? 'tool_calls' : reason,
    usage: { ...slot.usage },
    text: slot.output.text,
    ...(reply ? { reply } : {}),
  };
}
