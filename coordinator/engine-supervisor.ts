// The engine child process and its life: start it on a plan and load, watch it, retire it (drain, then
// shut down), and when it dies on its own, say so once and find which worker of its plan failed.
// Everything here holds the engine it works on in a local: the current engine may change under any
// await, and a step that finds its engine replaced stops instead of acting on another's.
import { EventEmitter } from 'node:events';

import { isHearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { probeRpcServer } from '../native/rpc-probe.js';
import { EngineExitError, EngineProcess, type EngineExitReason } from './engine/engine-process.js';
import type { CoordinatorConfig } from './config.js';
import type { EngineLoadSpec, LoadedInfo } from './engine/protocol.js';
import type { WorkerLinks } from './links.js';
import type { Plan } from './planner/types.js';
import type { WorkerRecord, WorkerRegistry } from './registry.js';
import type { ModelKind } from './served-models.js';

/** An engine that died on its own (not shut down), or whose load failed: the plan it ran and how it ended. */
export interface EngineLoss {
  plan: Plan;
  reason: Exclude<EngineExitReason, 'shutdown'> | 'load-failed';
  /** The engine's RPC endpoints (the plan's and the draft model's). */
  endpoints: string[];
  /** Why the load failed, for 'load-failed'. */
  detail?: string;
}

/**
 * What the engine is told to load for `plan`; `draftEndpoint`: the worker the draft model runs on, or null
 * for this machine; `kind`: what the model is for (an embedding or reranker model gets an embeddings
 * context, and no draft).
 */
export function engineLoadSpec(c: CoordinatorConfig, plan: Plan, draftEndpoint: string | null, kind: ModelKind): EngineLoadSpec {
  const embeddings = kind !== 'chat';
  return {
    modelPath: c.model!, rpcEndpoints: plan.rpcEndpoints, rpcDevices: plan.rpcDevices, splitMode: plan.split, tensorSplit: plan.tensorSplit, expertOverrides: plan.expertOverrides,
    nGpuLayers: plan.nGpuLayers, ctxSize: c.ctxSize, parallel: c.parallel, groups: plan.groups, nBatch: c.batchSize, nUbatch: c.ubatchSize,
    typeK: c.cacheTypeK, typeV: c.cacheTypeV, threads: c.threads,
    speculation: !embeddings && c.speculation ? { ...c.speculation, draftEndpoint } : null,
    chatTemplate: c.chatTemplate,
    embeddings,
  };
}

/** How an engine loss is put in words. */
export function lossCause(loss: Pick<EngineLoss, 'reason' | 'detail'>): string {
  switch (loss.reason) {
    case 'watchdog':
      return 'the engine made no progress within the watchdog time';
    case 'crash':
      return 'the engine process ended';
    case 'load-failed':
      return `the model load failed (${loss.detail ?? 'no reason given'})`;
  }
}

/** What a diagnosis found: the workers to blame, and one sentence for people. */
export interface Diagnosis {
  failed: { worker: WorkerRecord | undefined; what: string }[];
  /** What happened, in one sentence, with what the coordinator does about it. */
  what: string;
  /** What happened alone: the workers that failed, or why none could be blamed. */
  blame: string;
}

export type StartOutcome = { kind: 'loaded'; info: LoadedInfo } | { kind: 'lost' } | { kind: 'failed'; loss: EngineLoss };

export interface SupervisorEvents {
  progress: [number];
  lost: [EngineLoss];
}

export class EngineSupervisor extends EventEmitter<SupervisorEvents> {
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #links: WorkerLinks;
  readonly #watchdogMs: number;
  #engine: EngineProcess | null = null;
  #plan: Plan | null = null;
  #endpoints: string[] = [];
  /** Each engine endpoint's rpc server pid when the engine connected: a different pid later means it restarted. */
  #pidsAtLoad = new Map<string, number>();
  #closed = false;
  /**
   * An engine process started ahead, idle until the next load: after a loss, the next engine is ready
   * to load at once instead of starting Node and the addon first (about a second of every resume's pause).
   */
  #spare: EngineProcess | null = null;
  /** Engines lost (or loads failed) since the last load that served. */
  #losses = 0;

  constructor(log: Logger, registry: WorkerRegistry, links: WorkerLinks, options: { watchdogMs: number }) {
    super();
    this.#log = log;
    this.#registry = registry;
    this.#links = links;
    this.#watchdogMs = options.watchdogMs;
  }

  /** The engine while it is alive (loading or loaded), else null. */
  get engine(): EngineProcess | null {
    return this.#engine?.alive ? this.#engine : null;
  }

  /** The plan of the live engine, or null. */
  get plan(): Plan | null {
    return this.engine ? this.#plan : null;
  }

  /** How long to wait before the next engine after a loss: an engine that keeps dying (a cause no worker can be blamed for) must not spin. */
  get backoffMs(): number {
    return this.#losses <= 1 ? 0 : Math.min(30_000, 1000 * 2 ** (this.#losses - 2));
  }

  /** RPC endpoints the live engine holds connections to: their servers serve one client, so never probe them. */
  busyEndpoints(): Set<string> {
    return new Set(this.engine ? this.#endpoints : []);
  }

  /** Starts an engine for `plan` and loads it. The previous engine must have been retired. */
  async start(plan: Plan, spec: EngineLoadSpec): Promise<StartOutcome> {
    if (this.#closed) return { kind: 'lost' };
    const engine = this.#takeSpare() ?? new EngineProcess(this.#log, { watchdogMs: this.#watchdogMs });
    const endpoints = [...new Set([...spec.rpcEndpoints, ...(spec.speculation?.draftEndpoint ? [spec.speculation.draftEndpoint] : [])])];
    this.#engine = engine;
    this.#plan = plan;
    this.#endpoints = endpoints;
    let shown = -1;
    engine.on('progress', (p) => {
      if (Math.floor(p * 10) > shown) {
        shown = Math.floor(p * 10);
        this.#log.info({ progress: Math.round(p * 100) }, `loading model: ${Math.round(p * 100)}%`);
      }
      this.emit('progress', p);
    });
    engine.on('exit', (exit) => {
      if (engine !== this.#engine || exit.reason === 'shutdown') return;
      this.#engine = null;
      this.#losses++;
      this.emit('lost', { plan, reason: exit.reason === 'watchdog' ? 'watchdog' : 'crash', endpoints });
    });
    this.#pidsAtLoad = new Map(await Promise.all(endpoints.map(async (e): Promise<[string, number]> => [e, await this.#rpcPid(e)])));
    const sentBefore = new Map(endpoints.map((e) => [e, this.#links.bytesSent(e)]));
    try {
      const info = await engine.load(spec);
      if (this.#links.secure) {
        // Counted in the relays: the plaintext each worker's link carried during this load.
        info.bytesSent = Object.fromEntries([...sentBefore].map(([e, before]) => [this.#links.remoteOf(e), (this.#links.bytesSent(e) ?? 0) - (before ?? 0)]));
      }
      this.#losses = 0;
      this.#startSpare();
      return { kind: 'loaded', info };
    } catch (e) {
      if (e instanceof EngineExitError) return { kind: 'lost' };
      this.#log.error({ err: messageOf(e) }, 'model load failed');
      await engine.shutdown();
      this.#losses++;
      return { kind: 'failed', loss: { plan, reason: 'load-failed', endpoints, detail: messageOf(e) } };
    }
  }

  /** Lets the live engine finish its requests (at most `graceMs`), then shuts it down. */
  async retire(graceMs: number): Promise<void> {
    const engine = this.#engine;
    if (!engine) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([engine.idle(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    await engine.shutdown();
    if (this.#engine === engine) this.#engine = null;
  }

  /** Retires the engine and starts no other. */
  async close(graceMs: number): Promise<void> {
    this.#closed = true;
    const spare = this.#takeSpare();
    await Promise.all([this.retire(graceMs), spare?.shutdown()]);
  }

  #startSpare(): void {
    if (this.#closed || this.#spare) return;
    const spare = new EngineProcess(this.#log.child({ spare: true }), { watchdogMs: this.#watchdogMs });
    this.#spare = spare;
    void spare.exited.then((exit) => {
      if (this.#spare !== spare) return;
      this.#spare = null;
      if (exit.reason !== 'shutdown') this.#log.warn({ code: exit.code, signal: exit.signal }, 'the spare engine process ended while idle; the next load starts a new one');
    });
  }

  /** The spare engine process if it is alive (it is then no longer the spare), else null. */
  #takeSpare(): EngineProcess | null {
    const spare = this.#spare;
    this.#spare = null;
    return spare?.alive ? spare : null;
  }

  /** Stops the live engine at once if it holds a connection to `endpoint` (a worker of its plan is gone). */
  killIfUses(endpoint: string, why: string): void {
    const engine = this.engine;
    if (!engine || !this.#endpoints.includes(endpoint)) return;
    this.#log.warn({ endpoint: this.#links.remoteOf(endpoint) }, `${why}; stopping the engine`);
    engine.kill('crash');
  }

  /** Finds which workers of a lost engine failed and marks them, in one sentence. */
  async diagnose(loss: EngineLoss): Promise<Diagnosis> {
    const verdicts = await Promise.all(loss.endpoints.map((endpoint) => this.#verdict(endpoint)));
    const failed = verdicts.filter((v): v is NonNullable<typeof v> => v !== null);
    for (const f of failed) if (f.worker) this.#registry.markSuspect(f.worker.control, f.what);
    const cause = lossCause(loss);
    const blame = failed.length > 0 ? failed.map((f) => f.what).join('; ') : `no worker could be blamed (${cause})`;
    this.#log.error({ reason: loss.reason, failed: failed.map((f) => f.what) }, `engine lost: ${blame}`);
    return { failed, what: `${blame}; ${cause}; re-planning with the workers still healthy`, blame };
  }

  async #verdict(endpoint: string): Promise<Diagnosis['failed'][number] | null> {
    const worker = this.#registry.byEndpoint(endpoint);
    // A worker leaving on purpose is released only once no engine runs on it, so its going is not what
    // ended an engine (one that went before its release has an event of its own).
    if (worker?.state === 'leaving' || worker?.state === 'left') return null;
    const where = this.#links.remoteOf(endpoint);
    const name = worker ? `worker ${worker.name} (${where})` : `worker ${where}`;
    if (worker) {
      try {
        const h = await this.#registry.health(worker.control);
        const before = this.#pidsAtLoad.get(endpoint) ?? 0;
        if (before !== 0 && h.rpc_server_pid !== before) return { worker, what: `${name} lost its rpc server (it exited; the worker restarted it)` };
        if (!h.ready) return { worker, what: `${name} lost its rpc server (worker state ${h.state})` };
      } catch (e) {
        return { worker, what: `${name} is unreachable (${messageOf(e)})` };
      }
    }
    try {
      await probeRpcServer(endpoint, { timeoutMs: 1500 });
      return null;
    } catch (e) {
      return { worker, what: isHearthError(e) && /did not answer/.test(e.message) ? `${name} stopped answering` : `${name} is unreachable` };
    }
  }

  async #rpcPid(endpoint: string): Promise<number> {
    const w = this.#registry.byEndpoint(endpoint);
    return w ? this.#registry.health(w.control).then((h) => h.rpc_server_pid, () => 0) : 0;
  }
}

/**
 * Two plans split the model the same way: the same layers, and the same blocks' experts, on the same
 * devices; or in tensor mode the same devices with shares within SHARE_TOLERANCE (shares follow free
 * memory and measured speeds, which move a little between any two readings: not worth a reload).
 */
export function samePlacement(a: Plan, b: Plan): boolean {
  if (a.split !== b.split) return false;
  const key = (p: Plan) =>
    p.devices.map((d) => `${d.key}:${d.firstLayer}+${d.layers}${d.expertLayers.length > 0 ? `+experts ${d.expertLayers.join(',')}` : ''}`).join('|');
  if (key(a) !== key(b)) return false;
  return a.devices.every((d, i) => Math.abs((d.share ?? 0) - (b.devices[i]!.share ?? 0)) < SHARE_TOLERANCE);
}
const SHARE_TOLERANCE = 0.01;
