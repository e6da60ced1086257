// Embeddings and rerank end to end: an embedding model and a reranker, each split over two real
// workers, answer /v1/embeddings (through the official `openai` client) and /v1/rerank with what
// llama.cpp's own llama-embedding computes for the same inputs in one process, and bad requests are the
// right 4xx naming the model or the field.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { floatsOfBase64 } from '../../coordinator/http/embeddings.js';
import { LlamaModel } from '../../native/llama.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { expectApiError, metric } from '../helpers/http-api.js';
import { cosine, llamaEmbedding, referenceEmbeddings } from '../helpers/llama-embedding.js';
import { testModel } from '../helpers/models.js';
import { processTree } from '../helpers/process-tree.js';
import { startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

/** A served model's id: its file's name. */
const idOf = (path: string) => basename(path, '.gguf');

const TEXTS = [
  'A hearth is the floor of a fireplace, where the fire burns.',
  'Embeddings map a text to a vector; similar texts land close together.',
  'Ünïcödé, emoji 🔥 and numbers 12345 are text too.',
  'short',
];
/** Over 256 tokens: with decodes of 128 (batchSize and ubatchSize 128), last-token pooling computes it in three. */
const LONG = `${'The fire in the hearth warms the whole house on a winter night. '.repeat(20)}The end.`;

/** The lowest cosine any vector had with llama.cpp's, over the file. */
let lowestCosine = 1;

/** Every vector points where llama.cpp's does (cosine >= 0.9999), with the same width. */
function assertSameVectors(got: number[][], want: number[][], what: string): void {
  assert.equal(got.length, want.length, `${what}: one vector per input`);
  got.forEach((v, i) => {
    assert.equal(v.length, want[i]!.length, `${what}[${i}]: width`);
    const c = cosine(v, want[i]!);
    lowestCosine = Math.min(lowestCosine, c);
    assert.ok(c >= 0.9999, `${what}[${i}]: cosine ${c} with llama.cpp's embedding`);
  });
}

async function post(coord: CoordinatorHandle, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(`${coord.http}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

describe('embeddings and rerank over two workers', () => {
  const workers: WorkerHandle[] = [];

  before(async () => {
    // The reference tool is built (once; one file and a link) while the workers start.
    const [a, b] = await Promise.all([startWorker(['--name', 'w-a']), startWorker(['--name', 'w-b']), llamaEmbedding()]);
    workers.push(a as WorkerHandle, b as WorkerHandle);
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.stop()));
  });

  describe('an embedding model (qwen3, last-token pooling)', () => {
    let model: string;
    let coord: CoordinatorHandle;
    let openai: OpenAI;
    let reference: number[][];
    let EMBED_ID: string;
    const dir = mkdtempSync(join(tmpdir(), 'hearth-embed-'));

    before(async () => {
      model = await testModel('embed');
      EMBED_ID = idOf(model);
      reference = await referenceEmbeddings(model, [...TEXTS, LONG], { normalize: 2 });
      writeFileSync(join(dir, 'cluster.yaml'), 'batchSize: 128\nubatchSize: 128\n');
      coord = await startCoordinator(model, workers.map((w) => w.control), ['--config', join(dir, 'cluster.yaml')]);
      openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
    });
    after(async () => {
      await coord?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('is split over both workers and listed as an embedding model', async () => {
      const plan = await coord.client.getPlan();
      assert.deepEqual(plan.devices.map((d) => d.owner).sort(), ['w-a', 'w-b']);
      assert.ok(plan.devices.every((d) => d.layers >= 1));
      const models = await openai.models.list();
      assert.equal(models.data[0]!.id, EMBED_ID);
    });

    test("a string and an array, float and base64, through the openai client: llama.cpp's own vectors", async () => {
      // The client asks for base64 by default and decodes it.
      const one = await openai.embeddings.create({ model: EMBED_ID, input: TEXTS[0]! });
      assert.equal(one.object, 'list');
      assert.equal(one.model, EMBED_ID);
      assert.equal(one.data.length, 1);
      assert.equal(one.data[0]!.object, 'embedding');
      assert.equal(one.data[0]!.index, 0);
      assertSameVectors([one.data[0]!.embedding], [reference[0]!], 'one string');
      assert.ok(one.usage.prompt_tokens > 10 && one.usage.total_tokens === one.usage.prompt_tokens);

      const floats = await openai.embeddings.create({ model: EMBED_ID, input: TEXTS, encoding_format: 'float' });
      assert.deepEqual(floats.data.map((d) => d.index), [0, 1, 2, 3]);
      assertSameVectors(floats.data.map((d) => d.embedding), reference.slice(0, 4), 'an array');
      for (const d of floats.data) assert.ok(Math.abs(Math.hypot(...d.embedding) - 1) < 1e-5, 'unit length, as llama-server normalises');
      assert.ok(cosine(floats.data[0]!.embedding, one.data[0]!.embedding) > 0.99999, 'the same alone as beside others');

      // Asked for explicitly, base64 comes back as the wire has it: little-endian float32, the same values.
      const b64 = await openai.embeddings.create({ model: EMBED_ID, input: TEXTS, encoding_format: 'base64' });
      b64.data.forEach((d, i) => assert.deepEqual(floatsOfBase64(d.embedding as unknown as string), floats.data[i]!.embedding));
      assert.equal(b64.usage.prompt_tokens, floats.usage.prompt_tokens);
    });

    test('an input longer than a decode goes through several (last-token pooling), as llama.cpp computes it whole', async () => {
      const r = await openai.embeddings.create({ model: EMBED_ID, input: [LONG, TEXTS[3]!], encoding_format: 'float' });
      assert.ok(r.usage.prompt_tokens > 128 * 2, `${r.usage.prompt_tokens} tokens`);
      assertSameVectors(r.data.map((d) => d.embedding), [reference[4]!, reference[3]!], 'long and short');
    });

    test('token ids embed as their text does; raw vectors on request; gRPC Embed gives the same', async () => {
      const vocab = await LlamaModel.load(model, { vocabOnly: true, devices: [], nGpuLayers: 0 });
      const tokens = Array.from(vocab.tokenize(TEXTS[1]!, { addSpecial: true, parseSpecial: true }));
      vocab.dispose();
      const byTokens = await openai.embeddings.create({ model: EMBED_ID, input: [tokens], encoding_format: 'float' });
      assertSameVectors([byTokens.data[0]!.embedding], [reference[1]!], 'token ids');
      assert.equal(byTokens.usage.prompt_tokens, tokens.length);

      const raw = await post(coord, '/v1/embeddings', { input: TEXTS[1], embd_normalize: -1 });
      assert.equal(raw.status, 200);
      const v: number[] = raw.json.data[0].embedding;
      assert.ok(Math.abs(Math.hypot(...v) - 1) > 1e-3, 'not unit length');
      assertSameVectors([v], [reference[1]!], 'raw');

      const grpc = await coord.client.embed({ model: EMBED_ID, inputs: TEXTS.slice(0, 2) });
      assert.equal(grpc.model, EMBED_ID);
      assertSameVectors(grpc.embeddings.map((e) => e.values), reference.slice(0, 2), 'gRPC');
    });

    test('bad requests: empty, too long (or cut), a chat or rerank request, other dimensions', async () => {
      await expectApiError(openai.embeddings.create({ model: EMBED_ID, input: '' }), 400, 'invalid_request_error', /input: is empty/);
      await expectApiError(openai.embeddings.create({ model: EMBED_ID, input: [] }), 400, 'invalid_request_error', /input: must not be an empty array/);
      await expectApiError(openai.embeddings.create({ model: EMBED_ID, input: ['fine', ''] }), 400, 'invalid_request_error', /input\[1\]: is empty/);
      const tooLong = 'word '.repeat(700);
      await expectApiError(openai.embeddings.create({ model: EMBED_ID, input: ['fine', tooLong] }), 400, 'invalid_request_error', /input\[1\]: \d+ tokens, more than the 512 this model takes per input/);
      const cut = await post(coord, '/v1/embeddings', { input: tooLong, truncate: true });
      assert.equal(cut.status, 200, JSON.stringify(cut.json));
      assert.equal(cut.json.usage.prompt_tokens, 512, 'cut to the context per input');
      await expectApiError(openai.embeddings.create({ model: EMBED_ID, input: 'x', dimensions: 64 }), 400, 'invalid_request_error', new RegExp(`dimensions: ${EMBED_ID} gives 256-dimensional embeddings and cannot shorten them to 64`));
      assert.equal((await openai.embeddings.create({ model: EMBED_ID, input: 'x', dimensions: 256 })).data[0]!.embedding.length, 256);
      // One model answers to any name, as llama-server does (clients send the names they were written for).
      assert.equal((await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'x' })).model, EMBED_ID);
      await expectApiError(
        openai.chat.completions.create({ model: EMBED_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
        400,
        'invalid_request_error',
        new RegExp(`model: '${EMBED_ID}' is an embedding model; this request needs a text generation model`),
      );
      await expectApiError(
        openai.chat.completions.create({ model: EMBED_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true }),
        400,
        'invalid_request_error',
        /is an embedding model/,
      );
      const rerank = await post(coord, '/v1/rerank', { query: 'q', documents: ['a'] });
      assert.equal(rerank.status, 400);
      assert.match(rerank.json.error.message, new RegExp(`model: '${EMBED_ID}' is an embedding model; this request needs a reranker model`));
      const notJson = await fetch(`${coord.http}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"input":' });
      assert.equal(notJson.status, 400);
    });

    test('requests and inputs are counted in /metrics', async (t) => {
      t.diagnostic(`lowest cosine with llama.cpp's embeddings so far: ${lowestCosine.toFixed(7)}`);
      const text = await (await fetch(`${coord.http}/metrics`)).text();
      assert.ok(metric(text, 'hearth_embedding_requests_total', 'endpoint="embeddings",outcome="ok"') >= 8, text.split('\n').filter((l) => l.includes('embedding')).join('\n'));
      assert.ok(metric(text, 'hearth_embedding_requests_total', 'endpoint="embeddings",outcome="error"') >= 1);
      assert.ok(metric(text, 'hearth_embedding_inputs_total', 'endpoint="embeddings"') >= 15);
      assert.ok(metric(text, 'hearth_embedding_prompt_tokens_total') > 500);
    });

    test('the engine lost mid-request: the request is sent again once the cluster serves, and answers', { timeout: 120_000 }, async () => {
      // Enough decodes (over 50 of 128 tokens, one worker after the other) to be caught in flight.
      const inputs = Array.from({ length: 24 }, () => LONG);
      const pending = openai.embeddings.create({ model: EMBED_ID, input: inputs, encoding_format: 'float' });
      await waitFor('the request at the engine', async () => (await coord.client.getStatus(1000)).in_flight >= 1, 30_000, 20);
      // The serving engine is the older of the two: a spare engine process waits beside it for the next load.
      const [engine] = processTree(coord.process.pid!).filter((p) => /engine-main/.test(p.command) && p.ppid === coord.process.pid).sort((a, b) => a.started - b.started);
      assert.ok(engine, 'the engine process is found');
      process.kill(engine.pid, 'SIGKILL');
      const r = await pending;
      assertSameVectors(r.data.map((d) => d.embedding), inputs.map(() => reference[4]!), 'after the engine loss');
      assert.match(coord.logs(), /an embeddings request caught by an engine loss is sent again/);
    });
  });

  describe('a reranker (qwen3, rank pooling, its rerank template)', () => {
    let model: string;
    let coord: CoordinatorHandle;
    const query = 'What is a hearth?';
    const documents = [
      'A hearth is the floor of a fireplace.',
      'Bananas are yellow and curved.',
      'The fireplace kept the cottage warm all winter.',
      'Interest rates rose again this quarter.',
      'Hearths were the centre of the home.',
    ];
    let scores: number[];
    let RERANK_ID: string;

    before(async () => {
      model = await testModel('rerank');
      RERANK_ID = idOf(model);
      // llama-embedding's rerank input: query TAB document, the model's rerank template filled with them.
      scores = (await referenceEmbeddings(model, documents.map((d) => `${query}\t${d}`), { normalize: -1, outputs: 1 })).map((r) => r[0]!);
      coord = await startCoordinator(model, workers.map((w) => w.control));
    });
    after(async () => {
      await coord?.stop();
    });

    test("scores equal llama.cpp's, best first; top_n; llama-server's aliases and TEI's shape", async (t) => {
      const plan = await coord.client.getPlan();
      assert.deepEqual(plan.devices.map((d) => d.owner).sort(), ['w-a', 'w-b']);
      const all = await post(coord, '/v1/rerank', { model: RERANK_ID, query, documents });
      assert.equal(all.status, 200, JSON.stringify(all.json));
      assert.equal(all.json.model, RERANK_ID);
      assert.equal(all.json.object, 'list');
      assert.ok(all.json.usage.prompt_tokens > documents.length * 40, 'the template around every pair');
      const results: { index: number; relevance_score: number }[] = all.json.results;
      assert.equal(results.length, documents.length);
      // Equal up to float noise: in one process, flash attention on or off alone moves these scores by up to 7e-5.
      for (const r of results) assert.ok(Math.abs(r.relevance_score - scores[r.index]!) < 2e-4, `document ${r.index}: ${r.relevance_score} against llama.cpp's ${scores[r.index]}`);
      t.diagnostic(`largest difference from llama.cpp's scores: ${Math.max(...results.map((r) => Math.abs(r.relevance_score - scores[r.index]!))).toExponential(2)} (scores ${scores.map((x) => x.toFixed(4)).join(', ')})`);
      const order = scores.map((s, i) => [s, i] as const).sort((a, b) => b[0] - a[0]).map(([, i]) => i);
      assert.deepEqual(results.map((r) => r.index), order, 'best first');

      const top = await post(coord, '/rerank', { query, documents, top_n: 2 });
      assert.deepEqual(top.json.results, results.slice(0, 2));
      for (const alias of ['/reranking', '/v1/reranking']) assert.deepEqual((await post(coord, alias, { query, documents })).json.results, results);
      const tei = await post(coord, '/rerank', { query, texts: documents, return_text: true });
      assert.deepEqual(tei.json, results.map((r) => ({ index: r.index, score: r.relevance_score, text: documents[r.index] })));
      const grpc = await coord.client.rerank({ query, documents, top_n: 3 });
      assert.deepEqual(grpc.results.map((r) => r.index), order.slice(0, 3));
    });

    test('bad requests: no documents, a document too long, an embeddings request to the reranker', async () => {
      const none = await post(coord, '/v1/rerank', { query, documents: [] });
      assert.equal(none.status, 400);
      assert.match(none.json.error.message, /documents: required, a non-empty array/);
      const long = await post(coord, '/v1/rerank', { query, documents: ['fine', 'word '.repeat(700)] });
      assert.equal(long.status, 400);
      assert.match(long.json.error.message, /documents\[1\]: with the query it is \d+ tokens, more than the 512 this model takes per pair/);
      const embed = await post(coord, '/v1/embeddings', { model: RERANK_ID, input: 'x' });
      assert.equal(embed.status, 400);
      assert.match(embed.json.error.message, new RegExp(`model: '${RERANK_ID}' is a reranker model; this request needs an embedding model`));
    });
  });

  describe('a text generation model', () => {
    let coord: CoordinatorHandle;
    let CHAT_ID: string;

    before(async () => {
      const model = await testModel('tiny');
      CHAT_ID = idOf(model);
      // No workers: the model's kind comes from its header, read before anything is loaded.
      coord = await startCoordinator(model, [], ['--api-key', 'open-sesame'], { waitServing: false, apiKey: 'open-sesame' });
      await coord.waitStatus((s) => s.state !== 'starting' && s.state !== 'planning');
    });
    after(async () => {
      await coord?.stop();
    });

    test('refuses embeddings and rerank naming the model; API keys apply as on every route', async () => {
      const key = { authorization: 'Bearer open-sesame' };
      const embed = await post(coord, '/v1/embeddings', { input: 'x' }, key);
      assert.equal(embed.status, 400);
      assert.match(embed.json.error.message, new RegExp(`model: '${CHAT_ID}' is a text generation model; this request needs an embedding model`));
      const rerank = await post(coord, '/v1/rerank', { query: 'q', documents: ['d'] }, key);
      assert.equal(rerank.status, 400);
      assert.match(rerank.json.error.message, /is a text generation model; this request needs a reranker model/);
      for (const path of ['/v1/embeddings', '/v1/rerank', '/rerank']) {
        const noKey = await post(coord, path, { input: 'x', query: 'q', documents: ['d'] });
        assert.equal(noKey.status, 401, path);
        assert.equal(noKey.json.error.type, 'authentication_error');
      }
      await assert.rejects(coord.client.embed({ inputs: ['x'] }), /is a text generation model/);
    });
  });
});
