// The planner's inputs and outputs. The planner is pure: the same inputs give the same plan, and it
// does no I/O and reads no clock.
import type { ModelFacts } from '../../models/gguf-info.js';
import type { CacheType } from '../../native/binding.js';
import type { RpcVersion } from '../../native/rpc-protocol.js';
import type { PipelineSetting } from './pipeline.js';

export type { ModelFacts, CacheType };

/**
 * What the planner optimises. 'speed': the least time per generated token, within memory (the fastest
 * devices take as many layers as fit, a device joins only when the model needs its memory or it saves
 * time). 'memory': layers in proportion to free memory, every usable device taking part.
 */
export type PlacementObjective = 'speed' | 'memory';
export const PLACEMENT_OBJECTIVES: readonly PlacementObjective[] = ['speed', 'memory'];

/**
 * How the model is split over the devices (split.ts). 'layer': whole layers per device, one device after
 * another; 'tensor': a share of every layer on every device, computed side by side; 'auto': the faster.
 */
export type SplitMode = 'layer' | 'tensor';
export type SplitSetting = SplitMode | 'auto';
export const SPLIT_SETTINGS: readonly SplitSetting[] = ['layer', 'tensor', 'auto'];

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
  /** Round trip between the coordinator and this device's worker; peers are taken to be as far from each other. A default when absent. */
  rttSeconds?: number;
  /** Bytes per second its worker's network link carries (tensor mode's partial sums); a default when absent. */
  linkBytesPerSecond?: number;
  /** The RPC protocol its worker speaks ("7.1.0"); absent: the coordinator's own (a cluster on paper). */
  rpcProtocol?: string | null;
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
  /** How the model is split (split.ts). Default 'layer', what plans were before tensor mode; the coordinator and `hearth plan` pass 'auto'. */
  split?: SplitSetting;
  /** The coordinator's own RPC protocol: tensor mode needs it and every worker in the split at TENSOR_RPC_PROTOCOL. Absent: recent enough. */
  rpcProtocol?: RpcVersion | null;
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
  /** Tensor mode: its fraction of every layer (the plan's tensorSplit entry); absent in layer mode. */
  share?: number;
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
  /** 'layer': whole layers per device; 'tensor': every device a share of every layer (split.ts). */
  split: SplitMode;
  /** Both modes' predictions, and why this one was taken. */
  splitChoice: SplitChoice;
  /** Tensor mode's details; null in layer mode. */
  tensor: TensorDetails | null;
  /** For llama_model_params: the RPC devices in order. */
  rpcEndpoints: string[];
  /** For each of rpcEndpoints, which of its server's devices it is (CandidateDevice.serverIndex). */
  rpcDevices: number[];
  /** Layer mode: one integer layer count per RPC device. Tensor mode: each device's share of every layer (proportions). */
  tensorSplit: number[];
  /** MoE expert tensors of these blocks go to the RPC device at this index of rpcEndpoints (see PlannedDevice.expertLayers). */
  expertOverrides: { layers: number[]; device: number }[];
  /** Layers offloaded to RPC devices (the rest, the first ones, stay on the local CPU); every slot in tensor mode. */
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

/** One split mode's outcome, for comparing them. */
export interface SplitOption {
  mode: SplitMode;
  /** Predicted seconds per token (measured speeds, stand-ins where a device was not measured); null when it was not planned or does not fit. */
  secondsPerToken: number | null;
  /** Why this mode gives no plan (it was not asked for, the model or the workers cannot, it does not fit); null when it does. */
  refusal: string | null;
  /** Tensor mode's time in parts (see TensorDetails), and on how many devices; null for layer mode or without a plan. */
  parts: { devices: number; computeSeconds: number; reduceSeconds: number; reductions: number; steps: number; coordinatorSeconds: number } | null;
}

/** What the split setting was, what each mode would do, and why the plan takes the mode it does. */
export interface SplitChoice {
  setting: SplitSetting;
  layer: SplitOption;
  tensor: SplitOption;
  /** One sentence. */
  reason: string;
}

/** Tensor mode's plan beyond the devices: the reductions and what llama.cpp's rounding does to the shares. */
export interface TensorDetails {
  /** Partial sums reduced per token: two per layer (after the attention and after the feed-forward block). */
  reductions: number;
  /** Steps of each reduction's butterfly among the devices. */
  steps: number;
  /** What the reductions cost per token (the devices exchanging their partial sums). */
  reduceSeconds: number;
  /** The slowest device's share of the weights over its speed: the devices compute side by side. */
  computeSeconds: number;
  /** The coordinator's part per token: the graph out to every worker, the result back. */
  coordinatorSeconds: number;
  /** The meta device's buffers for received partial sums, on every device (in computeBytes). */
  reduceBufferBytes: number;
  /** How llama.cpp's rounding to whole heads and quant blocks changes the shares, in words; empty when it does not matter. */
  notes: string[];
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
  /** The split modes tried and why each gave no plan; absent where only layer mode was asked for. */
  splitChoice?: SplitChoice;
}

export type PlanResult = Plan | Refusal;
