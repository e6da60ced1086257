// One served model's room: its header facts and plan (cluster-view.ts, planner/), its engine process
// (engine-supervisor.ts), its admission queue (admission.ts), and the re-plan that moves it between
// states. The coordinator holds the workers and the rooms, and lets one room plan and load at a time
// (placement.ts), so that each plan sees the memory the other models hold.
//
// When the engine dies, in-flight requests wait for the re-plan and resume on the next engine. A
// worker that leaves on purpose (it drains) is no loss: the room re-plans without it while its engine
// retires as for any re-plan. Re-plans run one at a time (replan() joins the one running), and every
// step re-reads what may have changed under an await: the engine, the workers, whether the room is
// wanted, whether the coordinator is stopping. A re-plan that fails is logged, leaves the room
// degraded, and is tried again with back-off: no lifecycle promise is ever left to reject unhandled.
import type { EventEmitter } from 'node:events';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { Timers } from '../common/timers.js';
import { modelContentId } from '../models/content-id.js';
import type { ModelFacts } from '../models/gguf-info.js';
import { Admission, whenServing, type LossReason, type ServingGate } from './admission.js';
import { ClusterView } from './cluster-view.js';
import type { CoordinatorConfig, ServedModelConfig } from './config.js';
import { describeDrift, speedDrift } from './drift.js';
import { PooledRequests } from './embeddings.js';
import { EngineSupervisor, engineLoadSpec, lossCause, samePlacement, type EngineLoss } from './engine-supervisor.js';
import type { EngineProcess, GenerateHandlers, GenerateResult } from './engine/engine-process.js';
import type { LoadedInfo, PeerAddress, PromptInput } from './engine/protocol.js';
import type { FlapGuard } from './flaps.js';
import { peerAddresses, registryPeers, splitOf, type WorkerLinks } from './links.js';
import { checkPrompt, resolveParams, type RequestSettings } from './params.js';
import type { Plan, PlanInput, PlanResult } from './planner/types.js';
import type { WorkerRecord, WorkerRegistry } from './registry.js';
import { ResumeLog } from './resumes.js';
import { modelKind, type EmbedRequest, type EmbedResult, type ModelKind, type ModelStatus, type RerankRequest, type RerankResult, type ServedModel } from './served-models.js';
import type { CoordinatorEvent, CoordinatorEvents, CoordinatorState, LoadRecord } from './snapshot.js';

/** What a room is given by the coordinator: the shared workers, links and logs, and the placement turn. */
export interface RoomHost {
  registry: WorkerRegistry;
  links: WorkerLinks;
  flaps: FlapGuard;
  /** The coordinator's event log (a room's events name its model when there are several). */
  note(kind: CoordinatorEvent['kind'], message: string): void;
  /** Where request events go (metrics and the serving history count every model's). */
  emitter: EventEmitter<CoordinatorEvents>;
  plan: (input: PlanInput) => PlanResult;
  /**
   * Runs `fn` (a plan and its load) while no other room plans or loads, with room made for this model
   * when it does not fit beside the others (placement.ts). Rejects only when the coordinator stops.
   */
  placementTurn<T>(room: ModelRoom, fn: () => Promise<T>): Promise<T>;
  /** Re-checks leaving workers: one that no room uses any more is released. */
  releaseLeavers(): void;
  /** A room's state changed (the coordinator's own state follows the default model's). */
  stateChanged(room: ModelRoom, state: RoomState, reason: string): void;
  /** Whether the cluster serves several models (messages then name the model). */
  several(): boolean;
  /** The plans of the other models' live engines: their memory is not this model's to take. */
  otherPlans(room: ModelRoom): Plan[];
}

/** A room's state: the coordinator's states, and 'unloaded' for a model only on disk. */
export type RoomState = CoordinatorState | 'unloaded';

export class ModelRoom {
  readonly spec: ServedModelConfig;
  /** The coordinator's config with this model's settings (configFor). */
  readonly config: CoordinatorConfig;
  readonly #host: RoomHost;
  readonly #log: Logger;
  readonly cluster: ClusterView;
  readonly #supervisor: EngineSupervisor;
  readonly #admission: Admission;
  /** Embeddings and rerank requests (an embedding or reranker model's). */
  readonly #pooled: PooledRequests;
  #state: RoomState = 'unloaded';
  #reason = '';
  #stopped = false;
  /** Whether the model should be in memory: always when pinned; an on-demand one from its first request until idle. */
  #wanted: boolean;
  #contentId: string | null = null;
  #kind: ModelKind = 'chat';
  #current: PlanResult | null = null;
  #loaded: LoadedInfo | null = null;
  #load: LoadRecord = { progress: 0, seconds: 0, phases: null, bytesSent: null, loads: 0, groups: 0 };
  #replanning: Promise<void> | null = null;
  #replanAgain: string | null = null;
  #forceReload = false;
  /** Bumped when workers join or leave, or the engine is lost: a plan made before is stale. */
  #epoch = 0;
  #failures = 0;
  #loss: Promise<LossReason> | null = null;
  readonly #timers = new Timers();
  #changeWaiters: (() => void)[] = [];
  #planSpeeds = new Map<string, number | null>();
  #lastReplan = '';
  #lastUsedAt: number | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #expiresAt: number | null = null;

  constructor(spec: ServedModelConfig, config: CoordinatorConfig, log: Logger, host: RoomHost) {
    this.spec = spec;
    this.config = config;
    this.#host = host;
    this.#log = log;
    this.#wanted = spec.policy === 'pinned';
    this.#state = this.#wanted ? 'starting' : 'unloaded';
    this.cluster = new ClusterView(config, log, host.registry, host.links, (control) => host.flaps.heldUntil(control, Date.now()) > 0);
    this.#supervisor = new EngineSupervisor(log.child({ part: 'engine' }), host.registry, host.links, { watchdogMs: config.watchdogMs });
    this.#supervisor.on('progress', (p) => (this.#load.progress = p));
    this.#supervisor.on('lost', (loss) => this.#onEngineLost(loss));
    const resumes = new ResumeLog(host.emitter, (message) => host.note('resume', message));
    this.#admission = new Admission(log, this.#gate(), host.emitter, resumes, {
      parallel: config.parallel,
      maxWaiting: config.maxWaiting,
      maxResumes: config.maxResumes,
      requestTimeoutMs: config.requestTimeoutMs,
    });
    this.#pooled = new PooledRequests(log, this.#gate(), host.emitter, {
      parallel: config.parallel,
      maxWaiting: config.maxWaiting,
      maxResumes: config.maxResumes,
      requestTimeoutMs: config.requestTimeoutMs,
    });
  }

  get id(): string {
    return this.spec.id;
  }

  get state(): RoomState {
    return this.#state;
  }

  get reason(): string {
    return this.#reason;
  }

  get wanted(): boolean {
    return this.#wanted;
  }

  get model(): ModelFacts | null {
    return this.cluster.model;
  }

  get contentId(): string | null {
    return this.#contentId;
  }

  get currentPlan(): PlanResult | null {
    return this.#current;
  }

  get loaded(): LoadedInfo | null {
    return this.#loaded;
  }

  get loadRecord(): LoadRecord {
    return { ...this.#load };
  }

  get lastReplan(): string {
    return this.#lastReplan;
  }

  get inFlight(): number {
    return this.#admission.inFlight + this.#pooled.inFlight;
  }

  get waiting(): number {
    return this.#admission.waiting + this.#pooled.waiting;
  }

  get lastUsedAt(): number | null {
    return this.#lastUsedAt;
  }

  /** The engine's plan while it is alive. */
  get runningPlan(): Plan | null {
    return this.#supervisor.plan;
  }

  /** Reads the model's header (and the draft's), so that it can be planned and listed. */
  async prepare(): Promise<ModelFacts> {
    const model = await this.cluster.prepare();
    this.#contentId = modelContentId(model.shards.map((s) => s.path));
    this.#kind = modelKind(model);
    return model;
  }

  /** The model as the APIs list it. */
  describe(): ServedModel {
    return {
      id: this.spec.id,
      aliases: this.spec.aliases,
      kind: this.#kind,
      status: this.status(),
      policy: this.spec.policy,
      facts: this.cluster.model,
      ctxSize: this.config.ctxSize,
      loadedBytes: this.loadedBytes(),
      expiresAt: this.#expiresAt,
      lastUsedAt: this.#lastUsedAt,
    };
  }

  status(): ModelStatus {
    if (this.#engineServing()) return 'loaded';
    if (this.#wanted && this.#state !== 'degraded') return 'loading';
    return 'on disk';
  }

  /** Bytes the loaded engine holds, over every device (weights, KV cache, compute buffers). */
  loadedBytes(): number {
    if (!this.#loaded) return 0;
    return this.#loaded.memory.reduce((a, m) => a + m.modelBytes + m.contextBytes + m.computeBytes, 0);
  }

  /** RPC endpoints the live engine holds connections to. */
  busyEndpoints(): Set<string> {
    return this.#supervisor.busyEndpoints();
  }

  /** Whether the live engine, or the plan made last (maybe loading now), runs on worker `w`. */
  uses(w: WorkerRecord): boolean {
    if (!w.rpcEndpoint) return false;
    if (this.#supervisor.busyEndpoints().has(w.rpcEndpoint)) return true;
    return this.#wanted && this.#current?.fits === true && this.#current.devices.some((d) => d.endpoint === w.rpcEndpoint);
  }

  /** Runs one generation through admission, the engine and its failure handling; an on-demand model is loaded first. */
  async generate(request: { prompt: PromptInput; settings: RequestSettings }, options: { signal?: AbortSignal; handlers?: GenerateHandlers }): Promise<GenerateResult> {
    const prompt = checkPrompt(request.prompt);
    const params = resolveParams(request.settings, { maxTokens: this.config.maxTokensDefault, contextTokens: this.#loaded?.nCtxSeq ?? this.config.ctxSize });
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    this.#use();
    try {
      return await this.#admission.run(prompt, params, options);
    } finally {
      // Idle time counts from the end of the last request (an unloaded model stays unloaded).
      this.#lastUsedAt = Date.now();
      if (this.#wanted) this.#armIdle();
    }
  }

  /** Pooled vectors of the inputs (an embedding model), through this model's engine; an on-demand model is loaded first. */
  embed(request: EmbedRequest, signal?: AbortSignal): Promise<EmbedResult> {
    return this.#used(() => this.#pooled.embed(this.describe(), request, signal));
  }

  /** The documents scored against the query (a reranker), as embed. */
  rerank(request: RerankRequest, signal?: AbortSignal): Promise<RerankResult> {
    return this.#used(() => this.#pooled.rerank(this.describe(), request, signal));
  }

  async #used<T>(run: () => Promise<T>): Promise<T> {
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    this.#use();
    try {
      return await run();
    } finally {
      this.#lastUsedAt = Date.now();
      if (this.#wanted) this.#armIdle();
    }
  }

  /** A request came: an on-demand model is wanted (loaded if it is not), and its idle time starts again. */
  #use(): void {
    if (!this.#wanted && !this.#stopped) {
      // A model that could not be loaded even with every other model unloaded is refused at once.
      const alone = this.planAlone();
      if (!alone.fits) throw new HearthError(ErrorCode.InvalidArgument, `model: '${this.id}' does not fit this cluster, even with every other model unloaded: ${alone.reason}`);
    }
    this.#lastUsedAt = Date.now();
    this.#armIdle();
    if (!this.#wanted && !this.#stopped) {
      this.#wanted = true;
      this.#host.note('load', `model ${this.id} was asked for: loading it`);
      void this.replan(`a request for ${this.id}`);
    }
  }

  /** An on-demand model unloads after its idle time without requests (a request in flight keeps it). */
  #armIdle(): void {
    if (this.spec.policy !== 'on-demand') return;
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#expiresAt = Date.now() + this.spec.idleMs;
    this.#idleTimer = setTimeout(() => this.#idleExpired(), this.spec.idleMs);
    this.#idleTimer.unref();
  }

  #idleExpired(): void {
    this.#idleTimer = null;
    if (this.#stopped || !this.#wanted) return;
    if (this.inFlight > 0 || this.waiting > 0) return this.#armIdle();
    this.#expiresAt = null;
    void this.unload(`idle for ${formatDuration(this.spec.idleMs)}`);
  }

  /**
   * Takes the model out of memory: requests in flight finish first (the engine drains), then it stops.
   * A pinned model is never unloaded; the next request for an on-demand one loads it again.
   */
  async unload(why: string): Promise<void> {
    if (this.spec.policy === 'pinned' || !this.#wanted) return;
    this.#wanted = false;
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    this.#expiresAt = null;
    this.#host.note('load', `unloading model ${this.id}: ${why}`);
    this.#log.info({ model: this.id, why }, 'unloading the model');
    await this.replan(`unloading: ${why}`);
  }

  /** Unloads now, inside another room's placement turn (eviction): the caller holds the turn, so this takes none. */
  async evict(why: string): Promise<void> {
    this.#wanted = false;
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
    this.#expiresAt = null;
    this.#host.note('load', `unloading model ${this.id}: ${why}`);
    this.#setState('draining', `unloading: ${why}`);
    await this.#supervisor.retire(Math.max(this.config.watchdogMs, 10_000));
    this.#loaded = null;
    this.#current = null;
    if (!this.#wanted) this.#setState('unloaded', why);
  }

  /** Plans with the admitted workers and, when the plan changed or no engine runs, reloads. Never rejects. */
  replan(why: string, options: { force?: boolean } = {}): Promise<void> {
    if (options.force) this.#forceReload = true;
    if (this.#replanning) {
      this.#replanAgain = why;
      return this.#replanning;
    }
    this.#replanning = this.#replanLoop(why).finally(() => {
      this.#replanning = null;
      this.#notify();
    });
    return this.#replanning;
  }

  async stop(graceMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#setState('stopping', 'shutting down');
    this.#stopped = true;
    this.#timers.clear();
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#admission.clear();
    this.#pooled.clear();
    await this.#supervisor.close(graceMs);
  }

  // Workers, as the coordinator passes their news on.

  workerAdmitted(w: WorkerRecord, held: boolean): void {
    this.#epoch++;
    if (this.#stopped || !this.#wanted) return;
    if (held) return;
    if (this.#state === 'degraded' || !this.#supervisor.engine || this.config.autoReplan) void this.replan(`worker ${w.name} joined`);
  }

  workerGone(w: WorkerRecord, what: string): void {
    this.#epoch++;
    if (w.rpcEndpoint) this.#supervisor.killIfUses(w.rpcEndpoint, `worker ${w.name} in the plan ${what}`);
  }

  /** A worker leaves on purpose; true when this room re-plans without it. */
  workerLeaving(w: WorkerRecord): boolean {
    if (this.#stopped || !this.uses(w)) return false;
    this.#epoch++;
    void this.replan(`worker ${w.name} is leaving (${w.reason})`);
    return true;
  }

  killIfUses(endpoint: string, why: string): void {
    this.#supervisor.killIfUses(endpoint, why);
  }

  /** Re-plans at an idle moment when a device's measured speed moved far from what the plan used. */
  checkDrift(): void {
    if (this.#stopped || this.#state !== 'serving' || this.#replanning || this.config.placement !== 'speed') return;
    if (this.inFlight > 0 || this.waiting > 0) return;
    const drift = speedDrift(this.#planSpeeds, this.cluster.candidates());
    if (!drift) return;
    const why = `${describeDrift(drift)} since the plan was made`;
    this.#lastReplan = `${new Date().toISOString()}: ${why}`;
    this.#log.info({ device: drift.key, before: drift.before, now: drift.now }, `re-planning: ${why}`);
    void this.replan(why);
  }

  /** What this model's plan would be now (the placement turn's look at whether it fits). */
  planNow(extraFree: Map<string, number> = new Map()): PlanResult {
    const input = this.cluster.planInput(this.config.placement, this.#supervisor.plan, this.#host.otherPlans(this));
    for (const d of input.devices) d.freeBytes = Math.min(d.totalBytes, d.freeBytes + (extraFree.get(d.key) ?? 0));
    return this.#host.plan(input);
  }

  /** What this model's plan would be with no other model in memory. */
  planAlone(): PlanResult {
    const others = new Map<string, number>();
    for (const p of this.#host.otherPlans(this)) for (const d of p.devices) others.set(d.key, (others.get(d.key) ?? 0) + d.totalBytes + (d.kind === 'local' ? p.hostBytes : 0));
    return this.planNow(others);
  }

  /** What the live engine holds on each device (by device key), to count free when it is unloaded. */
  heldBytes(): Map<string, number> {
    const plan = this.#supervisor.plan;
    const out = new Map<string, number>();
    if (!plan) return out;
    for (const d of plan.devices) out.set(d.key, d.totalBytes + (d.kind === 'local' ? plan.hostBytes : 0));
    return out;
  }

  async #replanLoop(why: string): Promise<void> {
    for (let reason: string | null = why; reason !== null && !this.#stopped; ) {
      this.#replanAgain = null;
      const force = this.#forceReload;
      this.#forceReload = false;
      try {
        if (!this.#wanted) await this.#unloadNow(reason);
        else await this.#host.placementTurn(this, () => this.#replanOnce(reason!, force));
        this.#failures = 0;
      } catch (e) {
        this.#replanFailed(e);
        return;
      } finally {
        this.#host.releaseLeavers();
      }
      reason = this.#replanAgain;
      // Requests waiting to resume were woken by the load that just served: they take the engine
      // before the next re-plan drains it, instead of waiting out a second load.
      if (reason !== null) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async #unloadNow(why: string): Promise<void> {
    if (this.#supervisor.engine) {
      this.#setState('draining', why);
      await this.#supervisor.retire(Math.max(this.config.watchdogMs, 10_000));
      if (this.#stopped) return;
      this.#host.note('load', `model ${this.id} unloaded`);
    }
    this.#loaded = null;
    this.#current = null;
    if (!this.#wanted) this.#setState('unloaded', why.replace(/^unloading: /, ''));
  }

  async #replanOnce(why: string, force: boolean): Promise<void> {
    if (this.#stopped || !this.#wanted) return;
    this.#setState('planning', why);
    const epoch = this.#epoch;
    const running = this.#supervisor.plan;
    const input = this.cluster.planInput(this.config.placement, running, this.#host.otherPlans(this));
    this.#planSpeeds = new Map(input.devices.map((d) => [d.key, d.bytesPerSecond ?? null]));
    const next = this.#host.plan(input);
    this.#current = next;
    if (!next.fits) {
      this.#log.warn({ model: this.id, reason: next.reason, suggestions: next.suggestions }, 'the model does not fit the cluster');
      const leaving = this.#leavingUnderEngine();
      if (this.#supervisor.engine && leaving.length === 0) return this.#setState('serving', '');
      if (leaving.length > 0) {
        const names = leaving.map((w) => w.name).join(', ');
        this.#log.error({ leaving: names, reason: next.reason, suggestions: next.suggestions }, `the model does not fit without ${names}: stopping the engine so that it can leave; not serving until enough workers join`);
        this.#host.note('worker', `the model does not fit without ${names}: not serving until enough workers join (${next.reason})`);
        this.#setState('draining', `re-planning: ${why}`);
        await this.#supervisor.retire(Math.max(this.config.watchdogMs, 10_000));
        if (this.#stopped) return;
      }
      this.#setState('degraded', [next.reason, ...next.suggestions].join(' '));
      return;
    }
    if (!force && running && samePlacement(running, next)) {
      this.#setState('serving', '');
      return;
    }
    if (this.#supervisor.engine) {
      this.#setState('draining', `re-planning: ${why}`);
      await this.#supervisor.retire(Math.max(this.config.watchdogMs, 10_000));
      if (this.#stopped) return;
      this.#host.releaseLeavers();
    }
    if (epoch !== this.#epoch) {
      if (!this.#loss) this.#replanAgain = 'the workers changed while re-planning';
      return;
    }
    await this.#startEngine(next);
  }

  async #startEngine(plan: Plan): Promise<void> {
    this.#loaded = null;
    this.#load = { ...this.#load, progress: 0 };
    this.#setState('loading', `loading ${this.cluster.model?.name ?? this.id} onto ${plan.devices.length} device(s)`);
    const spec = engineLoadSpec(this.config, plan, this.cluster.draftHost()?.endpoint ?? null, this.#kind);
    if (splitOf(plan) === 'tensor') spec.peerAddresses = await this.#peerAddresses(plan);
    if (this.#stopped) return;
    const outcome = await this.#supervisor.start(plan, spec);
    if (this.#stopped || outcome.kind === 'lost') return;
    if (outcome.kind === 'failed') return this.#onEngineLost(outcome.loss);
    if (!this.#supervisor.engine) return;
    const info = outcome.info;
    this.#loaded = info;
    this.#load = { progress: 1, seconds: info.loadSeconds, phases: info.phases, bytesSent: info.bytesSent, loads: this.#load.loads + 1, groups: info.groups };
    // Tensor mode: every device a share of every layer.
    const layers = plan.devices.map((d) => `${d.owner}/${d.deviceName} (${d.share === undefined ? `${d.layers} layers` : `${(d.share * 100).toFixed(1)} % of every layer`})`);
    this.#log.info({ model: this.id, seconds: Number(info.loadSeconds.toFixed(2)), phases: info.phases, bytesSent: info.bytesSent, layers, groups: info.groups, split: plan.split }, 'model loaded; serving');
    if (this.config.speculation) this.#log.info({ speculation: this.cluster.speculation(info.speculation ?? null), draftBytes: info.speculation?.draftBytes ?? 0 }, 'speculative decoding');
    const sent = Object.values(info.bytesSent ?? {}).reduce((a, b) => a + b, 0);
    this.#host.note('load', `model loaded in ${info.loadSeconds.toFixed(2)} s onto ${layers.join(', ')}${info.bytesSent ? `; ${(sent / 2 ** 20).toFixed(1)} MiB sent` : ''}`);
    this.#setState('serving', '');
  }

  /** Where each worker of a tensor split reaches each other one for the direct reduction (links.ts). */
  async #peerAddresses(plan: Plan): Promise<PeerAddress[]> {
    const links = this.#host.links;
    const { addresses, failures } = await peerAddresses(plan.rpcEndpoints, links.secure, registryPeers(this.#host.registry, links));
    for (const f of failures) {
      this.#log.warn(
        { model: this.id, from: links.remoteOf(f.from), to: links.remoteOf(f.to), reason: f.reason },
        `no peer link from ${links.remoteOf(f.from)} to ${links.remoteOf(f.to)}: ${f.reason}; their partial sums cannot go directly between them`,
      );
    }
    return addresses;
  }

  #replanFailed(e: unknown): void {
    this.#failures++;
    const delay = Math.min(30_000, 1000 * 2 ** (this.#failures - 1));
    this.#log.error({ model: this.id, err: messageOf(e), stack: e instanceof Error ? e.stack : undefined, retryInMs: delay }, 're-plan failed');
    this.#setState('degraded', `re-plan failed: ${messageOf(e)}; trying again in ${delay / 1000} s`);
    this.#timers.after(delay, () => void this.replan('retrying a failed re-plan'));
  }

  /** Called by the supervisor, or for a failed load: diagnose, then re-plan after the back-off. */
  #onEngineLost(loss: EngineLoss): void {
    if (this.#stopped) return;
    this.#epoch++;
    this.#setState('degraded', lossCause(loss));
    const loss$ = this.#supervisor.diagnose(loss).then(
      (d) => {
        for (const f of d.failed) if (f.worker) this.#noteLoss(f.worker);
        if (this.#state === 'degraded') this.#setState('degraded', d.what);
        return { message: d.what, blame: d.blame };
      },
      (e: unknown): LossReason => {
        const message = `the engine was lost (${messageOf(e)})`;
        return { message, blame: message };
      },
    );
    this.#loss = loss$;
    void loss$
      .then(() => this.#timers.sleep(this.#supervisor.backoffMs))
      .then(() => this.replan('the engine was lost'))
      .finally(() => {
        if (this.#loss === loss$ && this.#state !== 'serving' && !this.#replanning) this.#loss = null;
        this.#notify();
      });
  }

  /** A worker lost soon after it joined flaps: held out of plans for a while (flaps.ts). */
  #noteLoss(w: WorkerRecord): void {
    const hold = this.#host.flaps.lost(w.control, Date.now());
    if (!hold) return;
    this.#host.note('worker', `worker ${w.name} was lost ${hold.flaps} time(s) within seconds of joining: held out of plans for ${hold.holdMs / 1000} s`);
    this.#timers.after(hold.holdMs, () => {
      if (this.#host.registry.admitted().some((r) => r.control === w.control)) void this.replan(`worker ${w.name}'s hold ended`);
    });
  }

  #leavingUnderEngine(): WorkerRecord[] {
    const busy = this.#supervisor.busyEndpoints();
    return this.#host.registry.all().filter((w) => w.state === 'leaving' && w.rpcEndpoint !== null && busy.has(w.rpcEndpoint));
  }

  #engineServing(): EngineProcess | null {
    const engine = this.#supervisor.engine;
    // Degraded with a loaded engine alive is a failed re-plan: the old engine still serves.
    return engine && this.#loaded && (this.#state === 'serving' || this.#state === 'degraded') ? engine : null;
  }

  /** The serving engine, once the model serves (an on-demand one is loaded first): what Ollama's load waits for. */
  async engineWhenServing(signal: AbortSignal | undefined, deadline: number): Promise<EngineProcess> {
    this.#use();
    return whenServing(this.#gate(), { signal, patientUntil: 0, deadline, requestTimeoutMs: this.config.requestTimeoutMs, lost: null, failed: '', again: '' });
  }

  #changed(): Promise<void> {
    return new Promise<void>((resolve) => this.#changeWaiters.push(resolve));
  }

  #gate(): ServingGate {
    return {
      engine: () => this.#engineServing(),
      refusal: (patientUntil: number) => {
        if (this.#stopped) return new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
        if (this.#state === 'degraded' && !this.#replanning && !this.#loss && Date.now() >= patientUntil) {
          return new HearthError(ErrorCode.Unavailable, `not serving${this.#host.several() ? ` model ${this.id}` : ''}: ${this.#reason}`);
        }
        return null;
      },
      changed: () => this.#changed(),
      lossReason: () => this.#loss,
    };
  }

  #notify(): void {
    this.#changeWaiters.splice(0).forEach((w) => w());
  }

  #setState(state: RoomState, reason: string): void {
    if (this.#stopped && state !== 'stopping') return;
    if (state === 'serving') this.#loss = null;
    const changed = state !== this.#state || reason !== this.#reason;
    this.#state = state;
    this.#reason = reason;
    if (changed) {
      this.#host.note('state', reason ? `${state}: ${reason}` : state);
      this.#log.info({ model: this.id, state, reason: reason || undefined }, `model ${state}`);
      this.#host.stateChanged(this, state, reason);
    }
    this.#notify();
  }
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s`;
}
