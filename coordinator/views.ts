// The coordinator's state as the wire shows it (hearth.v1 CoordinatorService messages).
import type { SystemInfo } from '../native/binding.js';
import type { WireStatus } from './client.js';
import type { Coordinator } from './coordinator.js';
import type { Plan, PlanResult } from './planner/types.js';
import type { WorkerRecord } from './registry.js';

export interface WireWorkerSummary {
  worker_id: string;
  name: string;
  control_address: string;
  rpc_endpoint: string;
  state: string;
  reason: string;
  backend: string;
  free_bytes: string;
  total_bytes: string;
  rpc_protocol: string;
  llama_cpp_release: string;
  source: string;
  link: string;
  /** Whether the worker holds the served model on its own disk: "ready", "seeding 40%", "failed", or "". */
  model_local: string;
  /** Bytes of tensors its rpc server keeps on disk. */
  tensor_cache_bytes: string;
  /** Its fastest device's measured speed, bytes of weights per second; 0 when not measured. */
  bytes_per_second: number;
}

export interface WirePlan {
  fits: boolean;
  devices: {
    owner: string;
    device: string;
    endpoint: string;
    first_layer: number;
    layers: number;
    holds_output: boolean;
    weight_bytes: string;
    kv_bytes: string;
    compute_bytes: string;
    free_bytes: string;
    bytes_per_second?: number;
    seconds_per_token?: number;
    /** Absent (proto3 default) when empty. */
    expert_layers?: number[];
  }[];
  refusal: string;
  suggestions: string[];
  host_bytes: string;
  ctx_size: number;
  parallel: number;
  excluded: string[];
  /** Absent (proto3 default) before a plan fits. */
  objective?: string;
  predicted_seconds_per_token?: number;
  /** Absent (proto3 default) before a plan fits. */
  groups?: number;
}

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

/** `remoteOf` shows a device's worker address rather than the local relay the engine dials. */
export function planView(p: PlanResult | null, ctx: { ctxSize: number; parallel: number }, remoteOf: (endpoint: string) => string = (e) => e): WirePlan {
  const base = { ctx_size: ctx.ctxSize, parallel: ctx.parallel };
  if (!p) return { fits: false, devices: [], refusal: 'no plan yet', suggestions: [], host_bytes: '0', excluded: [], ...base };
  const excluded = p.excluded.map((x) => `${x.owner}/${x.deviceName}: ${x.reason}`);
  if (!p.fits) return { fits: false, devices: [], refusal: p.reason, suggestions: p.suggestions, host_bytes: '0', excluded, ...base };
  return {
    fits: true,
    devices: (p as Plan).devices.map((d) => ({
      owner: d.owner,
      device: d.deviceName,
      endpoint: d.endpoint ? remoteOf(d.endpoint) : '',
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
    })),
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
export function statusView(c: Coordinator, build: SystemInfo): WireStatus {
  const load = c.loadRecord;
  return {
    state: c.state,
    reason: c.reason,
    model: c.config.model ?? '',
    model_name: c.model?.name ?? '',
    load: {
      progress: load.progress,
      seconds: load.seconds,
      bytes_sent: Object.fromEntries(Object.entries(load.bytesSent ?? {}).map(([k, v]) => [k, String(v)])),
      loads: load.loads,
      connect_seconds: load.phases?.connectSeconds ?? 0,
      weights_seconds: load.phases?.weightsSeconds ?? 0,
      context_seconds: load.phases?.contextSeconds ?? 0,
      groups: load.groups,
    },
    in_flight: c.inFlight,
    waiting: c.waiting,
    parallel: c.config.parallel,
    workers: c.registry.all().map((w) => workerView(w, c.links.secure, c.modelContentId)),
    cluster_id: c.links.clusterId ?? '',
    last_replan: c.lastReplan,
    speculation: c.speculation,
    plan: planView(c.currentPlan, { ctxSize: c.config.ctxSize, parallel: c.config.parallel }, (e) => c.links.remoteOf(e)),
    build: {
      llama_cpp_release: build.llamaCppRelease,
      ggml_version: build.ggmlVersion,
      ggml_commit: build.ggmlCommit,
      rpc_protocol: build.rpcProtocol,
      backends: build.backends,
    },
    events: c.events.map((e) => ({ ...e })),
    history: c.history.map((h) => ({ t: h.t, tokens_per_second: h.tokensPerSecond, ttft_ms: h.ttftMs, in_flight: h.inFlight, waiting: h.waiting })),
  };
}
