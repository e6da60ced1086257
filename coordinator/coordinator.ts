// The coordinator: its states, and the re-plan that moves between them. Admitted workers become a plan
// (cluster-view.ts, planner/), the plan an engine process (engine-supervisor.ts), and requests reach
// the engine through admission (admission.ts). When the engine dies, in-flight requests end with an
// error naming the worker, and the coordinator re-plans with the workers still healthy. A worker that
// leaves on purpose (it drains) is no loss: the coordinator re-plans without it while the engine it
// runs on retires as for any re-plan, and releases the worker once nothing runs on it.
//
// Re-plans run one at a time (replan() joins the one running), and every step re-reads what may have
// changed under an await: the engine, the workers, whether the coordinator is stopping. A re-plan that
// fails is logged, leaves the coordinator degraded, and is tried again with back-off: no lifecycle
// promise is ever left to reject unhandled.
import { EventEmitter } from 'node:events';
import { basename } from 'node:path';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { Timers } from '../common/timers.js';
import { modelContentId } from '../models/content-id.js';
import type { ModelFacts } from '../models/gguf-info.js';
import type { RpcVersion } from '../native/rpc-protocol.js';
import { Admission, type LossReason, type ServingGate } from './admission.js';
import { ClusterView } from './cluster-view.js';
import type { CoordinatorConfig } from './config.js';
import type { Discovery } from './discovery/discovery.js';
import { describeDrift, speedDrift } from './drift.js';
import { PooledRequests } from './embeddings.js';
import { EngineSupervisor, engineLoadSpec, lossCause, samePlacement, type EngineLoss } from './engine-supervisor.js';
import type { GenerateHandlers, GenerateResult } from './engine/engine-process.js';
import type { LoadedInfo, PromptInput } from './engine/protocol.js';
import { FlapGuard } from './flaps.js';
import { linksFor, remotePlan, type WorkerLinks } from './links.js';
import { checkPrompt, resolveParams, type RequestSettings } from './params.js';
import { plan as makePlan } from './planner/planner.js';
import type { Plan, PlanInput, PlanResult } from './planner/types.js';
import { WorkerRegistry, type WorkerRecord } from './registry.js';
import type { CoordinatorEvents, CoordinatorSnapshot, CoordinatorState, LoadRecord } from './snapshot.js';
import { ResumeLog } from './resumes.js';
import { modelKind, type EmbedRequest, type EmbedResult, type ModelKind, type RerankRequest, type RerankResult, type ServedModel } from './served-models.js';
import { EventLog, ServingHistory } from './telemetry.js';

const KIND_NAMES: Record<ModelKind, string> = { chat: 'a text generation model', embedding: 'an embedding model', rerank: 'a reranker model' };

/** How often the coordinator compares measured speeds with the ones its plan used. */
const DRIFT_CHECK_MS = 2000;

export interface GenerationRequest {
  /** The model's id or alias as the request named it; undefined: the default model. */
  model?: string;
  prompt: PromptInput;
  settings: RequestSettings;
}

export interface CoordinatorOptions {
  /** The planner; a test passes one that fails to show that a failed re-plan is survived. */
  plan?: (input: PlanInput) => PlanResult;
}

export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: CoordinatorConfig;
  readonly registry: WorkerRegistry;
  /** How workers are reached: directly, or through authenticated relays (a cluster token). */
  readonly links: WorkerLinks;
  readonly #log: Logger;
  readonly #discoveries: Discovery[];
  readonly #cluster: ClusterView;
  readonly #supervisor: EngineSupervisor;
  readonly #admission: Admission;
  readonly #pooled: PooledRequests;
  readonly #events = new EventLog(this);
  readonly #history: ServingHistory;
  readonly #flaps = new FlapGuard();
  readonly #plan: (input: PlanInput) => PlanResult;
  #state: CoordinatorState = 'starting';
  #reason = 'starting';
  #stopped = false;
  #contentId: string | null = null;
  #current: PlanResult | null = null;
  #loaded: LoadedInfo | null = null;
  #load: LoadRecord = { progress: 0, seconds: 0, phases: null, bytesSent: null, loads: 0, groups: 0 };
  #replanning: Promise<void> | null = null;
  #replanAgain: string | null = null;
  #forceReload = false;
  /** Bumped when workers join or leave, or the engine is lost: a plan made before is stale. */
  #epoch = 0;
  /** Failed re-plans in a row: they drive the retry's back-off. */
  #failures = 0;
  /** Set while an engine loss is being diagnosed and recovered from; requests that died with the engine await it. */
  #loss: Promise<LossReason> | null = null;
  readonly #timers = new Timers();
  #changeWaiters: (() => void)[] = [];
  /** Every candidate device's measured speed when the current plan was made. */
  #planSpeeds = new Map<string, number | null>();
  /** Why the last re-plan that was not asked for happened (speed drift), with when; for status. */
  #lastReplan = '';

  constructor(config: CoordinatorConfig, log: Logger, discoveries: Discovery[], clientVersion: RpcVersion, options: CoordinatorOptions = {}) {
    super();
    this.config = config;
    this.#log = log;
    this.#discoveries = discoveries;
    this.#plan = options.plan ?? makePlan;
    this.links = linksFor(config.secret, log);
    this.registry = new WorkerRegistry(log.child({ part: 'registry' }), {
      links: this.links,
      clientVersion,
      heartbeatMs: config.heartbeatMs,
      workerTimeoutMs: config.workerTimeoutMs,
      busyEndpoints: () => this.#supervisor.busyEndpoints(),
      // A draining worker waits for its release while this promise holds: as long as this coordinator
      // itself would wait before calling it lost.
      watchMs: Math.max(config.workerTimeoutMs, 2 * config.heartbeatMs),
    });
    this.#cluster = new ClusterView(config, log, this.registry, this.links, (control) => this.#flaps.heldUntil(control, Date.now()) > 0);
    this.#supervisor = new EngineSupervisor(log.child({ part: 'engine' }), this.registry, this.links, { watchdogMs: config.watchdogMs });
    this.#supervisor.on('progress', (p) => (this.#load.progress = p));
    this.#supervisor.on('lost', (loss) => this.#onEngineLost(loss));
    const resumes = new ResumeLog(this, (message) => this.#events.add('resume', message));
    this.#admission = new Admission(log, this.#gate(), this, resumes, {
      parallel: config.parallel,
      maxWaiting: config.maxWaiting,
      maxResumes: config.maxResumes,
      requestTimeoutMs: config.requestTimeoutMs,
    });
    this.#pooled = new PooledRequests(log, this.#gate(), this, { parallel: config.parallel, maxWaiting: config.maxWaiting, maxResumes: config.maxResumes, requestTimeoutMs: config.requestTimeoutMs });
    this.#history = new ServingHistory(this, () => ({ inFlight: this.#admission.inFlight, waiting: this.#admission.waiting }));
    // The relay sees a worker's side of the link close or fail at once; llama.cpp may sit blocked on
    // it until the watchdog, so the engine is stopped here and the loss diagnosed as usual.
    this.links.on('broken', (endpoint, reason) => this.#supervisor.killIfUses(endpoint, `link to worker ${this.registry.byEndpoint(endpoint)?.name ?? endpoint} broke (${reason})`));
    this.registry.on('changed', () => this.#noteWorkers());
    this.registry.on('admitted', (w) => this.#onAdmitted(w));
    this.registry.on('lost', (w) => this.#onWorkerGone(w, `was lost: ${w.reason}`));
    this.registry.on('leaving', (w) => this.#onWorkerLeaving(w));
    this.registry.on('left', (w, { released }) =>
      this.#events.add('worker', released ? `released ${w.name} (${((Date.now() - w.leavingSince) / 1000).toFixed(1)} s after it said it was leaving)` : `worker ${w.name} left before it was released: ${w.reason}`),
    );
    this.registry.on('restarted', (w) => {
      this.#events.add('worker', `worker ${w.name} restarted its rpc server`);
      this.#onWorkerGone(w, 'restarted its rpc server');
      this.#flaps.admitted(w.control, Date.now());
    });
  }

  get state(): CoordinatorState {
    return this.#state;
  }

  get reason(): string {
    return this.#reason;
  }

  get model(): ModelFacts | null {
    return this.#cluster.model;
  }

  get currentPlan(): PlanResult | null {
    return this.#current;
  }

  get loadRecord(): LoadRecord {
    return { ...this.#load };
  }

  /** Reads the model header, starts discovery, waits one round of probes, then plans and loads. */
  async start(): Promise<void> {
    const model = await this.#cluster.prepare();
    this.#contentId = modelContentId(model.shards.map((s) => s.path));
    this.registry.start();
    for (const d of this.#discoveries) d.start({ found: (c, s) => this.registry.add(c, s), gone: (c) => this.registry.hintGone(c) });
    await this.registry.checkAll();
    await this.replan('start');
    if (this.#stopped) return; // stopped while it started
    this.#timers.every(DRIFT_CHECK_MS, () => this.#checkDrift());
    this.#history.start();
  }

  /** The coordinator now, as a plain value (for views, `hearth status` and the dashboard). */
  snapshot(): CoordinatorSnapshot {
    return {
      state: this.#state,
      reason: this.#reason,
      modelPath: this.config.model ?? '',
      modelName: this.#cluster.model?.name ?? '',
      contentId: this.#contentId,
      plan: this.#current && remotePlan(this.#current, this.links),
      load: { ...this.#load },
      inFlight: this.#admission.inFlight + this.#pooled.inFlight,
      waiting: this.#admission.waiting + this.#pooled.waiting,
      parallel: this.config.parallel,
      ctxSize: this.config.ctxSize,
      workers: this.registry.all().map((w) => ({ ...w })),
      secure: this.links.secure,
      clusterId: this.links.clusterId,
      lastReplan: this.#lastReplan,
      speculation: this.#cluster.speculation(this.#loaded?.speculation ?? null),
      events: this.#events.list(),
      history: this.#history.list(),
    };
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

  /** The models this cluster serves (one, for now), in the order the configuration lists them. */
  models(): ServedModel[] {
    const facts = this.#cluster.model;
    const id = facts?.name ?? (this.config.model ? basename(this.config.model, '.gguf') : 'hearth');
    const status = this.#state === 'serving' ? 'loaded' : this.#state === 'loading' ? 'loading' : 'on disk';
    const loadedBytes = this.#loaded ? this.#loaded.memory.reduce((a, m) => a + m.modelBytes + m.contextBytes + m.computeBytes, 0) : 0;
    return [{ id, aliases: [], kind: modelKind(facts), status, policy: 'pinned', facts, ctxSize: this.config.ctxSize, loadedBytes, expiresAt: null, lastUsedAt: null }];
  }

  /**
   * The model a request names (by id or alias; undefined: the default), refused with the names that
   * exist when there is none, and when it is not of the kind the request needs.
   */
  resolveModel(name: string | undefined, kind: ModelKind): ServedModel {
    const all = this.models();
    const found = name === undefined || name === '' ? all[0]! : all.find((m) => m.id === name || m.aliases.includes(name));
    if (!found) throw new HearthError(ErrorCode.NotFound, `model '${name}' is not served here; the models are: ${all.map((m) => m.id).join(', ')}`);
    if (found.kind !== kind) throw new HearthError(ErrorCode.InvalidArgument, `model: '${found.id}' is ${KIND_NAMES[found.kind]}; this request needs ${KIND_NAMES[kind]}`);
    return found;
  }

  /** Pooled vectors of each input from an embedding model. */
  async embed(request: EmbedRequest, options: { signal?: AbortSignal } = {}): Promise<EmbedResult> {
    const model = this.resolveModel(request.model, 'embedding');
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#pooled.embed(model, request, options.signal);
  }

  /** The documents scored against the query by a reranker model. */
  async rerank(request: RerankRequest, options: { signal?: AbortSignal } = {}): Promise<RerankResult> {
    const model = this.resolveModel(request.model, 'rerank');
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#pooled.rerank(model, request, options.signal);
  }

  /** Runs one generation through admission, the engine and its failure handling. */
  async generate(request: GenerationRequest, options: { signal?: AbortSignal; handlers?: GenerateHandlers } = {}): Promise<GenerateResult> {
    this.resolveModel(request.model, 'chat');
    const prompt = checkPrompt(request.prompt);
    const params = resolveParams(request.settings, { maxTokens: this.config.maxTokensDefault, contextTokens: this.#loaded?.nCtxSeq ?? this.config.ctxSize });
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#admission.run(prompt, params, options);
  }

  /** Stops taking requests, lets in-flight ones finish (bounded), and stops the engine and discovery. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#stopped) return;
    this.#setState('stopping', 'shutting down');
    this.#stopped = true;
    this.#timers.clear();
    this.#history.stop();
    this.#admission.clear();
    this.#pooled.clear();
    await this.#supervisor.close(graceMs);
    await this.registry.stop();
    await Promise.all(this.#discoveries.map((d) => d.stop()));
    await this.links.close();
  }

  async #replanLoop(why: string): Promise<void> {
    for (let reason: string | null = why; reason !== null && !this.#stopped; ) {
      this.#replanAgain = null;
      const force = this.#forceReload;
      this.#forceReload = false;
      try {
        await this.#replanOnce(reason, force);
        this.#failures = 0;
      } catch (e) {
        this.#replanFailed(e);
        return;
      } finally {
        this.#releaseLeavers();
      }
      reason = this.#replanAgain;
      // Requests waiting to resume were woken by the load that just served: they take the engine
      // before the next re-plan drains it, instead of waiting out a second load (a worker that rejoins
      // during a load asks for that re-plan at once).
      if (reason !== null) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async #replanOnce(why: string, force: boolean): Promise<void> {
    if (this.#stopped) return;
    this.#setState('planning', why);
    const epoch = this.#epoch;
    const running = this.#supervisor.plan;
    const input = this.#cluster.planInput(this.config.placement, running);
    this.#planSpeeds = new Map(input.devices.map((d) => [d.key, d.bytesPerSecond ?? null]));
    const next = this.#plan(input);
    this.#current = next;
    if (!next.fits) {
      this.#log.warn({ reason: next.reason, suggestions: next.suggestions }, 'the model does not fit the cluster');
      // With an engine running, keep serving on its plan; the new one only lacks a newcomer's help.
      const leaving = this.#leavingUnderEngine();
      if (this.#supervisor.engine && leaving.length === 0) return this.#setState('serving', '');
      if (leaving.length > 0) {
        // Unless a worker of that plan is leaving: it was asked to go, so it goes, and the cluster
        // serves nothing until enough workers join.
        const names = leaving.map((w) => w.name).join(', ');
        this.#log.error({ leaving: names, reason: next.reason, suggestions: next.suggestions }, `the model does not fit without ${names}: stopping the engine so that it can leave; not serving until enough workers join`);
        this.#events.add('worker', `the model does not fit without ${names}: not serving until enough workers join (${next.reason})`);
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
      // Nothing runs on a leaving worker now: it need not wait for the next engine's load.
      this.#releaseLeavers();
    }
    if (epoch !== this.#epoch) {
      // The cluster changed while the engine drained: this plan is stale. An engine loss re-plans
      // once its diagnosis is in; any other change re-plans now.
      if (!this.#loss) this.#replanAgain = 'the workers changed while re-planning';
      return;
    }
    await this.#startEngine(next);
  }

  async #startEngine(plan: Plan): Promise<void> {
    this.#loaded = null;
    this.#load = { ...this.#load, progress: 0 };
    this.#setState('loading', `loading ${this.#cluster.model?.name ?? this.config.model} onto ${plan.devices.length} device(s)`);
    const outcome = await this.#supervisor.start(plan, engineLoadSpec(this.config, plan, this.#cluster.draftHost()?.endpoint ?? null, modelKind(this.#cluster.model)));
    if (this.#stopped || outcome.kind === 'lost') return; // a loss is diagnosed and re-planned by #onEngineLost
    // A failed load is diagnosed like a lost engine: the worker to blame is kept out, and the re-plan backs off.
    if (outcome.kind === 'failed') return this.#onEngineLost(outcome.loss);
    if (!this.#supervisor.engine) return; // it died between loading and now
    const info = outcome.info;
    this.#loaded = info;
    this.#load = { progress: 1, seconds: info.loadSeconds, phases: info.phases, bytesSent: info.bytesSent, loads: this.#load.loads + 1, groups: info.groups };
    const layers = plan.devices.map((d) => `${d.owner}/${d.deviceName} (${d.layers} layers)`);
    this.#log.info({ seconds: Number(info.loadSeconds.toFixed(2)), phases: info.phases, bytesSent: info.bytesSent, layers, groups: info.groups }, 'model loaded; serving');
    if (this.config.speculation) this.#log.info({ speculation: this.#cluster.speculation(info.speculation ?? null), draftBytes: info.speculation?.draftBytes ?? 0 }, 'speculative decoding');
    const sent = Object.values(info.bytesSent ?? {}).reduce((a, b) => a + b, 0);
    this.#events.add('load', `model loaded in ${info.loadSeconds.toFixed(2)} s onto ${layers.join(', ')}${info.bytesSent ? `; ${(sent / 2 ** 20).toFixed(1)} MiB sent` : ''}`);
    this.#setState('serving', '');
  }

  /** A failed re-plan: said with its cause, the coordinator degraded, and another try after a back-off. */
  #replanFailed(e: unknown): void {
    this.#failures++;
    const delay = Math.min(30_000, 1000 * 2 ** (this.#failures - 1));
    this.#log.error({ err: messageOf(e), stack: e instanceof Error ? e.stack : undefined, retryInMs: delay }, 're-plan failed');
    this.#setState('degraded', `re-plan failed: ${messageOf(e)}; trying again in ${delay / 1000} s`);
    this.#timers.after(delay, () => void this.replan('retrying a failed re-plan'));
  }

  #onEngineLost(loss: EngineLoss): void {
    if (this.#stopped) return;
    this.#epoch++;
    this.#setState('degraded', lossCause(loss));
    const loss$ = this.#supervisor.diagnose(loss).then(
      (d) => {
        for (const f of d.failed) if (f.worker) this.#noteLoss(f.worker);
        // Only while nothing has moved on: a re-plan may already be loading the next engine.
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
        // Requests waiting out the loss give up when the re-plan could not bring serving back.
        if (this.#loss === loss$ && this.#state !== 'serving' && !this.#replanning) this.#loss = null;
        this.#notify();
      });
  }

  #onAdmitted(w: WorkerRecord): void {
    this.#epoch++;
    this.#flaps.admitted(w.control, Date.now());
    if (this.#stopped || this.#state === 'starting') return;
    const held = this.#flaps.heldUntil(w.control, Date.now());
    if (held > 0) {
      this.#log.info({ worker: w.name, heldForMs: held - Date.now() }, 'worker rejoined; held out of plans for now');
    } else if (this.#state === 'degraded' || !this.#supervisor.engine || this.config.autoReplan) {
      void this.replan(`worker ${w.name} joined`);
    } else {
      this.#log.info({ worker: w.name }, 'worker admitted; autoReplan is off, so it waits for a Replan call');
    }
  }

  /** A worker leaves on purpose: no loss. Re-planned without when a plan uses it, released once none does. */
  #onWorkerLeaving(w: WorkerRecord): void {
    if (this.#stopped) return;
    const used = this.#uses(w);
    this.#events.add('worker', `worker ${w.name} is leaving (${w.reason}): ${used ? 're-planning without it' : 'it is not in the plan'}`);
    if (used) {
      this.#epoch++;
      void this.replan(`worker ${w.name} is leaving (${w.reason})`);
    }
    this.#releaseLeavers();
  }

  /** Whether the live engine, or the plan made last (maybe loading now), runs on worker `w`. */
  #uses(w: WorkerRecord): boolean {
    if (!w.rpcEndpoint) return false;
    if (this.#supervisor.busyEndpoints().has(w.rpcEndpoint)) return true;
    return this.#current?.fits === true && this.#current.devices.some((d) => d.endpoint === w.rpcEndpoint);
  }

  /** Leaving workers the live engine still runs on. */
  #leavingUnderEngine(): WorkerRecord[] {
    const busy = this.#supervisor.busyEndpoints();
    return this.registry.all().filter((w) => w.state === 'leaving' && w.rpcEndpoint !== null && busy.has(w.rpcEndpoint));
  }

  /** Releases every leaving worker that nothing runs on any more: it stops. */
  #releaseLeavers(): void {
    for (const w of this.registry.all()) {
      if (w.state === 'leaving' && !this.#uses(w)) void this.registry.release(w, 'the coordinator runs the model without it');
    }
  }

  #onWorkerGone(w: WorkerRecord, what: string): void {
    this.#epoch++;
    this.#noteLoss(w);
    if (w.rpcEndpoint) this.#supervisor.killIfUses(w.rpcEndpoint, `worker ${w.name} in the plan ${what}`);
  }

  /** A worker lost soon after it joined flaps: it is held out of plans for a while, and re-planned with after. */
  #noteLoss(w: WorkerRecord): void {
    const hold = this.#flaps.lost(w.control, Date.now());
    if (!hold) return;
    this.#events.add('worker', `worker ${w.name} was lost ${hold.flaps} time(s) within seconds of joining: held out of plans for ${hold.holdMs / 1000} s`);
    this.#timers.after(hold.holdMs, () => {
      if (this.registry.admitted().some((r) => r.control === w.control)) void this.replan(`worker ${w.name}'s hold ended`);
    });
  }

  /** Re-plans at an idle moment when a device's measured speed moved far from what the plan used. */
  #checkDrift(): void {
    if (this.#stopped || this.#state !== 'serving' || this.#replanning || this.config.placement !== 'speed') return;
    if (this.#admission.inFlight > 0 || this.#admission.waiting > 0) return; // the next idle moment
    const drift = speedDrift(this.#planSpeeds, this.#cluster.candidates());
    if (!drift) return;
    const why = `${describeDrift(drift)} since the plan was made`;
    this.#lastReplan = `${new Date().toISOString()}: ${why}`;
    this.#log.info({ device: drift.key, before: drift.before, now: drift.now }, `re-planning: ${why}`);
    void this.replan(why);
  }

  #noteWorkers(): void {
    this.#events.workers(this.registry.all(), (w) => (w.rpcEndpoint ? this.links.remoteOf(w.rpcEndpoint) : w.control));
  }

  /** What admission sees: the engine while serving, why to fail now, and a promise of the next change. */
  #gate(): ServingGate {
    return {
      // Degraded with a loaded engine alive is a failed re-plan: the old engine still serves.
      engine: () => {
        const engine = this.#supervisor.engine;
        return engine && this.#loaded && (this.#state === 'serving' || this.#state === 'degraded') ? engine : null;
      },
      refusal: (patientUntil: number) => {
        if (this.#stopped) return new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
        if (this.#state === 'degraded' && !this.#replanning && !this.#loss && Date.now() >= patientUntil) return new HearthError(ErrorCode.Unavailable, `not serving: ${this.#reason}`);
        return null;
      },
      changed: () => new Promise<void>((resolve) => this.#changeWaiters.push(resolve)),
      lossReason: () => this.#loss,
    };
  }

  #notify(): void {
    this.#changeWaiters.splice(0).forEach((w) => w());
  }

  #setState(state: CoordinatorState, reason: string): void {
    if (this.#stopped && state !== 'stopping') return;
    if (state === 'serving') this.#loss = null;
    const changed = state !== this.#state || reason !== this.#reason;
    this.#state = state;
    this.#reason = reason;
    if (changed) {
      this.#events.add('state', reason ? `${state}: ${reason}` : state);
      this.#log.info({ state, reason: reason || undefined }, `coordinator ${state}`);
      this.emit('state', state, reason);
    }
    this.#notify();
  }
}
