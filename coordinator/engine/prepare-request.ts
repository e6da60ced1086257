// A request made ready to run: its prompt rendered (a chat through the model's template) and tokenized,
// and what the template asks of sampling and stopping. Rendering needs only the model, so a router over
// several schedulers (groups.ts) prepares a request once, before it picks the scheduler.
import { ErrorCode, HearthError } from '../../common/errors.js';
import type { SamplerSettings } from '../../native/binding.js';
import { jsonSchemaToGrammar, type ChatParser, type ChatTemplateRequest, type ChatTemplates, type LlamaModel, type Sampler } from '../../native/llama.js';
import type { ChatReply, Constraint, FromEngine, GenerateParams, PromptInput } from './protocol.js';
import { singleToolCall, toolCallsOnly } from './tool-grammar.js';

/** A request ready to run: its tokens, and what its template asks of sampling and stopping. */
export interface PreparedRequest {
  id: string;
  /** The rendered prompt, followed by the `resumed` tokens a resumed request had generated. */
  prompt: Int32Array;
  /** Tokens at the end of `prompt` that this request generated before its engine was lost (0: a new request). */
  resumed: number;
  /**
   * Where a chat prompt's last message begins (its content as rendered, then the generation prompt), as
   * a token index; the prompt cache computes a short last message apart from the rest (prompt-cache.ts).
   * null for a text prompt, a resumed request, or a last message that is the first or not found.
   */
  split: number | null;
  params: GenerateParams;
  grammar: Partial<SamplerSettings>;
  stops: string[];
  parser: ChatParser | null;
  /** The rendering request of a chat whose reply is worth a warm-up afterwards; null otherwise. */
  chat: ChatTemplateRequest | null;
}

/** Stands for the next user message when a conversation is rendered for a warm-up. */
const NEXT_TURN_MARKER = 'hearth-next-turn-7f3a9c';

/** Prompt tokens whose penalties a request's sampler starts from (repeat, frequency, presence). */
const PENALTY_PRIMING = 64;

/** Renders and tokenizes a request; errors name the request's fields. */
export async function prepareRequest(model: LlamaModel, templates: ChatTemplates, id: string, prompt: PromptInput, params: GenerateParams): Promise<PreparedRequest> {
  let r: PreparedRequest;
  try {
    r = await render(model, templates, id, prompt, params);
  } catch (e) {
    throw namedFor(e, params.constraint);
  }
  const resume = params.resume ?? [];
  if (resume.length === 0) return r;
  const tokens = new Int32Array(r.prompt.length + resume.length);
  tokens.set(r.prompt);
  tokens.set(resume, r.prompt.length);
  return { ...r, prompt: tokens, resumed: resume.length, split: null };
}

/** The prompt as rendered, without the tokens a resumed request had generated. */
export function renderedPrompt(r: Pick<PreparedRequest, 'prompt' | 'resumed'>): Int32Array {
  return r.prompt.subarray(0, r.prompt.length - r.resumed);
}

async function render(model: LlamaModel, templates: ChatTemplates, id: string, prompt: PromptInput, params: GenerateParams): Promise<PreparedRequest> {
  const c = params.constraint;
  if (prompt.kind === 'text') {
    const tokens = model.tokenize(prompt.text, { addSpecial: true, parseSpecial: false });
    const grammar = c === null ? null : c.kind === 'grammar' ? c.grammar : jsonSchemaToGrammar(c.schema);
    return { id, prompt: tokens, resumed: 0, split: null, params, grammar: { grammar }, stops: params.stop, parser: null, chat: null };
  }
  const o = prompt.options;
  const request: ChatTemplateRequest = { messages: prompt.messages, add_generation_prompt: true };
  if (o) {
    if (o.tools.length > 0) {
      request.tools = o.tools;
      request.tool_choice = o.toolChoice;
      if (o.parallelToolCalls !== null) request.parallel_tool_calls = o.parallelToolCalls;
    }
    request.reasoning_format = o.reasoningFormat;
    if (o.enableThinking !== null) request.enable_thinking = o.enableThinking;
  }
  if (c?.kind === 'json_schema') request.json_schema = c.schema;
  if (c?.kind === 'grammar') request.grammar = c.grammar;
  const chat = await templates.apply(request);
  const grammar = { ...chat.sampling };
  // The template leaves a request's own grammar alone, as llama-server does: it applies as given.
  if (c?.kind === 'grammar' && !grammar.grammar) grammar.grammar = c.grammar;
  const required = o !== undefined && o.tools.length > 0 && o.toolChoice !== 'auto' && o.toolChoice !== 'none';
  if (required && grammar.grammar && !grammar.grammarLazy) grammar.grammar = toolCallsOnly(grammar.grammar);
  if (o?.parallelToolCalls === false && grammar.grammar) grammar.grammar = singleToolCall(grammar.grammar);
  const tokens = model.tokenize(chat.prompt, { addSpecial: true, parseSpecial: true });
  const split = lastMessageStart(model, chat.prompt, tokens, prompt.messages);
  return { id, prompt: tokens, resumed: 0, split, params, grammar, stops: [...params.stop, ...chat.additionalStops], parser: chat.parser, chat: params.cachePrompt ? request : null };
}

/**
 * Where the last of a chat's messages begins in its rendered and tokenized prompt: the token from which
 * the text is that message's content and what follows it (the generation prompt), counted from the end
 * (a token that straddles the content's first byte belongs to the message). null when the last message
 * is the first one, has no content, or the rendering does not hold its content as given.
 */
export function lastMessageStart(model: Pick<LlamaModel, 'tokenToPiece'>, rendered: string, tokens: Int32Array, messages: readonly { content: string | null }[]): number | null {
  const content = messages.at(-1)?.content;
  if (messages.length < 2 || !content) return null;
  const at = rendered.lastIndexOf(content);
  if (at <= 0) return null;
  const bytes = Buffer.byteLength(rendered.slice(at));
  let tail = 0;
  for (let i = tokens.length - 1; i > 0; i--) {
    tail += model.tokenToPiece(tokens[i]!, true).length;
    if (tail >= bytes) return i;
  }
  return null;
}

/** Why a prompt of these tokens cannot run with `nCtxSeq` tokens per sequence; null when it can. */
export function promptUnfit(prompt: Int32Array, nCtxSeq: number): HearthError | null {
  if (prompt.length === 0) return new HearthError(ErrorCode.InvalidArgument, 'the prompt is empty');
  if (prompt.length < nCtxSeq) return null;
  return new HearthError(
    ErrorCode.InvalidArgument,
    `the prompt is ${prompt.length} tokens, which exceeds the available context size of ${nCtxSeq} tokens per request; shorten it or start the coordinator with a larger --ctx-size`,
  );
}

/** Where a constraint's error belongs: the field the request gave it in. */
export function namedFor(e: unknown, constraint: Constraint | null): unknown {
  if (!constraint || !(e instanceof HearthError) || e.code !== ErrorCode.InvalidArgument) return e;
  const m = /^(json_schema|response_format(?:\.json_schema)?|schema|grammar): (.*)$/s.exec(e.message);
  return m ? new HearthError(ErrorCode.InvalidArgument, `${constraint.field}: ${m[2]}`) : e;
}

/**
 * The request's own sampler (its grammar compiled), its penalties primed with the prompt's last tokens;
 * for a resumed request, brought to where its sampler was after the tokens it had generated.
 */
export function requestSampler(model: Pick<LlamaModel, 'createSampler'>, r: PreparedRequest): Sampler {
  const sampler = model.createSampler({ ...r.params.sampling, ...r.grammar, nProbs: r.params.logprobs ?? -1 });
  const { repeatPenalty, frequencyPenalty, presencePenalty } = r.params.sampling;
  try {
    if (repeatPenalty !== 1 || frequencyPenalty !== 0 || presencePenalty !== 0) sampler.accept(renderedPrompt(r).slice(-PENALTY_PRIMING));
    if (r.resumed > 0) sampler.replay(r.prompt.subarray(r.prompt.length - r.resumed));
  } catch (e) {
    // The request fails; its sampler (and the grammar compiled into it) must not outlive it.
    sampler.dispose();
    throw e;
  }
  return sampler;
}

/** The answer to a request cancelled before it started. */
export function cancelledBeforeStart(r: PreparedRequest): FromEngine {
  return { type: 'done', id: r.id, finishReason: 'cancelled', usage: { promptTokens: r.prompt.length - r.resumed, completionTokens: r.resumed, cachedTokens: 0, draftTokens: 0, draftAcceptedTokens: 0 }, text: '' };
}

/**
 * The conversation with its reply, rendered as the next turn will render it (the reply as a past
 * assistant message), up to where the next user message begins; null when the template does not render
 * it that way.
 */
export async function nextTurnTokens(model: LlamaModel, templates: ChatTemplates, request: ChatTemplateRequest, reply: ChatReply): Promise<Int32Array | null> {
  const assistant: Record<string, unknown> = { role: 'assistant', content: reply.content };
  if (reply.reasoningContent) assistant.reasoning_content = reply.reasoningContent;
  if (reply.toolCalls.length > 0) {
    assistant.tool_calls = reply.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }));
  }
  // Rendered with a next user message whose text is a marker, cut where the marker begins: a template
  // renders a final assistant message as one to continue, not as a past turn.
  const { json_schema: _schema, grammar: _grammar, ...rest } = request;
  const next = await templates.apply({ ...rest, messages: [...request.messages, assistant, { role: 'user', content: NEXT_TURN_MARKER }], add_generation_prompt: false });
  const cut = next.prompt.indexOf(NEXT_TURN_MARKER);
  if (cut <= 0) return null;
  return model.tokenize(next.prompt.slice(0, cut), { addSpecial: true, parseSpecial: true });
}
