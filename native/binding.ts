// The native boundary, typed in one place. Every shape the addon returns is declared here with
// `T | null` rather than optional fields, so a missing value fails loudly; native errors become
// HearthErrors in one function (toHearthError).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';

export interface SystemInfo {
  llamaCppRelease: string;
  llamaVersion: string;
  ggmlVersion: string;
  ggmlCommit: string;
  /** RPC protocol version this build speaks, e.g. "7.0.0". */
  rpcProtocol: string;
  maxDevices: number;
  supportsRpc: boolean;
  cpuFeatures: string;
  /** Backend registries compiled in: "CPU", "RPC", "CUDA", ... */
  backends: string[];
}

export type DeviceType = 'cpu' | 'gpu' | 'igpu' | 'accel' | 'unknown';

export interface DeviceInfo {
  /** ggml's device name: "CPU", "CUDA0", "RPC3". */
  name: string;
  /** For RPC devices, the endpoint. */
  description: string;
  /** Backend registry: "CPU", "CUDA", "Metal", "RPC", ... */
  backend: string;
  type: DeviceType;
  freeBytes: number;
  totalBytes: number;
}

export type GgufScalar = number | bigint | string | boolean;
export interface GgufArray {
  type: 'array';
  itemType: string;
  length: number;
  /** The items, or null when the array is too long to copy (token tables). */
  items: GgufScalar[] | null;
}
export type GgufValue = GgufScalar | GgufArray;

export interface GgufTensorInfo {
  name: string;
  type: string;
  shape: number[];
  bytes: number;
  offset: number;
}

export interface RawGguf {
  path: string;
  fileBytes: number;
  version: number;
  alignment: number;
  dataOffset: number;
  metadata: Record<string, GgufValue>;
  tensors: GgufTensorInfo[];
}

export type SplitMode = 'layer' | 'row' | 'none' | 'tensor';
export type LoadMode = 'auto' | 'none' | 'mmap' | 'mlock' | 'direct_io';

export interface NativeModelOptions {
  /** Ordered device names; tensorSplit indexes this list. null: llama.cpp's default choice. */
  devices: string[] | null;
  splitMode: SplitMode;
  /** One share per device (integer layer counts give exactly those counts). null: by free memory. */
  tensorSplit: number[] | null;
  /** Layers to offload to the devices; -1 for all (the output head counts as one). */
  nGpuLayers: number;
  mainGpu: number;
  loadMode: LoadMode;
  /** Load the tokenizer alone, no tensors (for comparing vocabularies). */
  vocabOnly?: boolean;
  /** Tensors placed on another device than their layer's (llama.cpp's tensor_buft_overrides), first match wins. */
  tensorOverrides?: TensorOverride[];
}

/** `pattern` is a regular expression over tensor names (e.g. `blk\.3\.ffn_(up|down|gate)_exps`). */
export interface TensorOverride {
  pattern: string;
  device: string;
}

export interface LayerPlacement {
  /** 0..nLayer; nLayer is the output head. */
  layer: number;
  device: string;
}

export interface NativeLoadResult {
  placement: LayerPlacement[];
}

export interface NativeModelInfo {
  description: string;
  nLayer: number;
  nEmbd: number;
  nCtxTrain: number;
  nVocab: number;
  sizeBytes: number;
  nParams: number;
  bos: number;
  eos: number;
  chatTemplate: string | null;
  /** Width of a pooled embedding. */
  nEmbdOut: number;
  /** Scores a rank-pooled (reranker) output holds per sequence (1 unless <arch>.classifier.output_labels says more). */
  nClsOut: number;
  /** tokenizer.chat_template.rerank: a reranker's prompt with {query} and {document}, or null. */
  rerankTemplate: string | null;
  /** The separator token (-1: none), and which special tokens the tokenizer adds around a text. */
  sep: number;
  addBos: boolean;
  addEos: boolean;
  addSep: boolean;
}

export interface ChatMessage {
  role: string;
  content: string;
}

export interface VocabularyDifference {
  reason: string;
  /** "SPM tokenizer with 32000 tokens" */
  vocabulary: string;
  otherVocabulary: string;
}

export interface NativeModel {
  load(onProgress: ((progress: number) => void) | null): Promise<NativeLoadResult>;
  abortLoad(): void;
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, removeSpecial: boolean, unparseSpecial: boolean): string;
  tokenToPiece(token: number, special: boolean): Buffer;
  isEog(token: number): boolean;
  applyChatTemplate(messages: ChatMessage[], addAssistant: boolean, template: string | null): string;
  /** null when `other` may draft for this model (llama.cpp's compatibility rules); otherwise what differs and both vocabularies. */
  vocabDifference(other: NativeModel): VocabularyDifference | null;
  dispose(): void;
}

export type CacheType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1';

export interface NativeContextOptions {
  nCtx: number;
  nBatch: number;
  nUbatch: number;
  /** Sequences decoded side by side; seq ids are 0..nSeqMax-1. */
  nSeqMax: number;
  typeK: CacheType;
  typeV: CacheType;
  flashAttn: 'auto' | 'on' | 'off';
  nThreads: number;
  nThreadsBatch: number;
  kvUnified: boolean;
  offloadKqv: boolean;
  /** Full-size KV for sliding-window layers (default false: only the window, as llama-server does). */
  swaFull: boolean;
  /** Pooled outputs per sequence (embed) with the model's pooling type, instead of sampled tokens (decode). */
  embeddings?: boolean;
}

/** llama.cpp's pooling types; 'none' gives no vector per sequence. */
export type PoolingType = 'none' | 'mean' | 'cls' | 'last' | 'rank' | 'unspecified';

export interface NativeContextInfo {
  nCtx: number;
  nCtxSeq: number;
  nBatch: number;
  nUbatch: number;
  nSeqMax: number;
  nVocab: number;
  /** Positions a sliding-window layer keeps (0: no sliding window, or the full cache). */
  nSwa: number;
  embeddings: boolean;
  poolingType: PoolingType;
}

export interface MemoryBreakdownEntry {
  /** Buffer type name, e.g. "RPC0[127.0.0.1:50052]", "CPU_Mapped". */
  buffer: string;
  /** Device name, or null for host buffers. */
  device: string | null;
  modelBytes: number;
  contextBytes: number;
  computeBytes: number;
}

/** A batch as decode takes it: one entry per row, then the rows to sample and their samplers. */
export type NativeBatch = [tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, logits: Uint8Array, sampleRows: Int32Array, samplers: NativeSampler[]];

export interface NativeContext {
  init(): Promise<void>;
  info(): NativeContextInfo;
  decode(...batch: NativeBatch): Promise<Int32Array>;
  /** With draftLens: sample i verifies the draftLens[i] drafted tokens in the rows after its own; per sample, the tokens it emitted. */
  decode(...batch: [...NativeBatch, draftLens: Int32Array]): Promise<Int32Array[]>;
  /**
   * An embeddings context: decodes the batch (every row an output) and returns each of outSeqIds' pooled
   * output in that order (nEmbdOut floats, or nClsOut scores for rank pooling), normalised as
   * common_embd_normalize does (-1: none, 2: L2).
   */
  embed(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, outSeqIds: Int32Array, normalize: number): Promise<Float32Array[]>;
  getLogits(row: number): Float32Array;
  /** Emitted token i of the last decode (one per sample, or each sample's emitted tokens in turn): its log-probability and the top alternatives; null when its sampler's nProbs < 0. */
  lastLogprobs(sampleIndex: number): TokenLogprobs | null;
  seqRemove(seqId: number, p0: number, p1: number): boolean;
  /** [min, max] positions held for the sequence; [-1, -1] when it holds none. */
  seqPosRange(seqId: number): [number, number];
  memoryClear(): void;
  memoryBreakdown(): MemoryBreakdownEntry[];
  dispose(): void;
}

export interface SamplerSettings {
  /** <= 0 means greedy. */
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  greedy: boolean;
  /** End-of-generation tokens are never chosen (benchmarks use this for fixed lengths). */
  ignoreEos: boolean;
  /** GBNF the output must match (applied before every other sampler); null for none. */
  grammar: string | null;
  /** The grammar waits for a trigger (a pattern matching the output so far, or a trigger token). */
  grammarLazy: boolean;
  /** Regular expressions (std::regex, ECMAScript) over the generated text that wake a lazy grammar. */
  grammarTriggerPatterns: string[];
  grammarTriggerTokens: number[];
  /** Text the prompt already ends with that a (non-lazy) chat-template grammar starts with: the generation prompt. */
  grammarPrefill: string | null;
  /** -1: no logprobs; 0: the chosen token's only; n: also the n most likely tokens. */
  nProbs: number;
}

export interface TokenLogprob {
  token: number;
  /** Natural log of the probability under the raw logits (<= 0). */
  logprob: number;
}

export interface TokenLogprobs extends TokenLogprob {
  /** The most likely tokens, highest first (nProbs of them). */
  top: TokenLogprob[];
}

export type GrammarTriggerType = 'word' | 'token' | 'pattern' | 'pattern_full';

export interface GrammarTrigger {
  type: GrammarTriggerType;
  value: string;
  token: number | null;
}

export interface ParsedToolCall {
  name: string;
  /** JSON text, as the model wrote it. */
  arguments: string;
  /** The id the model wrote, '' when none (llama-server then makes one up and keeps it across partial parses). */
  id: string;
}

export interface ParsedChatMessage {
  content: string;
  reasoningContent: string;
  toolCalls: ParsedToolCall[];
  /**
   * Why the text does not match the template's format. A final parse then returns the whole text as
   * content (llama-server answers an error); a partial one returns nothing yet.
   */
  parseError: string | null;
}

export interface NativeChatParser {
  parse(text: string, isPartial: boolean): ParsedChatMessage;
}

/** What llama.cpp's common_chat_templates_apply made of a request. */
export interface NativeChatApplyResult {
  prompt: string;
  /** common_chat_format_name: 'Content-only', 'peg-simple', 'peg-native', 'peg-gemma4', ... */
  format: string;
  /** GBNF for tool calls or the JSON schema ('' for none). */
  grammar: string;
  grammarLazy: boolean;
  grammarTriggers: GrammarTrigger[];
  /** The triggers as the sampler takes them (word triggers escaped, pattern_full anchored), as llama-server does. */
  grammarTriggerPatterns: string[];
  grammarTriggerTokens: number[];
  preservedTokens: string[];
  /** The preserved tokens that are single tokens of this vocabulary (render them with special = true). */
  preservedTokenIds: number[];
  additionalStops: string[];
  /** The tail of the prompt the template opens the answer with; parsing and grammars start from it. */
  generationPrompt: string;
  supportsThinking: boolean;
  thinkingStartTag: string;
  thinkingEndTags: string[];
  enableThinking: boolean;
  reasoningFormat: string;
  parser: NativeChatParser;
}

export interface ChatTemplatesInfo {
  source: string;
  toolUseSource: string | null;
  /** Thinking is on by default (llama-server: when the template supports it). */
  supportsThinking: boolean;
  caps: Record<string, boolean>;
}

export interface NativeChatTemplates {
  /** requestJson: OpenAI chat fields (see ChatTemplateRequest in native/llama.ts). */
  apply(requestJson: string): Promise<NativeChatApplyResult>;
  info(): ChatTemplatesInfo;
}

export interface NativeSampler {
  accept(tokens: Int32Array): void;
  /** Brings the sampler to where it was after generating these tokens (grammar, penalties, RNG draws). */
  replay(tokens: Int32Array): void;
  reset(): void;
  dispose(): void;
}

export interface TestModelSpec {
  out: string;
  vocab: string;
  name: string;
  chatTemplate: string;
  weightType: 'f32' | 'f16';
  nLayer: number;
  nEmbd: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  nCtxTrain: number;
  seed: number;
  stdev: number;
  /** llama (default), qwen3, qwen3moe or gemma3. */
  architecture?: 'llama' | 'qwen3' | 'qwen3moe' | 'gemma3';
  /** qwen3moe: experts per layer, experts used per token, each layer's expert FFN width. */
  nExpert?: number;
  nExpertUsed?: number;
  nFfExp?: number[];
  /** gemma3: sliding window (tokens) and pattern (every n-th layer attends globally). */
  nSwa?: number;
  swaPattern?: number;
  /** Blocks after the first write this much of their output into the residual stream (default 1). */
  residualScale?: number;
  /** The output head's weight spread (default: stdev). */
  outputStdev?: number;
  /** <arch>.pooling_type: an embedding model (mean, cls, last) or a reranker (rank). */
  poolingType?: 'none' | 'mean' | 'cls' | 'last' | 'rank';
  /** qwen3 with rank pooling: the rank head's labels, one cls.output row each. */
  classifierLabels?: readonly string[];
  /** tokenizer.chat_template.rerank, with {query} and {document}. */
  rerankTemplate?: string;
  /** No output.weight: llama.cpp uses the token embedding as the output head. */
  tiedOutput?: boolean;
  /** tokenizer.ggml.add_bos_token and add_eos_token over the vocabulary's own (Qwen's tokenizers add no BOS; Qwen3-Embedding adds EOS). */
  addBos?: boolean;
  addEos?: boolean;
}

export interface FitOptions {
  devices: string[];
  /** Bytes each device keeps free; (reported free - limit) makes a device look as small as the limit. */
  margins?: number[];
  nCtx: number;
  nSeqMax?: number;
  nBatch?: number;
  nUbatch?: number;
}

export interface FitResult {
  /** False when no allocation was projected to fit (the parameters are then llama.cpp's best try). */
  fits: boolean;
  nGpuLayers: number;
  tensorSplit: number[];
  /** `device` is a device name (CPU for the host), as LlamaModel.load takes it. */
  tensorOverrides: TensorOverride[];
  nCtx: number;
}

export type NativeLogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface NativeBinding {
  systemInfo(): SystemInfo;
  listDevices(): DeviceInfo[];
  /** Registers an RPC server's devices. The endpoint MUST have been probed: llama.cpp aborts on failure. */
  addRpcServer(endpoint: string): Promise<DeviceInfo[]>;
  /**
   * Tensor split: the address (host:port) at which the RPC server reached at `from` reaches the one at
   * `to`, for the servers' own all-reduce (RPC 7.1). Unset, `to` itself. Call before the model loads.
   */
  rpcPeerAddress(from: string, to: string, address: string): void;
  readGguf(path: string): Promise<RawGguf>;
  /** What llama.cpp's own fit (common_fit_params, llama-server --fit) chooses for a model on these devices. */
  fitParams(path: string, options: FitOptions): Promise<FitResult>;
  createTestModel(spec: TestModelSpec): Promise<void>;
  quantize(input: string, output: string, type: 'f16' | 'q8_0' | 'q4_k_m', threads: number): Promise<void>;
  setLogger(fn: ((level: NativeLogLevel, line: string) => void) | null, minLevel: NativeLogLevel): void;
  AddonModel: new (path: string, options: NativeModelOptions) => NativeModel;
  AddonContext: new (model: NativeModel, options: NativeContextOptions) => NativeContext;
  AddonSampler: new (model: NativeModel, settings: SamplerSettings) => NativeSampler;
  /** The model's chat templates, or `template` in their place. */
  AddonChatTemplates: new (model: NativeModel, template: string | null) => NativeChatTemplates;
  /** GBNF for a JSON schema, as llama-server converts response_format. */
  jsonSchemaToGrammar(schemaJson: string): string;
}

export interface NativeArtifacts {
  dir: string;
  addon: string;
  rpcServer: string;
  vocab: string;
  buildInfo: string;
}

export interface BuildInfo {
  llamaCppRelease: string;
  llamaCppCommit: string | null;
  /** A hash of hearth's patches applied to that tree (native/patches); absent for a build made before them. */
  llamaCppPatches?: string;
  /** The llama.cpp source tree the build used (benchmarks build llama-server from the same one). */
  llamaCppDir: string | null;
  gpu: string[];
  nativeCpu: boolean;
  /** CMake's build type; null for a build made before it was recorded. */
  buildType: string | null;
}

/**
 * The folder hearth runs from: a checkout, or the installed package (npm install -g, npx). It is the
 * nearest folder above this file that holds native/CMakeLists.txt, whether this file runs from source
 * or from dist/.
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'native', 'CMakeLists.txt'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new HearthError(ErrorCode.Internal, 'cannot find the hearth installation (native/CMakeLists.txt) above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** A checkout (a git working tree) rather than an installed package. */
export function isCheckout(root: string = packageRoot()): boolean {
  return existsSync(join(root, '.git'));
}

export function nativeArtifacts(): NativeArtifacts {
  const dir = join(packageRoot(), 'native', 'build', 'Release');
  return {
    dir,
    addon: join(dir, 'hearth.node'),
    rpcServer: join(dir, process.platform === 'win32' ? 'ggml-rpc-server.exe' : 'ggml-rpc-server'),
    vocab: join(dir, 'ggml-vocab-llama-spm.gguf'),
    buildInfo: join(dir, 'build-info.json'),
  };
}

/** How to (re)build the native parts from where hearth is: a checkout, or an installed package. */
export function nativeBuildHint(): string {
  const root = packageRoot();
  return isCheckout(root)
    ? 'build it with `npm run build:native` (add --cuda, --metal or --vulkan for a GPU build)'
    : `build it with \`node ${join(root, 'native', 'scripts', 'build.mjs')}\` (add --cuda, --metal or --vulkan for a GPU build)`;
}

/** Throws a clear error when the native build is absent. */
export function requireNativeBuild(): NativeArtifacts {
  const a = nativeArtifacts();
  for (const [what, path] of [['addon', a.addon], ['ggml-rpc-server', a.rpcServer], ['tokenizer', a.vocab]] as const) {
    if (!existsSync(path)) {
      throw new HearthError(ErrorCode.FailedPrecondition, `the native build is missing (${what} not found at ${path}); ${nativeBuildHint()}`);
    }
  }
  return a;
}

export function readBuildInfo(): BuildInfo {
  const raw = JSON.parse(readFileSync(requireNativeBuild().buildInfo, 'utf8')) as Omit<BuildInfo, 'buildType'> & { buildType?: string };
  return { ...raw, buildType: raw.buildType ?? null };
}

let binding: NativeBinding | null = null;

/** Loads the addon once per process. Only processes that may die with llama.cpp should use RPC through it. */
export function loadBinding(): NativeBinding {
  if (binding) return binding;
  const { addon } = requireNativeBuild();
  try {
    binding = createRequire(import.meta.url)(addon) as NativeBinding;
  } catch (e) {
    throw new HearthError(ErrorCode.FailedPrecondition, `the native addon at ${addon} does not load (${messageOf(e)}); ${nativeBuildHint()}`, { cause: e });
  }
  return binding;
}

const NATIVE_CODES: Record<string, ErrorCode> = {
  INVALID_ARGUMENT: ErrorCode.InvalidArgument,
  INVALID_SPLIT: ErrorCode.InvalidArgument,
  UNKNOWN_DEVICE: ErrorCode.InvalidArgument,
  MODEL_NOT_FOUND: ErrorCode.NotFound,
  MODEL_INVALID: ErrorCode.InvalidModel,
  MODEL_LOAD_FAILED: ErrorCode.InvalidModel,
  MODEL_CREATE_FAILED: ErrorCode.Internal,
  QUANTIZE_FAILED: ErrorCode.Internal,
  CONTEXT_FAILED: ErrorCode.ResourceExhausted,
  KV_CACHE_FULL: ErrorCode.ResourceExhausted,
  ABORTED: ErrorCode.Cancelled,
  NOT_LOADED: ErrorCode.FailedPrecondition,
  NOT_READY: ErrorCode.FailedPrecondition,
  INVALID_STATE: ErrorCode.FailedPrecondition,
  DISPOSED: ErrorCode.FailedPrecondition,
  RPC_NO_DEVICES: ErrorCode.Unavailable,
  UNSUPPORTED: ErrorCode.Unsupported,
  UNSUPPORTED_TEMPLATE: ErrorCode.Unsupported,
  GRAMMAR_FAILED: ErrorCode.Internal,
};

/** The one place native errors become typed hearth errors. */
export function toHearthError(e: unknown): HearthError {
  if (e instanceof HearthError) return e;
  const nativeCode = typeof (e as { code?: unknown })?.code === 'string' ? ((e as { code: string }).code) : null;
  const code = (nativeCode === null ? undefined : NATIVE_CODES[nativeCode]) ?? ErrorCode.Internal;
  return new HearthError(code, messageOf(e), { cause: e, detail: nativeCode });
}

/** Runs a native call and rethrows its failure as a HearthError. */
export function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toHearthError(e);
  }
}

export async function nativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toHearthError(e);
  }
}
