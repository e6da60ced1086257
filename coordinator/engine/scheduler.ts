// Continuous batching inside the engine process: up to nSeqMax requests decode in the same batches,
// new requests join between steps, each with its own sampler, token budget, stop strings and
// cancellation. One decode runs at a time (a llama context is not thread-safe). Each request takes the
// free sequence whose cached prefix serves it best (prompt-cache.ts).
//
// Speculative decoding (drafter.ts): before a step, each generating sequence may get a draft of its
// next tokens; the step then decodes its pending token and the draft together and keeps what the
// target's own sampling confirms. The rejected tail's cells are dropped at once. Speculation steps
// aside while more sequences generate than it is set for: their batch is compute-bound already.
import { performance } from 'node:perf_hooks';
import { TextDecoder } from 'node:util';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { Batch, type ChatParser, type ChatTemplateRequest, type ChatTemplates, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import { EMPTY_REPLY, replyDelta, withToolCallIds } from './chat-reply.js';
import type { Drafter, DraftRequest } from './drafter.js';
import type { DraftTuner } from './draft-tuner.js';
import { cancelledBeforeStart, namedFor, nextTurnTokens, prepareRequest, promptUnfit, requestSampler, type PreparedRequest } from './prepare-request.js';
import { PromptCache } from './prompt-cache.js';
import type { ChatReply, FinishReason, FromEngine, GenerateParams, PromptInput, SpeculationSettings, TokenLogprob } from './protocol.js';
import { StopStringFilter } from './stop-strings.js';

/** How long a scheduler starting from idle waits for companions of the first request. */
const GATHER_MS = 3;

interface Slot {
  id: string;
  seq: number;
  sampler: Sampler;
  prompt: Int32Array;
  /** Prompt tokens whose KV was reused from the sequence's cache. */
  cached: number;
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
  /** A chat reply's parser (its template's format), and what it read so far. */
  parser: ChatParser | null;
  /** The rendering request of a chat whose reply is worth a warm-up afterwards; null otherwise. */
  chat: ChatTemplateRequest | null;
  reply: ChatReply;
  logprobs: boolean;
  /** Tokens emitted so far (the pending one last); with the prompt, what a draft continues. */
  emitted: number[];
  /** Speculation: tokens drafted for this request and verified, and how many the target accepted. */
  drafted: number;
  accepted: number;
  /** This request's draft settings (the engine's, or the request's own). */
  draftMax: number;
  draftMin: number;
  draftPMin: number;
}

export class Scheduler {
  readonly #model: LlamaModel;
  readonly #ctx: LlamaContext;
  readonly #templates: ChatTemplates;
  readonly #send: (m: FromEngine) => void;
  readonly #nBatch: number;
  readonly #slots = new Map<string, Slot>();
  readonly #waiting: PreparedRequest[] = [];
  readonly #cache: PromptCache;
  #running = false;
  readonly #speculation: SpeculationSettings | null;
  readonly #drafters: readonly Drafter[];
  readonly #tuner: DraftTuner | null;

  constructor(
    model: LlamaModel,
    ctx: LlamaContext,
    send: (m: FromEngine) => void,
    speculation: { settings: SpeculationSettings; drafters: readonly Drafter[]; tuner: DraftTuner | null } | null = null,
  ) {
    this.#model = model;
    this.#speculation = speculation && speculation.drafters.length > 0 ? speculation.settings : null;
    this.#drafters = speculation?.drafters ?? [];
    this.#tuner = speculation?.tuner ?? null;
    this.#ctx = ctx;
    this.#templates = model.chatTemplates();
    this.#send = send;
    this.#nBatch = ctx.info.nBatch;
    this.#cache = new PromptCache(ctx);
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

  readonly #preparing = new Set<string>();

  // For a router over several schedulers (pipelined decode, groups.ts): it prepares a request once,
  // picks the scheduler whose cache serves it best, and queues it there.

  /** Renders and tokenizes a request without queueing it; errors name the request's fields. */
  prepare(id: string, prompt: PromptInput, params: GenerateParams): Promise<PreparedRequest> {
    return prepareRequest(this.#model, this.#templates, id, prompt, params);
  }

  /** Queues a prepared request (refused at once when it cannot fit). */
  enqueue(r: PreparedRequest): void {
    const unfit = promptUnfit(r.prompt, this.#ctx.info.nCtxSeq);
    if (unfit) {
      this.#fail(r.id, unfit);
      return;
    }
    this.#waiting.push(r);
    this.#kick();
  }

  /** Prompt tokens a free sequence's cache would spare this prompt if it were admitted now. */
  cachedPrefix(prompt: Int32Array, reuse: boolean): number {
    return this.#cache.cachedPrefix(prompt, reuse);
  }

  /** Sequences this scheduler decodes side by side. */
  get capacity(): number {
    return this.#ctx.info.nSeqMax;
  }

  cancel(id: string): void {
    // Still rendering: answered as cancelled when the rendering ends.
    if (this.#preparing.delete(id)) return;
    const waiting = this.#waiting.findIndex((w) => w.id === id);
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
        if (batch.size === generatingRows) this.#tuner?.recordVerify(batch.size, (performance.now() - started) / 1000);
      } catch (e) {
        for (const seq of warmed.keys()) this.#cache.dropWarmup(seq);
        // A failed decode poisons every sequence in it; the others in the context are unaffected.
        for (const slot of new Set(rows)) this.#finishWithError(slot, e);
        // Sequences with only prompt chunks in the failed batch have lost them too.
        for (const slot of [...this.#slots.values()]) if (batch.seqIds.includes(slot.seq)) this.#finishWithError(slot, e);
        this.#send({ type: 'tick' });
        continue;
      }
      for (const [seq, n] of warmed) this.#cache.warmed(seq, n);
      let logprobIndex = 0;
      rows.forEach((slot, i) => {
        const tokens = emitted[i]!;
        const first = logprobIndex;
        logprobIndex += tokens.length;
        const draft = drafts.get(slot);
        if (draft) {
          slot.drafted += draft.length;
          slot.accepted += tokens.length - 1;
          this.#tuner?.recordAcceptance(draft.length, tokens.length - 1);
        }
        for (let k = 0; k < tokens.length; k++) {
          this.#accept(slot, tokens[k]!, slot.logprobs ? this.#logprob(first + k) : undefined);
          if (slot.pending === null) return; // finished, or cancelled
          // An accepted draft token is in the sequence's cells already; the last emitted one is not.
          if (k < tokens.length - 1) {
            slot.pending = null;
            slot.pos++;
          }
        }
        // The rejected part of the draft leaves the cache.
        if (draft && tokens.length - 1 < draft.length) this.#ctx.removeSequence(slot.seq, slot.pos, -1);
      });
      this.#send({ type: 'tick' });
    }
  }

  /**
   * This step's drafts, for the generating sequences (none while more of them generate than speculation
   * is set for). A draft shorter than draftMin is dropped: that sequence decodes one token as usual.
   */
  async #drafts(): Promise<Map<Slot, number[]>> {
    const out = new Map<Slot, number[]>();
    const spec = this.#speculation;
    if (!spec) return out;
    const generating = [...this.#slots.values()].filter((s) => s.pending !== null && !s.cancelled);
    if (generating.length === 0 || generating.length > spec.maxSequences) return out;
    const nCtxSeq = this.#ctx.info.nCtxSeq;
    // Room for the drafted tokens in the token budget (the pending token counts) and in the context.
    const room = (slot: Slot) => Math.min(slot.draftMax, slot.maxTokens - slot.generated - 1, nCtxSeq - 2 - slot.pos);
    // As long as pays on this cluster now (the tuner's choice), within each request's own maximum.
    const longest = Math.max(...generating.map(room));
    const stepSeconds = this.#drafters.reduce((s, d) => s + d.stepSeconds, 0);
    const chosen = this.#tuner ? this.#tuner.choose(generating.length, longest, stepSeconds) : longest;
    if (chosen <= 0) return out;
    let wanted: { slot: Slot; request: DraftRequest }[] = [];
    for (const slot of generating) {
      const max = Math.min(room(slot), chosen);
      if (max < Math.max(1, slot.draftMin)) continue;
      wanted.push({ slot, request: { seq: slot.seq, tokens: [...slot.prompt, ...slot.emitted], max, pMin: slot.draftPMin } });
    }
    // The cheapest drafter first; the next one only for the sequences whose draft fell short.
    for (const drafter of this.#drafters) {
      if (wanted.length === 0) break;
      let drafted: Map<number, number[]>;
      try {
        drafted = await drafter.draft(wanted.map((w) => w.request));
      } catch (e) {
        // A failed draft costs only its speed-up: these sequences decode one token this step, and what
        // the drafter keeps for them starts over.
        for (const { slot } of wanted) drafter.reset(slot.seq);
        this.#send({ type: 'log', level: 'warn', msg: `drafting failed, this step decodes without a draft: ${messageOf(e)}` });
        return out;
      }
      wanted = wanted.filter(({ slot }) => {
        const d = drafted.get(slot.seq) ?? [];
        if (d.length < Math.max(1, slot.draftMin)) return true;
        if (slot.pending !== null && !slot.cancelled) out.set(slot, d);
        return false;
      });
    }
    return out;
  }

  #admit(): void {
    while (this.#waiting.length > 0 && this.#cache.freeSequences > 0) {
      const w = this.#waiting.shift()!;
      let sampler: Sampler;
      try {
        sampler = requestSampler(this.#model, w);
      } catch (e) {
        this.#fail(w.id, namedFor(e, w.params.constraint));
        continue;
      }
      const { seq, cached } = this.#cache.claim(w.prompt, w.params.cachePrompt);
      this.#slots.set(w.id, {
        id: w.id,
        seq,
        sampler,
        prompt: w.prompt,
        cached,
        fed: cached,
        pos: cached,
        pending: null,
        generated: 0,
        maxTokens: w.params.maxTokens,
        decoder: new TextDecoder('utf-8'),
        stops: new StopStringFilter(w.stops),
        text: '',
        cancelled: false,
        parser: w.parser,
        chat: w.chat,
        reply: EMPTY_REPLY,
        logprobs: w.params.logprobs !== null,
        emitted: [],
        drafted: 0,
        accepted: 0,
        draftMax: w.params.speculative?.nMax ?? this.#speculation?.draftMax ?? 0,
        draftMin: w.params.speculative?.nMin ?? this.#speculation?.draftMin ?? 0,
        draftPMin: w.params.speculative?.pMin ?? this.#speculation?.pMin ?? 0,
      });
      this.#send({ type: 'started', id: w.id, promptTokens: w.prompt.length, cachedTokens: cached });
    }
  }

  /**
   * One token per generating sequence first (they are latency-bound), then prompt chunks, room given
   * in admission order. The batch lists its sequences in id order: llama.cpp splits a batch for a
   * per-sequence KV cache into micro-batches of consecutive sequence ids, so any other order would
   * split one step's tokens into several micro-batches, each reading all the weights.
   */
  #buildBatch(drafts: ReadonlyMap<Slot, number[]>): { batch: Batch; rows: Slot[]; warmed: Map<number, number>; generatingRows: number } {
    let generatingRows = 0;
    for (const s of this.#slots.values()) if (s.pending !== null) generatingRows += 1 + (drafts.get(s)?.length ?? 0);
    let room = this.#nBatch - generatingRows;
    const chunks = new Map<Slot, number>();
    for (const slot of this.#slots.values()) {
      if (slot.pending !== null || room <= 0) continue;
      const take = this.#cache.chunk(slot.prompt.length - slot.fed, room);
      if (take === 0) continue;
      chunks.set(slot, take);
      room -= take;
    }
    // Warm-ups take what room the requests leave.
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
      if (slot.pending !== null) {
        const draft = drafts.get(slot);
        if (draft) batch.verify(slot.pending, draft, slot.pos++, slot.seq, slot.sampler);
        else batch.sample(batch.add(slot.pending, slot.pos++, slot.seq, true), slot.sampler);
        rows.push(slot);
        slot.pending = null;
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
      }
    }
    return { batch, rows, warmed, generatingRows };
  }

  /** Sample `i`'s log-probabilities in OpenAI's terms: token text, bytes, alternatives. */
  #logprob(i: number): TokenLogprob | undefined {
    const l = this.#ctx.logprobs(i);
    if (!l) return undefined;
    const piece = (token: number) => {
      const bytes = this.#model.tokenToPiece(token);
      return { token: bytes.toString('utf8'), bytes: [...bytes] };
    };
    return { ...piece(l.token), logprob: l.logprob, top: l.top.map((t) => ({ ...piece(t.token), logprob: t.logprob })) };
  }

  /** Reads the reply so far with its template's parser; returns what changed for the stream. */
  #parse(slot: Slot, partial: boolean) {
    if (!slot.parser) return undefined;
    const parsed = slot.parser.parse(slot.text, { partial });
    const next = withToolCallIds({ content: parsed.content, reasoningContent: parsed.reasoningContent, toolCalls: parsed.toolCalls }, slot.reply);
    const delta = replyDelta(slot.reply, next);
    slot.reply = next;
    return delta ?? {};
  }

  #accept(slot: Slot, token: number, logprob: TokenLogprob | undefined): void {
    if (slot.cancelled) return; // reaped before the next step
    if (this.#model.isEndOfGeneration(token)) {
      this.#finish(slot, 'stop');
      return;
    }
    slot.generated++;
    const piece = slot.decoder.decode(this.#model.tokenToPiece(token), { stream: true });
    const scan = slot.stops.push(piece);
    slot.text += scan.emit;
    const delta = scan.emit ? this.#parse(slot, true) : slot.parser ? {} : undefined;
    this.#send({ type: 'token', id: slot.id, text: scan.emit, token, ...(delta ? { delta } : {}), ...(logprob ? { logprob } : {}) });
    if (scan.stopped) {
      this.#finish(slot, 'stop', false);
    } else if (slot.generated >= slot.maxTokens || slot.pos + 1 >= this.#ctx.info.nCtxSeq) {
      this.#finish(slot, 'length');
    } else {
      slot.pending = token;
      slot.emitted.push(token);
    }
  }

  #reapCancelled(): void {
    for (const slot of [...this.#slots.values()]) if (slot.cancelled) this.#finish(slot, 'cancelled', false);
  }

  #finish(slot: Slot, reason: FinishReason, flush = true): void {
    let rest = '';
    if (flush) {
      rest = slot.stops.push(slot.decoder.decode()).emit + slot.stops.flush();
      slot.text += rest;
    }
    // The final reading: text held back as a possible marker is settled now.
    const delta = this.#parse(slot, false);
    if (rest || (delta && Object.keys(delta).length > 0)) this.#send({ type: 'token', id: slot.id, text: rest, token: -1, ...(delta ? { delta } : {}) });
    this.#release(slot, true);
    const reply = slot.parser ? slot.reply : undefined;
    if (reply && slot.chat && reason !== 'cancelled') {
      // The conversation so far, rendered as its next turn will render it, computed while the sequence is idle.
      this.#cache.warmUp(slot.seq, nextTurnTokens(this.#model, this.#templates, slot.chat, reply)).then(
        (queued) => queued && this.#kick(),
        (e: unknown) => this.#send({ type: 'log', level: 'warn', msg: `warm-up of a finished chat failed: ${messageOf(e)}` }),
      );
    }
    this.#send({
      type: 'done',
      id: slot.id,
      finishReason: reason === 'stop' && reply && reply.toolCalls.length > 0 ? 'tool_calls' : reason,
      usage: { promptTokens: slot.prompt.length, completionTokens: slot.generated, cachedTokens: slot.cached, draftTokens: slot.drafted, draftAcceptedTokens: slot.accepted },
      text: slot.text,
      ...(reply ? { reply } : {}),
    });
  }

  #finishWithError(slot: Slot, e: unknown): void {
    this.#release(slot, false);
    this.#fail(slot.id, e);
  }

  /** Frees the slot's sequence; its KV stays as a cache of what was fed, unless the request failed. */
  #release(slot: Slot, keepCache: boolean): void {
    this.#slots.delete(slot.id);
    try {
      // The generated tokens' cells stay too, until the sequence is claimed; they are not reused.
      this.#cache.release(slot.seq, keepCache ? slot.prompt.subarray(0, slot.fed) : null);
    } finally {
      slot.sampler.dispose();
    }
  }

  #fail(id: string, e: unknown): void {
    const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
    this.#send({ type: 'request-error', id, code, message: messageOf(e) });
  }
}
