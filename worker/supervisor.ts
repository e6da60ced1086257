// Keeps one ggml-rpc-server running: restarts it with backoff when it exits, and stops it for good on
// request. Pure decisions (backoff) are separate from the process handling.
import { EventEmitter } from 'node:events';

import type { Logger } from '../common/logger.js';
import { messageOf } from '../common/errors.js';
import { RpcServerProcess, type RpcServerOptions } from './rpc-server-process.js';
import type { MemoryReport } from './server-devices.js';
import type { WorkerState } from '../link/worker-wire.js';

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** A server that ran this long without exiting resets the backoff. */
  stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = Object.freeze({ initialMs: 250, maxMs: 10_000, stableMs: 30_000 });

/** The delay before restart number `attempt` (1-based) of a run of failures. */
export function backoffDelay(policy: BackoffPolicy, attempt: number): number {
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt - 1));
}

export interface SupervisorEvents {
  state: [WorkerState];
  /** The serving process's memory figures for its devices, every few seconds. */
  memory: [MemoryReport];
}

export class RpcServerSupervisor extends EventEmitter<SupervisorEvents> {
  readonly #options: RpcServerOptions;
  readonly #log: Logger;
  readonly #policy: BackoffPolicy;
  #state: WorkerState = 'STARTING';
  #server: RpcServerProcess | null = null;
  #restarts = 0;
  #failuresInRow = 0;
  #stopping = false;
  #timer: NodeJS.Timeout | null = null;

  constructor(options: RpcServerOptions, log: Logger, policy: BackoffPolicy = DEFAULT_BACKOFF) {
    super();
    this.#options = options;
    this.#log = log;
    this.#policy = policy;
  }

  get state(): WorkerState {
    return this.#state;
  }

  get restarts(): number {
    return this.#restarts;
  }

  get pid(): number | null {
    return this.#server?.running ? this.#server.pid : null;
  }

  get endpoint(): string | null {
    return this.#server?.endpoint ?? null;
  }

  /** Starts the server the first time; rejects (and gives up) when it cannot start at all. */
  async start(): Promise<void> {
    this.#server = await this.#spawn();
    this.#setState('READY');
    this.#watch(this.#server);
  }

  /** Stops the server and any pending restart. Idempotent. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#setState('STOPPING');
    if (this.#timer) clearTimeout(this.#timer);
    await this.#server?.stop();
  }

  async #spawn(): Promise<RpcServerProcess> {
    return RpcServerProcess.start(this.#options, {
      // Connection churn is routine (every probe connects); the rest of its output is worth seeing.
      onLine: (stream, line) =>
        /client connection (accepted|closed)|accepted client connection/i.test(line)
          ? this.#log.debug({ stream, rpcServer: true }, line)
          : this.#log.info({ stream, rpcServer: true }, line),
      onMemory: (report) => this.emit('memory', report),
    });
  }

  #watch(server: RpcServerProcess): void {
    const startedAt = Date.now();
    void server.exited.then((exit) => {
      if (this.#stopping) return;
      if (Date.now() - startedAt >= this.#policy.stableMs) this.#failuresInRow = 0;
      this.#failuresInRow++;
      const delay = backoffDelay(this.#policy, this.#failuresInRow);
      this.#log.warn({ exit, pid: server.pid, delayMs: delay, restarts: this.#restarts }, `ggml-rpc-server exited (${exit.signal ?? `code ${exit.code}`}); restarting in ${delay} ms`);
      this.#setState('RESTARTING');
      this.#scheduleRestart(delay);
    });
  }

  #scheduleRestart(delay: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#stopping) return;
      this.#restarts++;
      this.#spawn().then(
        (server) => {
          if (this.#stopping) {
            void server.stop();
            return;
          }
          this.#server = server;
          this.#log.info({ pid: server.pid, restarts: this.#restarts }, 'ggml-rpc-server restarted and ready');
          this.#setState('READY');
          this.#watch(server);
        },
        (e) => {
          if (this.#stopping) return;
          this.#failuresInRow++;
          const next = backoffDelay(this.#policy, this.#failuresInRow);
          this.#log.error({ err: messageOf(e), delayMs: next }, `ggml-rpc-server failed to restart; trying again in ${next} ms`);
          this.#scheduleRestart(next);
        },
      );
    }, delay);
  }

  #setState(state: WorkerState): void {
    if (this.#state === state) return;
    if (this.#state === 'STOPPING') return;
    this.#state = state;
    this.emit('state', state);
  }
}
