// The planner's inputs and outputs. The planner is pure: the same inputs give the same plan, and it
// does no I/O and reads no clock.
import type { ModelFacts } from '../../models/gguf-info.js';
import type { CacheType } from '../../native/binding.js';

export type { ModelFacts, CacheType };

/** One device that may take layers. */
export interface CandidateDevice {
  /** Stable key: `${workerId}/${deviceName}` for worker devices, `local/${deviceName}` for the coordinator's own. */
  key: string;
  /** 'rpc': a worker's device, reached through its RPC endpoint; 'local': the coordinator's host CPU. */
  kind: 'rpc' | 'local';
  /** Human-readable owner: the worker's name, or 'coordinator'. */
  owner: string;
  /** ggml device name on its host ("CPU", "CUDA0"). */
  deviceName: string;
  /** host:port of the worker's RPC server; null for the local device. */
  endpoint: string | null;
  freeBytes: number;
  totalBytes: number;
}

export interface PlanContext {
  /** Context length of one sequence, in tokens (llama.cpp pads it up to a multiple of 256). */
  ctxSize: number;
  /** Sequences decoded side by side (--parallel). KV is allocated for ctxSize × parallel. */
  parallel: number;
  typeK: CacheType;
  typeV: CacheType;
  /** Physical micro-batch; drives compute-buffer size. */
  nUbatch: number;
}

export interface PlanInput {
  model: ModelFacts;
  /**
   * Candidates in the order llama.cpp will get them. The local device (if any) must come first:
   * llama.cpp puts the first, non-offloaded layers on the host CPU. Among RPC devices, the last one
   * that takes part holds the output head.
   */
  devices: CandidateDevice[];
  context: PlanContext;
  /** Bytes kept free on every device for the OS, drivers and fragmentation. */
  reserveBytes: number;
}

export interface PlannedDevice {
  key: string;
  kind: 'rpc' | 'local';
  owner: string;
  deviceName: string;
  endpoint: string | null;
  /** Layer slots [firstLayer, firstLayer + layers); slot n_layer is the output head. */
  firstLayer: number;
  layers: number;
  holdsOutput: boolean;
  weightBytes: number;
  kvBytes: number;
  computeBytes: number;
  /** weight + kv + compute */
  totalBytes: number;
  freeBytes: number;
  /** freeBytes − reserve: what the plan may use. */
  usableBytes: number;
}

export interface ExcludedDevice {
  key: string;
  owner: string;
  deviceName: string;
  reason: string;
}

export interface Plan {
  fits: true;
  /** Devices that take part, in llama.cpp order (local first when it takes part). */
  devices: PlannedDevice[];
  excluded: ExcludedDevice[];
  /** For llama_model_params: the RPC devices in order, one integer layer count each. */
  rpcEndpoints: string[];
  tensorSplit: number[];
  /** Layers offloaded to RPC devices (the rest, the first ones, stay on the local CPU). */
  nGpuLayers: number;
  /** Host memory the coordinator itself needs: the input embedding (llama.cpp keeps it there). */
  hostBytes: number;
  kvBytesPerToken: number;
  totalBytes: number;
  context: PlanContext;
}

export interface Refusal {
  fits: false;
  /** How many bytes are missing, after reserves. */
  shortfallBytes: number;
  /** One plain sentence: what does not fit, by how much. */
  reason: string;
  /** Concrete ways out, each with its numbers. */
  suggestions: string[];
  excluded: ExcludedDevice[];
  neededBytes: number;
  availableBytes: number;
}

export type PlanResult = Plan | Refusal;
