// What each device holds and reads in tensor mode, for given shares, as llama.cpp will split it
// (src/llama-model.cpp, llama_meta_device_get_split_state):
// - the attention tensors (Q, K, V, output) and the KV cache are cut by KV-head groups: boundaries are
//   rounded down to a granularity of lcm(n_gqa × head_dim, quant block), so a device holds whole heads;
// - the feed-forward tensors are cut by rows, rounded to lcm(quant block, 128);
// - the output head is cut by vocabulary rows (a tied output, a copy of token_embd, is on every device whole);
// - the rest (norms, a MoE router) is on every device whole;
// - the rounding's remainder goes to the last device of the scan, and the scan is rotated by one device per
//   layer (per layer of the same kind), so the remainders take turns.
// The compute buffer is the whole graph's on every device (the meta buffer type asks each device for the
// largest slice's size, ggml-backend-meta.cpp), plus the meta device's buffers for received partial sums:
// ceil(log2 n) of one micro-batch's activations (n_embd × n_ubatch f32) each.
import { kvLayerBytes } from './kv.js';
import { computeBufferBytes, logitsBufferBytes } from './layout.js';
import { sum } from './sum.js';
import type { ModelFacts, PlanContext } from './types.js';

/** What a device holds and reads for a given split. */
export interface TensorLoad {
  weightBytes: number;
  readBytes: number;
  kvBytes: number;
  computeBytes: number;
  /** KV heads it holds in each layer (of layer 0's kind), for the plan's notes. */
  kvHeads: number[];
}

/** The model as the tensor split sees it, for a given number of devices. */
export interface TensorShape {
  devices: number;
  /** Per layer: bytes cut by heads, by feed-forward rows, and held whole; and what a token reads of the rows (MoE experts in part). */
  heads: number[];
  rows: number[];
  rowsRead: number[];
  whole: number[];
  kv: number[];
  /** Per layer: elements and granularity of the Q axis and of the KV axis; KV head size. */
  attention: { neQ: number; gQ: number; neKv: number; gKv: number; headDim: number }[];
  ffn: { ne: number; g: number };
  /** Per layer: the scan's rotation. The output head's is `outputRotation`. */
  rotation: number[];
  outputRotation: number;
  /** Output head bytes; cut by vocabulary rows unless tied (then every device holds and reads it whole). */
  output: number;
  outputTied: boolean;
  vocab: number;
  /** Every device's compute buffers (all contexts), the reduction buffers included. */
  computeBytes: number;
  reduceBufferBytes: number;
}

/** general.file_type values whose big tensors are floats (no blocks), or legacy quants (blocks of 32); k-quants and the rest have blocks of 256. */
const FLOAT_FILE_TYPES = new Set([0, 1, 32]);
const BLOCK32_FILE_TYPES = new Set([2, 3, 7, 8, 9]);

/** The quant block of a file type's big tensors, when the GGUF's own tensor types are not known (a model on paper). */
function blockOfFileType(fileType: number | null): number {
  if (fileType === null) return 256;
  if (FLOAT_FILE_TYPES.has(fileType)) return 1;
  if (BLOCK32_FILE_TYPES.has(fileType)) return 32;
  return 256;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function lcm(a: number, b: number): number {
  return a === 0 || b === 0 ? Math.max(a, b) : (a / gcd(a, b)) * b;
}

/** Buffers the meta device keeps per device for received partial sums: one per step of the reduction's fold and butterfly. */
export function reduceBufferCount(devices: number): number {
  return devices > 1 ? Math.ceil(Math.log2(devices)) : 0;
}

/**
 * Elements of an axis of `ne` each device gets, exactly as llama.cpp computes them (float32 scan of
 * the shares, boundaries rounded down to `g`, the last of the rotated scan taking the rest).
 */
export function sliceSizes(ne: number, g: number, shares: readonly number[], rotation: number): number[] {
  const n = shares.length;
  const out = new Array<number>(n).fill(0);
  const scan: number[] = [];
  for (let j = 0; j < n; j++) scan.push(Math.fround((j > 0 ? scan[j - 1]! : 0) + Math.fround(shares[(j + rotation) % n]!)));
  const total = scan[n - 1]!;
  let low = 0;
  for (let j = 0; j < n - 1; j++) {
    let high = total === 0 ? Math.floor((ne * (j + 1)) / n) : Math.trunc(Math.fround(Math.fround(Math.fround(ne) * scan[j]!) / total));
    high -= high % g;
    out[(j + rotation) % n] = high - low;
    low = high;
  }
  out[(n - 1 + rotation) % n] = ne - low;
  return out;
}

/**
 * The attention's granularity for a layer (get_split_granularity): Q columns of one KV group, rounded up
 * to the quant block, which grows to 128 while the devices would still get a block each.
 */
function attentionOf(model: ModelFacts, il: number, block: number, devices: number): TensorShape['attention'][number] {
  const kvHeads = model.headCountKvPerLayer?.[il] ?? model.headCountKv;
  const headDim = model.headDimK;
  if (kvHeads <= 0 || model.headCount <= 0 || headDim <= 0) return { neQ: 1, gQ: 1, neKv: 1, gKv: 1, headDim: 1 };
  const gqa = Math.max(1, Math.floor(model.headCount / kvHeads));
  const embdQ = gqa * headDim;
  let perf = block;
  while (perf < 128 && perf * devices < embdQ) perf *= 2;
  const gQ = lcm(embdQ, perf);
  return { neQ: model.headCount * headDim, gQ, neKv: kvHeads * headDim, gKv: gQ / gqa, headDim };
}

/**
 * A block's bytes by how the split cuts them: from the GGUF's tensors, or for a model on paper from its
 * shape (attention against feed-forward parameters; a MoE block's experts are rows).
 */
function partsOf(model: ModelFacts): { heads: number[]; rows: number[]; headsBlock: number; rowsBlock: number } {
  if (model.tensorParts) return model.tensorParts;
  const e = model.embeddingLength;
  const attention = e * model.headCount * model.headDimK + e * model.headCountKv * (model.headDimK + model.headDimV) + model.headCount * model.headDimV * e;
  const ffn = 3 * e * (model.feedForwardLength ?? 4 * e);
  const block = blockOfFileType(model.fileType);
  const heads = model.layerBytes.map((bytes, il) => {
    const experts = model.experts?.layerBytes[il] ?? 0;
    const dense = bytes - experts;
    return experts > 0 ? dense : attention + ffn > 0 ? (dense * attention) / (attention + ffn) : 0;
  });
  return { heads, rows: model.layerBytes.map((b, il) => b - heads[il]!), headsBlock: block, rowsBlock: block };
}

/** Layer il's rotation: layers of the same kind (sliding-window or not) before it, modulo the devices. */
function rotations(model: ModelFacts, devices: number): number[] {
  const seen = { swa: 0, full: 0 };
  return model.layerBytes.map((_, il) => {
    const kind = model.swaLayers?.[il] ? 'swa' : 'full';
    return seen[kind]++ % devices;
  });
}

export function tensorShape(model: ModelFacts, context: PlanContext, groups: number, devices: number): TensorShape {
  const parts = partsOf(model);
  const share = model.experts ? model.experts.used / model.experts.count : 1;
  const experts = model.layerBytes.map((_, il) => model.experts?.layerBytes[il] ?? 0);
  const whole = model.layerBytes.map((b, il) => Math.max(0, b - parts.heads[il]! - parts.rows[il]!));
  const reduceBufferBytes = groups * reduceBufferCount(devices) * model.embeddingLength * context.nUbatch * 4;
  return {
    devices,
    heads: parts.heads,
    rows: parts.rows,
    rowsRead: parts.rows.map((r, il) => r - Math.min(r, experts[il]!) * (1 - share)),
    whole,
    kv: kvLayerBytes(model, context),
    attention: model.layerBytes.map((_, il) => attentionOf(model, il, parts.headsBlock, devices)),
    ffn: { ne: model.feedForwardLength ?? 4 * model.embeddingLength, g: lcm(parts.rowsBlock, 128) },
    rotation: rotations(model, devices),
    outputRotation: model.layerCount % devices,
    output: model.outputBytes,
    outputTied: model.outputTied,
    vocab: model.vocabSize,
    computeBytes: groups * (computeBufferBytes(model, context) + logitsBufferBytes(model, context)) + reduceBufferBytes,
    reduceBufferBytes,
  };
}

/** Bytes every device holds whatever its share: the whole tensors and the compute buffers. */
export function fixedBytes(shape: TensorShape): number {
  return sum(shape.whole) + (shape.outputTied ? shape.output : 0) + shape.computeBytes;
}

/** Bytes the shares divide: the cut weights and the KV cache. */
export function dividedBytes(shape: TensorShape): number {
  return sum(shape.heads) + sum(shape.rows) + sum(shape.kv) + (shape.outputTied ? 0 : shape.output);
}

/** Bytes a token reads on every device whatever its share, and the bytes the shares divide. */
export function readSplit(shape: TensorShape): { fixed: number; divided: number } {
  return { fixed: sum(shape.whole) + (shape.outputTied ? shape.output : 0), divided: sum(shape.heads) + sum(shape.rowsRead) + (shape.outputTied ? 0 : shape.output) };
}

/** What each device holds and reads with these shares (in device order), rounded as llama.cpp rounds. */
export function tensorLoads(shape: TensorShape, shares: readonly number[]): TensorLoad[] {
  const n = shares.length;
  const loads: TensorLoad[] = shares.map(() => ({ weightBytes: 0, readBytes: 0, kvBytes: 0, computeBytes: shape.computeBytes, kvHeads: [] }));
  shape.heads.forEach((heads, il) => {
    const a = shape.attention[il]!;
    const rot = shape.rotation[il]!;
    const q = sliceSizes(a.neQ, a.gQ, shares, rot);
    const kv = sliceSizes(a.neKv, a.gKv, shares, rot);
    const f = sliceSizes(shape.ffn.ne, shape.ffn.g, shares, rot);
    for (let d = 0; d < n; d++) {
      const qf = q[d]! / a.neQ;
      const ff = f[d]! / shape.ffn.ne;
      const load = loads[d]!;
      load.weightBytes += heads * qf + shape.rows[il]! * ff + shape.whole[il]!;
      load.readBytes += heads * qf + shape.rowsRead[il]! * ff + shape.whole[il]!;
      load.kvBytes += shape.kv[il]! * (kv[d]! / a.neKv);
      load.kvHeads.push(kv[d]! / a.headDim);
    }
  });
  const vocab = shape.outputTied ? shares.map(() => shape.vocab) : sliceSizes(shape.vocab, 1, shares, shape.outputRotation);
  for (let d = 0; d < n; d++) {
    const out = shape.output * (vocab[d]! / shape.vocab);
    loads[d]!.weightBytes = Math.ceil(loads[d]!.weightBytes + out);
    loads[d]!.readBytes += out;
    loads[d]!.kvBytes = Math.ceil(loads[d]!.kvBytes);
  }
  return loads;
}
