// The coordinator's state as the wire shows it (hearth.v1 CoordinatorService messages).
import type { SystemInfo } from '../native/binding.js';
import type { Plan, PlanResult } from './planner/types.js';
import type { WorkerRecord } from './registry.js';
import type { CoordinatorSnapshot, LoadRecord, ModelSnapshot } from './snapshot.js';
import type { WireModelStatus, WirePlan, WireStatus, WireWorkerSummary } from './wire.js';



/** Free and total bytes over a worker's devices (0 before its first GetInfo). */
export function workerMemory(w: WorkerRecord): { freeBytes: number; totalBytes: number } {
  const devices = w.info?.devices ?? [];
  return {
    freeBytes: devices.reduce((s, d) => s + Number(d.free_bytes), 0),
    totalBytes: devices.reduce((s, d) => s + Number(d.total_bytes), 0),
  };
}

/** What a worker's own disk holds of the model `contentId` (its --models directory). */
export function modelLocal(w: WorkerRecord, contentId: string | null): string {
  const m = contentId ? w.info?.models?.find((x) => x.content_id === contentId) : undefined;
  if (!m) return '';
  return m.state === 'seeding' ? `seeding ${Math.floor(m.progress * 100)}%` : m.state;
}

export function workerView(w: WorkerRecord, secure: boolean, contentId: string | null = null): WireWorkerSummary {
  const devices = w.info?.devices ?? [];
  return {
    worker_id: w.id ?? '',
    name: w.name,
    control_address: w.control,
    rpc_endpoint: w.rpcRemote ?? '',
    state: w.state,
    reason: w.reason,
    backend: [...new Set(devices.map((d) => d.backend))].join('+'),
    free_bytes: String(workerMemory(w).freeBytes),
    total_bytes: String(workerMemory(w).totalBytes),
    rpc_protocol: w.info?.build.rpc_protocol ?? '',
    llama_cpp_release: w.info?.build.llama_cpp_release ?? '',
    source: w.source,
    link: secure ? 'tls-psk' : 'open',
    model_local: modelLocal(w, contentId),
    // A message field the worker did not send arrives as null.
    tensor_cache_bytes: w.info?.cache?.bytes ?? '0',
    bytes_per_second: Math.max(0, ...devices.map((d) => d.bytes_per_second ?? 0)),
  };
}

/** A snapshot's plan already names each worker by its own address, not the local relay the engine dials. */
export function planView(p: PlanResult | null, ctx: { ctxSize: number; parallel: number }): WirePlan {
  const base = { ctx_size: ctx.ctxSize, parallel: ctx.parallel };
  const none = { objective: '', predicted_seconds_per_token: 0, groups: 0, split: '' };
  if (!p) return { fits: false, devices: [], refusal: 'no plan yet', suggestions: [], host_bytes: '0', excluded: [], ...none, ...base };
  const excluded = p.excluded.map((x) => `${x.owner}/${x.deviceName}: ${x.reason}`);
  if (!p.fits) return { fits: false, devices: [], refusal: p.reason, suggestions: p.suggestions, host_bytes: '0', excluded, ...none, ...base };
  return {
    fits: true,
    devices: (p as Plan).devices.map((d) => ({
      owner: d.owner,
      device: d.deviceName,
      endpoint: d.endpoint ?? '',
      first_layer: d.firstLayer,
      layers: d.layers,
      holds_output: d.holdsOutput,
      weight_bytes: String(d.weightBytes),
      kv_bytes: String(d.kvBytes),
      compute_bytes: String(d.computeBytes),
      free_bytes: String(d.freeBytes),
      bytes_per_second: d.bytesPerSecond ?? 0,
      seconds_per_token: d.secondsPerToken ?? 0,
      expert_layers: d.expertLayers,
      share: d.share ?? 0,
    })),
    split: (p as Plan).split,
    objective: (p as Plan).objective,
    predicted_seconds_per_token: (p as Plan).predictedSecondsPerToken ?? 0,
    groups: (p as Plan).groups,
    refusal: '',
    suggestions: [],
    host_bytes: String(p.hostBytes),
    excluded,
    ...base,
  };
}

/**
 * GetStatus, and the dashboard's /api/status: one view of the coordinator for `hearth status`, its
 * --json and --watch, and the web page.
 */
export function statusView(c: CoordinatorSnapshot, build: SystemInfo): WireStatus {
  return {
    state: c.state,
    reason: c.reason,
    model: c.modelPath,
    model_name: c.modelName,
    load: loadView(c.load),
    in_flight: c.inFlight,
    waiting: c.waiting,
    parallel: c.parallel,
    workers: c.workers.map((w) => workerView(w, c.secure, c.contentId)),
    cluster_id: c.clusterId ?? '',
    last_replan: c.lastReplan,
    speculation: c.speculation,
    plan: planView(c.plan, { ctxSize: c.ctxSize, parallel: c.parallel }),
    build: {
      llama_cpp_release: build.llamaCppRelease,
      ggml_version: build.ggmlVersion,
      ggml_commit: build.ggmlCommit,
      rpc_protocol: build.rpcProtocol,
      backends: build.backends,
    },
    events: c.events,
    history: c.history.map((h) => ({ t: h.t, tokens_per_second: h.tokensPerSecond, ttft_ms: h.ttftMs, in_flight: h.inFlight, waiting: h.waiting })),
    models: (c.models ?? []).map(modelView),
  };
}

function loadView(load: LoadRecord): WireStatus['load'] {
  return {
    progress: load.progress,
    seconds: load.seconds,
    bytes_sent: Object.fromEntries(Object.entries(load.bytesSent ?? {}).map(([k, v]) => [k, String(v)])),
    loads: load.loads,
    connect_seconds: load.phases?.connectSeconds ?? 0,
    weights_seconds: load.phases?.weightsSeconds ?? 0,
    context_seconds: load.phases?.contextSeconds ?? 0,
    groups: load.groups,
  };
}

export function modelView(m: ModelSnapshot): WireModelStatus {
  return {
    id: m.id,
    aliases: m.aliases,
    kind: m.kind,
    policy: m.policy,
    status: m.status,
    state: m.state,
    reason: m.reason,
    model: m.modelPath,
    model_name: m.modelName,
    plan: planView(m.plan, { ctxSize: m.ctxSize, parallel: m.parallel }),
    load: loadView(m.load),
    in_flight: m.inFlight,
    waiting: m.waiting,
    loaded_bytes: String(m.loadedBytes),
    last_used: m.lastUsedAt ?? 0,
    expires: m.expiresAt ?? 0,
    speculation: m.speculation,
  };
}
