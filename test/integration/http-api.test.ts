// The OpenAI-compatible HTTP API, driven with the official `openai` client against a real coordinator
// with real workers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { expectApiError, metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { freePort } from '../helpers/rpc-server.js';
import { readyHealth, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const GREEDY = { temperature: 0 } as const;

describe('OpenAI-compatible HTTP API', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let openai: OpenAI;
  let modelPath: string;

  before(async () => {
    const model = await testModel('tiny');
    modelPath = model;
    workers.push(await startWorker(['--name', 'w-a']), await startWorker(['--name', 'w-b']));
    coord = await startCoordinator(model, workers.map((w) => w.control));
    openai = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('lists the model', async () => {
    const models = await openai.models.list();
    assert.equal(models.data.length, 1);
    // Named by its file, as the model list in cluster.yaml names it by default.
    assert.equal(models.data[0]!.id, basename(modelPath, '.gguf'));
    assert.equal(models.data[0]!.owned_by, 'hearth');
    assert.equal((models.data[0] as unknown as { status: string }).status, 'loaded');
  });

  test('a chat completion, and the same one streamed to the end in OpenAI shape', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about hearths.' }];
    const full = await openai.chat.completions.create({ model: 'any', messages, max_tokens: 16, ...GREEDY });
    assert.equal(full.object, 'chat.completion');
    assert.equal(full.choices.length, 1);
    assert.equal(full.choices[0]!.message.role, 'assistant');
    assert.ok(full.choices[0]!.message.content!.length > 0);
    assert.equal(full.choices[0]!.finish_reason, 'length');
    assert.equal(full.usage!.completion_tokens, 16);
    assert.equal(full.usage!.total_tokens, full.usage!.prompt_tokens + 16);

    const stream = await openai.chat.completions.create({ model: 'any', messages, max_tokens: 16, ...GREEDY, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant', 'role first');
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id throughout');
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    assert.equal(content, full.choices[0]!.message.content);
    const withFinish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(withFinish.length, 1);
    assert.equal(withFinish[0]!.choices[0]!.finish_reason, 'length');
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, [], 'usage chunk last, with no choices');
    assert.equal(last.usage!.completion_tokens, 16);
  });

  test('a completion, plain and streamed', async () => {
    const plain = await openai.completions.create({ model: 'any', prompt: 'Once upon a time', max_tokens: 12, ...GREEDY });
    assert.equal(plain.object, 'text_completion');
    assert.equal(plain.choices[0]!.finish_reason, 'length');
    const stream = await openai.completions.create({ model: 'any', prompt: 'Once upon a time', max_tokens: 12, ...GREEDY, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.text ?? '';
    assert.equal(text, plain.choices[0]!.text);
  });

  test('stop strings are never emitted, even across tokens; seeds reproduce; unknown fields are ignored', async () => {
    const base = { model: 'any', prompt: 'The recipe calls for two cups of', max_tokens: 24, ...GREEDY };
    const full = (await openai.completions.create(base)).choices[0]!.text;
    const stop = full.slice(5, 11);
    const cut = await openai.completions.create({ ...base, stop: [stop] });
    assert.equal(cut.choices[0]!.finish_reason, 'stop');
    assert.equal(cut.choices[0]!.text, full.slice(0, full.indexOf(stop)));
    const streamed = await openai.completions.create({ ...base, stop, stream: true });
    let text = '';
    for await (const c of streamed) text += c.choices[0]?.text ?? '';
    assert.equal(text, full.slice(0, full.indexOf(stop)));

    const seeded = { model: 'any', prompt: 'Dear diary', max_tokens: 12, temperature: 1.2, seed: 7 };
    const a = await openai.completions.create(seeded);
    const b = await openai.completions.create(seeded);
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);

    // llama-server's ignore_eos extension: exactly max_tokens, end-of-generation never chosen.
    const exact = await openai.completions.create({ model: 'any', prompt: 'A hearth is', max_tokens: 40, ...GREEDY, ignore_eos: true } as never);
    assert.equal(exact.usage!.completion_tokens, 40);
    assert.equal(exact.choices[0]!.finish_reason, 'length');

    const extras = await openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, user: 'someone', parallel_tool_calls: false, vendor_extra: { x: 1 } } as never);
    assert.equal(extras.choices.length, 1);
  });

  test('bad requests are 4xx in OpenAI shape, naming the field', async () => {
    const chat = (body: object) => openai.chat.completions.create({ model: 'any', max_tokens: 2, ...body } as never);
    await expectApiError(chat({ messages: undefined }), 400, 'invalid_request_error', /messages: required/);
    await expectApiError(chat({ messages: 'hello' }), 400, 'invalid_request_error', /messages: must be a non-empty array/);
    await expectApiError(chat({ messages: [123] }), 400, 'invalid_request_error', /messages\[0\]: must be an object/);
    await expectApiError(chat({ messages: [{}] }), 400, 'invalid_request_error', /messages\[0\]\.role: must be a string/);
    await expectApiError(chat({ messages: [{ role: 123, content: 'x' }] }), 400, 'invalid_request_error', /messages\[0\]\.role/);
    await expectApiError(chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: -5 }), 400, 'invalid_request_error', /max_tokens: must be between 1 and/);
    await expectApiError(chat({ messages: [{ role: 'user', content: 'x' }], temperature: -1 }), 400, 'invalid_request_error', /temperature: must be between 0 and 5/);
    await expectApiError(chat({ messages: [{ role: 'user', content: 'x' }], top_p: 2 }), 400, 'invalid_request_error', /top_p: must be between 0 and 1/);
    await expectApiError(chat({ messages: [{ role: 'user', content: 'x' }], n: 5 }), 400, 'invalid_request_error', /n: only 1 choice/);
    await expectApiError(chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: 1e9 }), 400, 'invalid_request_error', /max_tokens/);
    await expectApiError(
      openai.completions.create({ model: 'any', prompt: 'word '.repeat(700), max_tokens: 4 }),
      400,
      'invalid_request_error',
      /exceeds the available context size of 512 tokens/,
    );
    await expectApiError(
      openai.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: 'word '.repeat(700) }], max_tokens: 4, stream: true }),
      400,
      'invalid_request_error',
      /exceeds the available context size/,
    );

    const raw = async (body: string, contentType = 'application/json') => {
      const r = await fetch(`${coord.http}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': contentType }, body });
      return { status: r.status, json: (await r.json()) as { error: { type: string; message: string } } };
    };
    for (const body of ['{not json', '[]', '42', 'null', '']) {
      const r = await raw(body);
      assert.equal(r.status, 400, `${body}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.type, 'invalid_request_error');
    }
    const big = await raw(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(5 * 1024 * 1024) }] }));
    assert.equal(big.status, 413);
    assert.match(big.json.error.message, /larger than the limit/);
    const textPlain = await raw(JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }), 'text/plain');
    assert.equal(textPlain.status, 200, 'the body is JSON whatever the content type says');
  });

  test('/metrics counters move with requests, and /health says ok', async () => {
    const health = await fetch(`${coord.http}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'ok');
    const before = await (await fetch(`${coord.http}/metrics`)).text();
    await openai.completions.create({ model: 'any', prompt: 'Counting', max_tokens: 5, ...GREEDY });
    const afterText = await (await fetch(`${coord.http}/metrics`)).text();
    assert.equal(metric(afterText, 'hearth_generated_tokens_total') - metric(before, 'hearth_generated_tokens_total'), 5);
    assert.ok(metric(afterText, 'hearth_prompt_tokens_total') > metric(before, 'hearth_prompt_tokens_total'));
    assert.ok(metric(afterText, 'hearth_requests_total', 'outcome="length"') > (metric(before, 'hearth_requests_total', 'outcome="length"') || 0));
    assert.ok(metric(afterText, 'hearth_time_to_first_token_seconds_count') > (metric(before, 'hearth_time_to_first_token_seconds_count') || 0));
    assert.ok(metric(afterText, 'hearth_generation_tokens_per_second') > 0);
    assert.equal(metric(afterText, 'hearth_model_load_progress'), 1);
    assert.equal(metric(afterText, 'hearth_state', 'state="serving"'), 1);
    assert.match(afterText, /hearth_worker_up\{worker="w-a",endpoint="127\.0\.0\.1:\d+"\} 1/);
    assert.match(afterText, /hearth_worker_free_bytes\{worker="w-b"/);
    assert.match(afterText, /hearth_requests_waiting 0/);
  });

  test('aborting a stream frees its slot: the in-flight gauge is back to 0 within a second', async () => {
    const controller = new AbortController();
    // A prompt whose greedy continuation runs the full 480 tokens (no end-of-generation token).
    const stream = await openai.completions.create(
      { model: 'any', prompt: 'The quick brown fox jumps over the lazy dog because', max_tokens: 480, ...GREEDY, stream: true },
      { signal: controller.signal },
    );
    let n = 0;
    let inFlight = NaN;
    // The SDK ends the iteration quietly (or throws an abort error, depending on timing) once aborted.
    try {
      for await (const _ of stream) {
        if (++n === 3) {
          inFlight = metric(await (await fetch(`${coord.http}/metrics`)).text(), 'hearth_requests_in_flight');
          controller.abort();
        }
      }
    } catch (e) {
      assert.ok(controller.signal.aborted, String(e));
    }
    assert.equal(inFlight, 1, 'busy while streaming');
    assert.ok(n < 100, `stopped early (${n} chunks)`);
    const aborted = Date.now();
    await waitFor('in-flight 0', async () => metric(await (await fetch(`${coord.http}/metrics`)).text(), 'hearth_requests_in_flight') === 0, 1000, 50);
    assert.ok(Date.now() - aborted <= 1000);
  });
});

describe('HTTP API: keys, health and failures', () => {
  test('API keys: 401 in OpenAI shape without one, served with one; /health stays public', async () => {
    const model = await testModel('tiny');
    const w = await startWorker(['--name', 'w-a']);
    const coord = await startCoordinator(model, [w.control], ['--api-key', 'secret-key-1', '--api-key', 'secret-key-2'], { apiKey: 'secret-key-1' });
    try {
      const anon = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
      await expectApiError(anon.models.list(), 401, 'authentication_error', /invalid API key/);
      const missing = await fetch(`${coord.http}/v1/models`);
      assert.equal(missing.status, 401);
      assert.match(((await missing.json()) as { error: { message: string } }).error.message, /missing API key/);
      const ok = new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'secret-key-2', maxRetries: 0 });
      assert.equal((await ok.models.list()).data.length, 1);
      assert.equal((await fetch(`${coord.http}/health`)).status, 200);
      assert.doesNotMatch(coord.logs(), /secret-key/, 'keys never reach the log');
    } finally {
      await coord.stop();
      await w.stop();
    }
  });

  test('a stream that waits for a slot gets its headers, then keep-alive pings, before its first token', async () => {
    // One slot, busy with a long request: the second one waits in the queue.
    const model = await testModel('small');
    const w = await startWorker(['--name', 'w-a']);
    const dir = mkdtempSync(join(tmpdir(), 'hearth-ping-'));
    writeFileSync(join(dir, 'cluster.yaml'), 'ssePingSeconds: 1\n');
    // A context long enough that the busy request outlasts the 2 s before headers plus a ping or two,
    // however fast this machine is today.
    const coord = await startCoordinator(model, [w.control], ['--parallel', '1', '--ctx-size', '2048', '--config', join(dir, 'cluster.yaml')]);
    try {
      const body = (prompt: string, maxTokens: number) =>
        JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true });
      const post = (b: string) => fetch(`${coord.http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: b });
      const first = post(body('Once upon a time', 1500));
      await new Promise((r) => setTimeout(r, 200));
      const started = Date.now();
      const second = await post(body('Meanwhile', 4));
      assert.equal(second.status, 200);
      const text = await second.text();
      const firstPing = text.indexOf(': ping');
      const firstData = text.indexOf('data: {');
      assert.ok(firstPing >= 0 && firstPing < firstData, `pings before the first token: ${text.slice(0, 200)}`);
      assert.ok(Date.now() - started > 2000, 'it really waited past the 2 s before headers go out');
      assert.ok(text.trimEnd().endsWith('data: [DONE]'));
      await (await first).text();
    } finally {
      await coord.stop();
      await w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('/health is 503 with a reason when no worker can serve', async () => {
    const model = await testModel('tiny');
    const dead = await freePort();
    const coord = await startCoordinator(model, [`127.0.0.1:${dead}`], [], { waitServing: false });
    try {
      await coord.waitStatus((s) => s.state === 'degraded');
      const r = await fetch(`${coord.http}/health`);
      assert.equal(r.status, 503);
      const body = (await r.json()) as { error: { type: string; message: string } };
      assert.equal(body.error.type, 'unavailable_error');
      assert.match(body.error.message, /no devices to place the model on/);
    } finally {
      await coord.stop();
    }
  });

  test('a worker lost mid-stream, with resumes off (--max-resumes 0), ends the stream with an error chunk, then [DONE]', async () => {
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    const coord = await startCoordinator(model, [a.control, b.control], ['--max-resumes', '0']);
    try {
      const victim = await readyHealth(b.client);
      const r = await fetch(`${coord.http}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Keep talking.' }], max_tokens: 480, temperature: 0, stream: true }),
      });
      assert.equal(r.status, 200);
      const reader = r.body!.getReader();
      let text = '';
      let killed = false;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
        if (!killed && (text.match(/"content"/g) ?? []).length > 4) {
          process.kill(victim.rpc_server_pid, 'SIGKILL');
          killed = true;
        }
      }
      const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
      assert.equal(events.at(-1), '[DONE]');
      const error = JSON.parse(events.at(-2)!) as { error: { type: string; message: string } };
      assert.equal(error.error.type, 'unavailable_error');
      assert.match(error.error.message, /worker w-b \(127\.0\.0\.1:\d+\) lost its rpc server/);
      await coord.waitStatus((s) => s.state === 'serving' && s.load.loads >= 2);
    } finally {
      await coord.stop();
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
