// Ollama API request bodies in (docs/api.md of ollama/ollama, and the `ollama` client's types), hearth
// generation and embedding requests out. As Ollama does, unknown fields and options are ignored; known
// ones are checked and named when wrong. Pure: the served model is passed in, nothing is read.
import { ErrorCode, HearthError } from '../../common/errors.js';
import type { GenerationRequest } from '../coordinator.js';
import type { ChatMessage, ChatOptions, Constraint } from '../engine/protocol.js';
import type { RequestSettings } from '../params.js';
import type { EmbedRequest, ServedModel } from '../served-models.js';
import { invalid } from './errors.js';
import { chatOptions, type Body } from './openai.js';

/** What Ollama says when `format` is neither "json" nor a schema. */
const BAD_FORMAT = 'invalid format: expected "json" or a valid JSON schema';

/** Options that Ollama applies at load time or hearth has no sampler for: accepted and ignored, as Ollama ignores unknown ones. */
const IGNORED_OPTIONS = new Set([
  'numa', 'num_batch', 'num_gpu', 'main_gpu', 'low_vram', 'f16_kv', 'logits_all', 'vocab_only', 'use_mmap', 'use_mlock', 'embedding_only', 'num_thread',
  'num_keep', 'tfs_z', 'typical_p', 'repeat_last_n', 'mirostat', 'mirostat_tau', 'mirostat_eta', 'penalize_newline',
]);

function isObject(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A body that is a JSON object; Ollama's words when there is none. */
export function ollamaBody(text: unknown): Body {
  if (typeof text !== 'string' || text.trim() === '') throw invalid('missing request body');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw invalid(`the request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(body)) throw invalid('the request body must be a JSON object');
  return body;
}

/** The model a request names (`model`, or the deprecated `name`); Ollama requires one. */
export function modelName(b: Body): string {
  const m = b.model ?? b.name;
  if (m === undefined || m === null || m === '') throw invalid('model is required');
  if (typeof m !== 'string') throw invalid(`model: must be a string, got ${JSON.stringify(m)}`);
  return m;
}

function optionalBoolean(b: Body, key: string, where = key): boolean | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalid(`${where}: must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** `stream`: true unless the request says false (Ollama streams by default). */
export function wantsStream(b: Body): boolean {
  return optionalBoolean(b, 'stream') ?? true;
}

/**
 * `keep_alive` as Ollama takes it: seconds as a number, or a Go duration ("5m", "1h30m", "300ms", "-1").
 * Returns milliseconds (negative: forever) or null when absent.
 */
export function keepAliveMs(v: unknown): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number' && Number.isFinite(v)) return v * 1000;
  if (typeof v === 'string') {
    const s = v.trim();
    if (/^[-+]?\d+(\.\d+)?$/.test(s)) return Number(s) * 1000;
    const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
    const m = /^([-+]?)((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$/.exec(s);
    if (m) {
      let ms = 0;
      for (const [, n, u] of m[2]!.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * unit[u!]!;
      return m[1] === '-' ? -ms : ms;
    }
  }
  throw invalid(`keep_alive: must be a number of seconds or a duration such as "5m" or "1h30m", got ${JSON.stringify(v)}`);
}

/** The sampling settings an Ollama `options` object asks for, and what hearth could not do as asked. */
export interface MappedOptions {
  settings: RequestSettings;
  /** Options given that hearth ignores (load-time options, samplers it lacks). */
  ignored: string[];
  /** options.num_ctx, when it asks for more context than the model is served with. */
  numCtxOver: number | null;
}

function optionNumber(o: Body, key: string, integer: boolean): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`options.${key}: must be a number, got ${JSON.stringify(v)}`);
  if (integer && !Number.isInteger(v)) throw invalid(`options.${key}: must be a whole number, got ${v}`);
  return v;
}

/**
 * Ollama's `options` as hearth's request settings. num_predict: a positive count, or -1 / -2 (Ollama's
 * "until the context is full"; 0 and other negatives mean the same to Ollama's runner), never more than
 * the served context; absent, the coordinator's default applies as on every API. A negative seed is
 * Ollama's "random". num_ctx cannot change a loaded model's context: a larger one is reported, not refused,
 * since Ollama apps send it with every request and a prompt that does not fit is refused anyway.
 */
export function mapOptions(options: unknown, model: Pick<ServedModel, 'ctxSize'>): MappedOptions {
  if (options === undefined || options === null) return { settings: {}, ignored: [], numCtxOver: null };
  if (!isObject(options)) throw invalid('options: must be an object of model parameters, such as {"temperature": 0.7}');
  const o = options;
  const settings: RequestSettings = {
    temperature: optionNumber(o, 'temperature', false),
    topK: optionNumber(o, 'top_k', true),
    topP: optionNumber(o, 'top_p', false),
    minP: optionNumber(o, 'min_p', false),
    repeatPenalty: optionNumber(o, 'repeat_penalty', false),
    presencePenalty: optionNumber(o, 'presence_penalty', false),
    frequencyPenalty: optionNumber(o, 'frequency_penalty', false),
  };
  const seed = optionNumber(o, 'seed', true);
  if (seed !== undefined && seed >= 0) settings.seed = seed;
  const predict = optionNumber(o, 'num_predict', true);
  if (predict !== undefined) settings.maxTokens = predict > 0 ? Math.min(predict, model.ctxSize) : model.ctxSize;
  const stop = o.stop;
  if (typeof stop === 'string') settings.stop = [stop];
  else if (Array.isArray(stop)) {
    stop.forEach((s, i) => {
      if (typeof s !== 'string') throw invalid(`options.stop[${i}]: must be a string`);
    });
    settings.stop = stop as string[];
  } else if (stop !== undefined && stop !== null) throw invalid('options.stop: must be an array of strings');
  const numCtx = optionNumber(o, 'num_ctx', true);
  const ignored = Object.keys(o).filter((k) => IGNORED_OPTIONS.has(k) && o[k] !== null && o[k] !== undefined);
  return { settings, ignored, numCtxOver: numCtx !== undefined && numCtx > model.ctxSize ? numCtx : null };
}

/** `format`: "json" (any JSON object) or a JSON schema, as a constraint on the output. */
export function formatConstraint(format: unknown): Constraint | null {
  if (format === undefined || format === null || format === '') return null;
  if (format === 'json') return { kind: 'json_schema', schema: { type: 'object' }, field: 'format' };
  if (isObject(format)) return { kind: 'json_schema', schema: format, field: 'format' };
  throw invalid(BAD_FORMAT);
}

/** `think`: true, false, or a level ("high", "medium", "low": thinking on; hearth has no levels). */
export function thinkSetting(think: unknown): boolean | null {
  if (think === undefined || think === null) return null;
  if (typeof think === 'boolean') return think;
  if (think === 'high' || think === 'medium' || think === 'low') return true;
  throw invalid(`think: must be true, false, "high", "medium" or "low", got ${JSON.stringify(think)}`);
}

function noImages(images: unknown, where: string): void {
  if (images === undefined || images === null || (Array.isArray(images) && images.length === 0)) return;
  throw new HearthError(ErrorCode.Unsupported, `${where}: hearth serves text models only; images need a vision model, which hearth does not run`);
}

/** logprobs and top_logprobs (0 to 20): alternatives per token, or null for none. */
function logprobs(b: Body): number | null {
  const on = optionalBoolean(b, 'logprobs') ?? false;
  const top = b.top_logprobs;
  if (top !== undefined && top !== null && (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > 20)) {
    throw invalid('top_logprobs must be between 0 and 20');
  }
  return on ? ((top as number | undefined | null) ?? 0) : null;
}

/** What a chat or generate request asks for, beyond the generation itself. */
export interface OllamaGeneration {
  /** The model as the request named it (responses echo it, as Ollama's do). */
  name: string;
  request: GenerationRequest;
  stream: boolean;
  logprobs: boolean;
  /** Ollama's "load the model" request: no messages, or an empty prompt. */
  loadOnly: boolean;
  /** keep_alive asked to unload the model when idle (0). */
  unload: boolean;
  options: MappedOptions;
}

function settingsOf(b: Body, options: MappedOptions): RequestSettings {
  const lp = logprobs(b);
  return { ...options.settings, constraint: formatConstraint(b.format), logprobs: lp, logprobsField: 'top_logprobs' };
}

/**
 * Ollama's messages in hearth's (OpenAI's) shape. Tool calls carry arguments as objects and often no
 * id; a tool result names its function (`tool_name`) or nothing. Each result is tied to a call of the
 * assistant message before it: by id, else the first unanswered call of that name, else the next one.
 */
export function chatMessages(messages: unknown): ChatMessage[] {
  if (messages === undefined || messages === null) return [];
  if (!Array.isArray(messages)) throw invalid('messages: must be an array of {role, content}');
  const out: ChatMessage[] = [];
  let pending: { id: string; name: string }[] = [];
  messages.forEach((m: unknown, i) => {
    const where = `messages[${i}]`;
    if (!isObject(m)) throw invalid(`${where}: must be an object with role and content`);
    if (typeof m.role !== 'string') throw invalid(`${where}.role: must be a string, got ${JSON.stringify(m.role ?? null)}`);
    if (m.content !== undefined && m.content !== null && typeof m.content !== 'string') throw invalid(`${where}.content: must be a string`);
    noImages(m.images, `${where}.images`);
    const message: ChatMessage = { role: m.role, content: typeof m.content === 'string' ? m.content : '' };
    if (m.role === 'assistant') {
      if (typeof m.thinking === 'string' && m.thinking !== '') message.reasoning_content = m.thinking;
      const calls = m.tool_calls;
      if (calls !== undefined && calls !== null) {
        if (!Array.isArray(calls)) throw invalid(`${where}.tool_calls: must be an array of {function: {name, arguments}}`);
        message.tool_calls = calls.map((c: unknown, j) => {
          const at = `${where}.tool_calls[${j}]`;
          if (!isObject(c) || !isObject(c.function)) throw invalid(`${at}: must be {function: {name, arguments}}`);
          const f = c.function;
          if (typeof f.name !== 'string' || f.name === '') throw invalid(`${at}.function.name: must be a non-empty string`);
          const args = f.arguments ?? {};
          if (!isObject(args) && typeof args !== 'string') throw invalid(`${at}.function.arguments: must be an object`);
          return { id: typeof c.id === 'string' && c.id !== '' ? c.id : `call_${i}_${j}`, type: 'function' as const, function: { name: f.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) } };
        });
        if (message.tool_calls.length === 0) delete message.tool_calls;
      }
      pending = (message.tool_calls ?? []).map((c) => ({ id: c.id, name: c.function.name }));
    } else if (m.role === 'tool') {
      const name = typeof m.tool_name === 'string' && m.tool_name !== '' ? m.tool_name : typeof m.name === 'string' && m.name !== '' ? m.name : null;
      const byId = typeof m.tool_call_id === 'string' ? pending.findIndex((p) => p.id === m.tool_call_id) : -1;
      const at = byId >= 0 ? byId : name !== null && pending.some((p) => p.name === name) ? pending.findIndex((p) => p.name === name) : pending.length > 0 ? 0 : -1;
      const call = at >= 0 ? pending.splice(at, 1)[0]! : null;
      message.tool_call_id = typeof m.tool_call_id === 'string' ? m.tool_call_id : (call?.id ?? `call_${i}`);
      const toolName = name ?? call?.name;
      if (toolName) message.name = toolName;
    } else {
      pending = [];
    }
    out.push(message);
  });
  return out;
}

/** POST /api/chat: messages, tools, think, format, options. */
export function chatRequest(b: Body, model: ServedModel): OllamaGeneration {
  const name = modelName(b);
  const options = mapOptions(b.options, model);
  const messages = chatMessages(b.messages);
  // tools, and hearth's extensions beside them (tool_choice, parallel_tool_calls, chat_template_kwargs), as on /v1/chat/completions.
  const chat: ChatOptions = chatOptions(b);
  const think = thinkSetting(b.think);
  if (think !== null) chat.enableThinking = think;
  return {
    name,
    request: { model: model.id, prompt: { kind: 'chat', messages, options: chat }, settings: settingsOf(b, options) },
    stream: wantsStream(b),
    logprobs: optionalBoolean(b, 'logprobs') === true,
    loadOnly: messages.length === 0,
    unload: keepAliveMs(b.keep_alive) === 0,
    options,
  };
}

/**
 * POST /api/generate. Ollama renders the prompt through the model's template as a user message (after
 * `system`), unless `raw`; hearth does the same with the model's own chat template, so a generate is a
 * one-turn chat whose reply is `response`. `raw` sends the prompt as it is. Templates in Ollama's Go
 * syntax and fill-in-the-middle (`suffix`) cannot be honoured and are refused by name.
 */
export function generateRequest(b: Body, model: ServedModel): OllamaGeneration {
  const name = modelName(b);
  const options = mapOptions(b.options, model);
  const prompt = b.prompt ?? '';
  if (typeof prompt !== 'string') throw invalid(`prompt: must be a string, got ${JSON.stringify(prompt)}`);
  const system = b.system ?? '';
  if (typeof system !== 'string') throw invalid('system: must be a string');
  const raw = optionalBoolean(b, 'raw') === true;
  noImages(b.images, 'images');
  if (typeof b.suffix === 'string' && b.suffix !== '') {
    throw new HearthError(ErrorCode.Unsupported, 'suffix: hearth does not do fill-in-the-middle (insert); send the text before the gap as prompt, or the whole text with raw: true');
  }
  if (typeof b.template === 'string' && b.template !== '') {
    throw new HearthError(ErrorCode.Unsupported, "template: hearth renders prompts with the model's own chat template (Jinja, from the GGUF) and cannot apply an Ollama template; send raw: true with a prompt you formatted yourself");
  }
  const context = Array.isArray(b.context) && b.context.length > 0;
  if (raw && (system !== '' || context)) throw invalid('raw mode does not support template, system, or context');
  const think = thinkSetting(b.think);
  const chat: ChatOptions = { tools: [], toolChoice: 'auto', parallelToolCalls: null, reasoningFormat: 'auto', enableThinking: think };
  const messages: ChatMessage[] = [...(system !== '' ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
  return {
    name,
    request: {
      model: model.id,
      prompt: raw ? { kind: 'text', text: prompt } : { kind: 'chat', messages, options: chat },
      settings: settingsOf(b, options),
    },
    stream: wantsStream(b),
    logprobs: optionalBoolean(b, 'logprobs') === true,
    loadOnly: prompt === '',
    unload: keepAliveMs(b.keep_alive) === 0,
    options,
  };
}

/** POST /api/embed: `input` a string or strings (none: load the model), `truncate` (default true), `dimensions`. */
export function embedRequest(b: Body, model: ServedModel): { name: string; request: EmbedRequest; dimensions: number | null } {
  const name = modelName(b);
  const input = b.input;
  let inputs: string[];
  if (input === undefined || input === null) inputs = [];
  else if (typeof input === 'string') inputs = input === '' ? [] : [input];
  else if (Array.isArray(input) && input.every((x) => typeof x === 'string')) inputs = input as string[];
  else throw invalid('invalid input type: input must be a string or an array of strings');
  const truncate = optionalBoolean(b, 'truncate') ?? true;
  const d = b.dimensions;
  if (d !== undefined && d !== null && (typeof d !== 'number' || !Number.isInteger(d) || d < 1)) throw invalid(`dimensions: must be a positive whole number, got ${JSON.stringify(d)}`);
  keepAliveMs(b.keep_alive);
  return { name, request: { model: model.id, inputs, normalize: true, truncate }, dimensions: typeof d === 'number' ? d : null };
}

/** POST /api/embeddings (Ollama's older endpoint): one `prompt`, the raw pooled vector (not normalized), no truncation. */
export function embeddingsRequest(b: Body, model: ServedModel): { name: string; request: EmbedRequest } {
  const name = modelName(b);
  const prompt = b.prompt ?? '';
  if (typeof prompt !== 'string') throw invalid('prompt: must be a string');
  keepAliveMs(b.keep_alive);
  return { name, request: { model: model.id, inputs: prompt === '' ? [] : [prompt], normalize: false, truncate: false } };
}
