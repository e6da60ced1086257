// OpenAI-compatible request bodies in, hearth generation requests out; and the response shapes back.
// Unknown fields are ignored (clients send many); known ones are checked and named when wrong.
import type { GenerationRequest } from '../coordinator.js';
import type { ChatMessage, ChatOptions, ChatTool, Constraint, ToolChoice, Usage } from '../engine/protocol.js';
import type { RequestSettings } from '../params.js';
import { MAX_TOP_LOGPROBS } from '../params.js';
import { invalid } from './errors.js';

export type Body = Record<string, unknown>;

export function requireObject(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalid('the request body must be a JSON object');
  }
  return body as Body;
}

function optionalNumber(b: Body, key: string): number | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`${key}: must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function optionalBoolean(b: Body, key: string): boolean | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalid(`${key}: must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export interface StreamOptions {
  stream: boolean;
  includeUsage: boolean;
}

export function streamOptions(b: Body): StreamOptions {
  const stream = optionalBoolean(b, 'stream') ?? false;
  const so = b.stream_options;
  let includeUsage = false;
  if (so !== undefined && so !== null) {
    if (typeof so !== 'object' || Array.isArray(so)) throw invalid('stream_options: must be an object');
    const iu = (so as Body).include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') throw invalid('stream_options.include_usage: must be true or false');
    includeUsage = iu === true;
  }
  return { stream, includeUsage };
}

function settings(b: Body): RequestSettings {
  const n = optionalNumber(b, 'n');
  if (n !== undefined && n !== 1) throw invalid(`n: only 1 choice per request is supported, got ${n}`);
  const stop = b.stop;
  let stops: string[] = [];
  if (typeof stop === 'string') stops = [stop];
  else if (Array.isArray(stop)) {
    stop.forEach((s, i) => {
      if (typeof s !== 'string') throw invalid(`stop[${i}]: must be a string`);
    });
    stops = stop as string[];
  } else if (stop !== undefined && stop !== null) throw invalid('stop: must be a string or an array of strings');
  for (const key of ['frequency_penalty', 'presence_penalty']) {
    const v = optionalNumber(b, key);
    if (v !== undefined && (v < -2 || v > 2)) throw invalid(`${key}: must be between -2 and 2, got ${v}`);
  }
  return {
    maxTokens: optionalNumber(b, 'max_completion_tokens') ?? optionalNumber(b, 'max_tokens'),
    temperature: optionalNumber(b, 'temperature'),
    topP: optionalNumber(b, 'top_p'),
    topK: optionalNumber(b, 'top_k'),
    minP: optionalNumber(b, 'min_p'),
    repeatPenalty: optionalNumber(b, 'repeat_penalty'),
    frequencyPenalty: optionalNumber(b, 'frequency_penalty'),
    presencePenalty: optionalNumber(b, 'presence_penalty'),
    seed: optionalNumber(b, 'seed'),
    // llama-server's extension: generate exactly max_tokens (benchmarks rely on it).
    ignoreEos: optionalBoolean(b, 'ignore_eos'),
    cachePrompt: optionalBoolean(b, 'cache_prompt'),
    stop: stops,
    // llama-server's per-request speculative decoding fields, keyed with the dot.
    draftMax: optionalNumber(b, 'speculative.n_max'),
    draftMin: optionalNumber(b, 'speculative.n_min'),
    draftPMin: optionalNumber(b, 'speculative.p_min'),
  };
}

/** A message's content: a string, or text parts joined (images and other parts are not supported). */
function contentText(content: unknown, where: string): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content
      .map((part, i) => {
        if (typeof part !== 'object' || part === null || (part as Body).type !== 'text' || typeof (part as Body).text !== 'string') {
          throw invalid(`${where}.content[${i}]: only {type: "text", text} parts are supported`);
        }
        return (part as Body).text as string;
      })
      .join('');
  }
  throw invalid(`${where}.content: must be a string or an array of text parts`);
}

function isObject(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** OpenAI's rule for function names. */
const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,64}$/;

function chatMessage(m: unknown, i: number): ChatMessage {
  const where = `messages[${i}]`;
  if (!isObject(m)) throw invalid(`${where}: must be an object with role and content`);
  if (typeof m.role !== 'string') throw invalid(`${where}.role: must be a string, got ${JSON.stringify(m.role ?? null)}`);
  const out: ChatMessage = { role: m.role, content: m.content === null || m.content === undefined ? null : contentText(m.content, where) };
  if (m.role !== 'assistant' && out.content === null) out.content = '';
  if (m.tool_calls !== undefined && m.tool_calls !== null) {
    if (m.role !== 'assistant') throw invalid(`${where}.tool_calls: only assistant messages carry tool calls`);
    if (!Array.isArray(m.tool_calls)) throw invalid(`${where}.tool_calls: must be an array`);
    out.tool_calls = m.tool_calls.map((c: unknown, j) => {
      const at = `${where}.tool_calls[${j}]`;
      if (!isObject(c) || !isObject(c.function)) throw invalid(`${at}: must be {id, type: "function", function: {name, arguments}}`);
      if (typeof c.function.name !== 'string' || c.function.name === '') throw invalid(`${at}.function.name: must be a non-empty string`);
      const args = c.function.arguments;
      if (args !== undefined && typeof args !== 'string') throw invalid(`${at}.function.arguments: must be a string of JSON`);
      return { id: typeof c.id === 'string' ? c.id : `call_${i}_${j}`, type: 'function' as const, function: { name: c.function.name, arguments: args ?? '{}' } };
    });
    if (out.tool_calls.length === 0) delete out.tool_calls;
  } else if (m.role === 'assistant' && out.content === null) {
    out.content = '';
  }
  if (m.role === 'tool') {
    if (typeof m.tool_call_id !== 'string') throw invalid(`${where}.tool_call_id: a tool message must name the call it answers`);
    out.tool_call_id = m.tool_call_id;
  }
  if (typeof m.name === 'string') out.name = m.name;
  if (typeof m.reasoning_content === 'string') out.reasoning_content = m.reasoning_content;
  return out;
}

function chatTools(b: Body): ChatTool[] {
  const tools = b.tools;
  if (tools === undefined || tools === null) return [];
  if (!Array.isArray(tools)) throw invalid('tools: must be an array of {type: "function", function: {name, description, parameters}}');
  const names = new Set<string>();
  return tools.map((t: unknown, i) => {
    const where = `tools[${i}]`;
    if (!isObject(t)) throw invalid(`${where}: must be an object {type: "function", function: {...}}`);
    if (t.type !== 'function') throw invalid(`${where}.type: only "function" tools are supported, got ${JSON.stringify(t.type ?? null)}`);
    const f = t.function;
    if (!isObject(f)) throw invalid(`${where}.function: must be an object {name, description, parameters}`);
    if (typeof f.name !== 'string' || !FUNCTION_NAME.test(f.name)) throw invalid(`${where}.function.name: must be 1-64 letters, digits, _ or -, got ${JSON.stringify(f.name ?? null)}`);
    if (names.has(f.name)) throw invalid(`${where}.function.name: '${f.name}' is given twice`);
    names.add(f.name);
    if (f.description !== undefined && f.description !== null && typeof f.description !== 'string') throw invalid(`${where}.function.description: must be a string`);
    if (f.parameters !== undefined && f.parameters !== null && !isObject(f.parameters)) throw invalid(`${where}.function.parameters: must be a JSON schema object`);
    const fn: ChatTool['function'] = { name: f.name };
    if (typeof f.description === 'string') fn.description = f.description;
    fn.parameters = isObject(f.parameters) ? f.parameters : { type: 'object', properties: {} };
    return { type: 'function', function: fn };
  });
}

function toolChoice(b: Body, tools: ChatTool[]): ToolChoice {
  const c = b.tool_choice;
  if (c === undefined || c === null) return 'auto';
  if (c === 'auto' || c === 'none' || c === 'required') {
    if (c === 'required' && tools.length === 0) throw invalid('tool_choice: "required" needs at least one tool in tools');
    return c;
  }
  if (isObject(c) && c.type === 'function' && isObject(c.function) && typeof c.function.name === 'string') {
    const name = c.function.name;
    if (!tools.some((t) => t.function.name === name)) {
      throw invalid(`tool_choice.function.name: '${name}' is not among tools (${tools.map((t) => t.function.name).join(', ') || 'none given'})`);
    }
    return { type: 'function', function: { name } };
  }
  throw invalid('tool_choice: must be "auto", "none", "required" or {type: "function", function: {name}}');
}

/** response_format, llama-server's json_schema and grammar: at most one constraint on the output. */
function constraint(b: Body): Constraint | null {
  const found: Constraint[] = [];
  const rf = b.response_format;
  if (rf !== undefined && rf !== null) {
    if (!isObject(rf)) throw invalid('response_format: must be an object {type: "text" | "json_object" | "json_schema"}');
    if (rf.type === 'json_object') {
      const schema = rf.schema ?? { type: 'object' };
      if (!isObject(schema)) throw invalid('response_format.schema: must be a JSON schema object');
      found.push({ kind: 'json_schema', schema, field: 'response_format' });
    } else if (rf.type === 'json_schema') {
      const js = rf.json_schema;
      if (!isObject(js)) throw invalid('response_format.json_schema: must be an object {name, schema}');
      if (!isObject(js.schema)) throw invalid('response_format.json_schema.schema: must be a JSON schema object');
      found.push({ kind: 'json_schema', schema: js.schema, field: 'response_format.json_schema.schema' });
    } else if (rf.type !== 'text') {
      throw invalid(`response_format.type: must be "text", "json_object" or "json_schema", got ${JSON.stringify(rf.type ?? null)}`);
    }
  }
  if (b.json_schema !== undefined && b.json_schema !== null) {
    if (!isObject(b.json_schema)) throw invalid('json_schema: must be a JSON schema object');
    found.push({ kind: 'json_schema', schema: b.json_schema, field: 'json_schema' });
  }
  if (b.grammar !== undefined && b.grammar !== null && b.grammar !== '') {
    if (typeof b.grammar !== 'string') throw invalid('grammar: must be a string (GBNF)');
    found.push({ kind: 'grammar', grammar: b.grammar, field: 'grammar' });
  }
  if (found.length > 1) throw invalid(`${found[1]!.field}: give one of response_format, json_schema and grammar, not several`);
  return found[0] ?? null;
}

export function chatOptions(b: Body): ChatOptions {
  const tools = chatTools(b);
  const parallel = optionalBoolean(b, 'parallel_tool_calls');
  const rf = b.reasoning_format ?? 'auto';
  if (rf !== 'none' && rf !== 'auto' && rf !== 'deepseek' && rf !== 'deepseek-legacy') {
    throw invalid(`reasoning_format: must be one of none, auto, deepseek, deepseek-legacy; got ${JSON.stringify(rf)}`);
  }
  let enableThinking: boolean | null = null;
  const kwargs = b.chat_template_kwargs;
  if (kwargs !== undefined && kwargs !== null) {
    if (!isObject(kwargs)) throw invalid('chat_template_kwargs: must be an object');
    if (kwargs.enable_thinking !== undefined) {
      if (typeof kwargs.enable_thinking !== 'boolean') throw invalid('chat_template_kwargs.enable_thinking: must be true or false');
      enableThinking = kwargs.enable_thinking;
    }
  }
  return { tools, toolChoice: toolChoice(b, tools), parallelToolCalls: parallel ?? null, reasoningFormat: rf, enableThinking };
}

/** Chat logprobs: `logprobs: true` with `top_logprobs` alternatives (OpenAI: 0 to 20). */
function chatLogprobs(b: Body): number | null {
  const on = optionalBoolean(b, 'logprobs') ?? false;
  const top = b.top_logprobs;
  if (top !== undefined && top !== null) {
    if (typeof top !== 'number' || !Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS) {
      throw invalid(`top_logprobs: must be a whole number between 0 and ${MAX_TOP_LOGPROBS}, got ${JSON.stringify(top)}`);
    }
    if (!on) throw invalid('top_logprobs: needs logprobs: true');
    return top;
  }
  return on ? 0 : null;
}

export function chatRequest(body: unknown): { request: GenerationRequest; stream: StreamOptions; logprobs: boolean } {
  const b = requireObject(body);
  if (!('messages' in b)) throw invalid('messages: required, an array of {role, content}');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw invalid('messages: must be a non-empty array of {role, content}');
  const messages = b.messages.map(chatMessage);
  const logprobs = chatLogprobs(b);
  const request: GenerationRequest = {
    model: modelName(b),
    prompt: { kind: 'chat', messages, options: chatOptions(b) },
    settings: { ...settings(b), constraint: constraint(b), logprobs, logprobsField: 'top_logprobs' },
  };
  return { request, stream: streamOptions(b), logprobs: logprobs !== null };
}

export function completionRequest(body: unknown): { request: GenerationRequest; stream: StreamOptions; logprobs: boolean } {
  const b = requireObject(body);
  let prompt = b.prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== 'string') throw invalid('prompt: must be a string (or an array of exactly one string)');
    prompt = prompt[0];
  }
  if (typeof prompt !== 'string') throw invalid('prompt: required, a string');
  // Completions take logprobs as a number of alternatives (OpenAI allows up to 5; hearth, as chat, 20).
  const lp = b.logprobs;
  if (lp !== undefined && lp !== null && (typeof lp !== 'number' || !Number.isInteger(lp) || lp < 0 || lp > MAX_TOP_LOGPROBS)) {
    throw invalid(`logprobs: must be a whole number between 0 and ${MAX_TOP_LOGPROBS}, got ${JSON.stringify(lp)}`);
  }
  const logprobs = typeof lp === 'number' ? lp : null;
  const request: GenerationRequest = { model: modelName(b), prompt: { kind: 'text', text: prompt }, settings: { ...settings(b), constraint: constraint(b), logprobs, logprobsField: 'logprobs' } };
  return { request, stream: streamOptions(b), logprobs: logprobs !== null };
}

/** The model a request names (undefined: the default); clients that serve one model often send any name, or none. */
export function modelName(b: Body): string | undefined {
  const m = b.model;
  if (m === undefined || m === null || m === '') return undefined;
  if (typeof m !== 'string') throw invalid(`model: must be a string naming a served model, got ${JSON.stringify(m)}`);
  return m;
}

export function usage(u: Usage) {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    // As OpenAI reports its own prompt cache.
    prompt_tokens_details: { cached_tokens: u.cachedTokens },
    // Speculative decoding, in OpenAI's terms for predicted outputs: drafted tokens the model accepted
    // and those it did not.
    ...(u.draftTokens > 0
      ? { completion_tokens_details: { accepted_prediction_tokens: u.draftAcceptedTokens, rejected_prediction_tokens: u.draftTokens - u.draftAcceptedTokens } }
      : {}),
  };
}
