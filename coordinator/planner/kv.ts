// KV-cache arithmetic as llama.cpp allocates it: one K and one V row per token per layer, for the
// padded context, up front (src/llama-kv-cache.cpp). Layers differ where the model says so: KV heads
// per layer (GQA per layer), and sliding-window layers, which keep only their window plus a
// micro-batch, padded to 256 (src/llama-kv-cache-iswa.cpp, with swa_full off as hearth runs it).
// Recurrent layers get the attention figure, which over- rather than under-counts.
import type { CacheType, ModelFacts } from './types.js';

/** Quantized cache types store blocks of 32 elements with their scales, so an element is a fraction of bytes. */
const CACHE_TYPE_BLOCKS: Readonly<Record<CacheType, { bytes: number; elements: number }>> = {
  f32: { bytes: 4, elements: 1 },
  f16: { bytes: 2, elements: 1 },
  bf16: { bytes: 2, elements: 1 },
  q8_0: { bytes: 34, elements: 32 },
  q4_0: { bytes: 18, elements: 32 },
  q4_1: { bytes: 20, elements: 32 },
  q5_0: { bytes: 22, elements: 32 },
  q5_1: { bytes: 24, elements: 32 },
};

/** llama.cpp rounds the context of each sequence up to this many tokens. */
const CONTEXT_PADDING = 256;

export function isCacheType(value: string): value is CacheType {
  return Object.hasOwn(CACHE_TYPE_BLOCKS, value);
}

/** Bytes `elements` values take in a cache of this type (a whole number when elements fill whole blocks). */
function cacheBytes(type: CacheType, elements: number): number {
  const block = CACHE_TYPE_BLOCKS[type];
  return (elements * block.bytes) / block.elements;
}

/** Bytes per element: 2 for f16, 34/32 for q8_0. */
export function cacheTypeBytes(type: CacheType): number {
  return cacheBytes(type, 1);
}

type KvShape = Pick<ModelFacts, 'headCountKv' | 'headDimK' | 'headDimV'> & Partial<Pick<ModelFacts, 'headCountKvPerLayer'>>;

/** KV bytes one token takes in one layer: n_head_kv × (head_dim_k × bytes(type_k) + head_dim_v × bytes(type_v)). */
export function kvBytesPerTokenPerLayer(model: KvShape, typeK: CacheType, typeV: CacheType): number {
  return model.headCountKv * (cacheBytes(typeK, model.headDimK) + cacheBytes(typeV, model.headDimV));
}

/** KV bytes one token takes across all the model's layers. */
export function kvBytesPerToken(model: KvShape & Pick<ModelFacts, 'layerCount'>, typeK: CacheType, typeV: CacheType): number {
  return model.layerCount * kvBytesPerTokenPerLayer(model, typeK, typeV);
}

/** The context llama.cpp actually allocates for one sequence: ctxSize rounded up to a multiple of 256. */
export function paddedContext(ctxSize: number): number {
  return Math.ceil(ctxSize / CONTEXT_PADDING) * CONTEXT_PADDING;
}

type LayerShape = KvShape & Pick<ModelFacts, 'layerCount'> & Partial<Pick<ModelFacts, 'swaLayers' | 'slidingWindow'>>;

/** Cells one sequence's cache holds in layer il: the padded context, or a sliding layer's window plus a micro-batch. */
export function kvCells(model: LayerShape, il: number, context: { ctxSize: number; nUbatch: number }): number {
  const full = paddedContext(context.ctxSize);
  if (!model.swaLayers?.[il] || !model.slidingWindow) return full;
  return paddedContext(Math.min(full, model.slidingWindow + context.nUbatch));
}

/** KV bytes of each layer for the whole context: every sequence, K and V, as llama.cpp allocates them up front. */
export function kvLayerBytes(model: LayerShape, context: { ctxSize: number; parallel: number; nUbatch: number; typeK: CacheType; typeV: CacheType }): number[] {
  return Array.from({ length: model.layerCount }, (_, il) => {
    const heads = model.headCountKvPerLayer?.[il] ?? model.headCountKv;
    const perToken = heads * (cacheBytes(context.typeK, model.headDimK) + cacheBytes(context.typeV, model.headDimV));
    return Math.ceil(kvCells(model, il, context) * context.parallel * perToken);
  });
}
