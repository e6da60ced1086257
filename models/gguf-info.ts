// What hearth needs to know about a model, from its GGUF headers alone (no weights are read). A model
// may be one file or a split set (llama.cpp's gguf-split: shards named PREFIX-0000k-of-0000n.gguf, only
// the first with the model's metadata, each with the tensors it lists). summarizeGguf is pure;
// readModelFacts finds the set from any shard's name and reads every header through the addon.
import { existsSync } from 'node:fs';

import { ErrorCode, HearthError, isHearthError, messageOf } from '../common/errors.js';
import type { GgufScalar, GgufValue, RawGguf } from '../native/binding.js';
import { readGguf } from '../native/llama.js';
import { splitSetPaths } from './split.js';

/** One file of a model. */
export interface ModelShard {
  path: string;
  bytes: number;
  tensorCount: number;
}

export interface ModelFacts {
  /** The file llama.cpp loads: the model's only file, or shard 1 of a split set. */
  path: string;
  /** Bytes on disk over every shard. */
  fileBytes: number;
  /** The files the model is stored in, shard 1 first; empty for a model described on paper. */
  shards: ModelShard[];
  architecture: string;
  name: string | null;
  layerCount: number;
  contextLength: number;
  embeddingLength: number;
  feedForwardLength: number | null;
  headCount: number;
  headCountKv: number;
  headDimK: number;
  headDimV: number;
  vocabSize: number;
  /** general.file_type as llama.cpp numbers it (1 = F16, 7 = Q8_0, 15 = Q4_K_M), or null. */
  fileType: number | null;
  chatTemplate: string | null;
  /** Bytes of each block's tensors, blk.0 .. blk.{layerCount-1}. */
  layerBytes: number[];
  /** token_embd and other input tensors; llama.cpp keeps them in the coordinator's host memory. */
  inputBytes: number;
  /** output_norm and output (a second copy of token_embd when the output is tied to it). */
  outputBytes: number;
  outputTied: boolean;
  /** Tensors that belong to no block, input or output. */
  otherBytes: number;
  totalTensorBytes: number;
  /** Weights over every tensor (the product of each one's shape); absent for a model described on paper. */
  parameterCount?: number | null;
  /** Tensor count by ggml type name. */
  tensorTypes: Record<string, number>;
  /** KV heads of each layer, when the model varies them (GQA per layer); otherwise absent or null. */
  headCountKvPerLayer?: number[] | null;
  /** Sliding-window attention: the window in tokens, and which layers use it (null: none, or not known). */
  slidingWindow?: number | null;
  swaLayers?: boolean[] | null;
  /**
   * Mixture of experts: bytes of each block's sparse expert tensors (the ones llama.cpp's fit moves,
   * `ffn_{up,gate,down,gate_up}_{,ch}exps`), and how many of the experts a token uses. Absent for dense models.
   */
  experts?: { count: number; used: number; layerBytes: number[] } | null;
  /**
   * `<arch>.pooling_type`: how an embedding model pools a sequence's outputs into one vector (mean, cls,
   * last), or `rank` for a reranker's score. Absent or null: the file says none (a text generation model).
   */
  poolingType?: PoolingType | null;
  /**
   * For llama.cpp's tensor split (src/llama-model.cpp, llama_meta_device_get_split_state): each block's
   * bytes split by attention heads (Q, K, V, the attention output and their biases) and by feed-forward
   * rows (up, gate, down, experts included); the rest of a block (norms, the router) is on every device
   * whole. `headsBlock` and `rowsBlock`: the quant block sizes of blk.0's attn_output and ffn_down, which
   * set the granularity the split is rounded to. Absent for a model described on paper.
   */
  tensorParts?: TensorParts | null;
}

export interface TensorParts {
  heads: number[];
  rows: number[];
  headsBlock: number;
  rowsBlock: number;
}

/** llama.cpp's pooling types as a GGUF names them (enum llama_pooling_type: 0 none ... 4 rank). */
export type PoolingType = 'none' | 'mean' | 'cls' | 'last' | 'rank';
const POOLING_TYPES: readonly PoolingType[] = ['none', 'mean', 'cls', 'last', 'rank'];

/** A block's sparse expert tensors: llama.cpp's fit matches the same names (common/fit.cpp, LAYER_FRACTION_MOE). */
export const EXPERT_TENSOR = /^blk\.(\d+)\.ffn_(up|down|gate_up|gate)_(ch|)exps/;

/** The regular expression over tensor names that selects these blocks' expert tensors, for llama.cpp's overrides. */
export function expertTensorPattern(layers: readonly number[]): string {
  return `^blk\\.(${layers.join('|')})\\.ffn_(up|down|gate_up|gate)_(ch|)exps`;
}

/**
 * The sliding-window pattern an architecture uses when its GGUF gives none (llama.cpp's
 * load_swa_pattern defaults): every n-th layer attends globally. Architectures not listed here are
 * planned as if every layer were global, which over- rather than under-counts.
 */
const DEFAULT_SWA_PATTERN: Readonly<Record<string, number>> = { gemma3: 6, gemma2: 2 };

/** llama_hparams::set_swa_pattern(n, dense_first = false): layer il slides unless il % n == n - 1. */
export function swaPattern(layerCount: number, n: number): boolean[] {
  return Array.from({ length: layerCount }, (_, il) => n === 0 || il % n < n - 1);
}

function arrayItems(v: GgufValue | undefined): GgufScalar[] | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && 'type' in v && v.type === 'array' ? v.items : null;
}

function scalar(meta: Record<string, GgufValue>, key: string): GgufValue | undefined {
  return meta[key];
}

function num(meta: Record<string, GgufValue>, key: string): number | null {
  const v = scalar(meta, key);
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return null;
}

function requireNum(raw: RawGguf, key: string): number {
  const v = num(raw.metadata, key);
  if (v === null || !Number.isFinite(v) || v < 0) {
    throw new HearthError(ErrorCode.InvalidModel, `${raw.path}: GGUF key '${key}' is missing or not a number; this is not a usable model file`);
  }
  return v;
}

function str(meta: Record<string, GgufValue>, key: string): string | null {
  const v = scalar(meta, key);
  return typeof v === 'string' ? v : null;
}

/** Tensors of a block that llama.cpp's tensor split divides by attention heads, and by feed-forward rows. */
const HEAD_TENSOR = /^blk\.\d+\.attn_(q|k|v|qkv|output|gate|sinks)\.weight$|^blk\.\d+\.attn_(q|k|v|qkv)\.bias$/;
const ROW_TENSOR = /^blk\.\d+\.ffn_(up|gate|down|gate_up)(_exps|_shexp)?\.weight$|^blk\.\d+\.ffn_(up|gate)(_exps)?\.bias$/;

/** Elements per quant block of a ggml type (its name as a GGUF header gives it): 1 for float types, 32 for the legacy quants, 256 for k-quants and most i-quants. */
export function ggmlBlockSize(type: string): number {
  if (/^(f32|f16|bf16|f64|i8|i16|i32|i64)$/i.test(type)) return 1;
  if (/^(q4_0|q4_1|q5_0|q5_1|q8_0|q8_1|iq4_nl|mxfp4)$/i.test(type)) return 32;
  return 256;
}

const INPUT_TENSORS = new Set(['token_embd.weight', 'token_embd_norm.weight', 'token_embd_norm.bias', 'token_types.weight', 'position_embd.weight']);
const OUTPUT_TENSORS = new Set(['output.weight', 'output.bias', 'output_norm.weight', 'output_norm.bias']);

/**
 * The facts of a model from its files' headers: one file, or every shard of a split set in order
 * (checked to be one whole set: see checkShardSet).
 */
export function summarizeGguf(files: RawGguf | readonly RawGguf[]): ModelFacts {
  const set = Array.isArray(files) ? (files as readonly RawGguf[]) : [files as RawGguf];
  checkShardSet(set);
  const first = set[0]!;
  const raw: RawGguf = set.length === 1 ? first : { ...first, fileBytes: sum(set.map((r) => r.fileBytes)), tensors: set.flatMap((r) => r.tensors) };
  const shards = set.map((r) => ({ path: r.path, bytes: r.fileBytes, tensorCount: r.tensors.length }));
  return { ...summarizeHeader(raw), shards };
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function summarizeHeader(raw: RawGguf): Omit<ModelFacts, 'shards'> {
  const architecture = str(raw.metadata, 'general.architecture');
  if (!architecture) {
    throw new HearthError(ErrorCode.InvalidModel, `${raw.path}: GGUF key 'general.architecture' is missing; this is not a model file`);
  }
  const a = architecture;
  const layerCount = requireNum(raw, `${a}.block_count`);
  const embeddingLength = requireNum(raw, `${a}.embedding_length`);
  const headCount = num(raw.metadata, `${a}.attention.head_count`) ?? 0;
  // head_count_kv is a number, or one per layer (models whose layers differ in GQA).
  const kvItems = arrayItems(raw.metadata[`${a}.attention.head_count_kv`]);
  const headCountKvPerLayer = kvItems && kvItems.length === layerCount ? kvItems.map((x) => Number(x)) : null;
  const headCountKv = headCountKvPerLayer ? Math.max(...headCountKvPerLayer) : (num(raw.metadata, `${a}.attention.head_count_kv`) ?? headCount);
  const window = num(raw.metadata, `${a}.attention.sliding_window`);
  const slidingWindow = window !== null && window > 0 ? window : null;
  let swaLayers: boolean[] | null = null;
  if (slidingWindow !== null) {
    const patternItems = arrayItems(raw.metadata[`${a}.attention.sliding_window_pattern`]);
    const pattern = num(raw.metadata, `${a}.attention.sliding_window_pattern`) ?? DEFAULT_SWA_PATTERN[a] ?? null;
    if (patternItems && patternItems.length >= layerCount) swaLayers = patternItems.slice(0, layerCount).map((x) => x === true || x === 1);
    else if (pattern !== null) swaLayers = swaPattern(layerCount, pattern);
  }
  const defaultHeadDim = headCount > 0 ? embeddingLength / headCount : 0;

  const tokens = raw.metadata['tokenizer.ggml.tokens'];
  const vocabSize =
    num(raw.metadata, `${a}.vocab_size`) ?? (typeof tokens === 'object' && tokens !== null && 'length' in tokens ? tokens.length : 0);
  if (vocabSize <= 0) throw new HearthError(ErrorCode.InvalidModel, `${raw.path}: the model has no vocabulary (tokenizer.ggml.tokens)`);

  const layerBytes = new Array<number>(layerCount).fill(0);
  const expertBytes = new Array<number>(layerCount).fill(0);
  let inputBytes = 0;
  let outputBytes = 0;
  let otherBytes = 0;
  let total = 0;
  let parameters = 0;
  let embdBytes = 0;
  let hasOutput = false;
  const tensorTypes: Record<string, number> = {};
  const heads = new Array<number>(layerCount).fill(0);
  const rows = new Array<number>(layerCount).fill(0);
  let headsBlock = 1;
  let rowsBlock = 1;
  for (const t of raw.tensors) {
    total += t.bytes;
    parameters += t.shape.reduce((a, b) => a * b, 1);
    tensorTypes[t.type] = (tensorTypes[t.type] ?? 0) + 1;
    const block = /^blk\.(\d+)\./.exec(t.name);
    if (block) {
      const il = Number(block[1]);
      if (il >= layerCount) {
        // Extra blocks (e.g. next-token prediction heads) count as other weights.
        otherBytes += t.bytes;
      } else {
        layerBytes[il]! += t.bytes;
        if (EXPERT_TENSOR.test(t.name)) expertBytes[il]! += t.bytes;
        if (HEAD_TENSOR.test(t.name)) heads[il]! += t.bytes;
        else if (ROW_TENSOR.test(t.name)) rows[il]! += t.bytes;
        if (il === 0 && t.name === 'blk.0.attn_output.weight') headsBlock = ggmlBlockSize(t.type);
        if (il === 0 && /^blk\.0\.ffn_down(_exps)?\.weight$/.test(t.name)) rowsBlock = ggmlBlockSize(t.type);
      }
    } else if (INPUT_TENSORS.has(t.name)) {
      inputBytes += t.bytes;
      if (t.name === 'token_embd.weight') embdBytes = t.bytes;
    } else if (OUTPUT_TENSORS.has(t.name)) {
      outputBytes += t.bytes;
      if (t.name === 'output.weight') hasOutput = true;
    } else {
      otherBytes += t.bytes;
    }
  }
  const expertCount = num(raw.metadata, `${a}.expert_count`) ?? 0;
  const expertUsed = num(raw.metadata, `${a}.expert_used_count`) ?? 0;
  const experts =
    expertCount > 0 && expertBytes.some((b) => b > 0)
      ? { count: expertCount, used: Math.min(Math.max(expertUsed, 1), expertCount), layerBytes: expertBytes }
      : null;
  const outputTied = !hasOutput && embdBytes > 0;
  const pooling = num(raw.metadata, `${a}.pooling_type`);
  if (outputTied) outputBytes += embdBytes;

  return {
    path: raw.path,
    fileBytes: raw.fileBytes,
    architecture,
    name: str(raw.metadata, 'general.name'),
    layerCount,
    contextLength: requireNum(raw, `${a}.context_length`),
    embeddingLength,
    feedForwardLength: num(raw.metadata, `${a}.feed_forward_length`),
    headCount,
    headCountKv,
    headDimK: num(raw.metadata, `${a}.attention.key_length`) ?? defaultHeadDim,
    headDimV: num(raw.metadata, `${a}.attention.value_length`) ?? defaultHeadDim,
    vocabSize,
    fileType: num(raw.metadata, 'general.file_type'),
    chatTemplate: str(raw.metadata, 'tokenizer.chat_template'),
    layerBytes,
    inputBytes,
    outputBytes,
    outputTied,
    otherBytes,
    totalTensorBytes: total,
    parameterCount: parameters,
    tensorTypes,
    headCountKvPerLayer,
    slidingWindow: swaLayers ? slidingWindow : null,
    swaLayers,
    experts,
    poolingType: pooling === null ? null : (POOLING_TYPES[pooling] ?? null),
    tensorParts: { heads, rows, headsBlock, rowsBlock },
  };
}

/** How many files a header says its model is split into (1 for a file that is not a shard). */
function splitCount(raw: RawGguf): number {
  return num(raw.metadata, 'split.count') ?? 1;
}

/**
 * Refuses files that are not exactly one model's shard set, in order: gguf-split writes the same
 * `split.count` and `split.tensors.count` into every shard, `split.no` 0, 1, ... in order, and each
 * tensor into one shard only.
 */
function checkShardSet(set: readonly RawGguf[]): void {
  const first = set[0];
  if (!first) throw new HearthError(ErrorCode.InvalidArgument, 'a model needs at least one GGUF file');
  const count = splitCount(first);
  if (count <= 1 && set.length === 1) return;
  const whole = `the ${count} shards of ${first.path}`;
  const advice = 'keep the shards of one model together, named as gguf-split wrote them';
  if (set.length !== count) {
    throw new HearthError(ErrorCode.InvalidArgument, `${first.path} says the model is split into ${count} file(s), but ${set.length} were given; ${advice}`);
  }
  const tensorCount = num(first.metadata, 'split.tensors.count');
  const seen = new Map<string, string>();
  for (const [i, r] of set.entries()) {
    const no = num(r.metadata, 'split.no');
    if (splitCount(r) !== count) {
      throw new HearthError(ErrorCode.InvalidArgument, `${r.path} is not one of ${whole}: its header says ${splitCount(r)} shard(s), not ${count}, so it is from another model; ${advice}`);
    }
    if (no !== i) {
      throw new HearthError(ErrorCode.InvalidArgument, `${r.path} should be shard ${i + 1} of ${count}, but its header says shard ${no === null ? '(none)' : no + 1}: it was renamed or is from another model; ${advice}`);
    }
    if (num(r.metadata, 'split.tensors.count') !== tensorCount) {
      throw new HearthError(ErrorCode.InvalidArgument, `${r.path} is not one of ${whole}: its header counts ${num(r.metadata, 'split.tensors.count')} tensors in the model, shard 1's ${tensorCount}, so it is from another model; ${advice}`);
    }
    for (const t of r.tensors) {
      const other = seen.get(t.name);
      if (other !== undefined) {
        throw new HearthError(ErrorCode.InvalidArgument, `tensor '${t.name}' is in both ${other} and ${r.path}: they are shards of different models (or of different splits of one); ${advice}`);
      }
      seen.set(t.name, r.path);
    }
  }
  if (seen.size !== tensorCount) {
    throw new HearthError(ErrorCode.InvalidArgument, `${whole} hold ${seen.size} tensors, but their headers say the model has ${tensorCount}: a shard is from another model (or another split of it); ${advice}`);
  }
}

/** Advice for a file the addon could not read as a GGUF. */
function unreadable(e: unknown): HearthError {
  if (!isHearthError(e) || e.code === ErrorCode.NotFound) return e instanceof HearthError ? e : new HearthError(ErrorCode.Internal, messageOf(e), { cause: e });
  const what = /file is truncated/.test(e.message)
    ? 'the file is incomplete (an interrupted download or copy?): fetch or copy it again'
    : 'hearth reads models in llama.cpp\'s GGUF format: give a .gguf model file';
  return new HearthError(ErrorCode.InvalidArgument, `${e.message}; ${what}`, { cause: e, detail: e.detail });
}

async function readShard(path: string): Promise<RawGguf> {
  try {
    return await readGguf(path);
  } catch (e) {
    throw unreadable(e);
  }
}

/** The model `path` is a file of: the file itself, or, for any shard's path, its whole split set. */
export async function readModelFacts(path: string): Promise<ModelFacts> {
  const named = await readShard(path);
  const count = splitCount(named);
  if (count <= 1) return summarizeGguf(named);
  const paths = splitSetPaths(path);
  if (!paths || paths.length !== count) {
    throw new HearthError(
      ErrorCode.InvalidArgument,
      `${path} is shard ${(num(named.metadata, 'split.no') ?? 0) + 1} of a model split into ${count} files, but its name does not end in ` +
        `-0000k-of-${String(count).padStart(5, '0')}.gguf, so the other shards cannot be found (nor can llama.cpp find them); give the shards the names gguf-split wrote`,
    );
  }
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length > 0) throw missingShards(paths, missing);
  const set: RawGguf[] = [];
  for (const p of paths) set.push(p === path ? named : await readShard(p));
  return summarizeGguf(set);
}

function missingShards(paths: readonly string[], missing: readonly string[]): HearthError {
  const numbers = missing.map((p) => paths.indexOf(p) + 1);
  const lastPresent = paths.reduce((last, p, i) => (missing.includes(p) ? last : i + 1), 0);
  const gap = numbers.some((n) => n < lastPresent);
  const list = missing.length === 1 ? `shard ${numbers[0]} (${missing[0]}) is` : `shards ${numbers.join(', ')} (${missing.join(', ')}) are`;
  return new HearthError(
    ErrorCode.InvalidArgument,
    `the model ${paths[0]} is split into ${paths.length} files and ${list} missing${gap ? ' (a gap in the set)' : ''}: put every shard in the same folder under the name gguf-split gave it`,
  );
}
