// The served models as Ollama describes models: /api/tags, /api/ps and /api/show entries. Pure: the file's
// digest and time come in as a stamp (ollama.ts reads them once per file).
import type { ModelFacts } from '../../models/gguf-info.js';
import type { ServedModel } from '../served-models.js';

/** A model file's identity for Ollama's listings: a stable digest of its contents, and when it last changed. */
export interface FileStamp {
  digest: string;
  modifiedAt: Date;
}

export interface OllamaDetails {
  parent_model: string;
  format: string;
  family: string;
  families: string[] | null;
  parameter_size: string;
  quantization_level: string;
}

/** llama.cpp's llama_ftype numbers (general.file_type) by the names Ollama shows as quantization_level. */
const FILE_TYPES: Readonly<Record<number, string>> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 7: 'Q8_0', 8: 'Q5_0', 9: 'Q5_1', 10: 'Q2_K', 11: 'Q3_K_S', 12: 'Q3_K_M', 13: 'Q3_K_L',
  14: 'Q4_K_S', 15: 'Q4_K_M', 16: 'Q5_K_S', 17: 'Q5_K_M', 18: 'Q6_K', 19: 'IQ2_XXS', 20: 'IQ2_XS', 21: 'Q2_K_S', 22: 'IQ3_XS',
  23: 'IQ3_XXS', 24: 'IQ1_S', 25: 'IQ4_NL', 26: 'IQ3_S', 27: 'IQ3_M', 28: 'IQ2_S', 29: 'IQ2_M', 30: 'IQ4_XS', 31: 'IQ1_M', 32: 'BF16',
  36: 'TQ1_0', 37: 'TQ2_0', 38: 'MXFP4',
};

export function quantizationLevel(fileType: number | null): string {
  if (fileType === null) return 'unknown';
  return FILE_TYPES[fileType] ?? `file type ${fileType}`;
}

/** A parameter count as Ollama writes it (its format.HumanNumber): "8B", "1.1B", "494.03M", "137M", "12K". */
export function parameterSize(count: number | null | undefined): string {
  if (count === null || count === undefined || count <= 0) return 'unknown';
  const whole = (n: number) => n === Math.floor(n);
  if (count >= 1e9) return whole(count / 1e9) ? `${count / 1e9}B` : `${(count / 1e9).toFixed(1)}B`;
  if (count >= 1e6) return whole(count / 1e6) ? `${count / 1e6}M` : `${(count / 1e6).toFixed(2)}M`;
  if (count >= 1e3) return `${Math.round(count / 1e3)}K`;
  return String(count);
}

export function details(facts: ModelFacts | null): OllamaDetails {
  if (!facts) return { parent_model: '', format: 'gguf', family: '', families: null, parameter_size: 'unknown', quantization_level: 'unknown' };
  return {
    parent_model: '',
    format: 'gguf',
    family: facts.architecture,
    families: [facts.architecture],
    parameter_size: parameterSize(facts.parameterCount),
    quantization_level: quantizationLevel(facts.fileType),
  };
}

/**
 * What a model can do, in Ollama's words: chat models 'completion', with 'tools' when their template
 * renders tools and 'thinking' when it has thinking markers (as Ollama reads its own templates);
 * embedding models 'embedding'.
 */
export function capabilities(model: Pick<ServedModel, 'kind' | 'facts'>): string[] {
  if (model.kind === 'embedding') return ['embedding'];
  if (model.kind === 'rerank') return ['rerank'];
  const template = model.facts?.chatTemplate ?? '';
  return ['completion', ...(/\btools\b/.test(template) ? ['tools'] : []), ...(/<think>|enable_thinking|reasoning_content/.test(template) ? ['thinking'] : [])];
}

/** The GGUF keys (general.* and ARCH.*) that the model's header facts give. */
export function modelInfo(facts: ModelFacts | null): Record<string, string | number> {
  if (!facts) return {};
  const a = facts.architecture;
  const info: Record<string, string | number | null | undefined> = {
    'general.architecture': a,
    'general.file_type': facts.fileType,
    'general.parameter_count': facts.parameterCount,
    [`${a}.block_count`]: facts.layerCount,
    [`${a}.context_length`]: facts.contextLength,
    [`${a}.embedding_length`]: facts.embeddingLength,
    [`${a}.feed_forward_length`]: facts.feedForwardLength,
    [`${a}.attention.head_count`]: facts.headCount,
    [`${a}.attention.head_count_kv`]: facts.headCountKv,
    [`${a}.attention.key_length`]: facts.headDimK,
    [`${a}.attention.value_length`]: facts.headDimV,
    [`${a}.attention.sliding_window`]: facts.slidingWindow,
    [`${a}.expert_count`]: facts.experts?.count,
    [`${a}.expert_used_count`]: facts.experts?.used,
    [`${a}.vocab_size`]: facts.vocabSize,
  };
  return Object.fromEntries(Object.entries(info).filter((e): e is [string, string | number] => e[1] !== null && e[1] !== undefined));
}

/** Ollama lists a model that stays loaded (keep_alive -1) as expiring centuries ahead; a 4-digit year keeps Go clients parsing it. */
const NEVER = '2318-01-01T00:00:00.000Z';

/** GET /api/tags: every served model, under each name that reaches it (id and aliases, as Ollama lists copies). */
export function tagsEntries(model: ServedModel, stamp: FileStamp | null) {
  return [model.id, ...model.aliases].map((name) => ({
    name,
    model: name,
    modified_at: (stamp?.modifiedAt ?? new Date(0)).toISOString(),
    size: model.facts?.fileBytes ?? 0,
    digest: stamp?.digest ?? '',
    details: details(model.facts),
  }));
}

/** GET /api/ps: a loaded model. Its layers are on the workers' devices, none in this host's VRAM. */
export function psEntry(model: ServedModel, stamp: FileStamp | null) {
  return {
    name: model.id,
    model: model.id,
    size: model.loadedBytes,
    digest: stamp?.digest ?? '',
    details: details(model.facts),
    expires_at: model.expiresAt === null ? NEVER : new Date(model.expiresAt).toISOString(),
    size_vram: 0,
    context_length: model.ctxSize,
  };
}

/** POST /api/show. `template` is the model's Jinja chat template (hearth renders prompts with it), not an Ollama Go template. */
export function showResponse(model: ServedModel, stamp: FileStamp | null) {
  const parameters = `${'num_ctx'.padEnd(30)} ${model.ctxSize}`;
  const from = model.facts?.path ?? model.id;
  return {
    license: '',
    modelfile: [
      '# Modelfile generated by hearth for its Ollama API',
      "# hearth serves the models that cluster.yaml's models: (or --model) lists; it builds none from a Modelfile",
      `FROM ${from}`,
      `PARAMETER num_ctx ${model.ctxSize}`,
      '',
    ].join('\n'),
    parameters,
    template: model.facts?.chatTemplate ?? '',
    system: '',
    details: details(model.facts),
    model_info: modelInfo(model.facts),
    capabilities: capabilities(model),
    modified_at: (stamp?.modifiedAt ?? new Date(0)).toISOString(),
  };
}
