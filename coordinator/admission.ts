// Admission: a bounded queue in front of the engine, and what a request does when its engine is lost.
// A request that had produced nothing yet waits for the re-plan and runs again (within its attempts);
// one that had produced output ends with an error naming what failed. Waiting for the cluster to
// serve is a promise on the coordinator's changes, never a poll.
import { randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import PQueue from 'p-queue';

import { ErrorCode, HearthError, isHearthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { EngineExitError, type EngineProcess, type GenerateHandlers, type GenerateResult } from './engine/engine-process.js';
import type { GenerateParams, PromptInput } from './engine/protocol.js';
import type { CoordinatorEvents } from './snapshot.js';

/** How often a request that produced nothing may be carried over an engine loss before it fails. */
const MAX_ATTEMPTS = 3;
/** How long such a request waits for lost workers to return when the re-plan found too few. */
const RECOVERY_WAIT_MS = 15_000;

/** What admission needs to know of the cluster's serving state. */
export interface ServingGate {
  /** The engine to run on now, or null while the cluster does not serve. */
  engine(): EngineProcess | null;
  /** Why a request must fail now rather than wait (`patientUntil`: it keeps waiting until then), or null to wait. */
  refusal(patientUntil: number): HearthError | null;
  /** Resolves at the coordinator's next change (state, re-plan, loss). */
  changed(): Promise<void>;
  /** What the last engine loss was put down to (awaits its diagnosis), or null. */
  lossReason(): Promise<string> | null;
}

export class Admission {
  readonly #queue: PQueue;
  readonly #log: Logger;
  readonly #gate: ServingGate;
  readonly #events: EventEmitter<CoordinatorEvents>;
  readonly #maxWaiting: number;

  constructor(log: Logger, gate: ServingGate, events: EventEmitter<CoordinatorEvents>, options: { parallel: number; maxWaiting: number }) {
    this.#log = log;
    this.#gate = gate;
    this.#events = events;
    this.#queue = new PQueue({ concurrency: options.parallel });
    this.#maxWaiting = options.maxWaiting;
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

  /** Runs one generation through the queue and the engine, carried over an engine loss while it has produced nothing. */
  async run(prompt: PromptInput, params: GenerateParams, options: { signal?: AbortSignal | undefined; handlers?: GenerateHandlers | undefined } = {}): Promise<GenerateResult> {
    if (this.#queue.size >= this.#maxWaiting) {
      throw new HearthError(ErrorCode.ResourceExhausted, `server busy: ${this.#queue.size} requests are waiting (limit ${this.#maxWaiting}); retry later`);
    }
    const signal = options.signal;
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
      const result = await this.#attempts(prompt, params, handlers, signal).catch((e: unknown) => {
        this.#events.emit('request-finished', { outcome: 'error', usage: null, decodeTokensPerSecond: null });
        throw e;
      });
      const seconds = firstAt > 0 ? (performance.now() - firstAt) / 1000 : 0;
      const decode = result.usage.completionTokens > 1 && seconds > 0 ? (result.usage.completionTokens - 1) / seconds : null;
      this.#events.emit('request-finished', { outcome: result.finishReason, usage: result.usage, decodeTokensPerSecond: decode });
      return result;
    }, signal ? { signal } : {}) as Promise<GenerateResult>;
    try {
      return await task;
    } catch (e) {
      if (signal?.aborted && !isHearthError(e)) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting for a slot');
      throw e;
    }
  }

  async #attempts(prompt: PromptInput, params: GenerateParams, handlers: GenerateHandlers, signal: AbortSignal | undefined): Promise<GenerateResult> {
    let patientUntil = 0;
    for (let attempt = 1; ; attempt++) {
      const engine = await this.#whenServing(signal, patientUntil);
      const id = randomUUID();
      const onAbort = () => engine.cancel(id);
      signal?.addEventListener('abort', onAbort, { once: true });
      let produced = false;
      try {
        return await engine.generate(id, prompt, params, {
          ...handlers,
          onToken: (text, token, extra) => {
            produced = true;
            handlers.onToken?.(text, token, extra);
          },
        });
      } catch (e) {
        if (!(e instanceof EngineExitError)) throw e;
        const what = (await this.#gate.lossReason()) ?? e.message;
        // Nothing reached the client yet (queued, or still in its prompt): the loss costs it time,
        // not an error. It waits for the re-plan and runs again, within its attempts.
        if (produced || signal?.aborted || attempt >= MAX_ATTEMPTS) throw new HearthError(ErrorCode.Unavailable, `generation failed: ${what}`, { cause: e });
        this.#log.info({ attempt, what }, 'a request that had produced no output waits for the re-plan');
        // A worker whose rpc server was restarted is back within a second or two: a re-plan that
        // found too few workers is not the end of the wait.
        patientUntil = Date.now() + RECOVERY_WAIT_MS;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    }
  }

  /**
   * The engine to run on, once the cluster serves; fails fast when it cannot (before `patientUntil`, a
   * request carried over an engine loss keeps waiting for its workers to return), or when the caller gives up.
   */
  async #whenServing(signal: AbortSignal | undefined, patientUntil: number): Promise<EngineProcess> {
    for (;;) {
      if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting');
      const engine = this.#gate.engine();
      if (engine) return engine;
      const refusal = this.#gate.refusal(patientUntil);
      if (refusal) throw refusal;
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      await Promise.race([
        this.#gate.changed(),
        new Promise<void>((resolve) => {
          onAbort = () => resolve();
          signal?.addEventListener('abort', onAbort, { once: true });
          // Patience ends on its own: look again then.
          if (patientUntil > Date.now()) timer = setTimeout(resolve, patientUntil - Date.now());
        }),
      ]);
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }
}
