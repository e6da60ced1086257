// Admission: a bounded queue in front of the engine, and what a request does when its engine is lost.
// It is resumed on the next plan: the engine is given the tokens its client has received, computes them
// after the prompt, brings the sampler and the output to where they were, and goes on, so the client
// sees a pause, then the rest of the same answer. Resumes are bounded in number (`maxResumes` engine
// losses; an engine retired for a re-plan is not one) and time (`requestTimeoutMs`, over every wait for the cluster); past either, the request fails with the
// reason. Waiting for the cluster to serve is a promise on the coordinator's changes, never a poll.
import { randomInt, randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import PQueue from 'p-queue';

import { ErrorCode, HearthError, isHearthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { EngineExitError, type EngineProcess, type GenerateHandlers, type GenerateResult } from './engine/engine-process.js';
import type { GenerateParams, PromptInput } from './engine/protocol.js';
import type { ResumeLog, ResumeTicket } from './resumes.js';
import type { CoordinatorEvents } from './snapshot.js';

/** How long a request caught by an engine loss waits for lost workers to return when the re-plan found too few. */
const RECOVERY_WAIT_MS = 15_000;
/** llama.cpp's seed for "choose one at random". */
const RANDOM_SEED = 0xffffffff;

/** What admission needs to know of the cluster's serving state. */
export interface ServingGate {
  /** The engine to run on now, or null while the cluster does not serve. */
  engine(): EngineProcess | null;
  /** Why a request must fail now rather than wait (`patientUntil`: it keeps waiting until then), or null to wait. */
  refusal(patientUntil: number): HearthError | null;
  /** Resolves at the coordinator's next change (state, re-plan, loss). */
  changed(): Promise<void>;
  /** What the last engine loss was put down to (awaits its diagnosis), or null. */
  lossReason(): Promise<LossReason> | null;
}

/** An engine loss as diagnosed: the whole sentence (for errors), and what happened alone (for the resume event). */
export interface LossReason {
  message: string;
  blame: string;
}

export interface AdmissionOptions {
  parallel: number;
  maxWaiting: number;
  /** How many engine losses (crashes, watchdog stops; not retirements for a re-plan) a request is resumed after before it fails. */
  maxResumes: number;
  /** How long a request may wait for the cluster in all: for a slot, and for each resume. */
  requestTimeoutMs: number;
}

export class Admission {
  readonly #queue: PQueue;
  readonly #log: Logger;
  readonly #gate: ServingGate;
  readonly #events: EventEmitter<CoordinatorEvents>;
  readonly #resumes: ResumeLog;
  readonly #options: AdmissionOptions;

  constructor(log: Logger, gate: ServingGate, events: EventEmitter<CoordinatorEvents>, resumes: ResumeLog, options: AdmissionOptions) {
    this.#log = log;
    this.#gate = gate;
    this.#events = events;
    this.#resumes = resumes;
    this.#queue = new PQueue({ concurrency: options.parallel });
    this.#options = options;
  }

  get inFlight(): number {
    return this.#queue.pending;
  }

  get waiting(): number {
    return this.#queue.size;
  }

  /** Drops the requests still waiting for a slot (shutdown). */
  clear(): void {
    this.#queue.clear();
  }

  /** Runs one generation through the queue and the engine, resumed after an engine loss. */
  async run(prompt: PromptInput, params: GenerateParams, options: { signal?: AbortSignal | undefined; handlers?: GenerateHandlers | undefined } = {}): Promise<GenerateResult> {
    const { maxWaiting, requestTimeoutMs } = this.#options;
    if (this.#queue.size >= maxWaiting) {
      throw new HearthError(ErrorCode.ResourceExhausted, `server busy: ${this.#queue.size} requests are waiting (limit ${maxWaiting}); retry later`);
    }
    // A resumed request goes on from the same random state: "any seed" becomes one, chosen here.
    if (params.sampling.seed === RANDOM_SEED) params = { ...params, sampling: { ...params.sampling, seed: randomInt(0, RANDOM_SEED) } };
    const signal = options.signal;
    const deadline = Date.now() + requestTimeoutMs;
    const queueSignal = AbortSignal.any([AbortSignal.timeout(requestTimeoutMs), ...(signal ? [signal] : [])]);
    const arrived = performance.now();
    let firstAt = 0;
    const handlers: GenerateHandlers = {
      ...options.handlers,
      onToken: (text, token, extra) => {
        if (token >= 0) {
          this.#events.emit('token');
          if (firstAt === 0) {
            firstAt = performance.now();
            this.#events.emit('first-token', (firstAt - arrived) / 1000);
          }
        }
        options.handlers?.onToken?.(text, token, extra);
      },
    };
    const task = this.#queue.add(async () => {
      const result = await this.#attempts(prompt, params, handlers, signal, deadline).catch((e: unknown) => {
        this.#events.emit('request-finished', { outcome: 'error', usage: null, decodeTokensPerSecond: null });
        throw e;
      });
      const seconds = firstAt > 0 ? (performance.now() - firstAt) / 1000 : 0;
      const decode = result.usage.completionTokens > 1 && seconds > 0 ? (result.usage.completionTokens - 1) / seconds : null;
      this.#events.emit('request-finished', { outcome: result.finishReason, usage: result.usage, decodeTokensPerSecond: decode });
      return result;
    }, { signal: queueSignal }) as Promise<GenerateResult>;
    try {
      return await task;
    } catch (e) {
      if (isHearthError(e) || !queueSignal.aborted) throw e;
      if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting for a slot');
      throw new HearthError(ErrorCode.DeadlineExceeded, `the request waited ${requestTimeoutMs / 1000} s for a slot, its time limit (--request-timeout); the cluster is overloaded`);
    }
  }

  async #attempts(prompt: PromptInput, params: GenerateParams, handlers: GenerateHandlers, signal: AbortSignal | undefined, deadline: number): Promise<GenerateResult> {
    /** The tokens the client has received: what a resume computes after the prompt. */
    const sent: number[] = [];
    let lastTokenAt = 0;
    let started = false;
    let patientUntil = 0;
    /** Set while the request waits to go on after a loss. */
    let caught: { what: string; ticket: ResumeTicket } | null = null;
    const goOn = () => {
      caught?.ticket.resumed();
      caught = null;
    };
    /** Engines lost under this request (crashed or stopped by the watchdog), which --max-resumes bounds; an engine retired for a re-plan does not count. */
    let faults = 0;
    for (let resumes = 0; ; resumes++) {
      let engine: EngineProcess;
      try {
        engine = await this.#whenServing(signal, patientUntil, deadline, caught?.what ?? null);
      } catch (e) {
        caught?.ticket.failed();
        throw e;
      }
      const id = randomUUID();
      const onAbort = () => engine.cancel(id);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        const result = await engine.generate(id, prompt, sent.length > 0 ? { ...params, resume: [...sent] } : params, {
          onStarted: (promptTokens, cachedTokens) => {
            if (started) return;
            started = true;
            handlers.onStarted?.(promptTokens, cachedTokens);
          },
          onToken: (text, token, extra) => {
            if (token >= 0) {
              sent.push(token);
              lastTokenAt = performance.now();
            }
            goOn();
            handlers.onToken?.(text, token, extra);
          },
        });
        goOn();
        return { ...result, resumed: resumes };
      } catch (e) {
        if (!(e instanceof EngineExitError)) {
          caught?.ticket.failed();
          throw e;
        }
        const reason = (await this.#gate.lossReason()) ?? { message: e.message, blame: e.message };
        const what = reason.message;
        const fail = (why: string) => {
          caught?.ticket.failed();
          return new HearthError(ErrorCode.Unavailable, `generation failed: ${what}${why}`, { cause: e });
        };
        if (signal?.aborted) throw fail('');
        const { maxResumes } = this.#options;
        if (e.exit.reason !== 'shutdown' && ++faults > maxResumes) {
          throw fail(maxResumes === 0 ? '' : ` (resumed after ${maxResumes} engine loss${maxResumes === 1 ? '' : 'es'} already, the most --max-resumes allows)`);
        }
        // The pause counts from the client's last token, or from now for a request that had none.
        caught ??= { what, ticket: this.#resumes.caught(e.exit, reason.blame, sent.length > 0 ? lastTokenAt : performance.now()) };
        this.#log.info({ resume: resumes + 1, sentTokens: sent.length, what }, 'a request caught by an engine loss waits for the re-plan to go on');
        // A worker whose rpc server was restarted is back within a second or two: a re-plan that
        // found too few workers is not the end of the wait.
        patientUntil = Date.now() + RECOVERY_WAIT_MS;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    }
  }
  #whenServing(signal: AbortSignal | undefined, patientUntil: number, deadline: number, lost: string | null): Promise<EngineProcess> {
    return whenServing(this.#gate, { signal, patientUntil, deadline, requestTimeoutMs: this.#options.requestTimeoutMs, lost, failed: 'generation failed', again: 'resumed' });
  }
}

/** What a wait for the engine knows of its request, and how its errors put a request that was caught by a loss. */
export interface ServingWait {
  signal: AbortSignal | undefined;
  /** Until then a request caught by an engine loss keeps waiting for its workers to return. */
  patientUntil: number;
  deadline: number;
  requestTimeoutMs: number;
  /** The loss that caught the request, or null. */
  lost: string | null;
  /** "generation failed", "the request failed": how an error of a caught request begins. */
  failed: string;
  /** "resumed", "sent again": what the caught request was waiting to be. */
  again: string;
}

/**
 * The engine to run on, once the cluster serves; fails fast when it cannot (before `patientUntil`, a
 * request caught by an engine loss keeps waiting for its workers to return), when the request's time
 * is up, or when the caller gives up. Generation (Admission) and pooled requests (embeddings.ts) wait alike.
 */
export async function whenServing(gate: ServingGate, w: ServingWait): Promise<EngineProcess> {
  const { signal, patientUntil, deadline, lost } = w;
  const failed = lost ? `${w.failed}: ${lost}; ` : '';
  for (;;) {
    if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting');
    const engine = gate.engine();
    if (engine) return engine;
    const refusal = gate.refusal(patientUntil);
    if (refusal) throw lost ? new HearthError(refusal.code, `${failed}it cannot be ${w.again}: ${refusal.message}`, { cause: refusal }) : refusal;
    if (Date.now() >= deadline) {
      const limit = `its time limit of ${w.requestTimeoutMs / 1000} s (--request-timeout)`;
      throw new HearthError(ErrorCode.DeadlineExceeded, lost ? `${failed}it was not ${w.again} within ${limit}` : `the cluster did not serve within the request's ${limit}`);
    }
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    await Promise.race([
      gate.changed(),
      new Promise<void>((resolve) => {
        onAbort = () => resolve();
        signal?.addEventListener('abort', onAbort, { once: true });
        // Patience and the request's time end on their own: look again then.
        const next = Math.min(deadline, patientUntil > Date.now() ? patientUntil : Infinity);
        timer = setTimeout(resolve, Math.max(0, next - Date.now()));
      }),
    ]);
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
