// The prompt cache: a finished request's KV stays in its sequence, its prompt's and its reply's. A new
// request takes the free sequence whose cached tokens share the longest prefix with its prompt (ties: the
// least recently used) and only the rest of its prompt is processed; the cached tail that differs is
// dropped then, not before.
//
// A reused prefix should give the greedy tokens a fresh run gives. llama.cpp's CPU kernels take another
// path for small micro-batches, and the results differ in the last bits (enough to flip a near tie): a
// matrix-vector product for one token instead of sgemm, and flash attention row by row for fewer than
// 64 query rows of a sequence instead of in tiles (GGML_FA_TILE_Q). Each row's result depends only on
// which path computed it (and on the cells before it), so a cached run gives a fresh run's tokens when
// every row is computed by the path a fresh run takes. The exact rule: a prompt is computed in chunks of
// 64 or more (a shorter prompt whole), except that a chat's short last message (under 64 tokens) is
// computed alone, after the rest; a sequence's cells are "exact" as far as they were computed that way,
// and a request whose prefix lies in exact cells computes again what the rule needs: from the last
// message on when the cells reach it, else at least the 64 tokens before it (or before the prompt's end).
// Generated tokens (one at a time) are never exact. (With other sequences in the same batch, llama.cpp may
// still cut a chunk into smaller micro-batches, one per sequence set; exactness holds for a request
// decoded alone, as a fresh run is.)
//
// A chat's next turn sent as soon as the reply ends continues the sequence's last prompt with the reply,
// re-rendered (it mostly re-tokenizes as generated), and a new message. It is computed as llama-server
// computes it: every cell that matches is taken, the generated ones included, and the rest is computed in
// chunks of any size, when that spares WORTH_INEXACT rows or more over the exact rule. Its greedy text may
// then part from a fresh run's at a near tie; the cells after the exact part are marked as not exact.
//
// After a chat reply, once its sequence has been idle for a moment (the caller's grace), the conversation
// so far is rendered as the next turn will render it (the reply as an assistant message, then the next
// user message's opening) and computed from the end of the exact cells, in prompt chunks, into the
// sequence (a "warm-up"). A turn sent after it (a person reading) finds its cells exact up to its own new
// message and computes only that message, as a fresh run computes it. A request that claims the sequence
// first stops the warm-up and keeps what it computed.
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import type { LlamaContext } from '../../native/llama.js';
import { commonPrefix } from './prefix.js';

/** The fewest prompt tokens of a sequence computed together (see above). */
const MIN_CHUNK = 64;

/**
 * Rows a request that continues a sequence's last prompt must be spared, against the exact rule, before
 * it is computed as llama-server computes it: for a handful, exactness is worth more.
 */
export const WORTH_INEXACT = 8;

/** What a sequence's KV cells hold between requests. */
interface CachedSequence {
  /** Tokens at positions 0..n-1 of the sequence. */
  tokens: ArrayLike<number>;
  /** How many leading tokens were computed by the exact rule (see above). */
  exact: number;
  /** Where the last request's prompt (or warm-up) ended: the cells after it hold generated tokens. */
  promptEnd: number;
  /** When a request last used the sequence (a counter, for least-recently-used ties). */
  lastUsed: number;
}

/**
 * What a claim takes from a sequence's cells: the first `cached` prompt tokens, and where its cells stop
 * being exact: null when the rest of the prompt is computed as a fresh run computes it (so the whole
 * prompt will be exact); otherwise the exact part of the reused prefix, the rest computed in any chunks.
 */
export interface Reuse {
  cached: number;
  inexactFrom: number | null;
}

/**
 * How a prompt reuses cells holding `entry` that share `prefix` tokens with it. The exact rule reuses
 * exact cells only, and computes what follows them as a fresh run does: up to `split` (a short last
 * message's start, or the prompt's end) in chunks of at least `minChunk` tokens, then the last message
 * alone. A prompt that goes on from the entry's last prompt (a conversation's next turn, a completion
 * fed its own output) takes every matching cell instead, all but the last prompt token, when that
 * spares WORTH_INEXACT rows or more.
 */
export function planReuse(entry: Pick<CachedSequence, 'exact' | 'promptEnd'>, promptLength: number, prefix: number, minChunk: number, split: number | null): Reuse {
  const end = split ?? promptLength;
  const reach = Math.min(prefix, entry.exact, end);
  const exact = reach === split ? split : Math.max(0, Math.min(reach, end - minChunk));
  const taken = Math.max(0, Math.min(prefix, promptLength - 1));
  const continues = prefix >= entry.promptEnd && promptLength > entry.promptEnd;
  if (continues && promptLength - taken + WORTH_INEXACT <= promptLength - exact) return { cached: taken, inexactFrom: Math.min(entry.exact, taken) };
  return { cached: exact, inexactFrom: null };
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
export function pickSequence(free: readonly number[], cache: readonly Pick<CachedSequence, 'tokens' | 'lastUsed'>[], prompt: ArrayLike<number>, reuse: boolean): { seq: number; prefix: number } {
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
    this.#entries = Array.from({ length: cells.info.nSeqMax }, () => ({ tokens: [], exact: 0, promptEnd: 0, lastUsed: 0 }));
  }

  get freeSequences(): number {
    return this.#free.length;
  }

  /** Prompt tokens a free sequence's cache would spare this prompt if it were claimed now. */
  cachedPrefix(prompt: Int32Array, reuse: boolean, split: number | null = null): number {
    if (!reuse || this.#free.length === 0) return 0;
    const { seq, prefix } = pickSequence(this.#free, this.#entries, prompt, true);
    return planReuse(this.#entries[seq]!, prompt.length, prefix, this.#minChunk, this.lastSegment(prompt.length, split)).cached;
  }

  /**
   * Where a prompt's last message is computed apart (its start), or null: only a short one (under
   * MIN_CHUNK tokens) is, as its own chunk, so that a conversation's turn computes it by the same kernels
   * whether the rest came from the cache or not; a longer one is computed in chunks as any prompt.
   */
  lastSegment(promptLength: number, split: number | null): number | null {
    if (split === null || this.#minChunk === 1 || split <= 0 || split >= promptLength || promptLength - split >= this.#minChunk) return null;
    return split;
  }

  /**
   * Takes a free sequence for `prompt` and drops the part of its cache the prompt does not share
   * (planReuse says how much it keeps). When its cells cannot be cleared, throws, and the sequence
   * stays free.
   */
  claim(prompt: Int32Array, reuse: boolean, split: number | null = null): { seq: number } & Reuse {
    const { seq, prefix } = pickSequence(this.#free, this.#entries, prompt, reuse);
    this.#free.splice(this.#free.indexOf(seq), 1);
    // A warm-up in progress stops here; what it computed is in the cache entry already.
    this.#warmups.delete(seq);
    const entry = this.#entries[seq]!;
    entry.lastUsed = ++this.#uses;
    const plan: Reuse = reuse ? planReuse(entry, prompt.length, prefix, this.#minChunk, this.lastSegment(prompt.length, split)) : { cached: 0, inexactFrom: null };
    let { cached, inexactFrom } = plan;
    try {
      // Everything after the prefix goes, the cells of generated tokens included. A sliding-window cache
      // keeps only its window: the cells before the prefix that the new tokens attend to may be gone, and
      // then the sequence starts over (as llama-server does).
      const kept = cached > 0 && this.#cells.removeSequence(seq, cached, -1) && this.#cells.holdsPrefixFor(seq, cached);
      if (!kept) {
        this.#cells.removeSequence(seq);
        cached = 0;
        inexactFrom = null;
      }
    } catch (e) {
      // What the cells hold is unknown now: nothing is reused from them, so the next claim clears them whole.
      this.release(seq, [], 0, 0);
      throw new HearthError(e instanceof HearthError ? e.code : ErrorCode.Internal, `could not clear KV cache sequence ${seq} for a new request: ${messageOf(e)}; retry the request`, { cause: e });
    }
    entry.tokens = prompt.subarray(0, cached);
    entry.exact = inexactFrom ?? cached;
    entry.promptEnd = cached;
    return { seq, cached, inexactFrom };
  }

  /**
   * How many prompt tokens to compute now, from `fed` of `length`, with `room` left in the batch: within
   * one micro-batch and, for a prompt computed as a fresh run computes it (`exact`), in chunks of
   * MIN_CHUNK or more up to its short last message (`split`, see lastSegment), never fewer, here or left
   * over for the next step, unless the rest is that short; the short last message then whole, alone.
   * 0: not this step.
   */
  promptChunk(fed: number, length: number, room: number, exact: boolean, split: number | null): number {
    if (!exact || split === null) return this.chunk(length - fed, room, exact);
    if (fed < split) return this.chunk(split - fed, room);
    const left = length - fed;
    return left <= Math.min(room, this.#cells.info.nUbatch) ? left : 0;
  }

  /**
   * How many of `left` tokens to compute now, with `room` left in the batch: within one micro-batch and,
   * when `exact`, in chunks of MIN_CHUNK or more: never fewer, here or left over for the next step, unless
   * the rest is that short. 0: not this step.
   */
  chunk(left: number, room: number, exact = true): number {
    if (left <= 0 || room <= 0) return 0;
    let take = Math.min(left, room, this.#cells.info.nUbatch);
    if (!exact) return take;
    const min = this.#minChunk;
    if (left - take > 0 && left - take < min) take -= min - (left - take);
    return take < Math.min(min, left) ? 0 : take;
  }

  /**
   * A request is done with its sequence: its cells hold `tokens` (kept for reuse: the first `exact` of
   * them computed by the exact rule, the first `promptEnd` its prompt), or nothing usable (null).
   */
  release(seq: number, tokens: ArrayLike<number> | null, exact: number, promptEnd: number): void {
    const entry = this.#entries[seq]!;
    try {
      if (tokens) {
        entry.tokens = tokens;
        entry.exact = Math.min(exact, tokens.length);
        entry.promptEnd = Math.min(promptEnd, tokens.length);
      } else {
        this.#forget(entry);
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
      // From the shared exact prefix on, in chunks of at least MIN_CHUNK tokens (so, like every prompt
      // chunk of the exact rule, by the kernels a fresh run uses).
      const start = Math.min(commonPrefix(entry.tokens, tokens), entry.exact, tokens.length - this.#minChunk);
      if (start <= 0 || tokens.length >= this.#cells.info.nCtxSeq) continue;
      // The cells after it (the generated tokens' among them) give way to the re-rendered reply.
      if (!this.#cells.removeSequence(seq, start, -1) || !this.#cells.holdsPrefixFor(seq, start)) {
        this.dropWarmup(seq);
        continue;
      }
      entry.tokens = tokens.subarray(0, start);
      entry.exact = entry.promptEnd = start;
      this.#warmups.set(seq, { tokens, fed: start });
    }
  }

  /** A warm-up's chunk of `n` tokens is in the sequence: the cache now holds it. */
  warmed(seq: number, n: number): void {
    const w = this.#warmups.get(seq);
    if (!w) return;
    w.fed += n;
    const entry = this.#entries[seq]!;
    entry.tokens = w.tokens.subarray(0, w.fed);
    entry.exact = entry.promptEnd = w.fed;
    if (w.fed >= w.tokens.length) this.#warmups.delete(seq);
  }

  /** A warm-up that failed: its sequence holds nothing usable. */
  dropWarmup(seq: number): void {
    this.#warmups.delete(seq);
    this.#forget(this.#entries[seq]!);
    this.#cells.removeSequence(seq);
  }

  #forget(entry: CachedSequence): void {
    entry.tokens = [];
    entry.exact = entry.promptEnd = 0;
  }

  /** Gives the warm-ups under way up; what they computed stays cached. */
  stopWarmups(): void {
    this.#warmups.clear();
  }
}
