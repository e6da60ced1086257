// hearth's generation results in the shapes Ollama answers /api/chat and /api/generate with: a line per
// change while streaming (NDJSON), a final line with the figures (durations in nanoseconds), and the
// whole reply when not streaming. Pure: times come in as milliseconds measured by the caller.
import type { GenerateResult } from '../engine/engine-process.js';
import type { ChatReply, TokenLogprob } from '../engine/protocol.js';

export type OllamaEndpoint = 'chat' | 'generate';

/** When a request reached hearth, started in the engine, got its first token and ended (ms, one clock). */
export interface Timing {
  received: number;
  started: number | null;
  firstToken: number | null;
  ended: number;
}

export interface OllamaToolCall {
  id: string;
  function: { index: number; name: string; arguments: Record<string, unknown> | string };
}

export interface OllamaLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

const ns = (ms: number) => Math.max(0, Math.round(ms * 1e6));

/** Ollama's done_reason: a tool call ends a reply as "stop" there. */
export function doneReason(finish: GenerateResult['finishReason']): string {
  return finish === 'length' ? 'length' : 'stop';
}

/**
 * The final line's figures. load_duration is the wait before the engine took the request (a loading
 * model, a full queue), prompt_eval_duration the prompt's processing until the first token, eval the rest.
 */
export function figures(result: GenerateResult, t: Timing) {
  const started = t.started ?? t.ended;
  const first = t.firstToken ?? t.ended;
  return {
    done_reason: doneReason(result.finishReason),
    total_duration: ns(t.ended - t.received),
    load_duration: ns(started - t.received),
    prompt_eval_count: result.usage.promptTokens,
    prompt_eval_duration: ns(first - started),
    eval_count: result.usage.completionTokens,
    eval_duration: ns(t.ended - first),
  };
}

/** Tool calls with their arguments as objects (Ollama's shape); arguments that are not a JSON object stay text. */
export function toolCalls(calls: ChatReply['toolCalls']): OllamaToolCall[] {
  return calls.map((c, index) => {
    let args: Record<string, unknown> | string = c.arguments;
    try {
      const parsed: unknown = JSON.parse(c.arguments === '' ? '{}' : c.arguments);
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) args = parsed as Record<string, unknown>;
    } catch {
      // kept as text: the model wrote something that is not JSON
    }
    return { id: c.id, function: { index, name: c.name, arguments: args } };
  });
}

export function logprob(l: TokenLogprob): OllamaLogprob {
  return { token: l.token, logprob: l.logprob, bytes: l.bytes, top_logprobs: l.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })) };
}

/** A chat message or a generate's fields, from text and reasoning (and tool calls, on chat). */
function body(endpoint: OllamaEndpoint, content: string, thinking: string, calls: OllamaToolCall[] = []): Record<string, unknown> {
  if (endpoint === 'chat') {
    return { message: { role: 'assistant', content, ...(thinking ? { thinking } : {}), ...(calls.length > 0 ? { tool_calls: calls } : {}) } };
  }
  return { response: content, ...(thinking ? { thinking } : {}) };
}

/** A streamed line before the last. */
export function partLine(endpoint: OllamaEndpoint, model: string, at: Date, part: { content?: string; thinking?: string; toolCalls?: OllamaToolCall[]; logprobs?: OllamaLogprob[] }) {
  return {
    model,
    created_at: at.toISOString(),
    ...body(endpoint, part.content ?? '', part.thinking ?? '', part.toolCalls),
    done: false,
    ...(part.logprobs && part.logprobs.length > 0 ? { logprobs: part.logprobs } : {}),
  };
}

/**
 * The last line of a stream (the reply's text went out before it), or the whole answer when not
 * streaming. `resumed`: how often the request went on after an engine was lost (hearth's own field).
 */
export function finalLine(endpoint: OllamaEndpoint, model: string, at: Date, result: GenerateResult, t: Timing, whole: { logprobs: OllamaLogprob[] | null } | null) {
  const r = result.reply;
  const content = whole ? (r ? r.content : result.text) : '';
  const thinking = whole && r ? r.reasoningContent : '';
  const calls = whole && r && endpoint === 'chat' ? toolCalls(r.toolCalls) : [];
  return {
    model,
    created_at: at.toISOString(),
    ...body(endpoint, content, thinking, calls),
    done: true,
    ...figures(result, t),
    ...(whole?.logprobs ? { logprobs: whole.logprobs } : {}),
    hearth_resumed: result.resumed ?? 0,
  };
}

/** The answer to a request that only loads the model (no messages, an empty prompt). */
export function loadLine(endpoint: OllamaEndpoint, model: string, at: Date) {
  return { model, created_at: at.toISOString(), ...body(endpoint, '', ''), done: true, done_reason: 'load' };
}

/**
 * /api/embed's vectors: cut to `dimensions` and scaled to unit length again when asked (Ollama's
 * `dimensions`, for models trained to be cut so), as they are otherwise.
 */
export function embedVectors(vectors: number[][], dimensions: number | null): number[][] {
  if (dimensions === null) return vectors;
  return vectors.map((v) => {
    if (dimensions >= v.length) return v;
    const cut = v.slice(0, dimensions);
    const norm = Math.sqrt(cut.reduce((a, x) => a + x * x, 0));
    return cut.map((x) => x / Math.max(norm, 1e-12));
  });
}
