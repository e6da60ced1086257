// Request settings checked at the edge, before anything reaches native code. Errors name the field as
// clients send it (max_tokens, temperature, ...).
import { ErrorCode, HearthError } from '../common/errors.js';
import type { ChatMessage, Constraint, GenerateParams, PromptInput, SamplingSettings } from './engine/protocol.js';

export interface RequestSettings {
  maxTokens?: number | null | undefined;
  temperature?: number | null | undefined;
  topK?: number | null | undefined;
  topP?: number | null | undefined;
  minP?: number | null | undefined;
  repeatPenalty?: number | null | undefined;
  frequencyPenalty?: number | null | undefined;
  presencePenalty?: number | null | undefined;
  seed?: number | null | undefined;
  greedy?: boolean | null | undefined;
  ignoreEos?: boolean | null | undefined;
  stop?: readonly string[] | null | undefined;
  /** llama-server's cache_prompt: reuse a cached prefix of the prompt (default true). */
  cachePrompt?: boolean | null | undefined;
  /** A grammar or JSON schema the output must follow. */
  constraint?: Constraint | null | undefined;
  /** Alternatives to report with each chosen token's log-probability; null or absent: no logprobs. */
  logprobs?: number | null | undefined;
  /** The field `logprobs` came from, for errors (top_logprobs on chat, logprobs on completions). */
  logprobsField?: string;
  /** llama-server's speculative.n_max, speculative.n_min and speculative.p_min: this request's drafts. */
  draftMax?: number | null | undefined;
  draftMin?: number | null | undefined;
  draftPMin?: number | null | undefined;
}

/** The longest draft a request may ask for (speculative.n_max). */
export const MAX_DRAFT = 256;

/** The most alternatives a request may ask for per token (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_LENGTH = 256;

function bad(field: string, message: string): HearthError {
  return new HearthError(ErrorCode.InvalidArgument, `${field}: ${message}`);
}

function inRange(field: string, v: number | null | undefined, min: number, max: number, fallback: number, integer = false): number {
  if (v === null || v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(field, `must be a number, got ${JSON.stringify(v)}`);
  if (integer && !Number.isInteger(v)) throw bad(field, `must be a whole number, got ${v}`);
  if (v < min || v > max) throw bad(field, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

/**
 * Resolves a request's settings against the server's defaults. `contextTokens` bounds max_tokens: a
 * request may not ask for more than a sequence's context can hold.
 */
export function resolveParams(s: RequestSettings, defaults: { maxTokens: number; contextTokens: number }): GenerateParams {
  const maxTokens = inRange('max_tokens', s.maxTokens, 1, defaults.contextTokens, Math.min(defaults.maxTokens, defaults.contextTokens), true);
  const temperature = inRange('temperature', s.temperature, 0, 5, 0.8);
  const sampling: SamplingSettings = {
    temperature,
    topK: inRange('top_k', s.topK, 0, 1_000_000, 40, true),
    topP: inRange('top_p', s.topP, 0, 1, 0.95),
    minP: inRange('min_p', s.minP, 0, 1, 0.05),
    repeatPenalty: inRange('repeat_penalty', s.repeatPenalty, 0.01, 10, 1),
    frequencyPenalty: inRange('frequency_penalty', s.frequencyPenalty, -2, 2, 0),
    presencePenalty: inRange('presence_penalty', s.presencePenalty, -2, 2, 0),
    seed: inRange('seed', s.seed, 0, 0xffffffff, 0xffffffff, true),
    greedy: s.greedy === true || temperature === 0,
    ignoreEos: s.ignoreEos === true,
  };
  const stop = [...(s.stop ?? [])];
  if (stop.length > MAX_STOP_STRINGS) throw bad('stop', `at most ${MAX_STOP_STRINGS} stop strings, got ${stop.length}`);
  stop.forEach((x, i) => {
    if (typeof x !== 'string') throw bad(`stop[${i}]`, 'must be a string');
    if (x.length > MAX_STOP_LENGTH) throw bad(`stop[${i}]`, `at most ${MAX_STOP_LENGTH} characters`);
  });
  if (s.cachePrompt !== undefined && s.cachePrompt !== null && typeof s.cachePrompt !== 'boolean') throw bad('cache_prompt', 'must be true or false');
  const logprobs = s.logprobs === null || s.logprobs === undefined ? null : inRange(s.logprobsField ?? 'logprobs', s.logprobs, 0, MAX_TOP_LOGPROBS, 0, true);
  const constraint = s.constraint ?? null;
  if (constraint?.kind === 'grammar' && (typeof constraint.grammar !== 'string' || constraint.grammar.trim() === '')) throw bad(constraint.field, 'must be a non-empty GBNF grammar');
  if (constraint?.kind === 'json_schema' && (typeof constraint.schema !== 'object' || constraint.schema === null || Array.isArray(constraint.schema))) {
    throw bad(constraint.field, 'must be a JSON schema object');
  }
  const optional = (field: string, v: number | null | undefined, max: number, integer: boolean) => (v === null || v === undefined ? null : inRange(field, v, 0, max, 0, integer));
  const speculative = {
    nMax: optional('speculative.n_max', s.draftMax, MAX_DRAFT, true),
    nMin: optional('speculative.n_min', s.draftMin, MAX_DRAFT, true),
    pMin: optional('speculative.p_min', s.draftPMin, 1, false),
  };
  if (speculative.nMin !== null && speculative.nMax !== null && speculative.nMin > speculative.nMax) {
    throw bad('speculative.n_min', `must not exceed speculative.n_max (${speculative.nMax}), got ${speculative.nMin}`);
  }
  return { maxTokens, sampling, stop: stop.filter((x) => x.length > 0), cachePrompt: s.cachePrompt !== false, constraint, logprobs, speculative };
}

export function checkPrompt(prompt: PromptInput): PromptInput {
  if (prompt.kind === 'text') {
    if (typeof prompt.text !== 'string' || prompt.text.length === 0) throw bad('prompt', 'must be a non-empty string');
    return prompt;
  }
  if (!Array.isArray(prompt.messages) || prompt.messages.length === 0) throw bad('messages', 'must be a non-empty array of {role, content}');
  prompt.messages.forEach((m: ChatMessage, i) => {
    if (typeof m !== 'object' || m === null) throw bad(`messages[${i}]`, 'must be an object with role and content');
    if (typeof m.role !== 'string' || !['system', 'user', 'assistant', 'tool', 'developer'].includes(m.role)) {
      throw bad(`messages[${i}].role`, `must be one of system, user, assistant, tool, developer; got ${JSON.stringify(m.role)}`);
    }
    // An assistant message that only calls tools has no content.
    const callsTools = m.role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length > 0;
    if (typeof m.content !== 'string' && !(callsTools && (m.content === null || m.content === undefined))) throw bad(`messages[${i}].content`, 'must be a string');
  });
  return prompt;
}
