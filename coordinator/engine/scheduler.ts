// Continuous batching inside the engine process: up to nSeqMax requests decode in the same batches,
// new requests join between steps, each with its own sampler, token budget, stop strings and
// cancellation. One decode runs at a time (a llama context is not thread-safe).
//
// A request is prepared (prepare-request.ts) and waits for a free sequence; admitted, it becomes a slot
// (slot.ts) in the sequence whose cached prefix serves it best (prompt-cache.ts). Each step feeds every
// slot's pending token (with its draft, speculator.ts) and prompt chunks, and turns the sampled tokens
// into output (slot-output.ts). Idle sequences warm up for a chat's next turn in the room left.
import { performance } from 'node:perf_hooks';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { Batch, type ChatTemplates, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import { cancelledBeforeStart, namedFor, nextTurnTokens, prepareRequest, promptUnfit, requestSampler, type PreparedRequest } from './prepare-request.js';
import { PromptCache } from './prompt-cache.js';
import type { FinishReason, FromEngine, GenerateParams, PromptInput, TokenLogprob } from './protocol.js';
import { cellsOf, DECODING, DONE, doneMessage, openSlot, requestOutput, type Slot } from './slot.js';
import { tokenLogprob } from './slot-output.js';
import { NO_DRAFTS, Speculator, type Speculation } from './speculator.js';

/** How long a scheduler starting from idle waits for companions of the first request. */
const GATHER_MS = 3;

/**
 * How long a finished chat's sequence stays idle before its warm-up begins. A turn sent as soon as the
 * reply ends (a script, an agent's next step) arrives well within it and takes the reply's generated
 * cells at once; one sent later (a person reading) finds the warm-up done. A warm-up begun just before
 * a turn arrives would make the turn wait for its chunk, which a decode over RPC cannot cut short.
 */
export const WARMUP_GRACE_MS = 500;

export class Scheduler {
  readonly #model: LlamaModel;
  readonly #ctx: LlamaContext;
  readonly #templates: ChatTemplates;
  readonly #send: (m: FromEngine) => void;
  readonly #cache: PromptCache;
  readonly #speculator: Speculator | null;
  /** Requests being rendered and tokenized. */
  readonly #preparing = new Set<string>();
  /** Prepared requests waiting for a free sequence, in arrival order. */
  readonly #waiting: PreparedRequest[] = [];
  readonly #slots = new Map<string, Slot>();
  #running = false;

  constructor(model: LlamaModel, ctx: LlamaContext, send: (m: FromEngine) => void, speculation: Speculation | null = null, chatTemplate: string | null = null) {
    this.#model = model;
    this.#ctx = ctx;
    this.#templates = model.chatTemplates(chatTemplate);
    this.#send = send;
    this.#cache = new PromptCache(ctx);
    const warn = (msg: string) => this.#send({ type: 'log', level: 'warn', msg });
    this.#speculator = speculation && speculation.drafters.length > 0 ? new Speculator(speculation, warn) : null;
  }

  /** Renders, tokenizes and queues a request; a prompt that cannot fit is refused at once. */
  submit(id: string, prompt: PromptInput, params: GenerateParams): void {
    this.#preparing.add(id);
    this.prepare(id, prompt, params).then(
      (r) => {
        if (this.#preparing.delete(id)) this.enqueue(r);
        else this.#send(cancelledBeforeStart(r));
      },
      (e: unknown) => {
        this.#preparing.delete(id);
        this.#fail(id, e);
      },
    );
  }

  // For a router over several schedulers (pipelined decode, groups.ts): it prepares a request once,
  // picks the scheduler whose cache serves it best, and queues it there.

  /** Renders and tokenizes a request without queueing it; errors name the request's fields. */
  prepare(id: string, prompt: PromptInput, params: GenerateParams): Promise<PreparedRequest> {
    return prepareRequest(this.#model, this.#templates, id, prompt, params);
  }

  /**
   * Queues a prepared request (refused at once when it cannot fit). A resumed request goes ahead of the
   * new ones; one whose output has filled its context ends there, as it would have without the loss.
   */
  enqueue(r: PreparedRequest): void {
    const unfit = promptUnfit(r.prompt, this.#ctx.info.nCtxSeq);
    if (unfit && r.resumed > 0) {
      this.#endAtLength(r);
      return;
    }
    if (unfit) {
      this.#fail(r.id, unfit);
      return;
    }
    const at = r.resumed > 0 ? this.#waiting.findIndex((w) => w.resumed === 0) : -1;
    this.#waiting.splice(at < 0 ? this.#waiting.length : at, 0, r);
    this.#kick();
  }

  /** Prompt tokens a free sequence's cache would spare this prompt (its last message at `split`) if it were admitted now. */
  cachedPrefix(prompt: Int32Array, reuse: boolean, split: number | null = null): number {
    return this.#cache.cachedPrefix(prompt, reuse, split);
  }

  /** Sequences this scheduler decodes side by side. */
  get capacity(): number {
    return this.#ctx.info.nSeqMax;
  }

  cancel(id: string): void {
    // Still rendering: answered as cancelled when the rendering ends.
    if (this.#preparing.delete(id)) return;
    const waiting = this.#waiting.findIndex((r) => r.id === id);
    if (waiting >= 0) {
      const [r] = this.#waiting.splice(waiting, 1);
      this.#send(cancelledBeforeStart(r!));
      return;
    }
    const slot = this.#slots.get(id);
    if (slot) slot.cancelled = true;
    this.#kick();
  }

  get active(): number {
    return this.#slots.size + this.#waiting.length + this.#preparing.size;
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    // Starting from idle, wait a moment so requests that arrive together share the first batch
    // (a burst of HTTP requests reaches this process over a few milliseconds).
    const idle = this.#slots.size === 0;
    void (idle ? new Promise((r) => setTimeout(r, GATHER_MS)) : Promise.resolve()).then(() => this.#loop()).finally(() => {
      this.#running = false;
      if (this.#waiting.length > 0 || this.#slots.size > 0 || this.#cache.warming) this.#kick();
    });
  }

  async #loop(): Promise<void> {
    for (;;) {
      this.#reapCancelled();
      this.#admit();
      this.#cache.startWarmups();
      if (this.#slots.size === 0 && this.#cache.warmups.size === 0) return;
      const drafts = await this.#drafts();
      const { batch, rows, warmed, generatingRows } = this.#buildBatch(drafts);
      if (batch.size === 0) {
        // Nothing fits (never expected): give the warm-ups up rather than spin.
        this.#cache.stopWarmups();
        return;
      }
      let emitted: ArrayLike<number>[];
      const started = performance.now();
      try {
        emitted = drafts.size > 0 ? await this.#ctx.decodeSpeculative(batch) : Array.from(await this.#ctx.decode(batch), (t) => [t]);
        // A step of generating rows only is what the tuner prices drafts by.
        if (batch.size === generatingRows) this.#speculator?.recordStep(batch.size, (performance.now() - started) / 1000);
      } catch (e) {
        for (const seq of warmed.keys()) this.#cache.dropWarmup(seq);
        // A failed decode poisons every sequence in it; the others in the context are unaffected.
        for (const slot of rows) this.#finishWithError(slot, e);
        // Sequences with only prompt chunks in the failed batch have lost them too.
        for (const slot of [...this.#slots.values()]) if (batch.seqIds.includes(slot.seq)) this.#finishWithError(slot, e);
        this.#send({ type: 'tick' });
        continue;
      }
      for (const [seq, n] of warmed) this.#cache.warmed(seq, n);
      this.#takeTokens(rows, emitted, drafts);
      this.#send({ type: 'tick' });
    }
  }

  /** This step's drafts, for the generating slots not cancelled. */
  async #drafts(): Promise<Map<Slot, number[]>> {
    if (!this.#speculator) return new Map();
    const generating = [...this.#slots.values()].filter((s) => s.phase.kind === 'generating' && !s.cancelled);
    return this.#speculator.drafts(generating, this.#ctx.info.nCtxSeq);
  }

  /** Gives waiting requests the free sequences, in arrival order. */
  #admit(): void {
    while (this.#waiting.length > 0 && this.#cache.freeSequences > 0) {
      const r = this.#waiting.shift()!;
      let sampler: Sampler;
      try {
        sampler = requestSampler(this.#model, r);
      } catch (e) {
        this.#fail(r.id, namedFor(e, r.params.constraint));
        continue;
      }
      let claimed: ReturnType<PromptCache['claim']>;
      try {
        claimed = this.#cache.claim(r.prompt, r.params.cachePrompt, r.split);
      } catch (e) {
        // Only this request fails: the sequence stays free, and the loop goes on.
        sampler.dispose();
        this.#fail(r.id, e);
        continue;
      }
      const { seq, cached, inexactFrom } = claimed;
      const slot = this.#open(r, seq, cached, sampler, inexactFrom);
      this.#slots.set(r.id, slot);
      this.#send({ type: 'started', id: r.id, promptTokens: slot.usage.promptTokens, cachedTokens: slot.usage.cachedTokens });
    }
  }

  #open(r: PreparedRequest, seq: number, cached: number, sampler: Sampler, inexactFrom: number | null): Slot {
    const reuse = { inexactFrom, split: this.#cache.lastSegment(r.prompt.length, r.split) };
    return openSlot(r, seq, cached, sampler, this.#speculator?.limitsFor(r.params) ?? NO_DRAFTS, this.#pieceOf, reuse);
  }

  readonly #pieceOf = (token: number): Uint8Array => this.#model.tokenToPiece(token);

  /** A resumed request whose output fills this engine's context: it ends with what it had, as at a full context. */
  #endAtLength(r: PreparedRequest): void {
    const output = requestOutput(r, this.#pieceOf);
    const piece = output.finish(true);
    if (piece) this.#send({ type: 'token', id: r.id, text: piece.text, token: -1, ...(piece.delta ? { delta: piece.delta } : {}) });
    const reply = output.reply;
    const usage = { promptTokens: r.prompt.length - r.resumed, completionTokens: r.resumed, cachedTokens: 0, draftTokens: 0, draftAcceptedTokens: 0 };
    this.#send({ type: 'done', id: r.id, finishReason: 'length', usage, text: output.text, ...(reply ? { reply } : {}) });
  }

  /**
   * One token per generating sequence first (they are latency-bound), then prompt chunks, room given
   * in admission order, then warm-ups. The batch lists its sequences in id order: llama.cpp splits a
   * batch for a per-sequence KV cache into micro-batches of consecutive sequence ids, so any other order
   * would split one step's tokens into several micro-batches, each reading all the weights.
   */
  #buildBatch(drafts: ReadonlyMap<Slot, number[]>): { batch: Batch; rows: Slot[]; warmed: Map<number, number>; generatingRows: number } {
    let generatingRows = 0;
    for (const s of this.#slots.values()) if (s.phase.kind === 'generating') generatingRows += 1 + (drafts.get(s)?.length ?? 0);
    let room = this.#ctx.info.nBatch - generatingRows;
    const chunks = new Map<Slot, number>();
    for (const slot of this.#slots.values()) {
      if (slot.phase.kind !== 'prompt' || room <= 0) continue;
      const take = this.#cache.promptChunk(slot.fed, slot.prompt.length, room, slot.inexactFrom === null, slot.split);
      if (take === 0) continue;
      chunks.set(slot, take);
      room -= take;
    }
    const warmed = this.#cache.warmupChunks(room);
    const batch = new Batch();
    const rows: Slot[] = [];
    const order = [...[...this.#slots.values()].map((slot) => ({ seq: slot.seq, slot })), ...[...warmed.keys()].map((seq) => ({ seq, slot: null }))];
    for (const { seq, slot } of order.sort((a, b) => a.seq - b.seq)) {
      if (!slot) {
        const w = this.#cache.warmups.get(seq)!;
        batch.addSequence(w.tokens.subarray(w.fed, w.fed + warmed.get(seq)!), w.fed, seq, false);
        continue;
      }
      const phase = slot.phase;
      if (phase.kind === 'generating') {
        const draft = drafts.get(slot);
        if (draft) batch.verify(phase.pending, draft, slot.pos++, slot.seq, slot.sampler);
        else batch.sample(batch.add(phase.pending, slot.pos++, slot.seq, true), slot.sampler);
        rows.push(slot);
        slot.phase = DECODING;
        continue;
      }
      const take = chunks.get(slot);
      if (!take) continue;
      const last = batch.addSequence(slot.prompt.subarray(slot.fed, slot.fed + take), slot.pos, slot.seq, false);
      slot.fed += take;
      slot.pos += take;
      if (slot.fed === slot.prompt.length) {
        batch.sample(last, slot.sampler);
        rows.push(slot);
        slot.phase = DECODING;
      }
    }
    return { batch, rows, warmed, generatingRows };
  }

  /** Each row's emitted tokens (a verified draft's accepted ones, then the target's own) go to its slot. */
  #takeTokens(rows: readonly Slot[], emitted: readonly ArrayLike<number>[], drafts: ReadonlyMap<Slot, number[]>): void {
    let logprobIndex = 0;
    rows.forEach((slot, i) => {
      const tokens = emitted[i]!;
      const first = logprobIndex;
      logprobIndex += tokens.length;
      const draft = drafts.get(slot);
      if (draft) this.#speculator?.recordDraft(slot, draft.length, tokens.length - 1);
      for (let k = 0; k < tokens.length; k++) {
        this.#accept(slot, tokens[k]!, slot.logprobs ? tokenLogprob(this.#model, this.#ctx, first + k) : undefined);
        if (slot.phase.kind !== 'generating') return; // finished, or cancelled
        // An accepted draft token is in the sequence's cells already; the last emitted one is not.
        if (k < tokens.length - 1) {
          slot.phase = DECODING;
          slot.pos++;
        }
      }
      // The rejected part of the draft leaves the cache.
      if (draft && tokens.length - 1 < draft.length) this.#ctx.removeSequence(slot.seq, slot.pos, -1);
    });
  }

  #accept(slot: Slot, token: number, logprob: TokenLogprob | undefined): void {
    if (slot.cancelled) return; // reaped before the next step
    if (this.#model.isEndOfGeneration(token)) {
      this.#finish(slot, 'stop');
      return;
    }
    slot.usage.completionTokens++;
    const piece = slot.output.push(this.#model.tokenToPiece(token));
    this.#send({ type: 'token', id: slot.id, text: piece.text, token, ...(piece.delta ? { delta: piece.delta } : {}), ...(logprob ? { logprob } : {}) });
    if (piece.stopped) {
      this.#finish(slot, 'stop', false);
    } else if (slot.usage.completionTokens >= slot.maxTokens || slot.pos + 1 >= this.#ctx.info.nCtxSeq) {
      this.#finish(slot, 'length');
    } else {
      slot.phase = { kind: 'generating', pending: token };
      slot.emitted.push(token);
    }
  }

  #reapCancelled(): void {
    for (const slot of [...this.#slots.values()]) if (slot.cancelled) this.#finish(slot, 'cancelled', false);
  }

  #finish(slot: Slot, reason: FinishReason, flush = true): void {
    const piece = slot.output.finish(flush);
    if (piece) this.#send({ type: 'token', id: slot.id, text: piece.text, token: -1, ...(piece.delta ? { delta: piece.delta } : {}) });
    this.#release(slot, true);
    const reply = slot.output.reply;
    if (reply && slot.chat && reason !== 'cancelled') {
      // The conversation so far, rendered as its next turn will render it, computed while the sequence is idle.
      const grace = new Promise<void>((r) => setTimeout(r, WARMUP_GRACE_MS).unref());
      const rendering = Promise.all([nextTurnTokens(this.#model, this.#templates, slot.chat, reply), grace]).then(([tokens]) => tokens);
      this.#cache.warmUp(slot.seq, rendering).then(
        (queued) => queued && this.#kick(),
        (e: unknown) => this.#send({ type: 'log', level: 'warn', msg: `warm-up of a finished chat failed: ${messageOf(e)}` }),
      );
    }
    this.#send(doneMessage(slot, reason));
  }

  #finishWithError(slot: Slot, e: unknown): void {
    this.#release(slot, false);
    this.#fail(slot.id, e);
  }

  /** Frees the slot's sequence; its KV stays as a cache of the prompt and the reply, unless the request failed. */
  #release(slot: Slot, keepCache: boolean): void {
    this.#slots.delete(slot.id);
    slot.phase = DONE;
    try {
      const cells = cellsOf(slot);
      this.#cache.release(slot.seq, keepCache ? cells.tokens : null, cells.exact, cells.promptEnd);
    } finally {
      slot.sampler.dispose();
    }
  }

  #fail(id: string, e: unknown): void {
    const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
    this.#send({ type: 'request-error', id, code, message: messageOf(e) });
  }
}
