// OpenAI-compatible request bodies in, hearth generation requests out; and the response shapes back.
// Unknown fields are ignored (clients send many); known ones are checked and named when wrong.
import type { ChatMessage } from '../../native/binding.js';
import type { GenerationRequest } from '../coordinator.js';
import type { RequestSettings } from '../params.js';
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
    stop: stops,
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

export function chatRequest(body: unknown): { request: GenerationRequest; stream: StreamOptions } {
  const b = requireObject(body);
  if (!('messages' in b)) throw invalid('messages: required, an array of {role, content}');
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw invalid('messages: must be a non-empty array of {role, content}');
  const messages: ChatMessage[] = b.messages.map((m: unknown, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw invalid(`messages[${i}]: must be an object with role and content`);
    const mo = m as Body;
    if (typeof mo.role !== 'string') throw invalid(`messages[${i}].role: must be a string, got ${JSON.stringify(mo.role ?? null)}`);
    return { role: mo.role, content: contentText(mo.content, `messages[${i}]`) };
  });
  return { request: { prompt: { kind: 'chat', messages }, settings: settings(b) }, stream: streamOptions(b) };
}

export function completionRequest(body: unknown): { request: GenerationRequest; stream: StreamOptions } {
  const b = requireObject(body);
  let prompt = b.prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== 'string') throw invalid('prompt: must be a string (or an array of exactly one string)');
    prompt = prompt[0];
  }
  if (typeof prompt !== 'string') throw invalid('prompt: required, a string');
  return { request: { prompt: { kind: 'text', text: prompt }, settings: settings(b) }, stream: streamOptions(b) };
}

export function usage(u: { promptTokens: number; completionTokens: number }) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}
