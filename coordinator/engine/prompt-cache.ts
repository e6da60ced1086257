// The prompt cache: a finished request's KV stays in its sequence. A new request takes the free sequence
// whose cached tokens share the longest prefix with its prompt (ties: the least recently used) and only
// the rest of its prompt is processed; the cached tail that differs is dropped then, not before.
//
// A reused prefix must give the greedy tokens a fresh run gives. llama.cpp's CPU kernels take another
// path for small micro-batches, and the results differ in the last bits (enough to flip a near tie): a
// matrix-vector product for one token instead of sgemm, and flash attention row by row for fewer than
// 64 query rows of a sequence instead of in tiles (GGML_FA_TILE_Q). So a sequence's prompt tokens are
// computed in chunks of 64 or more (a shorter prompt whole), only prompt tokens are kept for reuse
// (generated ones were computed one at a time), and the prompt's last 64 tokens are always computed
// again. (With other sequences in the same batch, llama.cpp may still cut a chunk into smaller
// micro-batches, one per sequence set; exactness holds for a request decoded alone, as a fresh run is.)
//
// After a chat reply, while its sequence is idle, the conversation so far is rendered as the next turn
// will render it (the reply as an assistant message) and its new part computed, in prompt chunks, into
// the sequence (a "warm-up"): the next turn then finds all of it cached and computes only its own new
// message. A request that claims the sequence first stops the warm-up and keeps what it computed.
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import type { LlamaContext } from '../../native/llama.js';
import { commonPrefix } from './prefix.js';

/** The fewest prompt tokens of a sequence computed together (see above). */
const MIN_CHUNK = 64;

/** What a sequence's KV cells hold between requests. */
interface CachedSequence {
  /** Tokens at positions 0..n-1 of the sequence. */
  tokens: ArrayLike<number>;
  /** When a request last used the sequence (a counter, for least-recently-used ties). */
  lastUsed: number;
}

/** A sequence's warm-up: the conversation re-rendered with its reply, computed from `fed` on. */
export interface Warmup {
  readonly tokens: Int32Array;
  fed: number;
}

/** The context's KV operations the cache uses (a fake stands in for it in unit tests). */
export type SequenceCells = Pick<LlamaContext, 'removeSequence' | 'holdsPrefixFor'> & { readonly info: Pick<LlamaContext['info'], 'nSeqMax' | 'nCtxSeq' | 'nBatch' | 'nUbatch'> };

/**
 * The free sequence for a prompt: the longest cached prefix, ties to the least recently used. Without
 * prefix reuse, the least recently used (its cache is the least likely to be wanted again).
 */
export function pickSequence(free: readonly number[], cache: readonly CachedSequence[], prompt: ArrayLike<number>, reuse: boolean): { seq: number; prefix: number } {
  let best = { seq: free[0]!, prefix: -1, lastUsed: Infinity };
  for (const seq of free) {
    const c = cache[seq]!;
    const prefix = reuse ? commonPrefix(c.tokens, prompt) : 0;
    if (prefix > best.prefix || (prefix === best.prefix && c.lastUsed < best.lastUsed)) best = { seq, prefix, lastUsed: c.lastUsed };
  }
  return { seq: best.seq, prefix: Math.max(0, best.prefix) };
}

/** A context's sequences: which are free, what each holds, and the warm-ups of idle ones. */
export class PromptCache {
  readonly #cells: SequenceCells;
  readonly #minChunk: number;
  readonly #free: number[];
  readonly #entries: CachedSequence[];
  #uses = 0;
  readonly #warmups = new Map<number, Warmup>();
  /** Rendered warm-ups waiting for the loop (the context is touched only between decodes). */
  readonly #rendered: { seq: number; tokens: Int32Array; claimed: number }[] = [];

  constructor(cells: SequenceCells) {
    this.#cells = cells;
    // Tiny (micro-)batches cannot keep the rule; they only ever come from a user's own settings.
    this.#minChunk = Math.min(cells.info.nBatch, cells.info.nUbatch) >= 2 * MIN_CHUNK - 1 ? MIN_CHUNK : 1;
    this.#free = Array.from({ length: cells.info.nSeqMax }, (_, i) => i);
    this.#entries = Array.from({ length: cells.info.nSeqMax }, () => ({ tokens: [], lastUsed: 0 }));
  }

  get freeSequences(): number {
    return this.#free.length;
  }

  /** Prompt tokens a free sequence's cache would spare this prompt if it were claimed now. */
  cachedPrefix(prompt: Int32Array, reuse: boolean): number {
    if (!reuse || this.#free.length === 0) return 0;
    const { prefix } = pickSequence(this.#free, this.#entries, prompt, true);
    return Math.max(0, Math.min(prefix, prompt.length - this.#minChunk));
  }

  /**
   * Takes a free sequence for `prompt` and drops the part of its cache the prompt does not share.
   * At least the prompt's last MIN_CHUNK tokens are processed again: the last one's logits start the
   * generation, and a smaller chunk would be computed by other kernel paths than a fresh run's.
   * When its cells cannot be cleared, throws, and the sequence stays free.
   */
  claim(prompt: Int32Array, reuse: boolean): { seq: number; cached: number } {
    const { seq, prefix } = pickSequence(this.#free, this.#entries, prompt, reuse);
    this.#free.splice(this.#free.indexOf(seq), 1);
    // A warm-up in progress stops here; what it computed is in the cache entry already.
    this.#warmups.delete(seq);
    const entry = this.#entries[seq]!;
    entry.lastUsed = ++this.#uses;
    let cached = Math.max(0, Math.min(prefix, prompt.length - this.#minChunk));
    try {
      // Everything after the prefix goes, the cells of generated tokens included. A sliding-window cache
      // keeps only its window: the cells before the prefix that the new tokens attend to may be gone, and
      // then the sequence starts over (as llama-server does).
      const kept = cached > 0 && this.#cells.removeSequence(seq, cached, -1) && this.#cells.holdsPrefixFor(seq, cached);
      if (!kept) {
        this.#cells.removeSequence(seq);
        cached = 0;
      }
    } catch (e) {
      // What the cells hold is unknown now: nothing is reused from them, so the next claim clears them whole.
      this.release(seq, []);
      throw new HearthError(e instanceof HearthError ? e.code : ErrorCode.Internal, `could not clear KV cache sequence ${seq} for a new request: ${messageOf(e)}; retry the request`, { cause: e });
    }
    entry.tokens = prompt.subarray(0, cached);
    return { seq, cached };
  }

  /**
   * How many of `left` prompt tokens to compute now, with `room` left in the batch: within one
   * micro-batch, and never a lone token (here, or left over for the next step) unless the whole prompt
   * is one token. 0: not this step.
   */
  chunk(left: number, room: number): number {
    if (left <= 0 || room <= 0) return 0;
    let take = Math.min(left, room, this.#cells.info.nUbatch);
    const min = this.#minChunk;
    if (left - take > 0 && left - take < min) take -= min - (left - take);
    return take < Math.min(min, left) ? 0 : take;
  }

  /** A request is done with its sequence: its cells hold `tokens` (kept for reuse), or nothing usable (null). */
  release(seq: number, tokens: ArrayLike<number> | null): void {
    const entry = this.#entries[seq]!;
    try {
      if (tokens) {
        entry.tokens = tokens;
      } else {
        entry.tokens = [];
        this.#cells.removeSequence(seq);
      }
    } finally {
      this.#free.push(seq);
      this.#free.sort((a, b) => a - b);
    }
  }

  /**
   * A warm-up of an idle sequence with the tokens `rendering` gives (null: none), for the loop to begin
   * (startWarmups) unless a request claims the sequence meanwhile. Resolves true when one is queued.
   */
  async warmUp(seq: number, rendering: Promise<Int32Array | null>): Promise<boolean> {
    const claimed = this.#entries[seq]!.lastUsed;
    const tokens = await rendering;
    if (tokens) this.#rendered.push({ seq, tokens, claimed });
    return tokens !== null;
  }

  /** Warm-ups to compute, by sequence. */
  get warmups(): ReadonlyMap<number, Readonly<Warmup>> {
    return this.#warmups;
  }

  /** The warm-up chunks to compute with `room` rows left in a batch: tokens by sequence. */
  warmupChunks(room: number): Map<number, number> {
    const out = new Map<number, number>();
    for (const [seq, w] of this.#warmups) {
      if (room <= 0) break;
      const take = this.chunk(w.tokens.length - w.fed, room);
      if (take === 0) continue;
      out.set(seq, take);
      room -= take;
    }
    return out;
  }

  /** Whether warm-ups are rendered or under way. */
  get warming(): boolean {
    return this.#warmups.size > 0 || this.#rendered.length > 0;
  }

  /** Begins the rendered warm-ups whose sequences are still as their requests left them. */
  startWarmups(): void {
    for (const { seq, tokens, claimed } of this.#rendered.splice(0)) {
      const entry = this.#entries[seq]!;
      if (entry.lastUsed !== claimed || !this.#free.includes(seq)) continue;
      // From the shared prefix on, in one chunk of at least MIN_CHUNK tokens (so, like every prompt chunk,
      // by the kernels a fresh run uses).
      const start = Math.min(commonPrefix(entry.tokens, tokens), tokens.length - this.#minChunk);
      if (start <= 0 || tokens.length >= this.#cells.info.nCtxSeq) continue;
      // The cells after it (the generated tokens' among them) give way to the re-rendered reply.
      if (!this.#cells.removeSequence(seq, start, -1) || !this.#cells.holdsPrefixFor(seq, start)) {
        this.dropWarmup(seq);
        continue;
      }
      entry.tokens = tokens.subarray(0, start);
      this.#warmups.set(seq, { tokens, fed: start });
    }
  }

  /** A warm-up's chunk of `n` tokens is in the sequence: the cache now holds it. */
  warmed(seq: number, n: number): void {
    const w = this.#warmups.get(seq);
    if (!w) return;
    w.fed += n;
    this.#entries[seq]!.tokens = w.tokens.subarray(0, w.fed);
    if (w.fed >= w.tokens.length) this.#warmups.delete(seq);
  }

  /** A warm-up that failed: its sequence holds nothing usable. */
  dropWarmup(seq: number): void {
    this.#warmups.delete(seq);
    this.#entries[seq]!.tokens = [];
    this.#cells.removeSequence(seq);
  }

  /** Gives the warm-ups under way up; what they computed stays cached. */
  stopWarmups(): void {
    this.#warmups.clear();
  }
}
