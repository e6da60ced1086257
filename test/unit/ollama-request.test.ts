// Ollama API requests as hearth reads them: options, format, think, messages with tool calls, generate's
// templating, embed inputs. Pure: no coordinator.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import {
  chatMessages,
  chatRequest,
  embeddingsRequest,
  embedRequest,
  formatConstraint,
  generateRequest,
  keepAliveMs,
  mapOptions,
  modelName,
  ollamaBody,
  thinkSetting,
} from '../../coordinator/http/ollama-request.js';
import type { ServedModel } from '../../coordinator/served-models.js';

const MODEL: ServedModel = {
  id: 'tiny',
  aliases: [],
  kind: 'chat',
  status: 'loaded',
  policy: 'pinned',
  facts: null,
  ctxSize: 512,
  loadedBytes: 0,
  expiresAt: null,
  lastUsedAt: null,
};

/** `fn` throws a 4xx-kind HearthError (InvalidArgument or Unsupported) whose message matches. */
function refused(fn: () => unknown, pattern: RegExp, code: ErrorCode = ErrorCode.InvalidArgument): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HearthError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('Ollama options as sampling settings', () => {
  test('each supported option maps to its setting', () => {
    const { settings, ignored, numCtxOver } = mapOptions(
      { temperature: 0.3, top_k: 12, top_p: 0.8, min_p: 0.1, seed: 42, num_predict: 20, repeat_penalty: 1.2, presence_penalty: 0.5, frequency_penalty: -0.5, stop: ['\n', 'user:'] },
      MODEL,
    );
    assert.deepEqual(settings, { temperature: 0.3, topK: 12, topP: 0.8, minP: 0.1, seed: 42, maxTokens: 20, repeatPenalty: 1.2, presencePenalty: 0.5, frequencyPenalty: -0.5, stop: ['\n', 'user:'] });
    assert.deepEqual(ignored, []);
    assert.equal(numCtxOver, null);
  });

  test('num_predict: -1, -2 and 0 run until the context is full, and a count is capped at it', () => {
    for (const n of [-1, -2, 0]) assert.equal(mapOptions({ num_predict: n }, MODEL).settings.maxTokens, 512, String(n));
    assert.equal(mapOptions({ num_predict: 100_000 }, MODEL).settings.maxTokens, 512);
    assert.equal(mapOptions({}, MODEL).settings.maxTokens, undefined, "absent: the coordinator's default");
  });

  test('a negative seed is random, a string stop is one stop', () => {
    assert.equal(mapOptions({ seed: -1 }, MODEL).settings.seed, undefined);
    assert.deepEqual(mapOptions({ stop: 'END' }, MODEL).settings.stop, ['END']);
  });

  test('load-time options and missing samplers are ignored and listed; unknown ones are ignored', () => {
    const m = mapOptions({ num_thread: 8, mirostat: 2, typical_p: 0.7, num_gpu: 1, made_up: true, repeat_last_n: null }, MODEL);
    assert.deepEqual(m.ignored, ['num_thread', 'mirostat', 'typical_p', 'num_gpu']);
    assert.deepEqual(m.settings.maxTokens, undefined);
  });

  test('num_ctx above the served context is reported, not refused; at or below it says nothing', () => {
    assert.equal(mapOptions({ num_ctx: 8192 }, MODEL).numCtxOver, 8192);
    assert.equal(mapOptions({ num_ctx: 512 }, MODEL).numCtxOver, null);
    assert.equal(mapOptions({ num_ctx: 128 }, MODEL).numCtxOver, null);
  });

  test('wrong types are refused naming options.FIELD', () => {
    refused(() => mapOptions('hot', MODEL), /^options: must be an object/);
    refused(() => mapOptions([1], MODEL), /^options: must be an object/);
    refused(() => mapOptions({ temperature: 'hot' }, MODEL), /^options\.temperature: must be a number, got "hot"/);
    refused(() => mapOptions({ top_k: 1.5 }, MODEL), /^options\.top_k: must be a whole number/);
    refused(() => mapOptions({ num_predict: '10' }, MODEL), /^options\.num_predict: must be a number/);
    refused(() => mapOptions({ seed: 1.5 }, MODEL), /^options\.seed: must be a whole number/);
    refused(() => mapOptions({ stop: [1] }, MODEL), /^options\.stop\[0\]: must be a string/);
    refused(() => mapOptions({ stop: 5 }, MODEL), /^options\.stop: must be an array of strings/);
    refused(() => mapOptions({ num_ctx: 'big' }, MODEL), /^options\.num_ctx: must be a number/);
  });
});

describe('format, think, keep_alive', () => {
  test('format: "json" is any JSON object, an object is a schema, "" is none, anything else is refused in Ollama\'s words', () => {
    assert.deepEqual(formatConstraint('json'), { kind: 'json_schema', schema: { type: 'object' }, field: 'format' });
    const schema = { type: 'object', properties: { age: { type: 'integer' } } };
    assert.deepEqual(formatConstraint(schema), { kind: 'json_schema', schema, field: 'format' });
    assert.equal(formatConstraint(''), null);
    assert.equal(formatConstraint(undefined), null);
    refused(() => formatConstraint('yaml'), /^invalid format: expected "json" or a valid JSON schema$/);
    refused(() => formatConstraint(['json']), /^invalid format/);
  });

  test('think: booleans, and the levels turn thinking on', () => {
    assert.equal(thinkSetting(undefined), null);
    assert.equal(thinkSetting(false), false);
    assert.equal(thinkSetting(true), true);
    assert.equal(thinkSetting('high'), true);
    refused(() => thinkSetting('maybe'), /^think: must be true, false, "high", "medium" or "low"/);
  });

  test('keep_alive: seconds, Go durations, negatives; nonsense is refused', () => {
    assert.equal(keepAliveMs(undefined), null);
    assert.equal(keepAliveMs(0), 0);
    assert.equal(keepAliveMs('0'), 0);
    assert.equal(keepAliveMs('0s'), 0);
    assert.equal(keepAliveMs(300), 300_000);
    assert.equal(keepAliveMs('5m'), 300_000);
    assert.equal(keepAliveMs('1h30m'), 5_400_000);
    assert.equal(keepAliveMs('300ms'), 300);
    assert.equal(keepAliveMs('-1'), -1000);
    assert.equal(keepAliveMs('-1m'), -60_000);
    refused(() => keepAliveMs('soon'), /^keep_alive: must be a number of seconds or a duration/);
    refused(() => keepAliveMs(true), /^keep_alive/);
  });

  test('bodies and model names as Ollama requires them', () => {
    refused(() => ollamaBody(''), /^missing request body$/);
    refused(() => ollamaBody('{nope'), /not valid JSON/);
    refused(() => ollamaBody('[1]'), /must be a JSON object/);
    refused(() => modelName({}), /^model is required$/);
    refused(() => modelName({ model: 7 }), /^model: must be a string/);
    assert.equal(modelName({ name: 'old-style' }), 'old-style', 'the deprecated name field');
  });
});

describe('chat messages in hearth\'s (OpenAI\'s) shape', () => {
  test('tool calls get ids and JSON-text arguments; tool results are tied to them by id, name, or order', () => {
    const messages = chatMessages([
      { role: 'user', content: 'Weather and time?' },
      {
        role: 'assistant',
        content: '',
        thinking: 'two tools',
        tool_calls: [{ function: { name: 'get_weather', arguments: { city: 'Paris' } } }, { id: 'mine', function: { name: 'get_time', arguments: { zone: 'CET' } } }],
      },
      { role: 'tool', content: '14:05', tool_name: 'get_time' },
      { role: 'tool', content: 'sunny' },
    ]);
    assert.deepEqual(messages[1], {
      role: 'assistant',
      content: '',
      reasoning_content: 'two tools',
      tool_calls: [
        { id: 'call_1_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
        { id: 'mine', type: 'function', function: { name: 'get_time', arguments: '{"zone":"CET"}' } },
      ],
    });
    assert.deepEqual(messages[2], { role: 'tool', content: '14:05', tool_call_id: 'mine', name: 'get_time' }, 'by tool_name');
    assert.deepEqual(messages[3], { role: 'tool', content: 'sunny', tool_call_id: 'call_1_0', name: 'get_weather' }, 'the call left');
  });

  test('an explicit tool_call_id is kept; a missing content is empty', () => {
    const [, , tool] = chatMessages([{ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: {} } }] }, { role: 'tool', content: 'r', tool_call_id: 'call_1_0' }]);
    assert.deepEqual(tool, { role: 'tool', content: 'r', tool_call_id: 'call_1_0', name: 'f' });
    assert.equal(chatMessages([{ role: 'assistant' }])[0]!.content, '');
  });

  test('images are refused (no vision); malformed messages are refused by path', () => {
    refused(() => chatMessages([{ role: 'user', content: 'what is this?', images: ['iVBORw0KGgo='] }]), /^messages\[0\]\.images: hearth serves text models only/, ErrorCode.Unsupported);
    assert.equal(chatMessages([{ role: 'user', content: 'x', images: [] }]).length, 1, 'no images is fine');
    refused(() => chatMessages('hi'), /^messages: must be an array/);
    refused(() => chatMessages([7]), /^messages\[0\]: must be an object/);
    refused(() => chatMessages([{ content: 'x' }]), /^messages\[0\]\.role: must be a string/);
    refused(() => chatMessages([{ role: 'user', content: 5 }]), /^messages\[0\]\.content: must be a string/);
    refused(() => chatMessages([{ role: 'assistant', tool_calls: [{ function: { arguments: {} } }] }]), /^messages\[0\]\.tool_calls\[0\]\.function\.name/);
    refused(() => chatMessages([{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: 5 } }] }]), /^messages\[0\]\.tool_calls\[0\]\.function\.arguments: must be an object/);
  });
});

describe('chat and generate requests', () => {
  test('chat: streams unless told not to; options, format, think, tools and the model reach the request', () => {
    const tools = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } } }];
    const c = chatRequest({ model: 'tiny:latest', messages: [{ role: 'user', content: 'hi' }], options: { temperature: 0, num_predict: 8 }, format: 'json', think: false, tools, logprobs: true, top_logprobs: 3 }, MODEL);
    assert.equal(c.name, 'tiny:latest', 'answers echo the name the request used');
    assert.equal(c.stream, true);
    assert.equal(c.loadOnly, false);
    assert.equal(c.request.model, 'tiny');
    assert.equal(c.request.prompt.kind, 'chat');
    const prompt = c.request.prompt as { kind: 'chat'; options: { enableThinking: boolean | null; tools: unknown[]; toolChoice: unknown } };
    assert.equal(prompt.options.enableThinking, false);
    assert.equal(prompt.options.tools.length, 1);
    assert.equal(prompt.options.toolChoice, 'auto');
    assert.deepEqual(c.request.settings.constraint, { kind: 'json_schema', schema: { type: 'object' }, field: 'format' });
    assert.equal(c.request.settings.temperature, 0);
    assert.equal(c.request.settings.maxTokens, 8);
    assert.equal(c.request.settings.logprobs, 3);
    assert.equal(chatRequest({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], stream: false }, MODEL).stream, false);
    assert.equal(chatRequest({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }] }, MODEL).request.settings.logprobs, null);
  });

  test("chat: hearth's tool_choice extension forces a tool, as on /v1/chat/completions", () => {
    const tools = [{ type: 'function', function: { name: 'get_time' } }];
    const c = chatRequest({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], tools, tool_choice: 'required' }, MODEL);
    assert.equal((c.request.prompt as { options: { toolChoice: unknown } }).options.toolChoice, 'required');
    refused(() => chatRequest({ model: 'tiny', messages: [], tools: [{ type: 'function', function: { name: 'has space' } }] }, MODEL), /^tools\[0\]\.function\.name/);
  });

  test('chat: no messages loads the model; keep_alive 0 asks to unload', () => {
    const c = chatRequest({ model: 'tiny', messages: [], keep_alive: 0 }, MODEL);
    assert.equal(c.loadOnly, true);
    assert.equal(c.unload, true);
    assert.equal(chatRequest({ model: 'tiny' }, MODEL).loadOnly, true);
    assert.equal(chatRequest({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], keep_alive: '5m' }, MODEL).unload, false);
  });

  test('generate: the prompt is a user turn after system, through the chat template; raw sends it as it is', () => {
    const g = generateRequest({ model: 'tiny', prompt: 'Why?', system: 'Be brief.', think: true }, MODEL);
    assert.deepEqual(g.request.prompt, {
      kind: 'chat',
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Why?' }],
      options: { tools: [], toolChoice: 'auto', parallelToolCalls: null, reasoningFormat: 'auto', enableThinking: true },
    });
    assert.deepEqual(generateRequest({ model: 'tiny', prompt: 'Once', raw: true }, MODEL).request.prompt, { kind: 'text', text: 'Once' });
    assert.equal(generateRequest({ model: 'tiny', context: [1, 2, 3], prompt: 'x' }, MODEL).loadOnly, false, 'context (deprecated) is ignored');
    assert.equal(generateRequest({ model: 'tiny' }, MODEL).loadOnly, true, 'an empty prompt loads the model');
  });

  test('generate: suffix, an Ollama template and images are refused by name; raw refuses system and context', () => {
    refused(() => generateRequest({ model: 'tiny', prompt: 'def f(', suffix: 'return x' }, MODEL), /^suffix: hearth does not do fill-in-the-middle/, ErrorCode.Unsupported);
    refused(() => generateRequest({ model: 'tiny', prompt: 'x', template: '{{ .Prompt }}' }, MODEL), /^template: hearth renders prompts with the model's own chat template/, ErrorCode.Unsupported);
    refused(() => generateRequest({ model: 'tiny', prompt: 'x', images: ['abc'] }, MODEL), /^images: hearth serves text models only/, ErrorCode.Unsupported);
    refused(() => generateRequest({ model: 'tiny', prompt: 'x', raw: true, system: 'y' }, MODEL), /^raw mode does not support template, system, or context$/);
    refused(() => generateRequest({ model: 'tiny', prompt: 5 }, MODEL), /^prompt: must be a string/);
    refused(() => generateRequest({ model: 'tiny', prompt: 'x', top_logprobs: 21, logprobs: true }, MODEL), /^top_logprobs must be between 0 and 20$/);
    refused(() => generateRequest({ model: 'tiny', prompt: 'x', stream: 'yes' }, MODEL), /^stream: must be true or false/);
  });
});

describe('embed requests', () => {
  const EMBED: ServedModel = { ...MODEL, id: 'nomic', kind: 'embedding' };

  test('input: a string, strings, or nothing (load); normalized; truncate by default', () => {
    assert.deepEqual(embedRequest({ model: 'nomic', input: 'a' }, EMBED), { name: 'nomic', request: { model: 'nomic', inputs: ['a'], normalize: true, truncate: true }, dimensions: null });
    assert.deepEqual(embedRequest({ model: 'nomic', input: ['a', 'b'], truncate: false, dimensions: 64 }, EMBED).request.inputs, ['a', 'b']);
    assert.equal(embedRequest({ model: 'nomic', input: ['a'], truncate: false }, EMBED).request.truncate, false);
    assert.equal(embedRequest({ model: 'nomic', input: 'a', dimensions: 64 }, EMBED).dimensions, 64);
    assert.deepEqual(embedRequest({ model: 'nomic' }, EMBED).request.inputs, []);
    assert.deepEqual(embedRequest({ model: 'nomic', input: '' }, EMBED).request.inputs, []);
    refused(() => embedRequest({ model: 'nomic', input: [1] }, EMBED), /^invalid input type/);
    refused(() => embedRequest({ model: 'nomic', input: 'a', dimensions: 0 }, EMBED), /^dimensions: must be a positive whole number/);
  });

  test('the older /api/embeddings: one prompt, the raw vector', () => {
    assert.deepEqual(embeddingsRequest({ model: 'nomic', prompt: 'a' }, EMBED).request, { model: 'nomic', inputs: ['a'], normalize: false, truncate: false });
    assert.deepEqual(embeddingsRequest({ model: 'nomic' }, EMBED).request.inputs, []);
  });
});
