// /v1/embeddings in OpenAI's shape and /v1/rerank in llama-server's: request bodies in, the served-models
// contract's requests out, and the response bodies back. Pure: no I/O.
import type { EmbedInput, EmbedRequest, EmbedResult, RerankRequest, RerankResult } from '../served-models.js';
import { invalid } from './errors.js';
import { requireObject, type Body } from './openai.js';

export type EncodingFormat = 'float' | 'base64';

export interface EmbeddingsCall {
  request: EmbedRequest;
  encoding: EncodingFormat;
  /** OpenAI's `dimensions`: the width the client wants, which must be the model's own (hearth does not shorten vectors); null: not given. */
  dimensions: number | null;
}

function modelOf(b: Body): { model?: string } {
  const m = b.model;
  if (m === undefined || m === null || m === '') return {};
  if (typeof m !== 'string') throw invalid(`model: must be a string, got ${JSON.stringify(m)}`);
  return { model: m };
}

const isTokenId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

function tokenIds(v: unknown[], where: string): number[] {
  const bad = v.findIndex((t) => !isTokenId(t));
  if (bad >= 0) throw invalid(`${where}[${bad}]: a token id must be a whole number of at least 0, got ${JSON.stringify(v[bad])}`);
  return v as number[];
}

/**
 * OpenAI's `input`: a string, an array of strings, an array of token ids (one input), or an array of
 * such arrays; strings and token arrays may be mixed, as llama-server takes them.
 */
export function embedInputs(input: unknown): EmbedInput[] {
  if (typeof input === 'string') {
    if (input === '') throw invalid('input: is empty; give some text to embed');
    return [input];
  }
  if (!Array.isArray(input)) throw invalid('input: required, a string or an array of strings (or of token ids)');
  if (input.length === 0) throw invalid('input: must not be an empty array');
  if (input.every((v) => typeof v === 'number')) return [tokenIds(input, 'input')];
  return input.map((v, i) => {
    if (typeof v === 'string') {
      if (v === '') throw invalid(`input[${i}]: is empty; give some text to embed`);
      return v;
    }
    if (Array.isArray(v)) {
      if (v.length === 0) throw invalid(`input[${i}]: is empty; give some text to embed`);
      return tokenIds(v, `input[${i}]`);
    }
    throw invalid(`input[${i}]: must be a string (or an array of token ids), got ${JSON.stringify(v)}`);
  });
}

/** POST /v1/embeddings. Besides OpenAI's fields: llama-server's `embd_normalize` (-1: raw, 2: unit length) and `truncate`. */
export function embeddingsCall(body: unknown): EmbeddingsCall {
  const b = requireObject(body);
  if (!('input' in b)) throw invalid('input: required, a string or an array of strings');
  const inputs = embedInputs(b.input);
  const encoding = b.encoding_format ?? 'float';
  if (encoding !== 'float' && encoding !== 'base64') throw invalid(`encoding_format: must be "float" or "base64", got ${JSON.stringify(encoding)}`);
  let dimensions: number | null = null;
  if (b.dimensions !== undefined && b.dimensions !== null) {
    if (typeof b.dimensions !== 'number' || !Number.isInteger(b.dimensions) || b.dimensions < 1) throw invalid(`dimensions: must be a whole number of at least 1, got ${JSON.stringify(b.dimensions)}`);
    dimensions = b.dimensions;
  }
  let normalize = true;
  if (b.embd_normalize !== undefined && b.embd_normalize !== null) {
    if (b.embd_normalize !== -1 && b.embd_normalize !== 2) throw invalid(`embd_normalize: hearth supports -1 (none) and 2 (unit length, the default), got ${JSON.stringify(b.embd_normalize)}`);
    normalize = b.embd_normalize === 2;
  }
  const truncate = b.truncate ?? false;
  if (typeof truncate !== 'boolean') throw invalid(`truncate: must be true or false, got ${JSON.stringify(truncate)}`);
  return { request: { ...modelOf(b), inputs, normalize, truncate }, encoding, dimensions };
}

/** A vector as OpenAI's base64 encoding carries it: little-endian float32s. */
export function base64Floats(values: readonly number[]): string {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
  return bytes.toString('base64');
}

/** The inverse of base64Floats (for tests and clients of ours). */
export function floatsOfBase64(text: string): number[] {
  const bytes = Buffer.from(text, 'base64');
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
}

/** Refuses `dimensions` other than the model's own width: hearth gives the model's vectors whole. */
export function checkDimensions(dimensions: number | null, result: EmbedResult): void {
  const width = result.embeddings[0]?.length ?? 0;
  if (dimensions !== null && dimensions !== width) {
    throw invalid(`dimensions: ${result.model} gives ${width}-dimensional embeddings and cannot shorten them to ${dimensions}; omit dimensions (or give ${width})`);
  }
}

export function embeddingsResponse(result: EmbedResult, encoding: EncodingFormat) {
  return {
    object: 'list',
    data: result.embeddings.map((v, index) => ({ object: 'embedding', index, embedding: encoding === 'base64' ? base64Floats(v) : v })),
    model: result.model,
    usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
  };
}

export interface RerankCall {
  request: RerankRequest;
  /** Hugging Face TEI's shape (`texts` in, a bare list with `score` out), which llama-server also takes. */
  tei: boolean;
  returnText: boolean;
}

/** A document: a string, or `{text}` as Jina's and Cohere's APIs also take it. */
function documentText(d: unknown, where: string): string {
  if (typeof d === 'string') return d;
  if (typeof d === 'object' && d !== null && typeof (d as Body).text === 'string') return (d as Body).text as string;
  throw invalid(`${where}: must be a string (or {"text": ...}), got ${JSON.stringify(d)}`);
}

/** POST /v1/rerank (and llama-server's aliases): `query`, `documents` (or TEI's `texts`), `top_n`. */
export function rerankCall(body: unknown): RerankCall {
  const b = requireObject(body);
  if (typeof b.query !== 'string') throw invalid(b.query === undefined ? 'query: required, a string' : 'query: must be a string');
  if (b.query === '') throw invalid('query: is empty');
  const tei = !('documents' in b) && 'texts' in b;
  const field = tei ? 'texts' : 'documents';
  const docs = b[field];
  if (!Array.isArray(docs) || docs.length === 0) throw invalid(`${field}: required, a non-empty array of strings`);
  const documents = docs.map((d, i) => documentText(d, `${field}[${i}]`));
  let topN: number | undefined;
  if (b.top_n !== undefined && b.top_n !== null) {
    if (typeof b.top_n !== 'number' || !Number.isInteger(b.top_n) || b.top_n < 0) throw invalid(`top_n: must be a whole number of at least 0, got ${JSON.stringify(b.top_n)}`);
    topN = b.top_n;
  }
  return { request: { ...modelOf(b), query: b.query, documents, ...(topN !== undefined ? { topN } : {}) }, tei, returnText: tei && b.return_text === true };
}

export function rerankResponse(result: RerankResult, call: RerankCall) {
  if (call.tei) return result.results.map((r) => ({ index: r.index, score: r.relevanceScore, ...(call.returnText ? { text: call.request.documents[r.index] } : {}) }));
  return {
    model: result.model,
    object: 'list',
    usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
    results: result.results.map((r) => ({ index: r.index, relevance_score: r.relevanceScore })),
  };
}
