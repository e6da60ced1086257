// Embeddings and rerank requests on the serving engine. They are idempotent (the same inputs give the
// same vectors on any engine), so a request caught by an engine loss is simply sent again once the
// cluster serves again: no resume state, no tokens to replay. It is bounded like a generation: by the
// request's time limit (--request-timeout, over every wait) and by --max-resumes engine losses.
import { randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import PQueue from 'p-queue';

import { ErrorCode, HearthError, isHearthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { whenServing, type ServingGate } from './admission.js';
import { EngineExitError, type EngineProcess } from './engine/engine-process.js';
import type { EmbedRequest, EmbedResult, RerankRequest, RerankResult, ServedModel } from './served-models.js';
import type { CoordinatorEvents } from './snapshot.js';

/** How long a request caught by an engine loss waits for lost workers to return when the re-plan found too few (as admission.ts). */
const RECOVERY_WAIT_MS = 15_000;

export interface PooledRequestOptions {
  /** Requests sent to the engine at once (it computes them one after another, several inputs per decode). */
  parallel: number;
  maxWaiting: number;
  maxResumes: number;
  requestTimeoutMs: number;
}

/** A request's inputs as the engine takes them, checked here for every API (HTTP, gRPC, Ollama). */
export function checkEmbedRequest(request: EmbedRequest): void {
  if (!Array.isArray(request.inputs) || request.inputs.length === 0) throw new HearthError(ErrorCode.InvalidArgument, 'input: must be a non-empty string or array of strings');
  request.inputs.forEach((input, i) => {
    if (typeof input === 'string' ? input === '' : !Array.isArray(input) || input.length === 0) {
      throw new HearthError(ErrorCode.InvalidArgument, `input[${i}]: is empty; give some text to embed`);
    }
  });
}

export function checkRerankRequest(request: RerankRequest): void {
  if (typeof request.query !== 'string' || request.query === '') throw new HearthError(ErrorCode.InvalidArgument, 'query: must be a non-empty string');
  if (!Array.isArray(request.documents) || request.documents.length === 0) throw new HearthError(ErrorCode.InvalidArgument, 'documents: must be a non-empty array of strings');
  request.documents.forEach((d, i) => {
    if (typeof d !== 'string') throw new HearthError(ErrorCode.InvalidArgument, `documents[${i}]: must be a string`);
  });
  if (request.topN !== undefined && (!Number.isInteger(request.topN) || request.topN < 0)) {
    throw new HearthError(ErrorCode.InvalidArgument, `top_n: must be a whole number of at least 0, got ${request.topN}`);
  }
}

/** The scores best first (ties in the order given), the best `topN` of them. */
export function rankResults(scores: readonly number[], topN: number | undefined): RerankResult['results'] {
  const ranked = scores.map((relevanceScore, index) => ({ index, relevanceScore })).sort((a, b) => b.relevanceScore - a.relevanceScore || a.index - b.index);
  return ranked.slice(0, topN ?? ranked.length);
}

export class PooledRequests {
  readonly #log: Logger;
  readonly #gate: ServingGate;
  readonly #events: EventEmitter<CoordinatorEvents>;
  readonly #options: PooledRequestOptions;
  readonly #queue: PQueue;

  constructor(log: Logger, gate: ServingGate, events: EventEmitter<CoordinatorEvents>, options: PooledRequestOptions) {
    this.#log = log;
    this.#gate = gate;
    this.#events = events;
    this.#options = options;
    this.#queue = new PQueue({ concurrency: options.parallel });
  }

  /** Requests at the engine, and waiting for their turn. */
  get inFlight(): number {
    return this.#queue.pending;
  }

  get waiting(): number {
    return this.#queue.size;
  }

  clear(): void {
    this.#queue.clear();
  }

  async embed(model: ServedModel, request: EmbedRequest, signal?: AbortSignal): Promise<EmbedResult> {
    checkEmbedRequest(request);
    const params = { normalize: request.normalize, truncate: request.truncate };
    const r = await this.#run('embeddings', request.inputs.length, signal, (engine, id) => engine.embed(id, request.inputs, params));
    return { model: model.id, embeddings: r.embeddings, promptTokens: r.promptTokens };
  }

  async rerank(model: ServedModel, request: RerankRequest, signal?: AbortSignal): Promise<RerankResult> {
    checkRerankRequest(request);
    const r = await this.#run('rerank', request.documents.length, signal, (engine, id) => engine.rerank(id, request.query, request.documents));
    return { model: model.id, results: rankResults(r.scores, request.topN), promptTokens: r.promptTokens };
  }

  /** Through the queue to the engine; sent again after an engine loss; counted for /metrics. */
  async #run<T extends { promptTokens: number }>(endpoint: 'embeddings' | 'rerank', inputs: number, signal: AbortSignal | undefined, send: (engine: EngineProcess, id: string) => Promise<T>): Promise<T> {
    const { maxWaiting, requestTimeoutMs } = this.#options;
    if (this.#queue.size >= maxWaiting) {
      throw new HearthError(ErrorCode.ResourceExhausted, `server busy: ${this.#queue.size} requests are waiting (limit ${maxWaiting}); retry later`);
    }
    const deadline = Date.now() + requestTimeoutMs;
    const queueSignal = AbortSignal.any([AbortSignal.timeout(requestTimeoutMs), ...(signal ? [signal] : [])]);
    try {
      const result = (await this.#queue.add(() => this.#attempts(send, signal, deadline), { signal: queueSignal })) as T;
      this.#events.emit('pooled-finished', { endpoint, outcome: 'ok', inputs, promptTokens: result.promptTokens });
      return result;
    } catch (e) {
      this.#events.emit('pooled-finished', { endpoint, outcome: 'error', inputs, promptTokens: 0 });
      if (isHearthError(e) || !queueSignal.aborted) throw e;
      if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting for a slot');
      throw new HearthError(ErrorCode.DeadlineExceeded, `the request waited ${requestTimeoutMs / 1000} s for a slot, its time limit (--request-timeout); the cluster is overloaded`);
    }
  }

  async #attempts<T>(send: (engine: EngineProcess, id: string) => Promise<T>, signal: AbortSignal | undefined, deadline: number): Promise<T> {
    let faults = 0;
    let patientUntil = 0;
    let lost: string | null = null;
    for (;;) {
      const engine = await this.#whenServing(signal, patientUntil, deadline, lost);
      const id = randomUUID();
      const onAbort = () => engine.cancel(id);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return await send(engine, id);
      } catch (e) {
        if (!(e instanceof EngineExitError)) throw e;
        lost = (await this.#gate.lossReason())?.message ?? e.message;
        if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled');
        const { maxResumes } = this.#options;
        if (e.exit.reason !== 'shutdown' && ++faults > maxResumes) {
          throw new HearthError(ErrorCode.Unavailable, `the request failed: ${lost}${maxResumes === 0 ? '' : ` (sent again after ${maxResumes} engine loss${maxResumes === 1 ? '' : 'es'} already, the most --max-resumes allows)`}`, { cause: e });
        }
        this.#log.info({ attempt: faults + 1, what: lost }, 'an embeddings request caught by an engine loss is sent again once the cluster serves');
        patientUntil = Date.now() + RECOVERY_WAIT_MS;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    }
  }

  /** The engine once the cluster serves; fails when it cannot (Admission's rules). */
  #whenServing(signal: AbortSignal | undefined, patientUntil: number, deadline: number, lost: string | null): Promise<EngineProcess> {
    return whenServing(this.#gate, { signal, patientUntil, deadline, requestTimeoutMs: this.#options.requestTimeoutMs, lost, failed: 'the request failed', again: 'sent again' });
  }
}
