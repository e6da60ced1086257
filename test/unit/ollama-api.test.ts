// The Ollama API's routes on hearth's HTTP server, against a fake coordinator: NDJSON streaming and its
// errors, the root probe beside the dashboard, model names, refusals, API keys, embeddings (which the
// real coordinator does not serve yet). Fastify's inject: no sockets, no processes.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { Coordinator, GenerationRequest } from '../../coordinator/coordinator.js';
import type { GenerateHandlers, GenerateResult } from '../../coordinator/engine/engine-process.js';
import { OLLAMA_API_VERSION, type OllamaBackend } from '../../coordinator/http/ollama.js';
import { HttpApi } from '../../coordinator/http/server.js';
import { CoordinatorMetrics } from '../../coordinator/metrics.js';
import type { EmbedRequest, EmbedResult, ModelKind, ServedModel } from '../../coordinator/served-models.js';

const USAGE = { promptTokens: 7, completionTokens: 3, cachedTokens: 0, draftTokens: 0, draftAcceptedTokens: 0 };

const served = (id: string, kind: ModelKind): ServedModel => ({ id, aliases: [], kind, status: 'loaded', policy: 'pinned', facts: null, ctxSize: 512, loadedBytes: 1000, expiresAt: null, lastUsedAt: null });

type Script = (request: GenerationRequest, handlers: GenerateHandlers, signal: AbortSignal | undefined) => Promise<GenerateResult>;

/** What the routes need of a coordinator: two models, a scripted generation, and embeddings. */
class FakeCoordinator extends EventEmitter implements OllamaBackend {
  script: Script = async () => ({ finishReason: 'stop', usage: USAGE, text: '' });
  requests: GenerationRequest[] = [];
  embeds: EmbedRequest[] = [];

  models(): ServedModel[] {
    return [served('tiny', 'chat'), served('nomic', 'embedding')];
  }

  resolveModel(name: string | undefined, kind: ModelKind): ServedModel {
    const m = this.models().find((x) => x.id === name);
    if (!m) throw new HearthError(ErrorCode.NotFound, `model '${name}' is not served here`);
    if (m.kind !== kind) throw new HearthError(ErrorCode.InvalidArgument, `model: '${m.id}' is not a ${kind} model`);
    return m;
  }

  generate(request: GenerationRequest, options: { signal?: AbortSignal; handlers?: GenerateHandlers }): Promise<GenerateResult> {
    this.requests.push(request);
    return this.script(request, options.handlers ?? {}, options.signal);
  }

  async embed(request: EmbedRequest): Promise<EmbedResult> {
    this.embeds.push(request);
    return { model: request.model ?? '', embeddings: request.inputs.map(() => [0.6, 0.8, 0]), promptTokens: 4 * request.inputs.length };
  }

  loads: string[] = [];
  async loadModel(name: string): Promise<void> {
    this.loads.push(`load ${name}`);
  }

  async unloadModel(name: string): Promise<boolean> {
    this.loads.push(`unload ${name}`);
    return true;
  }
}

/** A reply streamed as the engine streams a chat: reasoning, then content, then a tool call read at the end. */
const CHAT_SCRIPT: Script = async (_r, h) => {
  h.onStarted?.(7, 0);
  h.onToken?.('<think>hm', 1, { delta: { reasoningContent: 'hm' } });
  h.onToken?.('</think>He', 2, { delta: { content: 'He' } });
  h.onToken?.('llo', 3, { delta: { content: 'llo' } });
  return { finishReason: 'tool_calls', usage: USAGE, text: '', reply: { content: 'Hello', reasoningContent: 'hm', toolCalls: [{ id: 'c1', name: 'get_time', arguments: '{"zone":"UTC"}' }] }, resumed: 2 };
};

const lines = (body: string) => body.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('the Ollama API on the HTTP server (a fake coordinator)', () => {
  const fake = new FakeCoordinator();
  let api: HttpApi;
  const post = (url: string, payload: unknown, headers: Record<string, string> = {}) =>
    api.app.inject({ method: 'POST', url, payload: typeof payload === 'string' ? payload : JSON.stringify(payload), headers: { 'content-type': 'application/json', ...headers } });

  before(() => {
    api = new HttpApi(fake as unknown as Coordinator, new CoordinatorMetrics(new EventEmitter() as never), { apiKeys: [], bodyLimitBytes: 64 * 1024, pingMs: 60_000, headersAfterMs: 60_000 }, pino({ level: 'silent' }));
  });
  after(() => api.close());

  test('GET / answers "Ollama is running" to API clients and the dashboard to browsers; HEAD / too', async () => {
    for (const accept of [undefined, '*/*', 'application/json']) {
      const r = await api.app.inject({ method: 'GET', url: '/', headers: accept ? { accept } : {} });
      assert.equal(r.statusCode, 200);
      assert.equal(r.body, 'Ollama is running', String(accept));
      assert.match(String(r.headers['content-type']), /^text\/plain/);
    }
    const page = await api.app.inject({ method: 'GET', url: '/', headers: { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
    assert.match(page.body, /<html/i);
    assert.equal((await api.app.inject({ method: 'HEAD', url: '/' })).statusCode, 200);
    assert.deepEqual((await api.app.inject({ method: 'GET', url: '/api/version' })).json(), { version: OLLAMA_API_VERSION });
  });

  test('chat streams NDJSON by default: thinking and content as they come, the tool call whole, then the figures', async () => {
    fake.script = CHAT_SCRIPT;
    const r = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'get_time' } }] });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['content-type'], 'application/x-ndjson');
    const ls = lines(r.body);
    assert.deepEqual(ls.map((l) => l.message), [
      { role: 'assistant', content: '', thinking: 'hm' },
      { role: 'assistant', content: 'He' },
      { role: 'assistant', content: 'llo' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'c1', function: { index: 0, name: 'get_time', arguments: { zone: 'UTC' } } }] },
      { role: 'assistant', content: '' },
    ]);
    assert.deepEqual(ls.map((l) => l.done), [false, false, false, false, true]);
    const last = ls.at(-1)!;
    assert.equal(last.done_reason, 'stop');
    assert.equal(last.eval_count, 3);
    assert.equal(last.prompt_eval_count, 7);
    assert.equal(last.hearth_resumed, 2, 'the stream says it was resumed, on its last line');
    assert.equal(typeof last.total_duration, 'number');
    assert.equal(fake.requests.at(-1)!.model, 'tiny');
  });

  test('stream: false answers one object, with the resume count in a header', async () => {
    fake.script = CHAT_SCRIPT;
    const r = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], stream: false });
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.equal(r.headers['x-hearth-resumed'], '2');
    const body = r.json();
    assert.deepEqual(body.message, { role: 'assistant', content: 'Hello', thinking: 'hm', tool_calls: [{ id: 'c1', function: { index: 0, name: 'get_time', arguments: { zone: 'UTC' } } }] });
    assert.equal(body.done, true);
  });

  test('generate streams response text; raw text prompts have no chat reply', async () => {
    fake.script = async (_r, h) => {
      h.onStarted?.(7, 0);
      h.onToken?.('Once', 1, {});
      h.onToken?.(' upon', 2, {});
      return { finishReason: 'length', usage: USAGE, text: 'Once upon' };
    };
    const r = await post('/api/generate', { model: 'tiny', prompt: 'Tell', raw: true });
    const ls = lines(r.body);
    assert.deepEqual(ls.map((l) => l.response), ['Once', ' upon', '']);
    assert.equal(ls.at(-1)!.done_reason, 'length');
    const whole = (await post('/api/generate', { model: 'tiny', prompt: 'Tell', raw: true, stream: false })).json();
    assert.equal(whole.response, 'Once upon');
  });

  test('a refusal before the stream starts keeps its status; a failure after it is an error line', async () => {
    fake.script = async () => {
      throw new HearthError(ErrorCode.InvalidArgument, 'the prompt is 900 tokens, which exceeds the available context size of 512 tokens per request');
    };
    const early = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'long' }] });
    assert.equal(early.statusCode, 400);
    assert.match(String(early.headers['content-type']), /^application\/json/);
    assert.match(early.json().error, /exceeds the available context size of 512/);

    fake.script = async (_r, h) => {
      h.onStarted?.(7, 0);
      h.onToken?.('Hi', 1, { delta: { content: 'Hi' } });
      throw new HearthError(ErrorCode.Unavailable, 'worker w-b (127.0.0.1:1) lost its rpc server');
    };
    const late = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(late.statusCode, 200);
    const ls = lines(late.body);
    assert.deepEqual(ls.at(-1), { error: 'worker w-b (127.0.0.1:1) lost its rpc server' });
    assert.equal(ls.length, 2);
  });

  test("model names: unknown is a 404 in Ollama's words listing the models, NAME:latest is NAME, none is a 400", async () => {
    fake.script = CHAT_SCRIPT;
    const unknown = await post('/api/chat', { model: 'llama3', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(unknown.statusCode, 404);
    assert.deepEqual(unknown.json(), { error: "model 'llama3' not found; the models served here are: tiny, nomic" });
    assert.equal((await post('/api/show', { model: 'nope' })).statusCode, 404);
    assert.equal((await post('/api/chat', { model: 'tiny:latest', messages: [{ role: 'user', content: 'hi' }], stream: false })).statusCode, 200);
    const none = await post('/api/generate', { prompt: 'hi' });
    assert.equal(none.statusCode, 400);
    assert.deepEqual(none.json(), { error: 'model is required' });
    const wrongKind = await post('/api/chat', { model: 'nomic', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(wrongKind.statusCode, 400);
    assert.equal((await post('/api/show', { model: 'nomic' })).json().capabilities[0], 'embedding', 'show takes any kind');
  });

  test('bad bodies and options are 400s in Ollama\'s shape, over-large bodies a 413 in it too', async () => {
    for (const [body, pattern] of [
      ['', /missing request body/],
      ['{nope', /not valid JSON/],
      [{ model: 'tiny', messages: [{ role: 'user', content: 'x' }], options: { temperature: 'hot' } }, /options\.temperature/],
      [{ model: 'tiny', messages: [{ role: 'user', content: 'x' }], format: 'xml' }, /invalid format/],
    ] as const) {
      const r = await post('/api/chat', body);
      assert.equal(r.statusCode, 400, JSON.stringify(body));
      assert.match(r.json().error, pattern);
    }
    const big = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] });
    assert.equal(big.statusCode, 413);
    assert.equal(typeof big.json().error, 'string');
    assert.match(big.json().error, /larger than the limit/);
    const route = await api.app.inject({ method: 'GET', url: '/api/nothing' });
    assert.equal(route.statusCode, 404);
    assert.match(route.json().error, /no route GET \/api\/nothing/);
  });

  test("an empty prompt loads the model, with keep_alive 0 unloads it; what hearth cannot do as asked is said in x-hearth-notes", async () => {
    const load = await post('/api/generate', { model: 'tiny' });
    assert.equal(load.statusCode, 200);
    assert.equal(load.json().done_reason, 'load');
    const unload = await post('/api/generate', { model: 'tiny', keep_alive: 0 });
    assert.equal(unload.statusCode, 200);
    assert.equal(unload.json().done_reason, 'unload');
    assert.deepEqual(fake.loads, ['load tiny', 'unload tiny']);
    fake.script = CHAT_SCRIPT;
    const wide = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'x' }], options: { num_ctx: 32768, mirostat: 2 }, stream: false });
    assert.equal(wide.statusCode, 200);
    assert.match(String(wide.headers['x-hearth-notes']), /options\.num_ctx 32768 is more than the 512 tokens per request that tiny is served with/);
    assert.match(String(wide.headers['x-hearth-notes']), /ignored: mirostat/);
    const streamed = await post('/api/chat', { model: 'tiny', messages: [{ role: 'user', content: 'x' }], options: { num_ctx: 32768 } });
    assert.match(String(streamed.headers['x-hearth-notes']), /num_ctx 32768/, 'on a stream too');
  });

  test('pull, push, create, copy and delete are refused with what to do instead', async () => {
    const pull = await post('/api/pull', { model: 'llama3' });
    assert.equal(pull.statusCode, 501);
    assert.match(pull.json().error, /hearth does not pull models through the Ollama API: list the model under models: in cluster\.yaml.*hearth model pull/);
    assert.match(pull.json().error, /the models served here are: tiny, nomic/);
    const del = await api.app.inject({ method: 'DELETE', url: '/api/delete', payload: '{"model":"tiny"}' });
    assert.equal(del.statusCode, 501);
    assert.match(del.json().error, /hearth model rm/);
    for (const url of ['/api/push', '/api/create', '/api/copy']) assert.equal((await post(url, {})).statusCode, 501, url);
  });

  test('listings: tags with every name, ps with loaded models, show', async () => {
    const tags = (await api.app.inject({ method: 'GET', url: '/api/tags' })).json();
    assert.deepEqual(tags.models.map((m: { name: string }) => m.name), ['tiny', 'nomic']);
    const ps = (await api.app.inject({ method: 'GET', url: '/api/ps' })).json();
    assert.equal(ps.models[0].size_vram, 0);
    const show = (await post('/api/show', { model: 'tiny' })).json();
    assert.deepEqual(show.capabilities, ['completion']);
  });

  test('embed: normalized vectors from the embedding model, cut to dimensions; the older embeddings endpoint', async () => {
    const r = (await post('/api/embed', { model: 'nomic', input: ['a', 'b'], dimensions: 1 })).json();
    assert.deepEqual(r.embeddings, [[1], [1]]);
    assert.equal(r.prompt_eval_count, 8);
    assert.deepEqual(fake.embeds.at(-1), { model: 'nomic', inputs: ['a', 'b'], normalize: true, truncate: true });
    assert.deepEqual((await post('/api/embed', { model: 'nomic', input: [] })).json(), { model: 'nomic', embeddings: [] });
    assert.deepEqual((await post('/api/embeddings', { model: 'nomic', prompt: 'a' })).json(), { embedding: [0.6, 0.8, 0] });
    assert.equal(fake.embeds.at(-1)!.normalize, false);
    const chatModel = await post('/api/embed', { model: 'tiny', input: 'a' });
    assert.equal(chatModel.statusCode, 400, 'a chat model does not embed');
  });
});

describe('the Ollama API with API keys', () => {
  test('401 in Ollama\'s shape without a key, served with one; GET / and /api/version stay public', async () => {
    const api = new HttpApi(new FakeCoordinator() as unknown as Coordinator, new CoordinatorMetrics(new EventEmitter() as never), { apiKeys: ['k1'], bodyLimitBytes: 64 * 1024, pingMs: 60_000, headersAfterMs: 60_000 }, pino({ level: 'silent' }));
    try {
      const anon = await api.app.inject({ method: 'GET', url: '/api/tags' });
      assert.equal(anon.statusCode, 401);
      assert.deepEqual(anon.json(), { error: 'missing API key: send it as "Authorization: Bearer <key>"' });
      assert.equal((await api.app.inject({ method: 'GET', url: '/api/tags', headers: { authorization: 'Bearer nope' } })).json().error, 'invalid API key');
      assert.equal((await api.app.inject({ method: 'GET', url: '/api/tags', headers: { authorization: 'Bearer k1' } })).statusCode, 200);
      assert.equal((await api.app.inject({ method: 'POST', url: '/api/chat', payload: '{}' })).statusCode, 401);
      assert.equal((await api.app.inject({ method: 'GET', url: '/api/version' })).statusCode, 200);
      assert.equal((await api.app.inject({ method: 'GET', url: '/' })).body, 'Ollama is running');
    } finally {
      await api.close();
    }
  });
});
