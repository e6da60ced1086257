// The coordinator's handle on its engine child process: load, generate, cancel, and a watchdog.
// llama.cpp's RPC client has no timeouts, so a hung worker would block the engine forever: when work
// is pending and the engine shows no progress for `watchdogMs`, it is killed.
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { extname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type {
  ChatDelta, ChatReply, EmbedInput, EmbedParams, EngineLoadSpec, FinishReason, FromEngine, GenerateParams, LoadedInfo, PooledResult, PromptInput, ToEngine, TokenLogprob, Usage,
} from './protocol.js';

export type EngineExitReason = 'crash' | 'watchdog' | 'shutdown';

export interface EngineExit {
  reason: EngineExitReason;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The engine's last lines of output (llama.cpp's abort message is usually among them). */
  tail: string[];
}

/** Thrown into every pending call when the engine process ends. */
export class EngineExitError extends HearthError {
  readonly exit: EngineExit;
  constructor(exit: EngineExit) {
    super(
      ErrorCode.Unavailable,
      exit.reason === 'watchdog'
        ? 'the engine made no progress within the watchdog time and was stopped (a worker stopped answering)'
        : exit.reason === 'shutdown'
          ? 'the engine was shut down (for a re-plan or a stop) before this request finished'
          : `the engine process ended (${exit.signal ?? `code ${exit.code}`})`,
    );
    this.exit = exit;
  }
}

export interface GenerateHandlers {
  onStarted?: (promptTokens: number, cachedTokens: number) => void;
  /** `token` is -1 for text released at the end (held back for a possible stop string). */
  onToken?: (text: string, token: number, extra: TokenExtra) => void;
}

/** A chat reply's parsed change, and the token's log-probability when asked for. */
export interface TokenExtra {
  delta?: ChatDelta | undefined;
  logprob?: TokenLogprob | undefined;
}

export interface GenerateResult {
  finishReason: FinishReason;
  usage: Usage;
  text: string;
  /** A chat reply's content, reasoning and tool calls, as the template's format reads the text. */
  reply?: ChatReply | undefined;
  /** How often admission resumed the request after an engine loss (absent from an engine's own answer). */
  resumed?: number;
}

interface PendingRequest {
  handlers: GenerateHandlers;
  resolve: (r: GenerateResult) => void;
  /** An embeddings engine's answer (embed, rerank). */
  resolvePooled?: (r: PooledResult) => void;
  reject: (e: Error) => void;
}

export interface EngineProcessEvents {
  progress: [number];
  exit: [EngineExit];
}

function engineEntry(): string {
  const here = fileURLToPath(import.meta.url);
  return fileURLToPath(new URL(`./engine-main${extname(here)}`, import.meta.url));
}

export class EngineProcess extends EventEmitter<EngineProcessEvents> {
  readonly #child: ChildProcess;
  readonly #log: Logger;
  readonly #watchdogMs: number;
  readonly #pending = new Map<string, PendingRequest>();
  readonly #tail: string[] = [];
  readonly #idleWaiters: (() => void)[] = [];
  #load: { resolve: (i: LoadedInfo) => void; reject: (e: Error) => void } | null = null;
  #ready: Promise<void>;
  #lastSign = Date.now();
  #exit: EngineExit | null = null;
  #killReason: EngineExitReason | null = null;
  #watchdog: NodeJS.Timeout;
  readonly exited: Promise<EngineExit>;

  constructor(log: Logger, options: { watchdogMs: number }) {
    super();
    this.#log = log;
    this.#watchdogMs = options.watchdogMs;
    this.#child = fork(engineEntry(), [], {
      execArgv: process.execArgv,
      // A worker lost mid-decode makes llama.cpp's RPC client abort the engine, and ggml's abort handler
      // would first attach gdb for a backtrace (2.5 s here), all of it a pause for the requests waiting
      // to resume. HEARTH_ENGINE_BACKTRACE=1 keeps it, for debugging a crash of the engine itself.
      env: process.env.HEARTH_ENGINE_BACKTRACE === '1' ? process.env : { GGML_NO_BACKTRACE: '1', ...process.env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      createInterface({ input: this.#child[stream]! }).on('line', (line) => {
        this.#tail.push(line);
        if (this.#tail.length > 30) this.#tail.shift();
        this.#log.info({ stream, engine: true }, line);
      });
    }
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    this.#ready = new Promise((resolve, reject) => {
      readyResolve = resolve;
      readyReject = reject;
    });
    this.#ready.catch(() => undefined);
    // A failed spawn or kill; the exit (if any) is what the coordinator acts on.
    this.#child.on('error', (e) => this.#log.warn({ err: e.message }, 'engine process error'));
    this.#child.on('message', (m) => {
      const message = m as FromEngine;
      if (message.type === 'ready') readyResolve();
      this.#onMessage(message);
    });
    this.exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        // Output may still be draining; give it a moment so the tail holds llama.cpp's last words.
        setTimeout(() => {
          const exit: EngineExit = { reason: this.#killReason ?? 'crash', code, signal, tail: [...this.#tail] };
          this.#exit = exit;
          clearInterval(this.#watchdog);
          const error = new EngineExitError(exit);
          readyReject(error);
          this.#load?.reject(error);
          this.#load = null;
          for (const p of this.#pending.values()) p.reject(error);
          this.#pending.clear();
          this.#settleIdle();
          this.emit('exit', exit);
          resolve(exit);
        }, 50);
      });
    });
    this.#watchdog = setInterval(() => this.#checkWatchdog(), Math.max(100, Math.floor(this.#watchdogMs / 5)));
    this.#watchdog.unref();
  }

  get pid(): number | null {
    return this.#child.pid ?? null;
  }

  get alive(): boolean {
    return this.#exit === null;
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  /** Resolves once no request is in flight (at once when none is), or when the engine has ended. */
  idle(): Promise<void> {
    if (this.#pending.size === 0 || this.#exit) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #settleIdle(): void {
    if (this.#pending.size === 0) this.#idleWaiters.splice(0).forEach((w) => w());
  }

  async load(spec: EngineLoadSpec): Promise<LoadedInfo> {
    await this.#ready;
    if (this.#load) throw new HearthError(ErrorCode.FailedPrecondition, 'a load is already running');
    return new Promise<LoadedInfo>((resolve, reject) => {
      this.#load = { resolve, reject };
      this.#lastSign = Date.now();
      this.#send({ type: 'load', spec });
    });
  }

  generate(id: string, prompt: PromptInput, params: GenerateParams, handlers: GenerateHandlers = {}): Promise<GenerateResult> {
    if (this.#exit) return Promise.reject(new EngineExitError(this.#exit));
    return new Promise<GenerateResult>((resolve, reject) => {
      if (this.#pending.size === 0) this.#lastSign = Date.now();
      this.#pending.set(id, { handlers, resolve, reject });
      this.#send({ type: 'generate', id, prompt, params });
    });
  }

  /** An embedding model's vectors for the inputs (or, with `rerank`, a reranker's score per document). */
  embed(id: string, inputs: EmbedInput[], params: EmbedParams): Promise<PooledResult & { kind: 'embed' }> {
    return this.#pooled({ type: 'embed', id, inputs, params }) as Promise<PooledResult & { kind: 'embed' }>;
  }

  rerank(id: string, query: string, documents: string[]): Promise<PooledResult & { kind: 'rerank' }> {
    return this.#pooled({ type: 'rerank', id, query, documents }) as Promise<PooledResult & { kind: 'rerank' }>;
  }

  #pooled(message: ToEngine & { id: string }): Promise<PooledResult> {
    if (this.#exit) return Promise.reject(new EngineExitError(this.#exit));
    return new Promise<PooledResult>((resolve, reject) => {
      if (this.#pending.size === 0) this.#lastSign = Date.now();
      const mismatch = () => reject(new HearthError(ErrorCode.Internal, `the engine answered ${message.type} request ${message.id} with generated text`));
      this.#pending.set(message.id, { handlers: {}, resolve: mismatch, resolvePooled: resolve, reject });
      this.#send(message);
    });
  }

  cancel(id: string): void {
    if (this.#pending.has(id)) this.#send({ type: 'cancel', id });
  }

  /** Asks the engine to exit, and kills it if it does not within `graceMs`. */
  async shutdown(graceMs = 2000): Promise<EngineExit> {
    if (this.#exit) return this.#exit;
    this.#killReason ??= 'shutdown';
    this.#send({ type: 'shutdown' });
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(reason: EngineExitReason): void {
    if (this.#exit) return;
    this.#killReason ??= reason;
    this.#child.kill('SIGKILL');
  }

  #send(message: ToEngine): void {
    // An engine being killed may still look connected: the write then fails (EPIPE), which without a
    // callback would be an 'error' event that ends the coordinator. Its exit answers every pending call.
    if (this.#child.connected) {
      this.#child.send(message, (e) => {
        if (e) this.#log.debug({ err: e.message, type: message.type }, 'a message to the engine was not delivered (it is exiting)');
      });
    }
  }

  #checkWatchdog(): void {
    const busy = this.#load !== null || this.#pending.size > 0;
    if (!busy || this.#exit) return;
    const idle = Date.now() - this.#lastSign;
    if (idle > this.#watchdogMs) {
      this.#log.error({ idleMs: idle, watchdogMs: this.#watchdogMs, inFlight: this.#pending.size, loading: this.#load !== null }, 'engine watchdog: no progress; killing the engine');
      this.kill('watchdog');
    }
  }

  #onMessage(m: FromEngine): void {
    if (m.type !== 'log') this.#lastSign = Date.now();
    switch (m.type) {
      case 'ready':
        return;
      case 'progress':
        this.emit('progress', m.value);
        return;
      case 'loaded':
        this.#load?.resolve(m.info);
        this.#load = null;
        return;
      case 'load-failed':
        this.#load?.reject(new HearthError(m.code as ErrorCode, m.message));
        this.#load = null;
        return;
      case 'tick':
        return;
      case 'started':
        this.#pending.get(m.id)?.handlers.onStarted?.(m.promptTokens, m.cachedTokens);
        return;
      case 'token':
        this.#pending.get(m.id)?.handlers.onToken?.(m.text, m.token, { delta: m.delta, logprob: m.logprob });
        return;
      case 'done': {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        p?.resolve({ finishReason: m.finishReason, usage: m.usage, text: m.text, reply: m.reply });
        this.#settleIdle();
        return;
      }
      case 'pooled': {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        if (p?.resolvePooled) p.resolvePooled(m.result);
        else p?.reject(new HearthError(ErrorCode.Internal, `the engine answered generation request ${m.id} with pooled outputs`));
        this.#settleIdle();
        return;
      }
      case 'request-error': {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        p?.reject(new HearthError(m.code as ErrorCode, m.message));
        this.#settleIdle();
        return;
      }
      case 'log':
        this.#log[m.level]({ native: true, engine: true }, m.msg);
        return;
    }
  }
}
