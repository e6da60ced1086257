// Tools, structured output, reasoning and logprobs through the official `openai` client, against a
// model split over two real workers. The weights are random, so the grammar is what makes the output
// valid: these tests show that the template's grammar, the sampler and the parser work together.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import type { ChatCompletionFunctionTool, ChatCompletionMessageParam } from 'openai/resources/chat/completions';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { expectApiError } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const GREEDY = { temperature: 0 } as const;
/**
 * The template supports thinking, on by default as in llama-server. A real reasoning model closes its
 * thinking block; random weights would think until max_tokens, so the tests of forced output turn it off.
 */
const NO_THINKING = { chat_template_kwargs: { enable_thinking: false } } as const;

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    pets: { type: 'array', items: { enum: ['cat', 'dog', 'fish'] }, maxItems: 3 },
  },
  required: ['name', 'age'],
  additionalProperties: false,
} as const;

const TOOLS: ChatCompletionFunctionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 16 }, unit: { enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'get_time',
      description: 'The time in a zone',
      parameters: { type: 'object', properties: { zone: { enum: ['UTC', 'CET', 'PST'] } }, required: ['zone'], additionalProperties: false },
    },
  },
];

const ajv = new Ajv({ strict: false });

function assertValid(schema: object, value: unknown, what: string): void {
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${what} ${JSON.stringify(value)} does not validate: ${ajv.errorsText(validate.errors)}`);
}

/** A tool call's arguments parse as JSON and validate against its tool's parameters. */
function assertToolCall(call: { function: { name: string; arguments: string } }): void {
  const tool = TOOLS.find((t) => t.function.name === call.function.name);
  assert.ok(tool, `a call of an offered tool, got ${call.function.name}`);
  assertValid(tool.function.parameters!, JSON.parse(call.function.arguments), `arguments of ${call.function.name}`);
}

/** A 400 in OpenAI's shape whose message names the field. */
const expectBadRequest = (p: Promise<unknown>, field: RegExp) => expectApiError(p, 400, 'invalid_request_error', field);

describe('tools, structured output and logprobs', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let openai: OpenAI;

  before(async () => {
    const model = await testModel('tiny');
    workers.push(await startWorker(['--name', 'tools-a']), await startWorker(['--name', 'tools-b']));
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--ctx-size', '2048']);
    openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('response_format json_schema returns JSON that validates against the schema', async () => {
    const r = await openai.chat.completions.create({
      model: 'any',
      messages: [{ role: 'user', content: 'Describe a person as JSON.' }],
      max_tokens: 200,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } },
      ...GREEDY,
      ...NO_THINKING,
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    assert.equal(r.choices[0]!.finish_reason, 'stop', 'the grammar ends the output, not the token limit');
    assertValid(PERSON, JSON.parse(r.choices[0]!.message.content!), 'the reply');

    const obj = await openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'Any JSON object.' }], max_tokens: 300, response_format: { type: 'json_object' }, ...GREEDY, ...NO_THINKING, temperature: 0.7, seed: 3 } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    if (obj.choices[0]!.finish_reason === 'stop') assert.equal(typeof JSON.parse(obj.choices[0]!.message.content!), 'object');
  });

  test('tool_choice "required" with two tools returns a valid tool call, streamed and not', async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const r = await openai.chat.completions.create({ model: 'any', messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200, ...GREEDY, ...NO_THINKING } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const choice = r.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls?.length, 1, `one call (parallel_tool_calls: false): ${JSON.stringify(choice.message)}`);
    const call = choice.message.tool_calls[0]! as { id: string; type: string; function: { name: string; arguments: string } };
    assert.equal(call.type, 'function');
    assert.match(call.id, /\S/);
    assertToolCall(call);

    const stream = await openai.chat.completions.create({ model: 'any', messages, tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 200, ...GREEDY, ...NO_THINKING, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    const calls: { id?: string; name?: string; arguments: string }[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c) continue;
      for (const d of c.delta.tool_calls ?? []) {
        const at = (calls[d.index] ??= { arguments: '' });
        if (d.id) at.id = d.id;
        if (d.function?.name) at.name = d.function.name;
        at.arguments += d.function?.arguments ?? '';
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, 'tool_calls');
    assert.ok(calls.length >= 1 && calls[0]!.id && calls[0]!.name, JSON.stringify(calls));
    assert.deepEqual({ name: calls[0]!.name, arguments: calls[0]!.arguments }, { name: call.function.name, arguments: call.function.arguments }, 'streamed as the whole reply');
    assertToolCall({ function: { name: calls[0]!.name!, arguments: calls[0]!.arguments } });
  });

  test('a named tool_choice calls that tool, and a tool round trip is accepted', async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'What time is it in Berlin?' }];
    const r = await openai.chat.completions.create({ model: 'any', messages, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_time' } }, parallel_tool_calls: false, max_tokens: 100, ...GREEDY, ...NO_THINKING } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const call = r.choices[0]!.message.tool_calls?.[0] as { id: string; function: { name: string; arguments: string } } | undefined;
    assert.ok(call, JSON.stringify(r.choices[0]));
    assert.equal(call.function.name, 'get_time');
    assertToolCall(call);

    const next = await openai.chat.completions.create({
      model: 'any',
      messages: [...messages, r.choices[0]!.message as ChatCompletionMessageParam, { role: 'tool', tool_call_id: call.id, content: '{"time": "14:05"}' }],
      tools: TOOLS,
      max_tokens: 16,
      ...GREEDY,
    });
    assert.ok(['stop', 'length', 'tool_calls'].includes(next.choices[0]!.finish_reason), next.choices[0]!.finish_reason);
    assert.equal(next.choices[0]!.message.role, 'assistant');
  });

  test('text inside the thinking markers is reasoning_content', async () => {
    const body = {
      model: 'any',
      messages: [{ role: 'user' as const, content: 'Think, then greet.' }],
      max_tokens: 40,
      // llama-server's grammar field forces the model's text; the template's parser reads it.
      grammar: 'root ::= "<think>" "hmm, a greeting" "</think>" "Hello there"',
      ...GREEDY,
    };
    const r = await openai.chat.completions.create(body as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const m = r.choices[0]!.message as { content: string | null; reasoning_content?: string };
    assert.equal(m.reasoning_content, 'hmm, a greeting');
    assert.equal(m.content, 'Hello there');

    const stream = await openai.chat.completions.create({ ...body, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    let reasoning = '';
    let content = '';
    for await (const chunk of stream) {
      const d = chunk.choices[0]?.delta as { content?: string | null; reasoning_content?: string } | undefined;
      reasoning += d?.reasoning_content ?? '';
      content += d?.content ?? '';
    }
    assert.deepEqual({ reasoning, content }, { reasoning: 'hmm, a greeting', content: 'Hello there' }, 'streamed as reasoning_content and content deltas');
  });

  test('logprobs and top_logprobs on chat, logprobs on completions, in OpenAI shape', async () => {
    const r = await openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, logprobs: true, top_logprobs: 3, ...GREEDY });
    const content = r.choices[0]!.logprobs!.content!;
    assert.equal(content.length, r.usage!.completion_tokens);
    for (const entry of content) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 3);
      const tops = entry.top_logprobs.map((t) => t.logprob);
      assert.deepEqual(tops, [...tops].sort((a, b) => b - a), 'alternatives most likely first');
      assert.equal(entry.token, entry.top_logprobs[0]!.token, 'greedy takes the most likely token');
      assert.equal(entry.logprob, tops[0]);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
    }
    assert.equal(content.map((e) => e.token).join('').trim(), r.choices[0]!.message.content!.trim());

    const stream = await openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, logprobs: true, top_logprobs: 3, ...GREEDY, stream: true });
    const streamed = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    // The second request reuses the first one's prompt from the cache, so its last prompt token is
    // computed alone rather than in a batch: the same tokens, log-probabilities equal to float rounding.
    assert.deepEqual(streamed.map((e) => [e.token, e.top_logprobs.map((t) => t.token)]), content.map((e) => [e.token, e.top_logprobs.map((t) => t.token)]), 'the same entries streamed');
    streamed.forEach((e, i) => assert.ok(Math.abs(e.logprob - content[i]!.logprob) < 1e-3, `${e.logprob} vs ${content[i]!.logprob}`));

    const c = await openai.completions.create({ model: 'any', prompt: 'Once upon a time', max_tokens: 5, logprobs: 2, ...GREEDY });
    const lp = c.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 5);
    assert.equal(lp.token_logprobs!.length, 5);
    assert.equal(lp.top_logprobs!.length, 5);
    assert.ok(lp.top_logprobs!.every((t) => Object.keys(t).length <= 2 && Object.keys(t).length >= 1));
    assert.equal(lp.tokens!.join(''), c.choices[0]!.text);

    const none = await openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, ...GREEDY });
    assert.equal(none.choices[0]!.logprobs, null);
  });

  test('bad tools, tool_choice, schemas, grammars and top_logprobs are 400s naming the field, and the engine lives on', async () => {
    const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: 'Hi' }];
    const create = (extra: Record<string, unknown>) => openai.chat.completions.create({ model: 'any', messages, max_tokens: 4, ...extra } as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    await expectBadRequest(create({ tools: [{ type: 'function' }] }), /tools\[0\]\.function/);
    await expectBadRequest(create({ tools: [{ type: 'function', function: { name: 'has space' } }] }), /tools\[0\]\.function\.name/);
    await expectBadRequest(create({ tools: 'get_weather' }), /tools/);
    await expectBadRequest(create({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'launch_rocket' } } }), /tool_choice\.function\.name: 'launch_rocket' is not among tools/);
    await expectBadRequest(create({ tool_choice: 'required' }), /tool_choice/);
    await expectBadRequest(create({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { $ref: '#/definitions/missing' } } } }), /response_format\.json_schema\.schema/);
    await expectBadRequest(create({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: 'not a schema' } } }), /response_format\.json_schema\.schema/);
    await expectBadRequest(create({ grammar: 'root ::= "unterminated' }), /grammar/);
    await expectBadRequest(create({ grammar: 'root ::= undefined-rule' }), /grammar/);
    await expectBadRequest(create({ logprobs: true, top_logprobs: 21 }), /top_logprobs/);
    await expectBadRequest(create({ top_logprobs: 2 }), /top_logprobs/);
    await expectBadRequest(create({ tools: TOOLS, messages: [{ role: 'tool', content: 'x' }] }), /tool_call_id/);
    await expectBadRequest(openai.completions.create({ model: 'any', prompt: 'x', max_tokens: 2, logprobs: 99 }), /logprobs/);

    const ok = await create({ ...GREEDY });
    assert.equal(ok.choices[0]!.message.role, 'assistant', 'still serving');
    const status = await coord.client.getStatus(2000);
    assert.equal(status.state, 'serving');
  });
});
