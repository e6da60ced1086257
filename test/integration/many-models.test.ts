// Several models on one cluster, as users run it: real workers (each lending 300 MiB, so that the
// pinned model and one more fit, not two more), a real coordinator serving the models of a
// cluster.yaml, real gRPC and the official `openai` client. Each answer must equal its own model's
// one-process reference; on-demand models load at their first request and leave when idle or when
// another needs their memory, least recently used first, never while they generate; the pinned
// model stays loaded throughout.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import OpenAI from 'openai';

import type { WireModelStatus, WireStatus } from '../../coordinator/wire.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, GREEDY, PROMPTS, referenceRuns, type GreedyRun } from '../helpers/generate.js';
import { expectApiError, metric } from '../helpers/http-api.js';
import { cosine, llamaEmbedding, referenceEmbeddings } from '../helpers/llama-embedding.js';
import { testModel } from '../helpers/models.js';
import { runCli, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const model = (s: WireStatus, id: string): WireModelStatus => {
  const m = s.models.find((x) => x.id === id);
  assert.ok(m, `model ${id} in the status (${s.models.map((x) => x.id).join(', ')})`);
  return m;
};

describe('several models on one cluster', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let openai: OpenAI;
  let dir: string;
  const refs: Record<string, GreedyRun[]> = {};
  let embedPath: string;
  let embedRefs: number[][];
  const N = 16;

  before(async () => {
    const paths = { big: await testModel('small'), tiny: await testModel('tiny'), qwen: await testModel('qwen3') };
    for (const [id, path] of Object.entries(paths)) refs[id] = await referenceRuns(path, PROMPTS.slice(0, 2), N);
    embedPath = await testModel('embed');
    await llamaEmbedding();
    embedRefs = [];
    for (const p of PROMPTS.slice(0, 2)) embedRefs.push((await referenceEmbeddings(embedPath, [p], { normalize: 2 }))[0]!);
    dir = mkdtempSync(join(tmpdir(), 'hearth-models-'));
    const config = join(dir, 'cluster.yaml');
    writeFileSync(
      config,
      [
        'reserveMiB: 0',
        // This test is about memory between models: whole layers keep each model's footprint what the
        // assertions count on (a tensor split would spread a small model over both workers).
        'split: layer',
        'models:',
        `  - { model: ${paths.big}, id: big, aliases: [default-chat] }`,
        `  - { model: ${paths.tiny}, id: tiny, policy: on-demand, idle: 10m }`,
        `  - { model: ${paths.qwen}, id: qwen, policy: on-demand, idle: 4s }`,
        `  - { model: ${embedPath}, id: embed }`,
        // Its KV cache alone is over a GiB: it fits nowhere, whatever else is unloaded.
        `  - { model: ${paths.tiny}, id: huge-context, ctxSize: 262144 }`,
        '',
      ].join('\n'),
    );
    // 300 MiB each: the pinned model split over both, and room beside it for one of the others.
    for (const name of ['w-a', 'w-b']) workers.push(await startWorker(['--name', name, '--memory', '300MiB']));
    coord = await startCoordinator(null, workers.map((w) => w.control), ['--config', config]);
    openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the pinned model is loaded across both workers; the on-demand ones are listed on disk', async () => {
    const s = await coord.client.getStatus();
    assert.deepEqual(s.models.map((m) => [m.id, m.kind, m.policy, m.status]), [
      ['big', 'chat', 'pinned', 'loaded'], ['tiny', 'chat', 'on-demand', 'on disk'], ['qwen', 'chat', 'on-demand', 'on disk'],
      ['embed', 'embedding', 'on-demand', 'on disk'], ['huge-context', 'chat', 'on-demand', 'on disk'],
    ]);
    assert.ok(s.events.some((e) => /model huge-context does not fit these workers even alone/.test(e.message)), 'said at start');
    assert.equal(model(s, 'big').plan.devices.filter((d) => d.layers > 0).length, 2, 'the pinned model is split over both workers');
    const list = await openai.models.list();
    assert.deepEqual(list.data.map((m) => [m.id, (m as unknown as { status: string }).status]), [['big', 'loaded'], ['tiny', 'on disk'], ['qwen', 'on disk'], ['embed', 'on disk'], ['huge-context', 'on disk']]);
  });

  test('a request loads an on-demand model; requests alternating between models each equal their own reference', async () => {
    const first = await coord.client.generate(PROMPTS[0]!, { model: 'tiny', maxTokens: N, sampling: GREEDY });
    assertGreedyMatches(first.tokens, refs.tiny![0]!, 'tiny, loaded on demand');
    for (let round = 0; round < 2; round++) {
      for (const id of ['big', 'tiny', 'default-chat'] as const) {
        const out = await coord.client.generate(PROMPTS[round]!, { model: id, maxTokens: N, sampling: GREEDY });
        assertGreedyMatches(out.tokens, refs[id === 'default-chat' ? 'big' : id]![round]!, `${id}, round ${round}`);
      }
    }
    // The default model answers a request that names none, and OpenAI's answers name the model by id.
    const none = await coord.client.generate(PROMPTS[1]!, { maxTokens: N, sampling: GREEDY });
    assertGreedyMatches(none.tokens, refs.big![1]!, 'no model named');
    const viaOpenAi = await openai.completions.create({ model: 'default-chat', prompt: PROMPTS[0]!, max_tokens: 4, temperature: 0 });
    assert.equal(viaOpenAi.model, 'big');
    const s = await coord.client.getStatus();
    assert.equal(model(s, 'tiny').status, 'loaded');
    assert.ok(s.events.some((e) => /tiny: model tiny was asked for: loading it/.test(e.message)), 'the load on demand is an event');
  });

  test('a chat model and an embedding model in turn: each answer equals its own reference', async () => {
    for (let round = 0; round < 2; round++) {
      const chat = await coord.client.generate(PROMPTS[round]!, { model: 'big', maxTokens: N, sampling: GREEDY });
      assertGreedyMatches(chat.tokens, refs.big![round]!, `big, round ${round}`);
      const e = await openai.embeddings.create({ model: 'embed', input: PROMPTS.slice(0, 2) });
      e.data.forEach((d, i) => assert.ok(cosine(d.embedding, embedRefs[i]!) >= 0.9999, `embedding ${i}, round ${round}: cosine ${cosine(d.embedding, embedRefs[i]!)} with llama.cpp's`));
      assert.equal(e.model, 'embed');
    }
    // An embeddings request to a chat model, and a chat request to the embedding model, are refused naming it.
    await expectApiError(openai.embeddings.create({ model: 'big', input: 'x' }), 400, 'invalid_request_error', /'big' is a text generation model; this request needs an embedding model/);
    await expectApiError(openai.chat.completions.create({ model: 'embed', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }), 400, 'invalid_request_error', /'embed' is an embedding model/);
  });

  test('requests to two loaded models progress side by side', async () => {
    // tiny made way for the embedding model: it is loaded again first, so that both are in memory.
    await coord.client.generate(PROMPTS[0]!, { model: 'tiny', maxTokens: 1 });
    const arrivals: Record<string, number[]> = { big: [], tiny: [] };
    const run = (id: 'big' | 'tiny') =>
      coord.client.generate(PROMPTS[2]!, { model: id, maxTokens: 48, sampling: { ...GREEDY, ignore_eos: true }, onChunk: (_t, tokens) => tokens.forEach(() => arrivals[id]!.push(performance.now())) });
    const [a, b] = await Promise.all([run('big'), run('tiny')]);
    assert.equal(a.tokens.length, 48);
    assert.equal(b.tokens.length, 48);
    // Each got tokens while the other was still generating: neither waited for the other to finish.
    assert.ok(arrivals.tiny![0]! < arrivals.big!.at(-1)!, 'tiny started before big finished');
    assert.ok(arrivals.big![0]! < arrivals.tiny!.at(-1)!, 'big started before tiny finished');
  });

  test('a third model evicts the least recently used on-demand one, after its request in flight ends; the pinned model stays', async () => {
    const before = await coord.client.getStatus();
    const bigLoads = model(before, 'big').load.loads;
    // A long answer from tiny is generating when qwen is asked for: it must end whole.
    const long = coord.client.generate(PROMPTS[3]!, { model: 'tiny', maxTokens: 96, sampling: { ...GREEDY, ignore_eos: true } });
    await waitFor('tiny generating', async () => (await coord.client.getStatus()).models.find((m) => m.id === 'tiny')!.in_flight > 0, 10_000, 20);
    const qwen = await coord.client.generate(PROMPTS[0]!, { model: 'qwen', maxTokens: N, sampling: GREEDY });
    const tinyOut = await long;
    assert.equal(tinyOut.tokens.length, 96, 'the evicted model finished its request first');
    assert.equal(tinyOut.finishReason, 'length');
    assertGreedyMatches(qwen.tokens, refs.qwen![0]!, 'qwen, loaded in tiny\'s place');
    const s = await coord.client.getStatus();
    assert.equal(model(s, 'tiny').status, 'on disk');
    assert.equal(model(s, 'qwen').status, 'loaded');
    assert.equal(model(s, 'big').status, 'loaded');
    assert.equal(model(s, 'big').load.loads, bigLoads, 'the pinned model was never reloaded');
    const metrics = await (await fetch(`${coord.http}/metrics`)).text();
    assert.equal(metric(metrics, 'hearth_model_loaded', 'model="qwen"'), 1);
    assert.equal(metric(metrics, 'hearth_model_loaded', 'model="tiny"'), 0);
    assert.ok(
      s.events.some((e) => /model qwen does not fit beside the loaded models: unloading tiny \(least recently used\) to make room/.test(e.message)),
      `the eviction is an event:\n${s.events.map((e) => e.message).join('\n')}`,
    );
  });

  test('an on-demand model unloads after its idle time, and loads again at its next request', async () => {
    const s = await coord.waitStatus((x) => model(x, 'qwen').status === 'on disk', 20_000);
    assert.ok(s.events.some((e) => /qwen: unloading model qwen: idle for 4 s/.test(e.message)));
    assert.equal(model(s, 'big').status, 'loaded');
    const again = await coord.client.generate(PROMPTS[1]!, { model: 'qwen', maxTokens: N, sampling: GREEDY });
    assertGreedyMatches(again.tokens, refs.qwen![1]!, 'qwen, loaded again');
  });

  test('an unknown model is a 404 naming the models, one that fits nowhere a 400 naming it; status shows every model', async () => {
    await expectApiError(openai.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }), 404, 'not_found_error', /model 'nope' is not served here; the models are: big, tiny, qwen, embed, huge-context/);
    await expectApiError(
      openai.chat.completions.create({ model: 'huge-context', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }),
      400,
      'invalid_request_error',
      /model: 'huge-context' does not fit this cluster, even with every other model unloaded/,
    );
    assert.equal(model(await coord.client.getStatus(), 'big').status, 'loaded', 'nothing was unloaded for it');
    await assert.rejects(coord.client.generate('x', { model: 'nope', maxTokens: 2 }), /NOT_FOUND|not served here/);
    const out = await new Promise<string>((resolve) => {
      const p = runCli(['status', '--coordinator', coord.address]);
      let text = '';
      p.stdout!.on('data', (d: Buffer) => (text += d.toString()));
      p.once('exit', () => resolve(text));
    });
    assert.match(out, /models:/);
    for (const id of ['big', 'tiny', 'qwen']) assert.match(out, new RegExp(`\\b${id}\\b`));
  });

  test('the ollama client picks models by name, lists what is loaded, and loads and unloads an on-demand model', async () => {
    const ollama = new Ollama({ host: coord.http });
    await assert.rejects(ollama.chat({ model: 'llama3.2', messages: [{ role: 'user', content: 'hi' }] }), (e: Error & { status_code?: number }) => {
      assert.equal(e.status_code, 404);
      assert.match(e.message, /model 'llama3\.2' not found; the models served here are: big, .*tiny/);
      return true;
    });
    const tags = await ollama.list();
    assert.deepEqual(tags.models.map((m) => m.name).sort(), ['big', 'default-chat', 'embed', 'huge-context', 'qwen', 'tiny']);
    const chat = await ollama.chat({ model: 'tiny', messages: [{ role: 'user', content: PROMPTS[0]! }], options: { temperature: 0, num_predict: 4 } });
    assert.equal(chat.model, 'tiny');
    assert.ok((await ollama.ps()).models.some((m) => m.name === 'tiny'), 'tiny is loaded after its request');
    const unloaded = await ollama.generate({ model: 'tiny', prompt: '', keep_alive: 0 });
    assert.equal(unloaded.done_reason, 'unload');
    assert.equal(model(await coord.client.getStatus(), 'tiny').status, 'on disk');
    const loaded = await ollama.generate({ model: 'tiny', prompt: '' });
    assert.equal(loaded.done_reason, 'load');
    assert.equal(model(await coord.client.getStatus(), 'tiny').status, 'loaded');
    assert.ok(!(await ollama.ps()).models.some((m) => m.name === 'qwen'), 'qwen made room for tiny');
  });

  test('hearth plan shows each model\'s plan, and which on-demand models take each other\'s place', async () => {
    const p = runCli(['plan', '--config', join(dir, 'cluster.yaml'), '--no-mdns', '--local-device', 'off', '--placement', 'memory', '--ctx-size', '512', '--parallel', '4', ...workers.flatMap((w) => ['--worker', w.control])]);
    let text = '';
    p.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    const code = await new Promise<number | null>((resolve) => p.once('exit', resolve));
    assert.equal(code, 3, `huge-context does not fit, so the plan fails:\n${text}`);
    assert.match(text, /model big \(pinned\)/);
    assert.match(text, /model tiny \(on-demand\), beside the pinned models:[\s\S]*?does not fit beside qwen, embed: loading it unloads them, least recently used first/);
    assert.match(text, /model qwen \(on-demand\), beside the pinned models:[\s\S]*?does not fit beside tiny, embed/);
    assert.match(text, /model huge-context \(on-demand\), beside the pinned models:\n  does not fit/);
  });

  test('refused at start, naming the model: a name given twice, a chat template that does not parse', async () => {
    const refused = async (yaml: string, pattern: RegExp) => {
      const file = join(dir, `bad-${Math.random().toString(36).slice(2)}.yaml`);
      writeFileSync(file, yaml);
      const p = runCli(['coordinator', '--config', file, '--no-mdns', '--grpc-port', '0', '--http-port', '0']);
      let text = '';
      p.stdout!.on('data', (d: Buffer) => (text += d.toString()));
      p.stderr!.on('data', (d: Buffer) => (text += d.toString()));
      const code = await new Promise<number | null>((resolve) => p.once('exit', resolve));
      assert.notEqual(code, 0, text);
      assert.match(text, pattern);
    };
    const tiny = await testModel('tiny');
    await refused(`models:\n  - { model: ${tiny}, id: a }\n  - { model: ${tiny}, id: a }\n`, /models\.1: the model name 'a' is already taken by models\.0/);
    await refused(`models:\n  - { model: ${tiny}, id: t, chatTemplate: "{% if %}" }\n`, /chatTemplate of model t: .*pars/i);
  });
});
