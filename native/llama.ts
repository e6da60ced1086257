// The binding made pleasant and safe: typed errors, AbortSignal for loads, endpoints probed before
// llama.cpp sees them, and deterministic disposal. No planning or retries here.
import { basename } from 'node:path';

import type { Logger } from '../common/logger.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import {
  loadBinding,
  native,
  nativeAsync,
  type ChatMessage,
  type DeviceInfo,
  type LayerPlacement,
  type NativeBatch,
  type MemoryBreakdownEntry,
  type ChatTemplatesInfo,
  type NativeChatApplyResult,
  type NativeChatParser,
  type NativeChatTemplates,
  type ParsedChatMessage,
  type TokenLogprobs,
  type FitOptions,
  type FitResult,
  type NativeContext,
  type NativeContextInfo,
  type NativeContextOptions,
  type NativeLogLevel,
  type NativeModel,
  type NativeModelInfo,
  type NativeModelOptions,
  type NativeSampler,
  type RawGguf,
  type SamplerSettings,
} from './binding.js';
import { parseVersion } from './rpc-protocol.js';
import { probeRpcServer } from './rpc-probe.js';

export interface RpcDevice extends DeviceInfo {
  endpoint: string;
}

/** This build's RPC protocol version, from the addon. */
export function rpcProtocolVersion() {
  const text = loadBinding().systemInfo().rpcProtocol;
  const v = parseVersion(text);
  if (!v) throw new HearthError(ErrorCode.Internal, `the addon reports an unreadable RPC protocol version '${text}'`);
  return v;
}

/**
 * Probes every endpoint (version and reachability, with a deadline) and only then registers it with
 * llama.cpp, whose client aborts the process on a failed connect. Returns the devices in the order of
 * the endpoints given, each endpoint's devices in the server's order.
 */
export async function connectRpcServers(
  endpoints: readonly string[],
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<RpcDevice[]> {
  const clientVersion = rpcProtocolVersion();
  const probed = [];
  for (const text of endpoints) {
    probed.push(await probeRpcServer(text, { ...options, clientVersion }));
  }
  const seen = new Set<string>();
  for (const p of probed) {
    if (seen.has(p.endpoint)) {
      throw new HearthError(ErrorCode.InvalidArgument, `RPC server ${p.endpoint} is listed twice; list each server once`);
    }
    seen.add(p.endpoint);
    if (p.devices.length === 0) throw new HearthError(ErrorCode.Unavailable, `RPC server ${p.endpoint} reports no devices`);
  }
  const b = loadBinding();
  const out: RpcDevice[] = [];
  for (const p of probed) {
    const devices = await nativeAsync(() => b.addRpcServer(p.endpoint));
    for (const d of devices) out.push({ ...d, endpoint: p.endpoint });
  }
  return out;
}

export async function readGguf(path: string): Promise<RawGguf> {
  return nativeAsync(() => loadBinding().readGguf(path));
}

/** llama.cpp's own fit of a model to these devices' memory (llama-server --fit), for comparing plans with. */
export async function fitParams(path: string, options: FitOptions): Promise<FitResult> {
  return nativeAsync(() => loadBinding().fitParams(path, options));
}

export function localDevices(): DeviceInfo[] {
  return native(() => loadBinding().listDevices());
}

/** Routes llama.cpp and ggml log lines into a structured logger. */
export function attachNativeLogger(log: Logger, minLevel: NativeLogLevel = 'info'): void {
  loadBinding().setLogger((level, line) => log[level]({ native: true }, line), minLevel);
}

export interface ModelLoadOptions extends NativeModelOptions {
  onProgress: ((progress: number) => void) | null;
  signal: AbortSignal | null;
}

const DEFAULT_MODEL_OPTIONS: NativeModelOptions = {
  devices: null,
  splitMode: 'layer',
  tensorSplit: null,
  nGpuLayers: -1,
  mainGpu: 0,
  loadMode: 'auto',
};

export class LlamaModel {
  readonly path: string;
  readonly placement: readonly LayerPlacement[];
  readonly info: NativeModelInfo;
  readonly #native: NativeModel;
  #disposed = false;

  private constructor(path: string, nativeModel: NativeModel, placement: LayerPlacement[]) {
    this.path = path;
    this.#native = nativeModel;
    this.placement = Object.freeze(placement);
    this.info = Object.freeze(native(() => nativeModel.info()));
  }

  /**
   * Loads a GGUF onto the given devices. The header is read first, so a missing or corrupt file is
   * reported plainly before llama.cpp starts. Progress is 0..1 and never goes back.
   */
  static async load(path: string, options: Partial<ModelLoadOptions> = {}): Promise<LlamaModel> {
    const b = loadBinding();
    await readGguf(path);
    const { onProgress = null, signal = null, ...rest } = options;
    const nativeOptions: NativeModelOptions = { ...DEFAULT_MODEL_OPTIONS, ...rest };
    const m = native(() => new b.AddonModel(path, nativeOptions));
    if (signal?.aborted) throw new HearthError(ErrorCode.Cancelled, `model load cancelled: ${path}`);
    const onAbort = () => m.abortLoad();
    signal?.addEventListener('abort', onAbort, { once: true });
    // Progress crosses threads and may arrive after the load settles: report only rises, nothing
    // after the end, and a finished load as exactly 1.
    let last = -1;
    let settled = false;
    const report = (p: number) => {
      if (settled || !(p > last)) return;
      last = p;
      onProgress?.(p);
    };
    try {
      const result = await nativeAsync(() => m.load(onProgress ? report : null));
      report(1);
      return new LlamaModel(path, m, result.placement);
    } finally {
      settled = true;
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Layer count per device name, from llama.cpp's own placement log. */
  layersByDevice(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const p of this.placement) counts.set(p.device, (counts.get(p.device) ?? 0) + 1);
    return counts;
  }

  tokenize(text: string, options: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Int32Array {
    return native(() => this.#live().tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false));
  }

  detokenize(tokens: ArrayLike<number>, options: { removeSpecial?: boolean; unparseSpecial?: boolean } = {}): string {
    return native(() => this.#live().detokenize(Int32Array.from(tokens), options.removeSpecial ?? false, options.unparseSpecial ?? false));
  }

  /** The raw bytes of one token: a piece may be part of a UTF-8 sequence. */
  tokenToPiece(token: number, special = false): Buffer {
    return native(() => this.#live().tokenToPiece(token, special));
  }

  /**
   * Why `draft` cannot draft tokens for this model, by llama.cpp's own rules (the same tokenizer, BOS and
   * EOS, vocabulary sizes within 128, the same token texts), naming both vocabularies; null when it can.
   */
  vocabularyDifference(draft: LlamaModel): string | null {
    const d = native(() => this.#live().vocabDifference(draft.#live()));
    return d && `${d.reason}: ${basename(this.path)} has a ${d.vocabulary}, ${basename(draft.path)} a ${d.otherVocabulary}`;
  }

  isEndOfGeneration(token: number): boolean {
    return native(() => this.#live().isEog(token));
  }

  applyChatTemplate(messages: ChatMessage[], options: { addAssistant?: boolean; template?: string | null } = {}): string {
    return native(() => this.#live().applyChatTemplate(messages, options.addAssistant ?? true, options.template ?? null));
  }

  /**
   * The model's chat templates as llama-server --jinja applies them (tools, reasoning, JSON schema), or
   * `template` (Jinja source) in their place.
   */
  chatTemplates(template: string | null = null): ChatTemplates {
    const b = loadBinding();
    return new ChatTemplates(native(() => new b.AddonChatTemplates(this.#live(), template)));
  }

  async createContext(options: Partial<NativeContextOptions> = {}): Promise<LlamaContext> {
    const b = loadBinding();
    const nBatch = options.nBatch ?? 512;
    const full: NativeContextOptions = {
      nCtx: 4096,
      nBatch,
      nUbatch: Math.min(nBatch, 512),
      nSeqMax: 1,
      typeK: 'f16',
      typeV: 'f16',
      flashAttn: 'auto',
      nThreads: 0,
      nThreadsBatch: 0,
      kvUnified: false,
      offloadKqv: true,
      swaFull: false,
      ...options,
    };
    // 0 threads: the addon's default (all hardware threads).
    const { nThreads, nThreadsBatch, ...explicit } = full;
    const c = native(() =>
      new b.AddonContext(this.#live(), {
        ...explicit,
        ...(nThreads > 0 ? { nThreads } : {}),
        ...(nThreadsBatch > 0 ? { nThreadsBatch } : {}),
      } as NativeContextOptions),
    );
    await nativeAsync(() => c.init());
    return new LlamaContext(c, this.info.nVocab);
  }

  createSampler(settings: Partial<SamplerSettings> = {}): Sampler {
    const b = loadBinding();
    return new Sampler(native(() => new b.AddonSampler(this.#live(), { ...GREEDY, ...settings })));
  }

  dispose(): void {
    if (this.#disposed) return;
    native(() => this.#native.dispose());
    this.#disposed = true;
  }

  #live(): NativeModel {
    if (this.#disposed) throw new HearthError(ErrorCode.FailedPrecondition, `model ${this.path} was disposed`);
    return this.#native;
  }
}

export const GREEDY: SamplerSettings = Object.freeze({
  temperature: 0,
  topK: 40,
  topP: 1,
  minP: 0,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
  seed: 0,
  greedy: true,
  ignoreEos: false,
  grammar: null,
  grammarLazy: false,
  grammarTriggerPatterns: [],
  grammarTriggerTokens: [],
  grammarPrefill: null,
  nProbs: -1,
});

/** GBNF for a JSON schema (INVALID_ARGUMENT naming the problem when llama.cpp's converter rejects it). */
export function jsonSchemaToGrammar(schema: unknown): string {
  return native(() => loadBinding().jsonSchemaToGrammar(JSON.stringify(schema)));
}

/** An OpenAI chat request's fields that shape the prompt, grammar and parser (OpenAI shapes throughout). */
export interface ChatTemplateRequest {
  /** {role, content} with role 'tool' (+ tool_call_id) and assistant tool_calls (content null) as OpenAI has them. */
  messages: readonly unknown[];
  tools?: readonly unknown[] | null;
  /** 'none' | 'auto' | 'required' | {type: 'function', function: {name}} (that tool only, a call required). */
  tool_choice?: unknown;
  response_format?: unknown;
  /** A JSON schema, as llama-server's own json_schema field. */
  json_schema?: unknown;
  /** GBNF; not with tools or a schema. */
  grammar?: string | null;
  parallel_tool_calls?: boolean | null;
  /** 'none' | 'auto' | 'deepseek' | 'deepseek-legacy'; llama-server's default is 'deepseek'. */
  reasoning_format?: string | null;
  /** Default: on when the template supports thinking, as llama-server. */
  enable_thinking?: boolean | null;
  chat_template_kwargs?: Record<string, unknown> | null;
  reasoning_effort?: string | null;
  add_generation_prompt?: boolean | null;
}

/** The grammar part of SamplerSettings that a chat prompt asks for. */
export type ChatGrammarSettings = Pick<SamplerSettings, 'grammar' | 'grammarLazy' | 'grammarTriggerPatterns' | 'grammarTriggerTokens' | 'grammarPrefill'>;

export interface ChatPrompt extends Omit<NativeChatApplyResult, 'parser'> {
  parser: ChatParser;
  /** Sampler settings that constrain the answer as llama-server would (grammar, triggers, prefill). */
  sampling: ChatGrammarSettings;
}

export class ChatTemplates {
  readonly #native: NativeChatTemplates;

  constructor(nativeTemplates: NativeChatTemplates) {
    this.#native = nativeTemplates;
  }

  info(): ChatTemplatesInfo {
    return native(() => this.#native.info());
  }

  /** Renders the prompt; bad input is an INVALID_ARGUMENT error naming the request field. */
  async apply(request: ChatTemplateRequest): Promise<ChatPrompt> {
    const r = await nativeAsync(() => this.#native.apply(JSON.stringify(request)));
    // llama-server advances template and schema grammars past the generation prompt; a user's own
    // grammar, and a lazy one, start from the first generated token.
    const userGrammar = typeof request.grammar === 'string' && request.grammar !== '';
    const sampling: ChatGrammarSettings = {
      grammar: r.grammar === '' ? null : r.grammar,
      grammarLazy: r.grammarLazy,
      grammarTriggerPatterns: r.grammarTriggerPatterns,
      grammarTriggerTokens: r.grammarTriggerTokens,
      grammarPrefill: r.grammar !== '' && !r.grammarLazy && !userGrammar && r.generationPrompt !== '' ? r.generationPrompt : null,
    };
    return { ...r, parser: new ChatParser(r.parser), sampling };
  }
}

export class ChatParser {
  readonly #native: NativeChatParser;

  constructor(nativeParser: NativeChatParser) {
    this.#native = nativeParser;
  }

  /** Reads the answer generated so far (partial) or in full into content, reasoning and tool calls. */
  parse(text: string, options: { partial?: boolean } = {}): ParsedChatMessage {
    return native(() => this.#native.parse(text, options.partial ?? false));
  }
}

export class Sampler {
  readonly native: NativeSampler;
  #disposed = false;

  constructor(nativeSampler: NativeSampler) {
    this.native = nativeSampler;
  }

  accept(tokens: ArrayLike<number>): void {
    native(() => this.native.accept(Int32Array.from(tokens)));
  }

  /** Brings this new sampler to the state of one that generated `tokens` (a resumed request): grammar, penalties and the seeded RNG. */
  replay(tokens: ArrayLike<number>): void {
    native(() => this.native.replay(Int32Array.from(tokens)));
  }

  dispose(): void {
    if (this.#disposed) return;
    native(() => this.native.dispose());
    this.#disposed = true;
  }
}

/** One batch for LlamaContext.decode: tokens of one or more sequences. */
export class Batch {
  readonly tokens: number[] = [];
  readonly positions: number[] = [];
  readonly seqIds: number[] = [];
  readonly logits: boolean[] = [];
  readonly samples: { row: number; sampler: Sampler; draft: number }[] = [];

  /** Adds a token; returns its row. */
  add(token: number, position: number, seqId: number, wantLogits = false): number {
    this.tokens.push(token);
    this.positions.push(position);
    this.seqIds.push(seqId);
    this.logits.push(wantLogits);
    return this.tokens.length - 1;
  }

  /** Adds a run of tokens of one sequence from `start`; logits on the last one when asked. */
  addSequence(tokens: ArrayLike<number>, start: number, seqId: number, logitsOnLast: boolean): number {
    let row = -1;
    for (let i = 0; i < tokens.length; i++) row = this.add(tokens[i]!, start + i, seqId, logitsOnLast && i === tokens.length - 1);
    return row;
  }

  /** Samples `row` with `sampler` right after the decode, on the decoding thread. */
  sample(row: number, sampler: Sampler): void {
    this.logits[row] = true;
    this.samples.push({ row, sampler, draft: 0 });
  }

  /**
   * Adds `token` (the sequence's next, already sampled) and the tokens drafted after it, and verifies
   * the draft with `sampler` (LlamaContext.decodeSpeculative): the target samples each position in turn
   * and stops at the first sample that differs from the draft.
   */
  verify(token: number, draft: ArrayLike<number>, position: number, seqId: number, sampler: Sampler): void {
    const row = this.add(token, position, seqId, true);
    for (let i = 0; i < draft.length; i++) this.add(draft[i]!, position + 1 + i, seqId, true);
    this.samples.push({ row, sampler, draft: draft.length });
  }

  get size(): number {
    return this.tokens.length;
  }
}

/** A Batch in the addon's terms. */
function nativeBatch(batch: Batch): NativeBatch {
  return [
    Int32Array.from(batch.tokens),
    Int32Array.from(batch.positions),
    Int32Array.from(batch.seqIds),
    Uint8Array.from(batch.logits, (l) => (l ? 1 : 0)),
    Int32Array.from(batch.samples, (s) => s.row),
    batch.samples.map((s) => s.sampler.native),
  ];
}

export class LlamaContext {
  readonly info: NativeContextInfo;
  readonly #native: NativeContext;
  readonly #nVocab: number;
  #disposed = false;

  constructor(nativeContext: NativeContext, nVocab: number) {
    this.#native = nativeContext;
    this.#nVocab = nVocab;
    this.info = Object.freeze(native(() => nativeContext.info()));
  }

  /** Decodes the batch; returns the sampled token of each `batch.sample()` in order. */
  async decode(batch: Batch): Promise<Int32Array> {
    const c = this.#live();
    return nativeAsync(() => c.decode(...nativeBatch(batch)));
  }

  /**
   * Decodes the batch and verifies its drafts (Batch.verify); per sample, the tokens it emitted: the
   * accepted drafted tokens, then the target's own next token (at least that one).
   */
  async decodeSpeculative(batch: Batch): Promise<Int32Array[]> {
    const c = this.#live();
    return nativeAsync(() => c.decode(...nativeBatch(batch), Int32Array.from(batch.samples, (s) => s.draft)));
  }

  /**
   * An embeddings context (createContext({embeddings: true})): decodes the rows (every one an output)
   * and returns the pooled output of each of `outSeqIds`, in order: nEmbdOut floats, or a reranker's
   * nClsOut scores. `normalize` as llama.cpp's common_embd_normalize: -1 none, 2 L2 (unit length).
   */
  async embed(rows: { tokens: ArrayLike<number>; positions: ArrayLike<number>; seqIds: ArrayLike<number> }, outSeqIds: ArrayLike<number>, normalize: -1 | 2): Promise<Float32Array[]> {
    const c = this.#live();
    return nativeAsync(() => c.embed(Int32Array.from(rows.tokens), Int32Array.from(rows.positions), Int32Array.from(rows.seqIds), Int32Array.from(outSeqIds), normalize));
  }

  /** A copy of the last decode's logits for `row` (nVocab floats). */
  logits(row: number): Float32Array {
    const l = native(() => this.#live().getLogits(row));
    if (l.length !== this.#nVocab) throw new HearthError(ErrorCode.Internal, `logits row has ${l.length} entries, expected ${this.#nVocab}`);
    return l;
  }

  /**
   * The log-probabilities of emitted token `sampleIndex` of the last decode (one per batch.sample() call
   * in order; after decodeSpeculative, each sample's emitted tokens in turn), from the raw logits; null
   * when that sampler's nProbs < 0. Token text and bytes: model.tokenToPiece().
   */
  logprobs(sampleIndex: number): TokenLogprobs | null {
    return native(() => this.#live().lastLogprobs(sampleIndex));
  }

  /** Frees a sequence's KV cells (positions [p0, p1), -1 for open ends). */
  removeSequence(seqId: number, p0 = -1, p1 = -1): boolean {
    return native(() => this.#live().seqRemove(seqId, p0, p1));
  }

  /**
   * Whether the sequence still holds what tokens from position `n` on attend to. A sliding-window
   * cache drops positions older than its window, so an old prefix may be partly gone.
   */
  holdsPrefixFor(seqId: number, n: number): boolean {
    if (this.info.nSwa === 0) return true;
    const [min] = native(() => this.#live().seqPosRange(seqId));
    return min >= 0 && min <= Math.max(0, n - this.info.nSwa);
  }

  clear(): void {
    native(() => this.#live().memoryClear());
  }

  memoryBreakdown(): MemoryBreakdownEntry[] {
    return native(() => this.#live().memoryBreakdown());
  }

  dispose(): void {
    if (this.#disposed) return;
    native(() => this.#native.dispose());
    this.#disposed = true;
  }

  #live(): NativeContext {
    if (this.#disposed) throw new HearthError(ErrorCode.FailedPrecondition, 'the context was disposed');
    return this.#native;
  }
}
