// The coordinator's core: it turns admitted workers into a plan, runs the engine process on it, and
// serves generation through a bounded admission queue. When the engine dies (a worker vanished and
// llama.cpp aborted, or the watchdog stopped a hung one), in-flight requests end with an error naming
// the worker, and the coordinator re-plans with the workers still healthy.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';
import { performance } from 'node:perf_hooks';
import PQueue from 'p-queue';

import { ErrorCode, HearthError, isHearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { modelContentId } from '../models/content-id.js';
import { readModelFacts, type ModelFacts } from '../models/gguf-info.js';
import { probeRpcServer } from '../native/rpc-probe.js';
import type { RpcVersion } from '../native/rpc-protocol.js';
import { hostMemory } from '../worker/host-memory.js';
import type { CoordinatorConfig } from './config.js';
import type { CoordinatorMetrics } from './metrics.js';
import type { Discovery } from './discovery/discovery.js';
import { EngineExitError, EngineProcess, type GenerateHandlers, type GenerateResult } from './engine/engine-process.js';
import type { EngineLoadSpec, LoadedInfo, PromptInput } from './engine/protocol.js';
import { checkPrompt, resolveParams, type RequestSettings } from './params.js';
import { kvLayerBytes } from './planner/kv.js';
import { computeBufferBytes, logitsBufferBytes, plan as makePlan } from './planner/planner.js';
import type { CandidateDevice, PlacementObjective, Plan, PlanInput, PlanResult } from './planner/types.js';
import { calibrateDevices, calibrationTypeOf, type CalibrationType, type DeviceSpeed } from '../worker/calibration.js';
import { describeDrift, speedDrift } from './drift.js';
import { minRtts } from './engine/tcp-bytes.js';
import { OpenLinks, SecureLinks, type WorkerLinks } from './links.js';
import { WorkerRegistry, type WorkerRecord } from './registry.js';

/** How often the coordinator compares measured speeds with the ones its plan used. */
const DRIFT_CHECK_MS = 2000;

export type CoordinatorState = 'starting' | 'planning' | 'loading' | 'serving' | 'draining' | 'degraded' | 'stopping';

export interface CoordinatorEvents {
  state: [CoordinatorState, string];
}

/** Events kept for the dashboard and `hearth status`. */
const MAX_EVENTS = 200;
/** Serving figures: one sample this often, for the last five minutes. */
const HISTORY_EVERY_MS = 2000;
const HISTORY_SAMPLES = (5 * 60 * 1000) / HISTORY_EVERY_MS;

/** Something that happened, for people to read: workers, state changes (re-plans, loads), the engine. */
export interface CoordinatorEvent {
  time: string;
  kind: 'worker' | 'state' | 'load';
  message: string;
}

/** The serving figures at one moment: generated tokens/s over the last interval, its mean time to first token. */
export interface ServingSample {
  t: number;
  tokensPerSecond: number;
  ttftMs: number;
  inFlight: number;
  waiting: number;
}

export interface GenerationRequest {
  prompt: PromptInput;
  settings: RequestSettings;
}

export interface LoadRecord {
  progress: number;
  seconds: number;
  phases: LoadedInfo['phases'] | null;
  bytesSent: Record<string, number> | null;
  loads: number;
  /** Contexts the engine decodes in (pipelined decode); 0 before a load. */
  groups: number;
}

/** Candidate devices for the planner: the local host first (llama.cpp puts first layers there), then workers newest first. */
/**
 * `weights`: the measured type closest to the model's weights; a device's speed for it, or its F16
 * speed when it reports no figure per type (an older worker).
 */
export function candidateDevices(
  workers: readonly WorkerRecord[],
  local: { enabled: boolean; freeBytes: number; totalBytes: number; speeds?: DeviceSpeed | null },
  weights: CalibrationType = 'f16',
): CandidateDevice[] {
  const speedOf = (f16: number, byType: Partial<Record<string, number>> | undefined) => {
    const v = byType?.[weights] ?? f16;
    return v > 0 ? v : null;
  };
  const out: CandidateDevice[] = [];
  if (local.enabled) {
    out.push({
      key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null,
      freeBytes: local.freeBytes, totalBytes: local.totalBytes, bytesPerSecond: local.speeds ? speedOf(local.speeds.bytesPerSecond, local.speeds.byType) : null,
    });
  }
  for (const w of workers) {
    if (!w.info || !w.rpcEndpoint) continue;
    for (const [serverIndex, d] of w.info.devices.entries()) {
      out.push({
        key: `${w.id}/${d.name}`, kind: 'rpc', owner: w.name, deviceName: d.name, endpoint: w.rpcEndpoint, serverIndex,
        freeBytes: Number(d.free_bytes), totalBytes: Number(d.total_bytes), bytesPerSecond: speedOf(d.bytes_per_second, d.bytes_per_second_by_type),
      });
    }
  }
  return out;
}

/**
 * What a hop to a worker costs per generated token, from the round trip to it: llama.cpp's RPC client
 * waits for about two round trips per device per token (the graph goes out, the activations come back),
 * and the server takes a fraction of a millisecond to take the graph in.
 */
export function hopSecondsFromRtt(rttMs: number): number {
  return (HOP_ROUND_TRIPS * rttMs + HOP_SERVER_MS) / 1000;
}
const HOP_ROUND_TRIPS = 2;
const HOP_SERVER_MS = 0.3;

/** A plan for `hearth plan`: the chosen one, and what the other objective would predict beside it. */
export type PlanPreview = PlanResult & {
  alternative?: { objective: PlacementObjective; predictedSecondsPerToken: number | null; fits: boolean };
  /** The draft model for speculative decoding: where it runs and what it holds there (taken off that device's free memory). */
  draft?: { where: string; bytes: number; note: string | null };
};

export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: CoordinatorConfig;
  readonly registry: WorkerRegistry;
  /** How workers are reached: directly, or through authenticated relays (a cluster token). */
  readonly links: WorkerLinks;
  readonly #log: Logger;
  readonly #discoveries: Discovery[];
  readonly #queue: PQueue;
  #state: CoordinatorState = 'starting';
  #reason = 'starting';
  #model: ModelFacts | null = null;
  #plan: PlanResult | null = null;
  #engine: EngineProcess | null = null;
  #loaded: LoadedInfo | null = null;
  #load: LoadRecord = { progress: 0, seconds: 0, phases: null, bytesSent: null, loads: 0, groups: 0 };
  #replanning: Promise<void> | null = null;
  #replanAgain = false;
  #forceReload = false;
  /** Engine losses since the last load that served; drives the re-plan backoff. */
  #losses = 0;
  #servingWaiters: (() => void)[] = [];
  /** Each planned worker's rpc server pid when the engine connected: a different pid later means it restarted. */
  #pidsAtLoad = new Map<string, number>();
  /** Set while an engine loss is being diagnosed; requests that died with the engine await it. */
  #loss: Promise<string> | null = null;
  #stopped = false;
  #metrics: CoordinatorMetrics | null = null;
  /** The coordinator's own CPU, measured like a worker's devices (null: not measured or failed). */
  #localSpeed: DeviceSpeed | null = null;
  /** What the draft model will hold where it runs (weights, KV, compute); 0 without one. */
  #draftBytes = 0;
  readonly #events: CoordinatorEvent[] = [];
  readonly #workerStates = new Map<string, string>();
  readonly #history: ServingSample[] = [];
  #sampledAt = Date.now();
  #tokensSinceSample = 0;
  #ttfts: number[] = [];
  #historyTimer: NodeJS.Timeout | null = null;
  /** The worker endpoint the running engine's draft model is on (it holds that connection too), or null. */
  #draftEndpoint: string | null = null;
  /** The served model's content id, to tell which workers hold it on their own disks. */
  #contentId: string | null = null;
  /** Every candidate device's measured speed when the current plan was made. */
  #planSpeeds = new Map<string, number | null>();
  #driftTimer: NodeJS.Timeout | null = null;
  /** Why the last re-plan that was not asked for happened (speed drift), with when; for status. */
  #lastReplan = '';

  constructor(config: CoordinatorConfig, log: Logger, discoveries: Discovery[], clientVersion: RpcVersion) {
    super();
    this.config = config;
    this.#log = log;
    this.#discoveries = discoveries;
    this.#queue = new PQueue({ concurrency: config.parallel });
    this.links = config.secret ? new SecureLinks(config.secret, log.child({ part: 'link' })) : new OpenLinks();
    // The relay sees a worker's side of the link close or fail at once; llama.cpp may sit blocked on
    // it until the watchdog, so the engine is stopped here and the loss diagnosed as usual.
    this.links.on('broken', (endpoint, reason) => this.#onLinkBroken(endpoint, reason));
    this.registry = new WorkerRegistry(log.child({ part: 'registry' }), {
      links: this.links,
      clientVersion,
      heartbeatMs: config.heartbeatMs,
      workerTimeoutMs: config.workerTimeoutMs,
      busyEndpoints: () => new Set(this.#engine?.alive && this.#plan?.fits ? this.#engineEndpoints(this.#plan) : []),
    });
    this.registry.on('changed', () => this.#noteWorkers());
    this.registry.on('admitted', (w) => {
      this.#noteWorkers();
      this.#onAdmitted(w);
    });
    this.registry.on('lost', (w) => this.#onWorkerGone(w, `was lost: ${w.reason}`));
    this.registry.on('restarted', (w) => {
      this.#event('worker', `worker ${w.name} restarted its rpc server`);
      this.#onWorkerGone(w, 'restarted its rpc server');
    });
  }

  /** Counts requests and tokens into these metrics from now on. */
  attachMetrics(metrics: CoordinatorMetrics): void {
    this.#metrics = metrics;
  }

  get state(): CoordinatorState {
    return this.#state;
  }

  get reason(): string {
    return this.#reason;
  }

  get model(): ModelFacts | null {
    return this.#model;
  }

  get modelContentId(): string | null {
    return this.#contentId;
  }

  get currentPlan(): PlanResult | null {
    return this.#plan;
  }

  get loadRecord(): LoadRecord {
    return { ...this.#load };
  }

  get loaded(): LoadedInfo | null {
    return this.#loaded;
  }

  get inFlight(): number {
    return this.#queue.pending;
  }

  get waiting(): number {
    return this.#queue.size;
  }

  /** Reads the model header, starts discovery, waits one round of probes, then plans and loads. */
  async start(): Promise<void> {
    if (!this.config.model) throw new HearthError(ErrorCode.InvalidArgument, 'no model: give --model FILE or model: in cluster.yaml');
    this.#model = await readModelFacts(this.config.model);
    this.#contentId = modelContentId(this.config.model);
    await this.#readDraft();
    await this.#measureLocalDevice();
    this.registry.start();
    for (const d of this.#discoveries) {
      d.start({ found: (c, s) => this.registry.add(c, s), gone: (c) => this.registry.hintGone(c) });
    }
    await this.registry.checkAll();
    await this.replan('start');
    this.#driftTimer = setInterval(() => this.#checkDrift(), DRIFT_CHECK_MS);
    this.#driftTimer.unref();
    this.#historyTimer = setInterval(() => this.#sample(), HISTORY_EVERY_MS);
    this.#historyTimer.unref();
  }

  /** What happened lately, oldest first: workers joining, lost or refused, state changes, loads. */
  get events(): readonly CoordinatorEvent[] {
    return this.#events;
  }

  /** Serving figures of the last minutes, one sample every HISTORY_EVERY_MS, oldest first. */
  get history(): readonly ServingSample[] {
    return this.#history;
  }

  #event(kind: CoordinatorEvent['kind'], message: string): void {
    this.#events.push({ time: new Date().toISOString(), kind, message });
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
  }

  /** Logs each worker whose state changed since the last look (admitted, lost, refused and why). */
  #noteWorkers(): void {
    for (const w of this.registry.all()) {
      const before = this.#workerStates.get(w.control);
      if (before === w.state) continue;
      this.#workerStates.set(w.control, w.state);
      if (w.state === 'probing' && before === undefined) continue;
      const where = w.rpcEndpoint ? ` (${this.links.remoteOf(w.rpcEndpoint)})` : ` (${w.control})`;
      this.#event('worker', `worker ${w.name}${where} ${w.state}${w.reason && w.state !== 'admitted' ? `: ${w.reason}` : ''}`);
    }
  }

  /** One sample of the serving figures: tokens/s since the last, mean time to first token, queue. */
  #sample(): void {
    const now = Date.now();
    const seconds = (now - this.#sampledAt) / 1000;
    this.#history.push({
      t: now,
      tokensPerSecond: seconds > 0 ? this.#tokensSinceSample / seconds : 0,
      ttftMs: this.#ttfts.length > 0 ? this.#ttfts.reduce((a, b) => a + b, 0) / this.#ttfts.length : 0,
      inFlight: this.inFlight,
      waiting: this.waiting,
    });
    if (this.#history.length > HISTORY_SAMPLES) this.#history.splice(0, this.#history.length - HISTORY_SAMPLES);
    this.#sampledAt = now;
    this.#tokensSinceSample = 0;
    this.#ttfts = [];
  }

  /** Speculative decoding as it runs: with what, how far; or off, and why when a draft was asked for. */
  get speculation(): string {
    const spec = this.config.speculation;
    const loaded = this.#loaded?.speculation;
    const host = this.#draftHost();
    const note = loaded?.note ?? this.config.speculationNote ?? host?.note ?? null;
    const ways: string[] = [];
    if (loaded?.draftModel) {
      const w = loaded.draftEndpoint ? this.registry.byEndpoint(loaded.draftEndpoint) : undefined;
      const where = loaded.draftEndpoint ? `worker ${w?.name ?? '?'} (${loaded.draftDevice} at ${this.links.remoteOf(loaded.draftEndpoint)})` : 'this machine';
      ways.push(`draft model ${basename(loaded.draftModel)} on ${where}`);
    } else if (!loaded && spec?.draftModel) {
      ways.push(`draft model ${basename(spec.draftModel)} on ${host?.where ?? 'this machine'}`);
    }
    if (spec && spec.ngram > 0) ways.push(`n-gram lookup (${spec.ngram} tokens)`);
    if (!spec || ways.length === 0) return note ? `off (${note})` : 'off';
    const how = `${ways.join(' and ')}: up to ${spec.draftMax} tokens per step, while at most ${spec.maxSequences} request(s) generate`;
    return note ? `${how}; ${note}` : how;
  }

  get lastReplan(): string {
    return this.#lastReplan;
  }

  /** Re-plans at an idle moment when a device's measured speed moved far from what the plan used. */
  #checkDrift(): void {
    if (this.#stopped || this.#state !== 'serving' || this.#replanning || this.config.placement !== 'speed') return;
    if (this.inFlight > 0 || this.waiting > 0) return; // the next idle moment
    const drift = speedDrift(this.#planSpeeds, this.#candidates());
    if (!drift) return;
    const why = `${describeDrift(drift)} since the plan was made`;
    this.#lastReplan = `${new Date().toISOString()}: ${why}`;
    this.#log.info({ device: drift.key, before: drift.before, now: drift.now }, `re-planning: ${why}`);
    void this.replan(why);
  }

  /** `hearth plan`: discover and probe workers for `waitMs`, then plan without loading anything (for display). */
  async preview(waitMs: number): Promise<PlanPreview> {
    if (!this.config.model) throw new HearthError(ErrorCode.InvalidArgument, 'no model: give --model FILE or model: in cluster.yaml');
    this.#model = await readModelFacts(this.config.model);
    await this.#readDraft();
    await this.#measureLocalDevice();
    for (const d of this.#discoveries) {
      d.start({ found: (c, s) => this.registry.add(c, s), gone: () => undefined });
    }
    await new Promise((r) => setTimeout(r, waitMs));
    await this.registry.checkAll();
    try {
      // One reading of the cluster (and one `ss` call) for both objectives.
      const input = this.#planInput(this.config.placement);
      const plan = makePlan(input);
      if (!plan.fits) return plan;
      const otherObjective = this.config.placement === 'speed' ? 'memory' : 'speed';
      const other = makePlan({ ...input, objective: otherObjective });
      const alternative = { objective: otherObjective, fits: other.fits, predictedSecondsPerToken: other.fits ? other.predictedSecondsPerToken : null } as const;
      // For people to read: each worker's own address, not the local relay an engine would dial.
      const remote = (e: string) => this.links.remoteOf(e);
      const host = this.#draftHost();
      const draft = host && this.#draftBytes > 0 ? { where: host.where, bytes: this.#draftBytes, note: host.note } : undefined;
      return { ...plan, rpcEndpoints: plan.rpcEndpoints.map(remote), devices: plan.devices.map((d) => ({ ...d, endpoint: d.endpoint && remote(d.endpoint) })), alternative, ...(draft ? { draft } : {}) };
    } finally {
      this.#stopped = true;
      this.registry.stop();
      await Promise.all(this.#discoveries.map((d) => d.stop()));
      await this.links.close();
    }
  }

  /** Plans with the admitted workers and, when the plan changed or no engine runs, reloads. */
  replan(why: string, options: { force?: boolean } = {}): Promise<void> {
    if (options.force) this.#forceReload = true;
    if (this.#replanning) {
      this.#replanAgain = true;
      return this.#replanning;
    }
    this.#replanning = (async () => {
      try {
        do {
          this.#replanAgain = false;
          const force = this.#forceReload;
          this.#forceReload = false;
          await this.#replanOnce(why, force);
        } while (this.#replanAgain && !this.#stopped);
      } finally {
        this.#replanning = null;
      }
    })();
    return this.#replanning;
  }

  /** Measures the coordinator's own CPU once, as a worker measures its devices, so the planner weighs it like any other. */
  async #measureLocalDevice(): Promise<void> {
    if (!this.config.localDevice || this.#localSpeed !== null) return;
    try {
      const [speed] = await calibrateDevices(['CPU'], this.config.threads);
      this.#localSpeed = speed ?? null;
      this.#log.info({ speed: speed && `${(speed.bytesPerSecond / 1e9).toFixed(1)} GB/s`, threads: this.config.threads }, 'local device calibrated');
    } catch (e) {
      this.#log.warn({ err: messageOf(e) }, "could not measure the coordinator's own CPU; the planner treats it as typical");
    }
  }

  /** The RPC endpoints the engine of `plan` holds connections to: its layers', and the draft model's. */
  #engineEndpoints(plan: Plan): string[] {
    return [...new Set([...plan.rpcEndpoints, ...(this.#draftEndpoint ? [this.#draftEndpoint] : [])])];
  }

  /** Sizes the draft model from its header: its weights, its KV for every slot, a compute buffer. */
  async #readDraft(): Promise<void> {
    const path = this.config.speculation?.draftModel;
    if (!path) return;
    try {
      const draft = await readModelFacts(path);
      const context = { ctxSize: this.config.ctxSize, parallel: this.config.parallel, typeK: 'f16' as const, typeV: 'f16' as const, nUbatch: this.config.ubatchSize };
      this.#draftBytes = draft.totalTensorBytes + kvLayerBytes(draft, context).reduce((a, b) => a + b, 0) + computeBufferBytes(draft, context) + logitsBufferBytes(draft, context);
    } catch {
      this.#draftBytes = 0; // the engine's load says what is wrong with it
    }
  }

  /**
   * Where the draft model runs: the named worker's first device, or this machine (also when that worker
   * is not in the cluster now, with a note saying so).
   */
  #draftHost(): { key: string; endpoint: string | null; where: string; note: string | null } | null {
    const spec = this.config.speculation;
    if (!spec?.draftModel) return null;
    if (spec.draftWorker) {
      const w = this.registry.admitted().find((r) => r.name === spec.draftWorker && r.rpcEndpoint && r.info && r.info.devices.length > 0);
      if (w) return { key: `${w.id}/${w.info!.devices[0]!.name}`, endpoint: w.rpcEndpoint, where: `worker ${w.name} (${w.info!.devices[0]!.name})`, note: null };
      return { key: 'local/CPU', endpoint: null, where: 'this machine', note: `worker ${spec.draftWorker} is not in the cluster now, so the draft runs on this machine` };
    }
    return { key: 'local/CPU', endpoint: null, where: 'this machine', note: null };
  }

  /** The candidate devices now: the admitted workers' and, when enabled, the coordinator's own. */
  #candidates(): CandidateDevice[] {
    const host = hostMemory();
    return candidateDevices(
      this.registry.admitted(),
      { enabled: this.config.localDevice, freeBytes: host.availableBytes, totalBytes: host.totalBytes, speeds: this.#localSpeed },
      calibrationTypeOf(this.#model?.fileType ?? null),
    );
  }

  /** The planner's input now: the candidates, their hops priced, the running engine's memory counted free. */
  #planInput(objective: PlacementObjective): PlanInput {
    const model = this.#model;
    if (!model) throw new HearthError(ErrorCode.FailedPrecondition, 'no model header read yet');
    const devices = this.#candidates();
    // Each worker's hop, priced from the kernel's round-trip time on its control connection; the
    // planner's default where there is none (a worker listed by name, or no `ss`).
    const rtts = minRtts();
    const admitted = this.registry.admitted();
    for (const d of devices) {
      const w = admitted.find((r) => d.key.startsWith(`${r.id}/`));
      const rtt = w ? rtts.get(w.control) : undefined;
      if (rtt !== undefined) d.hopSeconds = hopSecondsFromRtt(rtt);
    }
    // Memory the running engine holds is free again once it is replaced: count it as free.
    const current = this.#engine?.alive && this.#plan?.fits ? this.#plan : null;
    for (const d of devices) {
      const held = current?.devices.find((p) => p.key === d.key);
      if (held) d.freeBytes = Math.min(d.totalBytes, d.freeBytes + held.totalBytes + (d.kind === 'local' ? current!.hostBytes : 0));
    }
    // The draft model's memory is not the layers' to take.
    const draft = this.#draftHost();
    const host = draft && devices.find((d) => d.key === draft.key);
    if (host) host.freeBytes = Math.max(0, host.freeBytes - this.#draftBytes);
    return {
      model,
      devices,
      context: { ctxSize: this.config.ctxSize, parallel: this.config.parallel, typeK: this.config.cacheTypeK, typeV: this.config.cacheTypeV, nUbatch: this.config.ubatchSize, pipeline: this.config.pipeline },
      reserveBytes: this.config.reserveBytes,
      objective,
    };
  }

  async #replanOnce(why: string, force: boolean): Promise<void> {
    if (this.#stopped) return;
    this.#setState('planning', why);
    const input = this.#planInput(this.config.placement);
    this.#planSpeeds = new Map(input.devices.map((d) => [d.key, d.bytesPerSecond ?? null]));
    const next = makePlan(input);
    if (!next.fits) {
      this.#plan = next;
      this.#log.warn({ reason: next.reason, suggestions: next.suggestions }, 'the model does not fit the cluster');
      if (this.#engine?.alive) {
        // Keep serving on the old plan; the new one only lacks the newcomer's help.
        this.#setState('serving', '');
      } else {
        this.#setState('degraded', [next.reason, ...next.suggestions].join(' '));
      }
      return;
    }
    const current = this.#plan?.fits ? this.#plan : null;
    if (!force && this.#engine?.alive && current && samePlacement(current, next)) {
      this.#plan = next;
      this.#setState('serving', '');
      return;
    }
    if (this.#engine?.alive) {
      this.#setState('draining', `re-planning: ${why}`);
      await this.#drain(Math.max(this.config.watchdogMs, 10_000));
      await this.#engine.shutdown();
    }
    this.#plan = next;
    await this.#startEngine(next);
  }

  async #startEngine(plan: Plan): Promise<void> {
    const engine = new EngineProcess(this.#log.child({ part: 'engine' }), { watchdogMs: this.config.watchdogMs });
    this.#engine = engine;
    this.#loaded = null;
    this.#load = { ...this.#load, progress: 0 };
    this.#setState('loading', `loading ${this.#model?.name ?? this.config.model} onto ${plan.devices.length} device(s)`);
    let shown = -1;
    engine.on('progress', (p) => {
      this.#load.progress = p;
      if (Math.floor(p * 10) > shown) {
        shown = Math.floor(p * 10);
        this.#log.info({ progress: Math.round(p * 100) }, `loading model: ${Math.round(p * 100)}%`);
      }
    });
    engine.on('exit', (exit) => this.#onEngineExit(engine, exit.reason));
    const spec: EngineLoadSpec = {
      modelPath: this.config.model!,
      rpcEndpoints: plan.rpcEndpoints,
      rpcDevices: plan.rpcDevices,
      tensorSplit: plan.tensorSplit,
      expertOverrides: plan.expertOverrides,
      nGpuLayers: plan.nGpuLayers,
      ctxSize: this.config.ctxSize,
      parallel: this.config.parallel,
      groups: plan.groups,
      nBatch: this.config.batchSize,
      nUbatch: this.config.ubatchSize,
      typeK: this.config.cacheTypeK,
      typeV: this.config.cacheTypeV,
      threads: this.config.threads,
      speculation: this.config.speculation && { ...this.config.speculation, draftEndpoint: this.#draftHost()?.endpoint ?? null },
    };
    this.#draftEndpoint = spec.speculation?.draftEndpoint ?? null;
    this.#pidsAtLoad = new Map(
      await Promise.all(
        this.#engineEndpoints(plan).map(async (endpoint): Promise<[string, number]> => {
          const w = this.registry.byEndpoint(endpoint);
          const pid = w ? await this.registry.health(w.control).then((h) => h.rpc_server_pid, () => 0) : 0;
          return [endpoint, pid];
        }),
      ),
    );
    const sentBefore = new Map(this.#engineEndpoints(plan).map((e) => [e, this.links.bytesSent(e)]));
    try {
      const info = await engine.load(spec);
      if (this.links.secure) {
        // Counted in the relays: the plaintext each worker's link carried during this load.
        info.bytesSent = Object.fromEntries(
          [...sentBefore].map(([e, before]) => [this.links.remoteOf(e), (this.links.bytesSent(e) ?? 0) - (before ?? 0)]),
        );
      }
      this.#loaded = info;
      this.#load = { progress: 1, seconds: info.loadSeconds, phases: info.phases, bytesSent: info.bytesSent, loads: this.#load.loads + 1, groups: info.groups };
      this.#log.info(
        { seconds: Number(info.loadSeconds.toFixed(2)), phases: info.phases, bytesSent: info.bytesSent, layers: plan.devices.map((d) => `${d.owner}/${d.deviceName}: ${d.layers}`), groups: info.groups },
        'model loaded; serving',
      );
      if (this.config.speculation) {
        this.#log.info({ speculation: this.speculation, draftBytes: info.speculation?.draftBytes ?? 0 }, 'speculative decoding');
      }
      const sent = Object.values(info.bytesSent ?? {}).reduce((a, b) => a + b, 0);
      this.#event('load', `model loaded in ${info.loadSeconds.toFixed(2)} s onto ${plan.devices.map((d) => `${d.owner}/${d.deviceName} (${d.layers} layers)`).join(', ')}${info.bytesSent ? `; ${(sent / 2 ** 20).toFixed(1)} MiB sent` : ''}`);
      this.#losses = 0;
      this.#setState('serving', '');
    } catch (e) {
      if (e instanceof EngineExitError) return; // #onEngineExit diagnoses and re-plans
      this.#log.error({ err: messageOf(e) }, 'model load failed');
      await engine.shutdown();
      this.#setState('degraded', `model load failed: ${messageOf(e)}`);
    }
  }

  /** Waits until the engine has no request in flight, or `graceMs` has passed. */
  async #drain(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    while (this.#engine?.alive && this.#engine.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  #onEngineExit(engine: EngineProcess, reason: string): void {
    if (engine !== this.#engine || this.#stopped || reason === 'shutdown') return;
    this.#engine = null;
    this.#setState('degraded', reason === 'watchdog' ? 'the engine stopped making progress' : 'the engine process ended');
    const plan = this.#plan?.fits ? this.#plan : null;
    this.#loss = this.#diagnose(plan, reason).then((what) => {
      this.#setState('degraded', what);
      return what;
    });
    // An engine that keeps dying (a cause no worker can be blamed for) must not spin: back off.
    this.#losses++;
    const delay = this.#losses <= 1 ? 0 : Math.min(30_000, 1000 * 2 ** (this.#losses - 2));
    void this.#loss
      .then(() => new Promise((r) => setTimeout(r, delay)))
      .then(() => this.replan('the engine was lost'))
      .finally(() => {
        // Requests waiting out the loss give up when the re-plan could not bring serving back.
        if (this.#state !== 'serving' && !this.#replanning) this.#loss = null;
        this.#servingWaiters.splice(0).forEach((w) => w());
      });
  }

  /** Finds which worker of the plan failed, marks it, and says so in one sentence. */
  async #diagnose(plan: Plan | null, reason: string): Promise<string> {
    const endpoints = plan ? this.#engineEndpoints(plan) : [];
    const verdicts = await Promise.all(
      endpoints.map(async (endpoint) => {
        const w = this.registry.byEndpoint(endpoint);
        const where = this.links.remoteOf(endpoint);
        const name = w ? `worker ${w.name} (${where})` : `worker ${where}`;
        if (w) {
          try {
            const h = await this.registry.health(w.control);
            const before = this.#pidsAtLoad.get(endpoint) ?? 0;
            if (before !== 0 && h.rpc_server_pid !== before) return { w, what: `${name} lost its rpc server (it exited; the worker restarted it)` };
            if (!h.ready) return { w, what: `${name} lost its rpc server (worker state ${h.state})` };
          } catch (e) {
            return { w, what: `${name} is unreachable (${messageOf(e)})` };
          }
        }
        try {
          await probeRpcServer(endpoint, { timeoutMs: 1500 });
          return null;
        } catch (e) {
          return { w, what: isHearthError(e) && /did not answer/.test(e.message) ? `${name} stopped answering` : `${name} is unreachable` };
        }
      }),
    );
    const failed = verdicts.filter((v): v is NonNullable<typeof v> => v !== null);
    for (const f of failed) if (f.w) this.registry.markSuspect(f.w.control, f.what);
    const cause = reason === 'watchdog' ? 'the engine made no progress within the watchdog time' : 'the engine process ended';
    const what = failed.length > 0 ? failed.map((f) => f.what).join('; ') : `no worker could be blamed (${cause})`;
    this.#log.error({ reason, failed: failed.map((f) => f.what) }, `engine lost: ${what}`);
    return `${what}; ${cause}; re-planning with the workers still healthy`;
  }

  #onAdmitted(w: WorkerRecord): void {
    if (this.#stopped || this.#state === 'starting') return;
    if (this.#state === 'degraded' || !this.#engine?.alive) {
      void this.replan(`worker ${w.name} joined`);
    } else if (this.config.autoReplan) {
      void this.replan(`worker ${w.name} joined`);
    } else {
      this.#log.info({ worker: w.name }, 'worker admitted; autoReplan is off, so it waits for a Replan call');
    }
  }

  #onLinkBroken(endpoint: string, reason: string): void {
    const plan = this.#plan?.fits ? this.#plan : null;
    if (!plan || !this.#engineEndpoints(plan).includes(endpoint) || !this.#engine?.alive) return;
    const w = this.registry.byEndpoint(endpoint);
    this.#log.warn({ worker: w?.name ?? endpoint }, `link to worker ${w?.name ?? endpoint} broke (${reason}); stopping the engine`);
    this.#engine.kill('crash');
  }

  #onWorkerGone(w: WorkerRecord, what: string): void {
    const plan = this.#plan?.fits ? this.#plan : null;
    if (!plan || !w.rpcEndpoint || !this.#engineEndpoints(plan).includes(w.rpcEndpoint)) return;
    this.#log.warn({ worker: w.name }, `worker in the plan ${what}; stopping the engine`);
    this.#engine?.kill('crash');
  }

  /** Runs one generation through admission, the engine and its failure handling. */
  async generate(request: GenerationRequest, options: { signal?: AbortSignal; handlers?: GenerateHandlers } = {}): Promise<GenerateResult> {
    const prompt = checkPrompt(request.prompt);
    const contextTokens = this.#loaded?.nCtxSeq ?? this.config.ctxSize;
    const params = resolveParams(request.settings, { maxTokens: this.config.maxTokensDefault, contextTokens });
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    if (this.#queue.size >= this.config.maxWaiting) {
      throw new HearthError(ErrorCode.ResourceExhausted, `server busy: ${this.#queue.size} requests are waiting (limit ${this.config.maxWaiting}); retry later`);
    }
    const signal = options.signal;
    const arrived = performance.now();
    let firstAt = 0;
    const handlers: GenerateHandlers = {
      ...options.handlers,
      onToken: (text, token, extra) => {
        if (token >= 0) this.#tokensSinceSample++;
        if (firstAt === 0 && token >= 0) {
          firstAt = performance.now();
          this.#metrics?.timeToFirstToken.observe((firstAt - arrived) / 1000);
          this.#ttfts.push(firstAt - arrived);
        }
        options.handlers?.onToken?.(text, token, extra);
      },
    };
    const task = this.#queue.add(
      async () => {
        let patientUntil = 0;
        for (let attempt = 1; ; attempt++) {
          await this.#whenServing(signal, patientUntil);
          const engine = this.#engine;
          if (!engine) throw new HearthError(ErrorCode.Unavailable, `not serving: ${this.#reason}`);
          const id = randomUUID();
          const onAbort = () => engine.cancel(id);
          signal?.addEventListener('abort', onAbort, { once: true });
          let produced = false;
          try {
            const result = await engine.generate(id, prompt, params, {
              ...handlers,
              onToken: (text, token, extra) => {
                produced = true;
                handlers.onToken?.(text, token, extra);
              },
            });
            const m = this.#metrics;
            if (m) {
              m.promptTokens.inc(result.usage.promptTokens);
              m.promptTokensCached.inc(result.usage.cachedTokens);
              m.promptTokensProcessed.inc(result.usage.promptTokens - result.usage.cachedTokens);
              m.generatedTokens.inc(result.usage.completionTokens);
              m.draftTokens.inc(result.usage.draftTokens);
              m.draftTokensAccepted.inc(result.usage.draftAcceptedTokens);
              m.requests.inc({ outcome: result.finishReason });
              if (firstAt > 0 && result.usage.completionTokens > 1) {
                const seconds = (performance.now() - firstAt) / 1000;
                if (seconds > 0) m.tokensPerSecond.set((result.usage.completionTokens - 1) / seconds);
              }
            }
            return result;
          } catch (e) {
            if (e instanceof EngineExitError) {
              const what = (await this.#loss) ?? 'the engine was lost';
              // Nothing reached the client yet (queued, or still in its prompt): the loss costs it
              // time, not an error. It waits for the re-plan and runs again, within its deadline.
              if (!produced && !signal?.aborted && !this.#stopped && attempt < MAX_ATTEMPTS) {
                this.#log.info({ attempt, what }, 'a request that had produced no output waits for the re-plan');
                // A worker whose rpc server was restarted is back within a second or two: a re-plan
                // that found too few workers is not the end of the wait.
                patientUntil = Date.now() + RECOVERY_WAIT_MS;
                continue;
              }
              this.#metrics?.requests.inc({ outcome: 'error' });
              throw new HearthError(ErrorCode.Unavailable, `generation failed: ${what}`, { cause: e });
            }
            this.#metrics?.requests.inc({ outcome: 'error' });
            throw e;
          } finally {
            signal?.removeEventListener('abort', onAbort);
          }
        }
      },
      signal ? { signal } : {},
    ) as Promise<GenerateResult>;
    try {
      return await task;
    } catch (e) {
      if (signal?.aborted && !isHearthError(e)) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting for a slot');
      throw e;
    }
  }

  /**
   * Waits until the coordinator serves; fails fast when it cannot (before `patientUntil`, a request
   * carried over an engine loss keeps waiting for its workers to return), or when the caller gives up.
   */
  async #whenServing(signal?: AbortSignal, patientUntil = 0): Promise<void> {
    for (;;) {
      if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, 'request cancelled while waiting');
      if (this.#state === 'serving' && this.#engine?.alive) return;
      if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
      if (this.#state === 'degraded' && !this.#replanning && !this.#loss && Date.now() >= patientUntil) {
        throw new HearthError(ErrorCode.Unavailable, `not serving: ${this.#reason}`);
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, 200);
        this.#servingWaiters.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  #setState(state: CoordinatorState, reason: string): void {
    if (this.#stopped && state !== 'stopping') return;
    if (state === 'serving') this.#loss = null;
    const changed = state !== this.#state || reason !== this.#reason;
    this.#state = state;
    this.#reason = reason;
    if (changed) {
      this.#event('state', reason ? `${state}: ${reason}` : state);
      this.#log.info({ state, reason: reason || undefined }, `coordinator ${state}`);
      this.emit('state', state, reason);
    }
    this.#servingWaiters.splice(0).forEach((w) => w());
  }

  /** Stops taking requests, lets in-flight ones finish (bounded), and stops the engine and discovery. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#stopped) return;
    this.#setState('stopping', 'shutting down');
    this.#stopped = true;
    if (this.#driftTimer) clearInterval(this.#driftTimer);
    if (this.#historyTimer) clearInterval(this.#historyTimer);
    this.#queue.clear();
    await this.#drain(graceMs);
    await this.#engine?.shutdown();
    this.registry.stop();
    await Promise.all(this.#discoveries.map((d) => d.stop()));
    await this.links.close();
  }
}

/** How often a request that produced nothing may be carried over an engine loss before it fails. */
const MAX_ATTEMPTS = 3;
/** How long such a request waits for lost workers to return when the re-plan found too few. */
const RECOVERY_WAIT_MS = 15_000;

/** Two plans put the same layers, and the same blocks' experts, on the same devices. */
function samePlacement(a: Plan, b: Plan): boolean {
  const key = (p: Plan) => p.devices.map((d) => `${d.key}:${d.firstLayer}+${d.layers}${d.expertLayers.length > 0 ? `+experts ${d.expertLayers.join(',')}` : ''}`).join('|');
  return key(a) === key(b);
}
