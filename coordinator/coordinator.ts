// The coordinator: the workers (discovery, registry, links) and a room per served model (room.ts),
// each with its own plan, engine process and queue. Rooms plan and load one at a time, each in the
// memory the others leave; a model that does not fit beside the others is given room by unloading
// on-demand models, least recently used first (placement.ts). Pinned models are never unloaded.
//
// The coordinator's own state is its default model's (the first listed): that is what /health,
// `hearth status` and the dashboard's headline show; each model's state is in the snapshot's models.
import { EventEmitter } from 'node:events';

import { ErrorCode, HearthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { Timers } from '../common/timers.js';
import type { ModelFacts } from '../models/gguf-info.js';
import type { RpcVersion } from '../native/rpc-protocol.js';
import { configFor, type CoordinatorConfig } from './config.js';
import type { Discovery } from './discovery/discovery.js';
import type { GenerateHandlers, GenerateResult } from './engine/engine-process.js';
import type { PromptInput } from './engine/protocol.js';
import { FlapGuard } from './flaps.js';
import { linksFor, remotePlan, type WorkerLinks } from './links.js';
import type { RequestSettings } from './params.js';
import { makeRoomFor } from './placement.js';
import { plan as makePlan } from './planner/planner.js';
import type { PlanInput, PlanResult } from './planner/types.js';
import { WorkerRegistry, type WorkerRecord } from './registry.js';
import { ModelRoom, type RoomHost, type RoomState } from './room.js';
import type { EmbedRequest, EmbedResult, ModelKind, RerankRequest, RerankResult, ServedModel } from './served-models.js';
import type { CoordinatorEvents, CoordinatorSnapshot, CoordinatorState, LoadRecord, ModelSnapshot } from './snapshot.js';
import { EventLog, ServingHistory } from './telemetry.js';

/** How often the coordinator compares measured speeds with the ones its plans used. */
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

const KIND_NAMES: Record<ModelKind, string> = { chat: 'a text generation model', embedding: 'an embedding model', rerank: 'a reranker model' };

export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: CoordinatorConfig;
  readonly registry: WorkerRegistry;
  /** How workers are reached: directly, or through authenticated relays (a cluster token). */
  readonly links: WorkerLinks;
  readonly #log: Logger;
  readonly #discoveries: Discovery[];
  readonly #rooms: ModelRoom[];
  readonly #events = new EventLog(this);
  readonly #history: ServingHistory;
  readonly #flaps = new FlapGuard();
  #state: CoordinatorState = 'starting';
  #reason = 'starting';
  #started = false;
  #stopped = false;
  /** The placement turn: one room plans and loads at a time. */
  #turn: Promise<void> = Promise.resolve();
  readonly #timers = new Timers();

  constructor(config: CoordinatorConfig, log: Logger, discoveries: Discovery[], clientVersion: RpcVersion, options: CoordinatorOptions = {}) {
    super();
    this.config = config;
    this.#log = log;
    this.#discoveries = discoveries;
    this.links = linksFor(config.secret, log);
    this.registry = new WorkerRegistry(log.child({ part: 'registry' }), {
      links: this.links,
      clientVersion,
      heartbeatMs: config.heartbeatMs,
      workerTimeoutMs: config.workerTimeoutMs,
      busyEndpoints: () => this.#busyEndpoints(),
      // A draining worker waits for its release while this promise holds: as long as this coordinator
      // itself would wait before calling it lost.
      watchMs: Math.max(config.workerTimeoutMs, 2 * config.heartbeatMs),
    });
    const models = config.models.length > 0 ? config.models : [{ id: 'model', aliases: [], model: config.model, modelRef: config.modelRef, policy: 'pinned' as const, idleMs: 0, ctxSize: config.ctxSize, parallel: config.parallel, speculation: config.speculation, chatTemplate: config.chatTemplate, split: config.split }];
    const several = models.length > 1;
    this.#rooms = models.map((m) => new ModelRoom(m, configFor(config, m), several ? log.child({ model: m.id }) : log, this.#roomHost(options.plan ?? makePlan, several ? `${m.id}: ` : '')));
    this.#history = new ServingHistory(this, () => ({ inFlight: this.#sum((r) => r.inFlight), waiting: this.#sum((r) => r.waiting) }));
    // The relay sees a worker's side of the link close or fail at once; llama.cpp may sit blocked on
    // it until the watchdog, so the engines on it are stopped here and the loss diagnosed as usual.
    this.links.on('broken', (endpoint, reason) => {
      for (const r of this.#rooms) r.killIfUses(endpoint, `link to worker ${this.registry.byEndpoint(endpoint)?.name ?? endpoint} broke (${reason})`);
    });
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

  /** The default model's header facts. */
  get model(): ModelFacts | null {
    return this.#default.model;
  }

  /** The default model's plan. */
  get currentPlan(): PlanResult | null {
    return this.#default.currentPlan;
  }

  get loadRecord(): LoadRecord {
    return this.#default.loadRecord;
  }

  /** Reads every model's header, starts discovery, waits one round of probes, then plans and loads the pinned models. */
  async start(): Promise<void> {
    for (const r of this.#rooms) await r.prepare();
    this.registry.start();
    for (const d of this.#discoveries) d.start({ found: (c, s) => this.registry.add(c, s), gone: (c) => this.registry.hintGone(c) });
    await this.registry.checkAll();
    this.#started = true;
    this.#follow(this.#default.state, this.#default.reason);
    if (this.#rooms.length > 1) {
      // Said at once: a model that cannot be loaded on these workers even alone (more may join).
      for (const r of this.#rooms) {
        const alone = r.planAlone();
        if (alone.fits) continue;
        this.#log.error({ model: r.id, reason: alone.reason, suggestions: alone.suggestions }, `model ${r.id} does not fit these workers even alone`);
        this.#events.add('load', `model ${r.id} does not fit these workers even alone: ${alone.reason}`);
      }
    }
    // Pinned models in the order listed: the first (the default) plans in the most memory.
    for (const r of this.#rooms) if (r.wanted) await r.replan('start');
    if (this.#stopped) return;
    this.#timers.every(DRIFT_CHECK_MS, () => {
      if (this.#stopped) return;
      for (const r of this.#rooms) r.checkDrift();
    });
    this.#history.start();
  }

  /** The coordinator now, as a plain value (for views, `hearth status` and the dashboard); the top-level model fields are the default model's. */
  snapshot(): CoordinatorSnapshot {
    const d = this.#default;
    const models = this.#rooms.map((r) => this.#modelSnapshot(r));
    const first = models[0]!;
    return {
      state: this.#state,
      reason: this.#reason,
      modelPath: first.modelPath,
      modelName: first.modelName,
      contentId: first.contentId,
      plan: first.plan,
      load: first.load,
      inFlight: this.#sum((r) => r.inFlight),
      waiting: this.#sum((r) => r.waiting),
      parallel: d.config.parallel,
      ctxSize: d.config.ctxSize,
      workers: this.registry.all().map((w) => ({ ...w })),
      secure: this.links.secure,
      clusterId: this.links.clusterId,
      lastReplan: this.#rooms.map((r) => r.lastReplan).filter((x) => x).sort().pop() ?? '',
      speculation: first.speculation,
      events: this.#events.list(),
      history: this.#history.list(),
      models,
    };
  }

  /** Plans every wanted model again (with `force`, reloads them). Never rejects. */
  async replan(why: string, options: { force?: boolean } = {}): Promise<void> {
    for (const r of this.#rooms) if (r.wanted) await r.replan(why, options);
  }

  /** The models this cluster serves, the default first. */
  models(): ServedModel[] {
    return this.#rooms.map((r) => r.describe());
  }

  /**
   * The model a request names (by id or alias; undefined: the default), refused with the names that
   * exist when there is none, and when it is not of the kind the request needs.
   */
  resolveModel(name: string | undefined, kind: ModelKind): ServedModel {
    return this.#room(name, kind).describe();
  }

  /** Runs one generation on the model it names, through that model's admission, engine and failure handling. */
  async generate(request: GenerationRequest, options: { signal?: AbortSignal; handlers?: GenerateHandlers } = {}): Promise<GenerateResult> {
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#room(request.model, 'chat').generate(request, options);
  }

  /** Pooled vectors of each input from an embedding model. */
  async embed(request: EmbedRequest, options: { signal?: AbortSignal } = {}): Promise<EmbedResult> {
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#room(request.model, 'embedding').embed(request, options.signal);
  }

  /** The documents scored against the query by a reranker model. */
  async rerank(request: RerankRequest, options: { signal?: AbortSignal } = {}): Promise<RerankResult> {
    if (this.#stopped) throw new HearthError(ErrorCode.Unavailable, 'the coordinator is shutting down');
    return this.#room(request.model, 'rerank').rerank(request, options.signal);
  }

  /** Loads a model if it is not in memory (an on-demand one, as its first request would), and resolves once it serves. */
  async loadModel(name: string, signal?: AbortSignal): Promise<void> {
    const room = this.#room(name, null);
    await room.engineWhenServing(signal, Date.now() + room.config.requestTimeoutMs);
  }

  /** Unloads an on-demand model once its requests in flight end; false for a pinned model, which stays. */
  async unloadModel(name: string): Promise<boolean> {
    const room = this.#room(name, null);
    if (room.spec.policy === 'pinned') return false;
    await room.unload('asked to (keep_alive 0)');
    return true;
  }

  /** Stops taking requests, lets in-flight ones finish (bounded), and stops the engines and discovery. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#stopped) return;
    this.#setState('stopping', 'shutting down');
    this.#stopped = true;
    this.#timers.clear();
    this.#history.stop();
    await Promise.all(this.#rooms.map((r) => r.stop(graceMs)));
    await this.registry.stop();
    await Promise.all(this.#discoveries.map((d) => d.stop()));
    await this.links.close();
  }

  get #default(): ModelRoom {
    return this.#rooms[0]!;
  }

  /** The room a request names; `kind` null: any kind. */
  #room(name: string | undefined, kind: ModelKind | null): ModelRoom {
    // One model answers to any name, as llama-server does (clients send whatever they were written
    // for); of several, a name must be one of theirs, or the name inside a model's file.
    const found =
      name === undefined || name === '' || this.#rooms.length === 1
        ? this.#default
        : (this.#rooms.find((r) => r.id === name || r.spec.aliases.includes(name)) ?? this.#rooms.find((r) => r.model?.name === name));
    if (!found) throw new HearthError(ErrorCode.NotFound, `model '${name}' is not served here; the models are: ${this.#rooms.map((r) => r.id).join(', ')}`);
    const has = found.describe().kind;
    if (kind !== null && has !== kind) throw new HearthError(ErrorCode.InvalidArgument, `model: '${found.id}' is ${KIND_NAMES[has]}; this request needs ${KIND_NAMES[kind]}`);
    return found;
  }

  #modelSnapshot(r: ModelRoom): ModelSnapshot {
    const d = r.describe();
    return {
      id: r.id,
      aliases: [...r.spec.aliases],
      kind: d.kind,
      policy: r.spec.policy,
      status: d.status,
      state: r.state,
      reason: r.reason,
      modelPath: r.config.model ?? '',
      modelName: r.model?.name ?? '',
      contentId: r.contentId,
      plan: r.currentPlan && r.wanted ? remotePlan(r.currentPlan, this.links) : null,
      load: r.loadRecord,
      inFlight: r.inFlight,
      waiting: r.waiting,
      parallel: r.config.parallel,
      ctxSize: r.config.ctxSize,
      loadedBytes: d.loadedBytes,
      lastUsedAt: d.lastUsedAt,
      expiresAt: d.expiresAt,
      speculation: r.cluster.speculation(r.loaded?.speculation ?? null),
    };
  }

  /** What a room is given; `prefix` starts its events ("chat-b: model loaded ...") when there are several models. */
  #roomHost(plan: (input: PlanInput) => PlanResult, prefix: string): RoomHost {
    return {
      registry: this.registry,
      links: this.links,
      flaps: this.#flaps,
      emitter: this,
      plan,
      note: (kind, message) => this.#events.add(kind, `${prefix}${message}`),
      placementTurn: (room, fn) => this.#placementTurn(room, fn),
      releaseLeavers: () => this.#releaseLeavers(),
      stateChanged: (room, state, reason) => {
        if (room === this.#default) this.#follow(state, reason);
      },
      several: () => this.#rooms.length > 1,
      otherPlans: (room) => this.#rooms.filter((r) => r !== room && r.runningPlan !== null).map((r) => r.runningPlan!),
    };
  }

  /**
   * One room plans and loads at a time: each plan then sees the memory the others hold (the workers'
   * figures are fetched again first). A model that does not fit beside the loaded ones is given room
   * by unloading on-demand models, least recently used first.
   */
  async #placementTurn<T>(room: ModelRoom, fn: () => Promise<T>): Promise<T> {
    const before = this.#turn;
    let done!: () => void;
    this.#turn = new Promise<void>((resolve) => (done = resolve));
    await before;
    try {
      if (this.#rooms.length > 1 && !this.#stopped) {
        await this.registry.refreshInfo();
        const made = await makeRoomFor(room, this.#rooms, (kind, message) => this.#events.add(kind, message));
        if (made) await this.registry.refreshInfo();
      }
      return await fn();
    } finally {
      done();
    }
  }

  #follow(state: RoomState, reason: string): void {
    if (!this.#started || this.#stopped) return;
    // An on-demand default model out of memory still serves: its next request loads it.
    if (state === 'unloaded') this.#setState('serving', '');
    else this.#setState(state, reason);
  }

  #sum(f: (r: ModelRoom) => number): number {
    return this.#rooms.reduce((a, r) => a + f(r), 0);
  }

  #busyEndpoints(): Set<string> {
    const out = new Set<string>();
    for (const r of this.#rooms) for (const e of r.busyEndpoints()) out.add(e);
    return out;
  }

  #onAdmitted(w: WorkerRecord): void {
    this.#flaps.admitted(w.control, Date.now());
    if (this.#stopped) return;
    const held = this.#flaps.heldUntil(w.control, Date.now());
    if (this.#state !== 'starting' && held > 0) this.#log.info({ worker: w.name, heldForMs: held - Date.now() }, 'worker rejoined; held out of plans for now');
    if (this.#state !== 'starting' && !this.config.autoReplan && held <= 0) this.#log.info({ worker: w.name }, 'worker admitted; autoReplan is off, so serving models wait for a Replan call');
    for (const r of this.#rooms) r.workerAdmitted(w, this.#state === 'starting' || held > 0);
  }

  /** A worker leaves on purpose: no loss. Each model that uses it re-plans without it; it is released once none does. */
  #onWorkerLeaving(w: WorkerRecord): void {
    if (this.#stopped) return;
    const using = this.#rooms.filter((r) => r.workerLeaving(w));
    const what = using.length === 0 ? 'it is not in the plan' : this.#rooms.length > 1 ? `re-planning ${using.map((r) => r.id).join(', ')} without it` : 're-planning without it';
    this.#events.add('worker', `worker ${w.name} is leaving (${w.reason}): ${what}`);
    this.#releaseLeavers();
  }

  /** Releases every leaving worker that no model runs on any more: it stops. */
  #releaseLeavers(): void {
    for (const w of this.registry.all()) {
      if (w.state === 'leaving' && !this.#rooms.some((r) => r.uses(w))) void this.registry.release(w, 'the coordinator runs the model without it');
    }
  }

  #onWorkerGone(w: WorkerRecord, what: string): void {
    for (const r of this.#rooms) r.workerGone(w, what);
  }

  #noteWorkers(): void {
    this.#events.workers(this.registry.all(), (w) => (w.rpcEndpoint ? this.links.remoteOf(w.rpcEndpoint) : w.control));
  }

  #setState(state: CoordinatorState, reason: string): void {
    if (this.#stopped && state !== 'stopping') return;
    const changed = state !== this.#state || reason !== this.#reason;
    this.#state = state;
    this.#reason = reason;
    if (changed) {
      this.#log.info({ state, reason: reason || undefined }, `coordinator ${state}`);
      this.emit('state', state, reason);
    }
  }
}
