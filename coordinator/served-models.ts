// The models a cluster serves, as the APIs see them: what a request's `model` names, whether the model
// is in memory, and the requests that are not text generation (embeddings, rerank). The coordinator
// implements these; the HTTP (OpenAI and Ollama) and gRPC APIs only read them.
import type { ModelFacts } from '../models/gguf-info.js';

/** What a model is for: generating text, or only pooled vectors (embeddings) or relevance scores (rerank). */
export type ModelKind = 'chat' | 'embedding' | 'rerank';

/**
 * What a model is for, from its GGUF's pooling type as llama.cpp reads it: rank pooling is a reranker,
 * mean, cls or last pooling an embedding model, none (or no key) a text generation model.
 */
export function modelKind(facts: Pick<ModelFacts, 'poolingType'> | null): ModelKind {
  switch (facts?.poolingType ?? 'none') {
    case 'rank':
      return 'rerank';
    case 'mean':
    case 'cls':
    case 'last':
      return 'embedding';
    default:
      return 'chat';
  }
}

/** Where a model is now: in memory across the workers, being loaded, or only on disk. */
export type ModelStatus = 'loaded' | 'loading' | 'on disk';

/** pinned: loaded at start and never unloaded; on-demand: loaded at its first request, unloaded when idle. */
export type ModelPolicy = 'pinned' | 'on-demand';

export interface ServedModel {
  /** The name requests use. */
  id: string;
  /** Further names that reach the same model. */
  aliases: readonly string[];
  kind: ModelKind;
  status: ModelStatus;
  policy: ModelPolicy;
  /** The model file's header facts (null until read, or for a hub model not fetched yet). */
  facts: ModelFacts | null;
  /** Context per request, in tokens. */
  ctxSize: number;
  /** Bytes the loaded model holds across the cluster (weights, KV cache, compute buffers); 0 when not loaded. */
  loadedBytes: number;
  /** When an idle on-demand model will be unloaded (ms since the epoch), or null. */
  expiresAt: number | null;
  /** When a request last used it (ms since the epoch), or null. */
  lastUsedAt: number | null;
}

/** A text to embed, or its token ids. */
export type EmbedInput = string | number[];

/** Pooled vectors for each input, in order. */
export interface EmbedRequest {
  /** The model's id or alias; undefined: the default model. */
  model?: string;
  /** Texts, or token ids (used as they are, as llama-server takes them). */
  inputs: EmbedInput[];
  /** Scale each vector to unit length (llama-server's default for /v1/embeddings); false: raw pooled output. */
  normalize: boolean;
  /** Cut an input longer than the context to fit instead of refusing it. */
  truncate: boolean;
}

export interface EmbedResult {
  model: string;
  embeddings: number[][];
  promptTokens: number;
}

/** llama-server's /v1/rerank: the documents scored against the query by a reranker model. */
export interface RerankRequest {
  model?: string;
  query: string;
  documents: string[];
  /** Keep the best n; undefined: all. */
  topN?: number;
}

export interface RerankResult {
  model: string;
  /** Best first. */
  results: { index: number; relevanceScore: number }[];
  promptTokens: number;
}
