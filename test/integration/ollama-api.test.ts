// The Ollama API, driven with the official `ollama` client against a real coordinator whose model is
// split over two real workers: what Ollama apps call works unchanged, and greedy answers equal the
// same requests through the OpenAI API.
import assert from 'node:assert/strict';
import { basename } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import { Ollama, type ChatRequest, type Message, type Tool } from 'ollama';
import OpenAI from 'openai';

import { modelContentId } from '../../models/content-id.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

/** The served model's id: its file's name (set once the test model is made). */
let MODEL_ID = '';
const GREEDY = { temperature: 0 } as const;

const PERSON = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 150 } },
  required: ['name', 'age'],
  additionalProperties: false,
} as const;

/** A bounded string: random weights would otherwise write a city name until num_predict runs out. */
const WEATHER_PARAMETERS = {
  type: 'object',
  properties: { city: { type: 'string', description: 'a city', maxLength: 16 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
};

const TOOLS: Tool[] = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: WEATHER_PARAMETERS } }];

const ajv = new Ajv({ strict: false });

function assertValid(schema: object, value: unknown, what: string): void {
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${what} ${JSON.stringify(value)} does not validate: ${ajv.errorsText(validate.errors)}`);
}

/** The client's error for a non-2xx answer: its status and the server's `error` text. */
async function expectOllamaError(p: Promise<unknown>, status: number, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    const err = e as Error & { status_code?: number; error?: string };
    assert.equal(err.name, 'ResponseError', String(e));
    assert.equal(err.status_code, status, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('Ollama API through the official ollama client', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let modelPath: string;
  let ollama: Ollama;
  let openai: OpenAI;

  before(async () => {
    modelPath = await testModel('tiny');
    MODEL_ID = basename(modelPath, '.gguf');
    workers.push(await startWorker(['--name', 'ollama-a']), await startWorker(['--name', 'ollama-b']));
    // Tool prompts are long: the context that chat-tools.test.ts gives them.
    coord = await startCoordinator(modelPath, workers.map((w) => w.control), ['--ctx-size', '2048']);
    ollama = new Ollama({ host: coord.http });
    openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('version, list, show and ps describe the served model', async () => {
    assert.match((await ollama.version()).version, /^\d+\.\d+\.\d+$/);
    const root = await fetch(coord.http);
    assert.equal(await root.text(), 'Ollama is running', 'the probe Ollama apps make');

    const { models } = await ollama.list();
    assert.equal(models.length, 1);
    const m = models[0]!;
    assert.equal(m.name, MODEL_ID);
    assert.equal(m.model, MODEL_ID);
    assert.equal(m.digest, modelContentId([modelPath]), 'the content id hearth names the file by');
    assert.ok(m.size > 0);
    assert.equal(m.details.format, 'gguf');
    assert.equal(m.details.family, 'llama');
    assert.equal(m.details.quantization_level, 'F16');
    assert.match(m.details.parameter_size, /^\d+(\.\d+)?[KMB]$/);
    assert.ok(!Number.isNaN(new Date(m.modified_at).getTime()));

    const show = await ollama.show({ model: MODEL_ID });
    assert.deepEqual(show.capabilities, ['completion', 'tools', 'thinking']);
    assert.match(show.template, /<\|im_start\|>/, "the model's own chat template");
    const info = show.model_info as unknown as Record<string, unknown>;
    assert.equal(info['general.architecture'], 'llama');
    assert.equal(typeof info['llama.block_count'], 'number');
    assert.match(show.parameters, /num_ctx\s+2048/);

    const ps = await ollama.ps();
    assert.equal(ps.models.length, 1);
    assert.equal(ps.models[0]!.name, MODEL_ID);
    assert.ok(ps.models[0]!.size > 0, 'bytes loaded across the workers');
    assert.equal(ps.models[0]!.size_vram, 0);
  });

  test('chat, streamed and not, equals the same greedy request through the OpenAI API', async () => {
    const messages = [{ role: 'user', content: 'Tell me about hearths.' }];
    const full = await ollama.chat({ model: MODEL_ID, messages, options: { ...GREEDY, num_predict: 16 } });
    assert.equal(full.done, true);
    assert.equal(full.done_reason, 'length');
    assert.equal(full.message.role, 'assistant');
    assert.ok(full.message.content.length > 0);
    assert.equal(full.eval_count, 16);
    assert.ok(full.prompt_eval_count > 0);
    assert.ok(full.total_duration > 0 && full.eval_duration > 0, 'durations in nanoseconds');

    const stream = await ollama.chat({ model: MODEL_ID, messages, options: { ...GREEDY, num_predict: 16 }, stream: true });
    const parts = [];
    for await (const part of stream) parts.push(part);
    assert.ok(parts.length > 2, 'streamed in parts');
    assert.deepEqual(parts.map((p) => p.done), [...parts.slice(1).map(() => false), true], 'done only on the last');
    assert.equal(parts.map((p) => p.message.content).join(''), full.message.content);
    assert.equal(parts.at(-1)!.eval_count, 16);

    const viaOpenAi = await openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: 'Tell me about hearths.' }], max_tokens: 16, ...GREEDY });
    const openAiMessage = viaOpenAi.choices[0]!.message as { content: string | null; reasoning_content?: string };
    assert.equal(full.message.content, openAiMessage.content ?? '');
    assert.equal(full.message.thinking ?? '', openAiMessage.reasoning_content ?? '');
  });

  test('without stream, the server streams NDJSON as Ollama does', async () => {
    const r = await fetch(`${coord.http}/api/chat`, { method: 'POST', body: JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: 'Hi' }], options: { ...GREEDY, num_predict: 4 } }) });
    assert.equal(r.headers.get('content-type'), 'application/x-ndjson');
    const lines = (await r.text()).trim().split('\n').map((l) => JSON.parse(l) as { done: boolean; hearth_resumed?: number });
    assert.equal(lines.at(-1)!.done, true);
    assert.equal(lines.at(-1)!.hearth_resumed, 0);
  });

  test('generate, streamed and not, equals chat completions (templated) or completions (raw) through the OpenAI API', async () => {
    const prompt = 'Once upon a time';
    const g = await ollama.generate({ model: MODEL_ID, prompt, system: 'You tell stories.', options: { ...GREEDY, num_predict: 12 } });
    assert.equal(g.done, true);
    assert.equal(g.eval_count, 12);
    const chat = await openai.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: prompt }], max_tokens: 12, ...GREEDY });
    assert.equal(g.response, chat.choices[0]!.message.content ?? '');

    const raw = await ollama.generate({ model: MODEL_ID, prompt, raw: true, options: { ...GREEDY, num_predict: 12 } });
    const completion = await openai.completions.create({ model: MODEL_ID, prompt, max_tokens: 12, ...GREEDY });
    assert.equal(raw.response, completion.choices[0]!.text);

    const stream = await ollama.generate({ model: MODEL_ID, prompt, raw: true, options: { ...GREEDY, num_predict: 12 }, stream: true });
    let text = '';
    let last = null;
    for await (const part of stream) {
      text += part.response;
      last = part;
    }
    assert.equal(text, raw.response);
    assert.equal(last!.done_reason, 'length');

    const load = await ollama.generate({ model: MODEL_ID, prompt: '' });
    assert.equal(load.done_reason, 'load', 'an empty prompt loads the model');
  });

  test('format with a JSON schema gives parseable JSON of that schema', async () => {
    const r = await ollama.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'Describe a person as JSON.' }], format: PERSON, think: false, options: { ...GREEDY, num_predict: 200 } });
    assert.equal(r.done_reason, 'stop', 'the grammar ends the output, not the token limit');
    assertValid(PERSON, JSON.parse(r.message.content), 'the reply');
    const g = await ollama.generate({ model: MODEL_ID, prompt: 'A person as JSON:', format: PERSON, think: false, options: { ...GREEDY, num_predict: 200 } });
    assertValid(PERSON, JSON.parse(g.response ?? ''), 'the generated text');
  });

  test('a forced tool call comes back with its arguments as an object, streamed and not, and its result is taken back', async () => {
    const messages: Message[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
    // hearth's extension (as on /v1/chat/completions): random weights never call a tool on their own.
    const request: ChatRequest & { tool_choice: string; parallel_tool_calls: boolean } = {
      model: MODEL_ID,
      messages,
      tools: TOOLS,
      think: false,
      options: { ...GREEDY, num_predict: 200 },
      tool_choice: 'required',
      parallel_tool_calls: false,
    };
    const r = await ollama.chat({ ...request, stream: false });
    assert.equal(r.done_reason, 'stop');
    const calls = r.message.tool_calls ?? [];
    assert.equal(calls.length, 1, JSON.stringify(r.message));
    assert.equal(calls[0]!.function.name, 'get_weather');
    assert.equal(typeof calls[0]!.function.arguments, 'object', 'arguments are an object, not a string');
    assertValid(WEATHER_PARAMETERS, calls[0]!.function.arguments, 'the arguments');

    const stream = await ollama.chat({ ...request, stream: true });
    const streamed = [];
    for await (const part of stream) streamed.push(...(part.message.tool_calls ?? []));
    assert.deepEqual(streamed.map((c) => c.function), calls.map((c) => c.function), 'the same call, whole, in the stream');

    const next = await ollama.chat({
      model: MODEL_ID,
      messages: [...messages, r.message, { role: 'tool', content: '{"temperature": 21}', tool_name: 'get_weather' }],
      tools: TOOLS,
      options: { ...GREEDY, num_predict: 8 },
    });
    assert.equal(next.message.role, 'assistant');
    assert.equal(next.done, true);
  });

  test('one served model answers to any name (as llama-server); bad options and fields are 4xx', async () => {
    const messages = [{ role: 'user', content: 'Hi' }];
    // Several models make an unknown name a 404 (many-models.test.ts); one answers whatever an app was written for.
    // (The answer names the model as the request did, as Ollama's do.)
    assert.equal((await ollama.chat({ model: 'llama3.2', messages, options: { num_predict: 1 } })).done, true);
    assert.equal((await ollama.chat({ model: `${MODEL_ID}:latest`, messages, options: { num_predict: 1 } })).done, true, 'the default tag names the model too');
    await expectOllamaError(ollama.chat({ model: MODEL_ID, messages, options: { temperature: 'hot' as never } }), 400, /options\.temperature: must be a number/);
    await expectOllamaError(ollama.chat({ model: MODEL_ID, messages, options: { top_p: 3 } }), 400, /top_p: must be between 0 and 1/);
    await expectOllamaError(ollama.chat({ model: MODEL_ID, messages, format: 'xml' }), 400, /invalid format: expected "json" or a valid JSON schema/);
    await expectOllamaError(ollama.generate({ model: MODEL_ID, prompt: 'x', suffix: 'y' }), 400, /suffix: hearth does not do fill-in-the-middle/);
    await expectOllamaError(ollama.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'x', images: ['aGVsbG8='] }] }), 400, /images: hearth serves text models only/);
    await expectOllamaError(ollama.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'word '.repeat(2500) }] }), 400, /exceeds the available context size of 2048 tokens/);
    await expectOllamaError(ollama.pull({ model: 'llama3.2' }), 501, /hearth model pull/);
    const status = await coord.client.getStatus(2000);
    assert.equal(status.state, 'serving', 'still serving');
  });

  test('aborting a stream cancels its generation: the in-flight gauge goes back to 0', async () => {
    // A prompt whose greedy continuation runs the full 480 tokens (no end-of-generation token).
    const stream = await ollama.generate({ model: MODEL_ID, prompt: 'The quick brown fox jumps over the lazy dog because', raw: true, options: { ...GREEDY, num_predict: 480 }, stream: true });
    let n = 0;
    let inFlight = NaN;
    try {
      for await (const _ of stream) {
        if (++n === 3) {
          inFlight = metric(await (await fetch(`${coord.http}/metrics`)).text(), 'hearth_requests_in_flight');
          stream.abort();
        }
      }
    } catch (e) {
      assert.equal((e as Error).name, 'AbortError', String(e));
    }
    assert.equal(inFlight, 1, 'busy while streaming');
    assert.ok(n < 100, `stopped early (${n} parts)`);
    await waitFor('in-flight 0', async () => metric(await (await fetch(`${coord.http}/metrics`)).text(), 'hearth_requests_in_flight') === 0);
  });
});

describe('Ollama API: keys and embeddings', () => {
  test('with API keys, the client sends its headers; without a key it is refused', async () => {
    const model = await testModel('tiny');
    const w = await startWorker(['--name', 'ollama-key']);
    const coord = await startCoordinator(model, [w.control], ['--api-key', 'ollama-key-1'], { apiKey: 'ollama-key-1' });
    try {
      await expectOllamaError(new Ollama({ host: coord.http }).list(), 401, /missing API key/);
      const keyed = new Ollama({ host: coord.http, headers: { Authorization: 'Bearer ollama-key-1' } });
      assert.equal((await keyed.list()).models.length, 1);
      const r = await keyed.chat({ model: MODEL_ID, messages: [{ role: 'user', content: 'Hi' }], options: { num_predict: 2 } });
      assert.equal(r.done, true);
    } finally {
      await coord.stop();
      await w.stop();
    }
  });

  test(
    'embed and the older embeddings endpoint give the embedding model\'s vectors, as /v1/embeddings does',
    async () => {
      const model = await testModel('embed');
      const w = await startWorker(['--name', 'ollama-embed']);
      const coord = await startCoordinator(model, [w.control]);
      try {
        const ollama = new Ollama({ host: coord.http });
        const id = (await ollama.list()).models[0]!.name;
        assert.deepEqual((await ollama.show({ model: id })).capabilities, ['embedding']);
        const inputs = ['Why is the sky blue?', 'Why is the grass green?'];
        const e = await ollama.embed({ model: id, input: inputs });
        assert.equal(e.embeddings.length, 2);
        for (const v of e.embeddings) assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-4, 'unit length');
        assert.ok(e.prompt_eval_count > 0);
        const cut = await ollama.embed({ model: id, input: inputs[0]!, dimensions: 16 });
        assert.equal(cut.embeddings[0]!.length, 16);
        assert.ok(Math.abs(Math.hypot(...cut.embeddings[0]!) - 1) < 1e-4, 'cut, then unit length again');

        const legacy = await ollama.embeddings({ model: id, prompt: inputs[0]! });
        const norm = Math.hypot(...legacy.embedding);
        legacy.embedding.forEach((x, i) => assert.ok(Math.abs(x / norm - e.embeddings[0]![i]!) < 1e-4, 'the raw vector, normalized, is /api/embed\'s'));

        const openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
        const viaOpenAi = await openai.embeddings.create({ model: id, input: inputs });
        viaOpenAi.data.forEach((d, i) => {
          const cos = d.embedding.reduce((a, x, j) => a + x * e.embeddings[i]![j]!, 0);
          assert.ok(cos >= 0.9999, `cosine ${cos}`);
        });
        await expectOllamaError(ollama.chat({ model: id, messages: [{ role: 'user', content: 'Hi' }] }), 400, /embedding model/);
      } finally {
        await coord.stop();
        await w.stop();
      }
    },
  );
});
