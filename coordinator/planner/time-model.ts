// The time model: how long a token takes on a placement. With layer split one device computes at a
// time, so a token's time is the sum over the devices on its path of what each reads of its weights
// over its measured speed, plus what reaching it costs (a hop per RPC device). Every step that compares
// layer placements, and the plan's own prediction, goes through secondsOf.
//
// With tensor split (tensorSeconds) the devices compute every layer side by side: a token takes the
// slowest device's share of the weights over its speed, plus per layer two reductions of the partial
// sums among the workers, plus the coordinator's part (the graph out to every worker, the result back).
import type { ExpertMove, Layout } from './layout.js';
import type { Seat } from './seats.js';
import { sum } from './sum.js';
import type { CandidateDevice, Plan } from './types.js';

/** What reaching an RPC device costs per token when nobody measured it: a few LAN round trips. */
export const DEFAULT_HOP_SECONDS = 0.001;

/**
 * What a hop costs per generated token, from the round trip to the worker: llama.cpp's RPC client waits
 * for about two round trips per device per token (the graph goes out, the activations come back), and
 * the server takes a fraction of a millisecond to take the graph in.
 */
export function hopFromRtt(rttSeconds: number): number {
  return HOP_ROUND_TRIPS * rttSeconds + HOP_SERVER_SECONDS;
}
const HOP_ROUND_TRIPS = 2;
const HOP_SERVER_SECONDS = 0.0003;

/** The round trip DEFAULT_HOP_SECONDS stands for: a wired LAN's. */
export const DEFAULT_RTT_SECONDS = (DEFAULT_HOP_SECONDS - HOP_SERVER_SECONDS) / HOP_ROUND_TRIPS;

/** A link nobody measured: 1 Gb/s Ethernet. */
export const DEFAULT_LINK_BYTES_PER_SECOND = 125e6;

/**
 * What one step of a reduction costs on the workers beyond the wire: taking the command, adding the
 * received partial sum, the socket calls.
 */
export const REDUCE_STEP_SECONDS = 30e-6;

/**
 * What each reduction costs beyond its steps: the workers run every layer as two graphs (split at the
 * reductions), and at each reduction the quicker worker waits for the slower. Fitted on this project's
 * test machine (two 1-thread rpc servers on loopback, the small and 1b test models: 0.2 ms).
 */
export const REDUCE_SYNC_SECONDS = 0.2e-3;

/** Bytes of one tensor in a graph ggml-rpc sends (rpc_tensor). */
const RPC_TENSOR_BYTES = 296;

/**
 * Tensors of the graphs the coordinator sends each worker per token in tensor mode, for a model of
 * `layers` layers. ggml-rpc re-sends a graph unless it is the one the device computed last, and the meta
 * device gives every worker two graphs per layer, so every token sends them all again; and ggml-rpc's
 * client serializes each graph's sources recursively, through the earlier graphs too, so the graph of
 * layer k carries every earlier layer's tensors again (about 31 a layer for a llama-like block): the
 * count grows with the square of the layers. Measured with GGML_RPC_DEBUG: 2,558 tensors per token for
 * 8 layers, about 9,150 for 16. Were ggml-rpc to send an earlier graph's result as a leaf, only the
 * linear part (GRAPH_OWN_TENSORS) would remain.
 */
export function graphTensorsPerToken(layers: number): number {
  return GRAPH_CONE_TENSORS * layers * layers + GRAPH_OWN_TENSORS * layers;
}
const GRAPH_CONE_TENSORS = 31;
const GRAPH_OWN_TENSORS = 80;

/**
 * The coordinator's time per serialized tensor, per worker (its one thread serializes every worker's
 * graphs; the workers take them in meanwhile). Fitted with REDUCE_SYNC_SECONDS on the same runs.
 */
export const GRAPH_TENSOR_SECONDS = 0.65e-6;

/** What one device does for each token. */
export interface DeviceWork {
  /** Bytes of weights it reads (a MoE block's experts count for the share a token uses). */
  readBytes: number;
  /** Layer slots it holds. */
  layers: number;
  /** Blocks of a faster device of its worker whose experts it holds and computes. */
  expertBlocks: number;
}

/** What reaching this device adds per token (0 for the local device). */
export function hopOf(device: CandidateDevice): number {
  return device.kind === 'rpc' ? (device.hopSeconds ?? DEFAULT_HOP_SECONDS) : 0;
}

/**
 * Seconds per token on one device: what it reads over its speed; a hop when the token passes through
 * it, that is when it holds a slot (a device that only holds experts for another is reached from
 * that one); and a round trip for each block whose experts it computes for another device.
 */
export function secondsOf(work: DeviceWork, bytesPerSecond: number, hop: number): number {
  return work.readBytes / bytesPerSecond + (work.layers > 0 ? hop : 0) + work.expertBlocks * hop;
}

/** What each seat does with these counts, and with the experts of the moved blocks read on the slower device. */
export function workOf(counts: number[], layout: Layout, moves: readonly ExpertMove[] = []): DeviceWork[] {
  let first = 0;
  const work = counts.map((layers) => {
    const readBytes = sum(layout.weights.slice(first, first + layers));
    first += layers;
    return { readBytes, layers, expertBlocks: 0 };
  });
  for (const { from, to, blocks } of moves) {
    const reads = sum(blocks.map((b) => layout.expertReads[b]!));
    work[from]!.readBytes -= reads;
    work[to]!.readBytes += reads;
    work[to]!.expertBlocks += blocks.length;
  }
  return work;
}

/** Seconds per token of a placement on these seats, with their stand-in speeds where none was measured. */
export function timeOf(counts: number[], seats: Seat[], layout: Layout, moves: readonly ExpertMove[] = []): number {
  return sum(workOf(counts, layout, moves).map((work, i) => secondsOf(work, seats[i]!.speed, hopOf(seats[i]!.device))));
}

/** The same for a plan already built (its devices are some of `all`), for comparing plans. */
export function timeOfPlan(plan: Plan, all: Seat[]): number {
  return sum(
    plan.devices.map((d) => {
      const seat = all.find((s) => s.device.key === d.key)!;
      return secondsOf({ readBytes: d.readBytes, layers: d.layers, expertBlocks: d.expertLayers.length }, seat.speed, hopOf(seat.device));
    }),
  );
}

/** The round trip to a device's worker: measured, or derived from a given hop, or the default. */
export function rttOf(device: CandidateDevice): number {
  if (device.rttSeconds !== undefined) return device.rttSeconds;
  if (device.hopSeconds !== undefined) return Math.max(0, (device.hopSeconds - HOP_SERVER_SECONDS) / HOP_ROUND_TRIPS);
  return DEFAULT_RTT_SECONDS;
}

export function linkOf(device: CandidateDevice): number {
  return device.linkBytesPerSecond && device.linkBytesPerSecond > 0 ? device.linkBytesPerSecond : DEFAULT_LINK_BYTES_PER_SECOND;
}

/**
 * Steps of one reduction over n devices, as the meta device's butterfly runs it (ggml-backend-meta.cpp,
 * allreduce_fallback, which the workers' own reduction follows): log2(n) exchanges, and when n is not a
 * power of two one step to fold the extra devices in first and one to send them the result.
 */
export function reductionSteps(n: number): number {
  if (n <= 1) return 0;
  const butterfly = Math.floor(Math.log2(n));
  return 2 ** butterfly === n ? butterfly : butterfly + 2;
}

/** Two devices of one worker exchange their partial sums inside it, at about the speed of a memory copy. */
const SAME_WORKER_BYTES_PER_SECOND = 10e9;

/**
 * One step of a reduction: the slowest pair's one-way latency (peers are taken to be as far from each
 * other as from the coordinator: half of each one's round trip) plus the partial sum over the slower
 * link, plus the workers' own work.
 */
export function reduceStepSeconds(devices: readonly CandidateDevice[], bytes: number): number {
  let worst = 0;
  for (let i = 0; i < devices.length; i++) {
    for (let j = i + 1; j < devices.length; j++) {
      const a = devices[i]!;
      const b = devices[j]!;
      const pair = a.endpoint !== null && a.endpoint === b.endpoint ? bytes / SAME_WORKER_BYTES_PER_SECOND : (rttOf(a) + rttOf(b)) / 4 + bytes / Math.min(linkOf(a), linkOf(b));
      worst = Math.max(worst, pair);
    }
  }
  return worst + REDUCE_STEP_SECONDS;
}

/** Tensor mode's time per token and its parts. */
export interface TensorTime {
  computeSeconds: number;
  reductions: number;
  steps: number;
  reduceSeconds: number;
  coordinatorSeconds: number;
  total: number;
}

/**
 * Seconds per token in tensor mode: the slowest device's reads over its speed (they compute side by
 * side); two reductions per layer of one token's activations (n_embd f32), each a sync and its steps;
 * and the coordinator's part: the graphs to every worker (their bytes over each one's link, their
 * serialization on the coordinator), and a hop to the farthest worker.
 */
export function tensorSeconds(reads: readonly number[], speeds: readonly number[], devices: readonly CandidateDevice[], model: { layerCount: number; embeddingLength: number }): TensorTime {
  const computeSeconds = Math.max(...reads.map((r, i) => r / speeds[i]!));
  const reductions = 2 * model.layerCount;
  const steps = reductionSteps(devices.length);
  const reduceSeconds = steps === 0 ? 0 : reductions * (REDUCE_SYNC_SECONDS + steps * reduceStepSeconds(devices, model.embeddingLength * 4));
  const tensors = graphTensorsPerToken(model.layerCount);
  const graph = sum(devices.map((d) => (tensors * RPC_TENSOR_BYTES) / linkOf(d) + tensors * GRAPH_TENSOR_SECONDS));
  const coordinatorSeconds = graph + Math.max(...devices.map(hopOf));
  return { computeSeconds, reductions, steps, reduceSeconds, coordinatorSeconds, total: computeSeconds + reduceSeconds + coordinatorSeconds };
}
