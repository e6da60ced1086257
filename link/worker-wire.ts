// The worker's wire types (hearth.v1 WorkerService), as @grpc/proto-loader presents them with
// common/grpc.ts's options: snake_case fields, enums as strings, 64-bit integers as decimal strings.

/** The mDNS service a worker advertises its control port under (_hearth._tcp). */
export const MDNS_SERVICE_TYPE = 'hearth';

export type WorkerState = 'STARTING' | 'READY' | 'RESTARTING' | 'STOPPING';

/** Distinct from other strings: a worker's stable identity. */
export type WorkerId = string & { readonly __brand: 'WorkerId' };

export interface WireBuildInfo {
  llama_cpp_release: string;
  ggml_version: string;
  ggml_commit: string;
  rpc_protocol: string;
  backends: string[];
}

export interface WireDevice {
  name: string;
  backend: string;
  type: string;
  description: string;
  free_bytes: string;
  total_bytes: string;
  /** Measured decode speed (bytes of F16 weights per second); 0 when not measured. */
  bytes_per_second: number;
  /** The same per weight type ("f16", "q8_0", "q4_k"); empty when not measured. */
  bytes_per_second_by_type: Record<string, number>;
}

/** What bounds the worker: its --memory cap, its memory cgroup, its CPU quota (0 for none). */
export interface WireLimits {
  memory_cap_bytes: string;
  cgroup_memory_bytes: string;
  cpu_quota_cores: number;
}

export interface WireTensorCache {
  enabled: boolean;
  dir: string;
  bytes: string;
  files: number;
}

/** How the worker is reached: with a token, only through its authenticated gateways. */
export interface WireLink {
  secure: boolean;
  /** Public id derived from the token ('' without one). */
  cluster_id: string;
  /** Connections that proved the key / that were refused, since the worker started. */
  accepted: number;
  refused: number;
  token_mismatches: number;
}

export interface WireWorkerInfo {
  worker_id: string;
  name: string;
  hostname: string;
  state: WorkerState;
  build: WireBuildInfo;
  devices: WireDevice[];
  rpc_host: string;
  rpc_port: number;
  control_port: number;
  host_total_bytes: string;
  host_available_bytes: string;
  cache: WireTensorCache;
  threads: number;
  rpc_restarts: number;
  started_at_ms: string;
  link: WireLink;
  limits: WireLimits;
  models: WireLocalModel[];
  /** Leaving the cluster: plan without it, then Release it. */
  draining: boolean;
  drain_reason: string;
  /** Host memory its rpc servers hold now (absent from an older worker). */
  held_bytes?: string;
}

export interface WireLocalModel {
  content_id: string;
  file: string;
  bytes: string;
  state: 'queued' | 'seeding' | 'ready' | 'failed';
  progress: number;
  error: string;
}

export interface WireHealth {
  state: WorkerState;
  ready: boolean;
  rpc_server_pid: number;
  rpc_restarts: number;
  uptime_ms: string;
  draining: boolean;
  drain_reason: string;
}

/**
 * GetInfo and Health requests. `watch_ms`: sent by a coordinator that admits or admitted the worker, a
 * promise to call again within that long and to Release the worker when it leaves; 0 from anyone else.
 */
export interface WireWatch {
  watch_ms: number;
}

export interface WireDrainRequest {
  reason: string;
  /** Answer when the drain has ended (just before the worker stops), not at once. */
  wait: boolean;
}

/** How a drain ended: the coordinator released the worker, none counted on it, or the timeout passed. */
export type DrainOutcome = 'released' | 'unwatched' | 'timed-out';

export interface WireDrain {
  reason: string;
  /** A coordinator counts on the worker: it waits for that coordinator's Release. */
  watched: boolean;
  timeout_ms: number;
  started_at_ms: string;
  /** With `wait`: how the drain ended; '' without. */
  outcome: DrainOutcome | '';
  message: string;
}

export interface WireReleaseRequest {
  reason: string;
}

export interface WireRelease {
  /** The worker was draining and stops now. */
  leaving: boolean;
}

export interface WireOpenPeerLinkRequest {
  /** The other worker's public rpc address, host:port. */
  endpoint: string;
}

export interface WireOpenPeerLink {
  /** Where this worker's rpc server dials to reach it: the endpoint itself, or a loopback relay. */
  address: string;
}
