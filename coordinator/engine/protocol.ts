// Messages between the coordinator and its engine child process (Node IPC, JSON).
import type { CacheType, PoolingType } from '../../native/binding.js';

export interface SamplingSettings {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  greedy: boolean;
  ignoreEos: boolean;
}

/**
 * Output constrained by a grammar: GBNF text (llama-server's `grammar`), or a JSON schema that
 * llama.cpp's converter turns into one. `field` is where the request gave it, for error messages.
 */
export type Constraint = { kind: 'grammar'; grammar: string; field: string } | { kind: 'json_schema'; schema: Record<string, unknown>; field: string };

export interface GenerateParams {
  maxTokens: number;
  sampling: SamplingSettings;
  stop: string[];
  constraint: Constraint | null;
  /** Log-probabilities of each chosen token with this many alternatives; null: none. */
  logprobs: number | null;
  /** Reuse the KV of a finished request that shares the prompt's prefix (llama-server's cache_prompt). */
  cachePrompt: boolean;
  /** This request's speculative decoding, over the engine's settings (null: theirs); nMax 0 turns it off. */
  speculative?: { nMax: number | null; nMin: number | null; pMin: number | null };
  /**
   * A request resumed after its engine was lost: the tokens its client has received already. The engine
   * computes them after the prompt, brings the sampler and the output to where they were, and goes on.
   */
  resume?: number[];
}

/** A chat message in OpenAI's shape: assistant messages may carry tool calls, tool messages answer one. */
export interface ChatMessage {
  role: string;
  content: string | null;
  name?: string;
  tool_calls?: { id: string; type: 'function'; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
  reasoning_content?: string;
}

export interface ChatTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export type ToolChoice = 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } };

export interface ChatOptions {
  tools: ChatTool[];
  toolChoice: ToolChoice;
  /** null: as the template's capabilities say (llama-server's default). */
  parallelToolCalls: boolean | null;
  /** llama-server's reasoning_format: where text inside thinking markers goes. */
  reasoningFormat: 'none' | 'auto' | 'deepseek' | 'deepseek-legacy';
  /** chat_template_kwargs.enable_thinking, when given. */
  enableThinking: boolean | null;
}

export type PromptInput = { kind: 'text'; text: string } | { kind: 'chat'; messages: ChatMessage[]; options?: ChatOptions };

/** A chosen token's log-probability and its most likely alternatives (OpenAI's logprobs content entry). */
export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top: { token: string; logprob: number; bytes: number[] }[];
}

/** What a chat reply's text means under its template: content, reasoning and tool calls. */
export interface ChatReply {
  content: string;
  reasoningContent: string;
  toolCalls: { id: string; name: string; arguments: string }[];
}

/** A change to a streamed chat reply, as OpenAI streams it. */
export interface ChatDelta {
  content?: string;
  reasoningContent?: string;
  toolCalls?: { index: number; id?: string; name?: string; arguments: string }[];
}

/** How speculation runs; absent from an engine that does not speculate. */
export interface SpeculationSettings {
  /** The draft model's GGUF, or null (n-gram lookup only). */
  draftModel: string | null;
  /** The worker (by name) whose first device runs the draft; null: the coordinator's own CPU. */
  draftWorker: string | null;
  /** Set per load: that worker's RPC endpoint as the engine reaches it; null: the CPU. */
  draftEndpoint?: string | null;
  /** Length of the n-gram looked up in the sequence's own tokens; 0: no lookup. */
  ngram: number;
  /** Most tokens drafted per step. */
  draftMax: number;
  /** A shorter draft is not verified (the step decodes one token as usual). */
  draftMin: number;
  /** The draft model stops drafting when its top token's probability falls below this. */
  pMin: number;
  /** Speculation steps aside while more sequences than this generate (the batch is compute-bound then). */
  maxSequences: number;
  /** Draft as many tokens per step as pays on this cluster (DraftTuner), up to draftMax; false: always draftMax. */
  tune: boolean;
}

export interface EngineLoadSpec {
  modelPath: string;
  rpcEndpoints: string[];
  /** For each of rpcEndpoints, which of its server's devices (a plan lists a worker's devices in speed order, not the server's). */
  rpcDevices: number[];
  /**
   * 'layer': whole layers per device (tensorSplit: layer counts); 'tensor': llama.cpp's meta device over
   * the RPC devices, each holding its share of every layer (tensorSplit: the shares; nGpuLayers: every
   * slot; no expert overrides). Flash attention is left to llama.cpp, which turns it on for tensor mode.
   * Absent: 'layer'.
   */
  splitMode?: 'layer' | 'tensor';
  tensorSplit: number[];
  /** MoE expert tensors of these blocks go to the RPC device at this index of rpcEndpoints (Plan.expertOverrides). */
  expertOverrides: { layers: number[]; device: number }[];
  nGpuLayers: number;
  ctxSize: number;
  parallel: number;
  /** Contexts to decode in (pipelined decode): the sequences are split between them. */
  groups: number;
  nBatch: number;
  nUbatch: number;
  typeK: CacheType;
  typeV: CacheType;
  threads: number;
  /** Speculative decoding; null: none. */
  speculation: SpeculationSettings | null;
  /** A Jinja chat template in place of the model's own, or null. */
  chatTemplate?: string | null;
  /**
   * An embedding or reranker model: one embeddings context (the model's pooling type) answering `embed`
   * and `rerank` instead of the generation contexts. Absent: false.
   */
  embeddings?: boolean;
  /**
   * A tensor split's peer links: for each ordered pair of servers (from/to: exact strings of
   * rpcEndpoints), the address at which `from`'s server reaches `to`'s for the direct all-reduce. A pair
   * not listed is reached at `to` itself. Absent: none (a layer split).
   */
  peerAddresses?: PeerAddress[];
}

/** Where the rpc server of `from` dials the one of `to` (host:port, as seen from `from`'s machine). */
export interface PeerAddress {
  from: string;
  to: string;
  address: string;
}

/** An input to embed: text (tokenized with the model's special tokens, as llama-server), or token ids as they are. */
export type EmbedInput = string | number[];

export interface EmbedParams {
  /** Scale each vector to unit (L2) length, as llama-server's /v1/embeddings; false: the raw pooled output. */
  normalize: boolean;
  /** Cut an input longer than the model takes at once instead of refusing it. */
  truncate: boolean;
}

/** What an embeddings engine gives back: one vector (or, for a reranker, one score) per input, and the tokens it computed. */
export type PooledResult = { kind: 'embed'; embeddings: number[][]; promptTokens: number } | { kind: 'rerank'; scores: number[]; promptTokens: number };

export interface LoadedInfo {
  placement: { layer: number; device: string }[];
  /** Per RPC endpoint: device names the engine registered for it. */
  devices: { endpoint: string; name: string }[];
  memory: { buffer: string; device: string | null; modelBytes: number; contextBytes: number; computeBytes: number }[];
  /** Bytes this process sent to each RPC endpoint during the load (kernel TCP counters), or null when unknown. */
  bytesSent: Record<string, number> | null;
  loadSeconds: number;
  /** Where the load's time went: probing and registering the RPC servers, the weights, the context. */
  phases: { connectSeconds: number; weightsSeconds: number; contextSeconds: number };
  nCtxSeq: number;
  nSeqMax: number;
  /** Contexts the engine decodes in, each with its share of nSeqMax sequences. */
  groups: number;
  nVocab: number;
  chatTemplate: boolean;
  /** An embeddings engine: its context's pooling type and the width of what it gives per input; null for a generation engine. */
  embeddings?: { pooling: PoolingType; nEmbdOut: number; nClsOut: number } | null;
  /** How this engine speculates: 'draft model', 'n-gram', both, or null; and why a draft model is not used when one was asked for. */
  speculation: { draftModel: string | null; draftDevice: string | null; draftEndpoint: string | null; ngram: number; draftBytes: number; note: string | null } | null;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'tool_calls';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose KV was already in the sequence (not processed again). */
  cachedTokens: number;
  /** Speculative decoding: tokens drafted and verified, and how many of them the target accepted. */
  draftTokens: number;
  draftAcceptedTokens: number;
}

export type ToEngine =
  | { type: 'load'; spec: EngineLoadSpec }
  | { type: 'generate'; id: string; prompt: PromptInput; params: GenerateParams }
  | { type: 'embed'; id: string; inputs: EmbedInput[]; params: EmbedParams }
  | { type: 'rerank'; id: string; query: string; documents: string[] }
  | { type: 'cancel'; id: string }
  | { type: 'shutdown' };

export type FromEngine =
  | { type: 'ready' }
  | { type: 'progress'; value: number }
  | { type: 'loaded'; info: LoadedInfo }
  | { type: 'load-failed'; code: string; message: string }
  /** Sent after every decode step: the watchdog's sign of progress. */
  | { type: 'tick' }
  | { type: 'started'; id: string; promptTokens: number; cachedTokens: number }
  | { type: 'token'; id: string; text: string; token: number; delta?: ChatDelta; logprob?: TokenLogprob }
  | { type: 'done'; id: string; finishReason: FinishReason; usage: Usage; text: string; reply?: ChatReply }
  | { type: 'pooled'; id: string; result: PooledResult }
  | { type: 'request-error'; id: string; code: string; message: string }
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string };
