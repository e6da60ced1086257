// The planner's inputs and outputs. The planner is pure: the same inputs give the same plan, and it
// does no I/O and reads no clock.
import type { ModelFacts } from '../../models/gguf-info.js';
import type { CacheType } from '../../native/binding.js';
import type { PipelineSetting } from './pipeline.js';

export type { ModelFacts, CacheType };

/**
 * What the planner optimises. 'speed': the least time per generated token, within memory (the fastest
 * devices take as many layers as fit, a device joins only when the model needs its memory or it saves
 * time). 'memory': layers in proportion to free memory, every usable device taking part.
 */
export type PlacementObjective = 'speed' | 'memory';
export const PLACEMENT_OBJECTIVES: readonly PlacementObjective[] = ['speed', 'memory'];

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
  /** Its position among the devices its RPC server serves (a worker serving GPU0,CPU: 0 and 1); 0 when absent. */
  serverIndex?: number;
  freeBytes: number;
  totalBytes: number;
  /**
   * Measured decode speed: bytes of weights the device streams through a matrix-vector product per
   * second (the worker's calibration). Null or absent when unknown.
   */
  bytesPerSecond?: number | null;
  /** Time per generated token that reaching this device adds (RPC round trips); a default when absent. */
  hopSeconds?: number;
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
  /** Pipelined decode (--pipeline): every extra context needs its own compute buffers. Default 'off'. */
  pipeline?: PipelineSetting;
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
  /** Default 'memory'. */
  objective?: PlacementObjective;
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
  /** Bytes of weights it holds: its blocks' (less experts held elsewhere) and the experts it holds for others. */
  weightBytes: number;
  /** What a decode step reads of them (a MoE block's experts count for the share a token uses): the time model's input. */
  readBytes: number;
  /**
   * Blocks of a faster device of the same worker whose MoE expert tensors this device holds (llama.cpp
   * tensor overrides); empty for most devices. A device may hold such experts and no blocks of its own.
   */
  expertLayers: number[];
  kvBytes: number;
  /** Compute buffers of all the engine's contexts (one per pipeline group). */
  computeBytes: number;
  /** weight + kv + compute */
  totalBytes: number;
  freeBytes: number;
  /** freeBytes − reserve: what the plan may use. */
  usableBytes: number;
  /** The measured speed the plan used, or null. */
  bytesPerSecond: number | null;
  /** This device's share of the predicted time per token (its layers and its hop); null without a speed. */
  secondsPerToken: number | null;
  /** What reaching it adds per token (0 for the local device). */
  hopSeconds: number;
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
  /** For each of rpcEndpoints, which of its server's devices it is (CandidateDevice.serverIndex). */
  rpcDevices: number[];
  tensorSplit: number[];
  /** MoE expert tensors of these blocks go to the RPC device at this index of rpcEndpoints (see PlannedDevice.expertLayers). */
  expertOverrides: { layers: number[]; device: number }[];
  /** Layers offloaded to RPC devices (the rest, the first ones, stay on the local CPU). */
  nGpuLayers: number;
  /** Host memory the coordinator itself needs: the input embedding (llama.cpp keeps it there). */
  hostBytes: number;
  kvBytesPerToken: number;
  totalBytes: number;
  context: PlanContext;
  objective: PlacementObjective;
  /** Predicted single-stream decode time per token; null when a device that takes part has no measured speed. */
  predictedSecondsPerToken: number | null;
  /**
   * Contexts the engine decodes in (pipelined decode, see pipeline.ts), each with its share of the
   * sequences and its own compute buffers on every device: computeBytes counts them all.
   */
  groups: number;
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
