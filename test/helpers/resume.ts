// Faults that strike requests mid-answer, for the tests of resumed generation. Six requests run
// together: a greedy and a seeded gRPC stream, a plain and a streamed HTTP completion, a chat forced to
// one tool call and a streamed chat under a JSON schema. A fault strikes at the greedy stream's
// FAULT_AT-th token, and each answer must come back complete and equal to its undisturbed reference:
// greedy tokens to the one-process reference and the HTTP answers to the same requests undisturbed (a
// parting allowed only at a near tie), seeded tokens as undisturbed past the fault.
import assert from 'node:assert/strict';

import type { GenerateOutcome } from '../../coordinator/client.js';
import type { CoordinatorHandle } from './coordinator.js';
import { assertGreedyMatches, GREEDY, NEAR_TIE, referenceRuns, type GreedyRun } from './generate.js';

export const PROMPT = 'The old lighthouse keeper climbed the stairs each night and';
export const TOKENS = 64;
/** The fault strikes when the greedy gRPC stream has this many tokens. */
export const FAULT_AT = 8;
const SEEDED = { temperature: 0.9, top_k: 40, seed: 4242 };
const SEEDED_PROMPT = 'In the market square a juggler';

/** A plain or streamed greedy completion over HTTP, with each token's two best alternatives. */
export interface HttpAnswer {
  tokens: string[];
  /** Per token, its two best alternatives with their log-probabilities. */
  top: Record<string, number>[];
  finish: string;
  completionTokens: number;
  resumed: number;
}

interface CompletionLogprobs {
  tokens: string[];
  top_logprobs: Record<string, number>[];
}

const NO_THINKING = { chat_template_kwargs: { enable_thinking: false } };
const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false },
  },
};
const PERSON = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 150 }, pets: { type: 'array', items: { enum: ['cat', 'dog', 'fish'] }, maxItems: 3 } },
  required: ['name', 'age'],
  additionalProperties: false,
};
/** Chats whose output a grammar constrains: one forced tool call (answered whole), a JSON schema (streamed). */
export type ConstrainedChat = 'tool call' | 'json schema';

interface ChatLogprobs {
  content: { token: string; top_logprobs: { token: string; logprob: number }[] }[];
}

/** A constrained greedy chat: its tokens with their two best alternatives, and what the grammar made of them. */
export async function constrainedChat(http: string, kind: ConstrainedChat): Promise<HttpAnswer & { payload: string }> {
  const stream = kind === 'json schema';
  const body = {
    model: 'x', max_tokens: 120, temperature: 0, logprobs: true, top_logprobs: 2, stream, ...NO_THINKING,
    ...(kind === 'tool call'
      ? { messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [WEATHER_TOOL], tool_choice: 'required', parallel_tool_calls: false }
      : { messages: [{ role: 'user', content: 'Describe a person as JSON.' }], response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON } }, stream_options: { include_usage: true } }),
  };
  const res = await fetch(`${http}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const top = (l: ChatLogprobs) => l.content.map((c) => Object.fromEntries(c.top_logprobs.map((t) => [t.token, t.logprob])));
  if (!stream) {
    type Reply = { choices: { message: { tool_calls?: { function: { name: string; arguments: string } }[] }; logprobs: ChatLogprobs; finish_reason: string }[]; usage: { completion_tokens: number } };
    const json = (await res.json()) as Reply;
    assert.equal(res.status, 200, JSON.stringify(json));
    const c = json.choices[0]!;
    const calls = (c.message.tool_calls ?? []).map((t) => t.function);
    assert.equal(calls.length, 1, `one tool call: ${JSON.stringify(c.message)}`);
    return { tokens: c.logprobs.content.map((x) => x.token), top: top(c.logprobs), finish: c.finish_reason, completionTokens: json.usage.completion_tokens, resumed: Number(res.headers.get('x-hearth-resumed')), payload: JSON.stringify(calls) };
  }
  assert.equal(res.status, 200);
  const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]');
  type Chunk = { error?: { message: string }; choices: { delta: { content?: string }; logprobs: ChatLogprobs | null; finish_reason: string | null }[]; usage?: { completion_tokens: number }; hearth_resumed?: number };
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk);
  const error = chunks.find((c) => c.error);
  assert.equal(error, undefined, `the stream carries no error: ${error?.error?.message}`);
  const final = chunks.find((c) => c.choices[0]?.finish_reason);
  const lps = chunks.flatMap((c) => (c.choices[0]?.logprobs ? [c.choices[0].logprobs] : []));
  const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
  return {
    tokens: lps.flatMap((l) => l.content.map((x) => x.token)),
    top: lps.flatMap(top),
    finish: final?.choices[0]?.finish_reason ?? '',
    completionTokens: chunks.find((c) => c.usage)?.usage?.completion_tokens ?? -1,
    resumed: final?.hearth_resumed ?? -1,
    payload: content,
  };
}

export async function completion(http: string, stream: boolean): Promise<HttpAnswer> {
  const body = { model: 'x', prompt: PROMPT, max_tokens: TOKENS, temperature: 0, logprobs: 2, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
  const res = await fetch(`${http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!stream) {
    const json = (await res.json()) as { choices: { logprobs: CompletionLogprobs; finish_reason: string }[]; usage: { completion_tokens: number } };
    assert.equal(res.status, 200, JSON.stringify(json));
    const c = json.choices[0]!;
    return { tokens: c.logprobs.tokens, top: c.logprobs.top_logprobs, finish: c.finish_reason, completionTokens: json.usage.completion_tokens, resumed: Number(res.headers.get('x-hearth-resumed')) };
  }
  assert.equal(res.status, 200);
  const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]', `the stream ends with [DONE]: ${events.slice(-3).join(' | ')}`);
  type Chunk = { error?: { message: string }; choices: { logprobs: CompletionLogprobs | null; finish_reason: string | null }[]; usage?: { completion_tokens: number }; hearth_resumed?: number };
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk);
  const error = chunks.find((c) => c.error);
  assert.equal(error, undefined, `the stream carries no error: ${error?.error?.message}`);
  const final = chunks.find((c) => c.choices[0]?.finish_reason);
  const lps = chunks.flatMap((c) => (c.choices[0]?.logprobs ? [c.choices[0].logprobs] : []));
  return {
    tokens: lps.flatMap((l) => l.tokens),
    top: lps.flatMap((l) => l.top_logprobs),
    finish: final?.choices[0]?.finish_reason ?? '',
    completionTokens: chunks.find((c) => c.usage)?.usage?.completion_tokens ?? -1,
    resumed: final?.hearth_resumed ?? -1,
  };
}

/**
 * As assertGreedyMatches, for tokens seen as text over HTTP: the same finish and token count as the
 * reference, and a parting allowed only at a near tie of the reference; returns whether they parted.
 */
function assertSameAnswer(actual: HttpAnswer, ref: HttpAnswer, what: string): boolean {
  assert.equal(actual.finish, ref.finish, `${what}: ran to the same end`);
  assert.equal(actual.completionTokens, actual.tokens.length, `${what}: usage counts each token once`);
  const i = actual.tokens.findIndex((t, k) => t !== ref.tokens[k]);
  if (i < 0) {
    assert.equal(actual.tokens.length, ref.tokens.length, `${what}: every token arrived once`);
    return false;
  }
  const [best, second] = Object.entries(ref.top[i]!).sort((a, b) => b[1] - a[1]);
  assert.ok(
    best && second && best[1] - second[1] < NEAR_TIE && actual.tokens[i] === second[0],
    `${what}: token ${i} is ${JSON.stringify(actual.tokens[i])}, the undisturbed run chose ${JSON.stringify(ref.tokens[i])} (${JSON.stringify(ref.top[i])})`,
  );
  return true;
}

/** The undisturbed answers a faulted run is compared with. */
export interface References {
  greedy: GreedyRun;
  seeded: GenerateOutcome;
  http: HttpAnswer;
  chats: Record<ConstrainedChat, HttpAnswer & { payload: string }>;
}

/** The one-process greedy reference, and the seeded and HTTP answers of `coord` undisturbed. */
export async function references(model: string, coord: CoordinatorHandle): Promise<References> {
  const [greedy] = (await referenceRuns(model, [PROMPT], TOKENS)) as [GreedyRun];
  const seeded = await coord.client.generate(SEEDED_PROMPT, { maxTokens: TOKENS, sampling: SEEDED });
  const http = await completion(coord.http, false);
  assert.equal(http.resumed, 0, 'an undisturbed answer was not resumed');
  assert.equal(http.finish, 'length');
  const chats = { 'tool call': await constrainedChat(coord.http, 'tool call'), 'json schema': await constrainedChat(coord.http, 'json schema') };
  assert.equal(chats['tool call'].finish, 'tool_calls');
  JSON.parse(chats['json schema'].payload);
  return { greedy, seeded, http, chats };
}

/**
 * The four requests together, `fault` striking at the greedy stream's FAULT_AT-th token; every answer
 * must be complete and equal its reference, and the resume an event. Returns the greedy stream's longest
 * pause between two tokens (ms).
 */
export async function underFault(
  coord: CoordinatorHandle,
  refs: References,
  what: string,
  fault: () => Promise<void> | void,
  /**
   * How many seeded tokens past the fault must agree. A tensor split sums partial results in an order
   * that follows the devices, and a re-plan over other devices (or the resumed prompt's batch) rounds
   * otherwise, so a draw at a boundary may move at once: its tests pass 0, the greedy checks stay.
   */
  seededAfterFault = 4,
): Promise<number> {
  let struck: Promise<void> | null = null;
  let seededAtFault = -1;
  let seededSoFar = 0;
  let received = 0;
  let last = 0;
  let longestGap = 0;
  const greedy = coord.client.generate(PROMPT, {
    maxTokens: TOKENS,
    sampling: GREEDY,
    timeoutMs: 120_000,
    onChunk: (_text, tokens) => {
      const now = Date.now();
      if (last > 0) longestGap = Math.max(longestGap, now - last);
      last = now;
      received += tokens.length;
      if (received >= FAULT_AT && struck === null) {
        seededAtFault = seededSoFar;
        struck = Promise.resolve().then(fault);
      }
    },
  });
  const seeded = coord.client.generate(SEEDED_PROMPT, { maxTokens: TOKENS, sampling: SEEDED, timeoutMs: 120_000, onChunk: (_t, tokens) => (seededSoFar += tokens.length) });
  const [g, s, plain, streamed, tool, schema] = await Promise.all([greedy, seeded, completion(coord.http, false), completion(coord.http, true), constrainedChat(coord.http, 'tool call'), constrainedChat(coord.http, 'json schema')]);
  assert.ok(struck, `${what}: the fault struck mid-stream`);
  await struck;
  assert.equal(g.finishReason, 'length', `${what}: the stream ran to its end`);
  assert.equal(g.usage.completion_tokens, TOKENS, `${what}: usage counts each token once`);
  assert.ok((g.resumed ?? 0) >= 1, `${what}: the gRPC stream says it was resumed (${g.resumed})`);
  assertGreedyMatches(g.tokens, refs.greedy, `${what}: gRPC stream`);
  assertSameAnswer(plain, refs.http, `${what}: plain HTTP completion`);
  assertSameAnswer(streamed, refs.http, `${what}: streamed HTTP completion`);
  // Constrained output goes on where its grammar was: the same tool call and the same JSON.
  for (const [kind, answer] of [['tool call', tool], ['json schema', schema]] as const) {
    const parted = assertSameAnswer(answer, refs.chats[kind], `${what}: ${kind}`);
    if (!parted) assert.equal(answer.payload, refs.chats[kind].payload, `${what}: ${kind}`);
  }
  // Seeded sampling goes on from the same random state. Recomputed tokens may differ from the first
  // computation by rounding, which can move a draw that lies right at a boundary (the near tie of
  // sampling), so the tokens must agree at least a few past the fault, where a wrong random state would
  // part at once (test/unit/sampler-replay.test.ts checks the state itself exactly).
  assert.equal(s.tokens.length, TOKENS, `${what}: the seeded stream is complete`);
  const parted = s.tokens.findIndex((t, k) => t !== refs.seeded.tokens[k]);
  const agreed = parted < 0 ? TOKENS : parted;
  assert.ok(agreed >= Math.min(TOKENS, seededAtFault + seededAfterFault), `${what}: the seeded stream agrees with the undisturbed one for ${agreed} tokens; the fault struck at its token ${seededAtFault}`);
  const status = await coord.client.getStatus();
  assert.ok(status.events.some((e) => e.kind === 'resume' && /^resumed \d+ requests? after /.test(e.message)), `${what}: the resume is an event: ${JSON.stringify(status.events.slice(-6))}`);
  return longestGap;
}
