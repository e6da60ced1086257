// Continuous batching inside the engine process: up to nSeqMax requests decode in the same batches,
// new requests join between steps, each with its own sampler, token budget, stop strings and
// cancellation. One decode runs at a time (a llama context is not thread-safe).
import { TextDecoder } from 'node:util';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { Batch, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import type { FinishReason, FromEngine, GenerateParams, PromptInput } from './protocol.js';
import { StopStringFilter } from './stop-strings.js';

/** How long a scheduler starting from idle waits for companions of the first request. */
const GATHER_MS = 3;

interface Slot {
  id: string;
  seq: number;
  sampler: Sampler;
  prompt: Int32Array;
  /** Prompt tokens already decoded. */
  fed: number;
  /** Position of the next token in this sequence. */
  pos: number;
  /** The token to feed next, once the prompt is done. */
  pending: number | null;
  generated: number;
  maxTokens: number;
  decoder: TextDecoder;
  stops: StopStringFilter;
  text: string;
  cancelled: boolean;
}

interface Waiting {
  id: string;
  prompt: Int32Array;
  params: GenerateParams;
}

export class Scheduler {
  readonly #model: LlamaModel;
  readonly #ctx: LlamaContext;
  readonly #send: (m: FromEngine) => void;
  readonly #nBatch: number;
  readonly #freeSeqs: number[];
  readonly #slots = new Map<string, Slot>();
  readonly #waiting: Waiting[] = [];
  #running = false;

  constructor(model: LlamaModel, ctx: LlamaContext, send: (m: FromEngine) => void) {
    this.#model = model;
    this.#ctx = ctx;
    this.#send = send;
    this.#nBatch = ctx.info.nBatch;
    this.#freeSeqs = Array.from({ length: ctx.info.nSeqMax }, (_, i) => i);
  }

  /** Tokenizes and queues a request; a prompt that cannot fit is refused at once. */
  submit(id: string, prompt: PromptInput, params: GenerateParams): void {
    let tokens: Int32Array;
    try {
      tokens = this.#tokenize(prompt);
    } catch (e) {
      this.#fail(id, e);
      return;
    }
    const limit = this.#ctx.info.nCtxSeq;
    if (tokens.length === 0) {
      this.#fail(id, new HearthError(ErrorCode.InvalidArgument, 'the prompt is empty'));
      return;
    }
    if (tokens.length >= limit) {
      this.#fail(
        id,
        new HearthError(ErrorCode.InvalidArgument, `the prompt is ${tokens.length} tokens, which exceeds the available context size of ${limit} tokens per request; shorten it or start the coordinator with a larger --ctx-size`),
      );
      return;
    }
    this.#waiting.push({ id, prompt: tokens, params });
    this.#kick();
  }

  cancel(id: string): void {
    const waiting = this.#waiting.findIndex((w) => w.id === id);
    if (waiting >= 0) {
      const [w] = this.#waiting.splice(waiting, 1);
      this.#send({ type: 'done', id, finishReason: 'cancelled', usage: { promptTokens: w!.prompt.length, completionTokens: 0 }, text: '' });
      return;
    }
    const slot = this.#slots.get(id);
    if (slot) slot.cancelled = true;
    this.#kick();
  }

  get active(): number {
    return this.#slots.size + this.#waiting.length;
  }

  #tokenize(prompt: PromptInput): Int32Array {
    if (prompt.kind === 'text') return this.#model.tokenize(prompt.text, { addSpecial: true, parseSpecial: false });
    const text = this.#model.applyChatTemplate(prompt.messages, { addAssistant: true });
    return this.#model.tokenize(text, { addSpecial: true, parseSpecial: true });
  }

  #kick(): void {
    if (this.#running) return;
    this.#running = true;
    // Starting from idle, wait a moment so requests that arrive together share the first batch
    // (a burst of HTTP requests reaches this process over a few milliseconds).
    const idle = this.#slots.size === 0;
    void (idle ? new Promise((r) => setTimeout(r, GATHER_MS)) : Promise.resolve()).then(() => this.#loop()).finally(() => {
      this.#running = false;
      if (this.#waiting.length > 0 || this.#slots.size > 0) this.#kick();
    });
  }

  async #loop(): Promise<void> {
    for (;;) {
      this.#reapCancelled();
      this.#admit();
      if (this.#slots.size === 0) return;
      const { batch, rows } = this.#buildBatch();
      let sampled: Int32Array;
      try {
        sampled = await this.#ctx.decode(batch);
      } catch (e) {
        // A failed decode poisons every sequence in it; the others in the context are unaffected.
        for (const slot of new Set(rows)) this.#finishWithError(slot, e);
        this.#send({ type: 'tick' });
        continue;
      }
      rows.forEach((slot, i) => this.#accept(slot, sampled[i]!));
      this.#send({ type: 'tick' });
    }
  }

  #admit(): void {
    while (this.#waiting.length > 0 && this.#freeSeqs.length > 0) {
      const w = this.#waiting.shift()!;
      const seq = this.#freeSeqs.shift()!;
      let sampler: Sampler;
      try {
        sampler = this.#model.createSampler(w.params.sampling);
        const { repeatPenalty, frequencyPenalty, presencePenalty } = w.params.sampling;
        if (repeatPenalty !== 1 || frequencyPenalty !== 0 || presencePenalty !== 0) sampler.accept(w.prompt.slice(-64));
      } catch (e) {
        this.#freeSeqs.push(seq);
        this.#fail(w.id, e);
        continue;
      }
      this.#slots.set(w.id, {
        id: w.id,
        seq,
        sampler,
        prompt: w.prompt,
        fed: 0,
        pos: 0,
        pending: null,
        generated: 0,
        maxTokens: w.params.maxTokens,
        decoder: new TextDecoder('utf-8'),
        stops: new StopStringFilter(w.params.stop),
        text: '',
        cancelled: false,
      });
      this.#send({ type: 'started', id: w.id, promptTokens: w.prompt.length });
    }
  }

  /** One token per generating sequence first (they are latency-bound), then prompt chunks. */
  #buildBatch(): { batch: Batch; rows: Slot[] } {
    const batch = new Batch();
    const rows: Slot[] = [];
    for (const slot of this.#slots.values()) {
      if (slot.pending === null) continue;
      batch.sample(batch.add(slot.pending, slot.pos++, slot.seq, true), slot.sampler);
      rows.push(slot);
      slot.pending = null;
    }
    for (const slot of this.#slots.values()) {
      const left = slot.prompt.length - slot.fed;
      const room = this.#nBatch - batch.size;
      if (left === 0 || room <= 0) continue;
      const take = Math.min(left, room);
      const last = batch.addSequence(slot.prompt.subarray(slot.fed, slot.fed + take), slot.pos, slot.seq, false);
      slot.fed += take;
      slot.pos += take;
      if (slot.fed === slot.prompt.length) {
        batch.sample(last, slot.sampler);
        rows.push(slot);
      }
    }
    return { batch, rows };
  }

  #accept(slot: Slot, token: number): void {
    if (slot.cancelled) return; // reaped before the next step
    if (this.#model.isEndOfGeneration(token)) {
      this.#finish(slot, 'stop');
      return;
    }
    slot.generated++;
    const piece = slot.decoder.decode(this.#model.tokenToPiece(token), { stream: true });
    const scan = slot.stops.push(piece);
    slot.text += scan.emit;
    this.#send({ type: 'token', id: slot.id, text: scan.emit, token });
    if (scan.stopped) {
      this.#finish(slot, 'stop', false);
    } else if (slot.generated >= slot.maxTokens || slot.pos + 1 >= this.#ctx.info.nCtxSeq) {
      this.#finish(slot, 'length');
    } else {
      slot.pending = token;
    }
  }

  #reapCancelled(): void {
    for (const slot of [...this.#slots.values()]) if (slot.cancelled) this.#finish(slot, 'cancelled', false);
  }

  #finish(slot: Slot, reason: FinishReason, flush = true): void {
    if (flush) {
      const rest = slot.stops.push(slot.decoder.decode()).emit + slot.stops.flush();
      if (rest) {
        slot.text += rest;
        this.#send({ type: 'token', id: slot.id, text: rest, token: -1 });
      }
    }
    this.#release(slot);
    this.#send({ type: 'done', id: slot.id, finishReason: reason, usage: { promptTokens: slot.prompt.length, completionTokens: slot.generated }, text: slot.text });
  }

  #finishWithError(slot: Slot, e: unknown): void {
    this.#release(slot);
    this.#fail(slot.id, e);
  }

  #release(slot: Slot): void {
    this.#slots.delete(slot.id);
    try {
      this.#ctx.removeSequence(slot.seq);
    } finally {
      slot.sampler.dispose();
      this.#freeSeqs.push(slot.seq);
      this.#freeSeqs.sort((a, b) => a - b);
    }
  }

  #fail(id: string, e: unknown): void {
    const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
    this.#send({ type: 'request-error', id, code, message: messageOf(e) });
  }
}
