// The memory side of placement: the bytes of each layer slot, of the compute buffers, and what a device
// holds for a given run of slots. The llama.cpp facts behind these figures are in shared/ARCHITECTURE.md
// ("Placement facts").
import { kvLayerBytes, paddedContext } from './kv.js';
import { sum } from './sum.js';
import type { ModelFacts, PlanContext } from './types.js';

/** What placement needs from the model and context, derived once. */
export interface Layout {
  /** Bytes of each slot: blocks 0..n_layer-1 (weights + KV), then the output head. */
  slots: number[];
  /**
   * Bytes of weights of each slot that a decode step reads, and so what its time follows: a MoE block's
   * experts count for the share of them a token uses.
   */
  weights: number[];
  /** Sparse expert bytes of each block (0 for dense models): what a spill moves (see experts.ts). */
  experts: number[];
  /** What a decode step reads of each block's experts. */
  expertReads: number[];
  /** KV bytes of each block (sliding-window layers hold less). */
  kv: number[];
  /** Compute buffer of every device that takes part (all the contexts'). */
  computeBase: number;
  /** Extra compute on the device that holds the output head (all the contexts'). */
  logits: number;
  /** Contexts the engine creates, each with its own compute buffers. */
  groups: number;
}

/** Blocks whose MoE experts seat `from` leaves to seat `to`, a slower device of the same worker. */
export interface ExpertMove {
  from: number;
  to: number;
  blocks: number[];
}

/**
 * A deliberately simple, conservative stand-in for llama.cpp's compute buffer (the exact figure needs a
 * no_alloc context, see ARCHITECTURE.md): f32 activations of one micro-batch through the widest
 * intermediate tensors (residual, norm and attention in/out ≈ 4 × n_embd; gate, up and activation
 * ≈ 3 × n_ff), plus the attention scores (n_ubatch × n_ctx × n_head, f32). ggml reuses this buffer from
 * layer to layer, so every device that takes part needs it once, however many layers it holds.
 */
export function computeBufferBytes(model: ModelFacts, context: PlanContext): number {
  const feedForward = model.feedForwardLength ?? 4 * model.embeddingLength;
  const activations = context.nUbatch * 4 * (4 * model.embeddingLength + 3 * feedForward);
  const scores = context.nUbatch * paddedContext(context.ctxSize) * model.headCount * 4;
  return activations + scores;
}

/** f32 logits for one micro-batch, on the device that holds the output head. */
export function logitsBufferBytes(model: ModelFacts, context: PlanContext): number {
  return model.vocabSize * context.nUbatch * 4;
}

export function layoutOf(model: ModelFacts, context: PlanContext, groups: number): Layout {
  // The KV cache is only partitioned between the contexts: the same cells in total.
  const kv = kvLayerBytes(model, context);
  const experts = model.layerBytes.map((_, il) => model.experts?.layerBytes[il] ?? 0);
  const share = model.experts ? model.experts.used / model.experts.count : 1;
  const expertReads = experts.map((e) => e * share);
  return {
    slots: [...model.layerBytes.map((b, il) => b + kv[il]!), model.outputBytes],
    weights: [...model.layerBytes.map((b, il) => b - experts[il]! + expertReads[il]!), model.outputBytes],
    experts,
    expertReads,
    kv,
    computeBase: groups * computeBufferBytes(model, context),
    logits: groups * logitsBufferBytes(model, context),
    groups,
  };
}

/** The compute buffers of the device at `position` of `seatCount`: the last one also holds the logits. */
export function computeOf(layout: Layout, position: number, seatCount: number): number {
  return layout.computeBase + (position === seatCount - 1 ? layout.logits : 0);
}

/** Every slot, a compute buffer per device, and one logits buffer. */
export function neededFor(layout: Layout, seatCount: number): number {
  return sum(layout.slots) + seatCount * layout.computeBase + layout.logits;
}

/** Blocks (not the output head) of seat i's range. */
export function blocksOf(counts: number[], i: number, layout: Layout): number[] {
  const first = sum(counts.slice(0, i));
  const end = Math.min(first + counts[i]!, layout.slots.length - 1);
  return Array.from({ length: Math.max(0, end - first) }, (_, k) => first + k);
}

/** Bytes each device would hold with these counts: its contiguous slots plus its compute buffer, experts moved as said. */
export function loadsOf(counts: number[], layout: Layout, moves: readonly ExpertMove[] = []): number[] {
  let first = 0;
  const loads = counts.map((count, i) => {
    const bytes = sum(layout.slots.slice(first, first + count)) + computeOf(layout, i, counts.length);
    first += count;
    return bytes;
  });
  for (const { from, to, blocks } of moves) {
    const moved = sum(blocks.map((b) => layout.experts[b]!));
    loads[from]! -= moved;
    loads[to]! += moved;
  }
  return loads;
}
