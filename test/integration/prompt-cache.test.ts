// The prompt cache, against a model split over two real workers: a conversation's later turns reuse
// the KV of the earlier ones, give the same greedy text as a coordinator with no cache, and interleaved
// conversations each keep their own sequence.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const WORDS = ['river', 'stone', 'lantern', 'orchard', 'copper', 'meadow', 'harbor', 'thistle', 'ember', 'willow', 'granite', 'falcon', 'saffron', 'glacier', 'timber', 'cobalt'];

/** Deterministic prose of `n` words. */
function prose(n: number, salt: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[(i * 7 + salt * 13 + ((i * i) % 5)) % WORDS.length]!);
  return out.join(' ');
}

interface Turn {
  text: string;
  promptTokens: number;
  cachedTokens: number;
  ttftMs: number;
}

/** One streamed greedy turn: its text, usage and time to the first content token. */
async function turn(openai: OpenAI, messages: ChatCompletionMessageParam[], extra: Record<string, unknown> = {}): Promise<Turn> {
  const started = performance.now();
  let first = 0;
  let text = '';
  let usage: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens?: number } } | null = null;
  const stream = await openai.chat.completions.create({
    model: 'any',
    messages,
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...extra,
  } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.delta.content ?? '';
    if (piece && first === 0) first = performance.now();
    text += piece;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(usage, 'the stream ends with usage');
  return { text, promptTokens: usage.prompt_tokens, cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? -1, ttftMs: (first || performance.now()) - started };
}

/**
 * A conversation of `turns` turns; each later user message is short, as in a chat. `pauseMs`: the time
 * a person takes to read the reply and type the next message.
 */
async function converse(openai: OpenAI, opening: string, turns: number, salt: number, extra: Record<string, unknown> = {}, pauseMs = 0): Promise<Turn[]> {
  const messages: ChatCompletionMessageParam[] = [{ role: 'user', content: opening }];
  const out: Turn[] = [];
  for (let i = 0; i < turns; i++) {
    if (i > 0 && pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    const t = await turn(openai, messages, extra);
    out.push(t);
    messages.push({ role: 'assistant', content: t.text }, { role: 'user', content: `Now turn ${i + 2}: ${prose(6, salt + i)}?` });
  }
  return out;
}

describe('prompt cache', () => {
  const workers: WorkerHandle[] = [];
  let model: string;
  let coord: CoordinatorHandle | null = null;
  const start = async () => {
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--ctx-size', '4096', '--parallel', '4', '--threads', '2']);
    return new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  };

  before(async () => {
    model = await testModel('small');
    workers.push(await startWorker(['--name', 'pc-a']), await startWorker(['--name', 'pc-b']));
  });
  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('later turns of a long chat reuse the earlier KV, and give the text a coordinator without the cache gives', async (t) => {
    let openai = await start();
    const opening = `Read this and answer briefly. ${prose(720, 1)}`;
    // A second between turns: enough for the engine to compute each reply into the cache as the next
    // turn will render it (a few dozen tokens, begun after half a second of idleness), while the person reads.
    const cachedRun = await converse(openai, opening, 4, 1, {}, 1000);
    const [first, ...later] = cachedRun;
    t.diagnostic(`TTFT by turn (ms): ${cachedRun.map((x) => x.ttftMs.toFixed(0)).join(', ')}; prompt tokens ${cachedRun.map((x) => x.promptTokens).join(', ')}; cached ${cachedRun.map((x) => x.cachedTokens).join(', ')}`);
    assert.ok(cachedRun.every((x) => x.text.length > 0), 'every turn says something');
    assert.ok(first!.promptTokens >= 1400 && first!.promptTokens <= 1800, `first prompt is ~1,500 tokens: ${first!.promptTokens}`);
    assert.equal(first!.cachedTokens, 0, 'nothing cached on a fresh coordinator');
    for (const [i, t] of later.entries()) {
      const before = cachedRun[i]!;
      // The previous prompt and the previous reply, re-rendered, are reused: only the new message is computed
      // (alone, as a fresh run computes a short last message).
      assert.ok(t.cachedTokens >= before.promptTokens + 8, `turn ${i + 2} reused ${t.cachedTokens} of ${t.promptTokens} tokens (previous prompt ${before.promptTokens}, reply included?)`);
      assert.ok(t.promptTokens - t.cachedTokens < 64, `turn ${i + 2} computed ${t.promptTokens - t.cachedTokens} tokens: more than its new message`);
      assert.ok(t.ttftMs <= 0.2 * first!.ttftMs, `turn ${i + 2} TTFT ${t.ttftMs.toFixed(0)} ms vs first turn ${first!.ttftMs.toFixed(0)} ms`);
    }
    const metrics = await (await fetch(`${coord!.http}/metrics`)).text();
    const cached = metric(metrics, 'hearth_prompt_tokens_cached_total');
    const processed = metric(metrics, 'hearth_prompt_tokens_processed_total');
    assert.equal(cached, later.reduce((s, t) => s + t.cachedTokens, 0));
    assert.equal(cached + processed, metric(metrics, 'hearth_prompt_tokens_total'));

    // A re-plan that reloads starts a new engine: the cache is gone, and nothing fails.
    await coord!.client.replan({ forceReload: true });
    await coord!.waitStatus();
    const afterReplan = await turn(openai, [{ role: 'user', content: opening }]);
    assert.equal(afterReplan.cachedTokens, 0, 'a new engine has an empty cache');
    assert.equal(afterReplan.text, first!.text);

    // A fresh coordinator, told not to use its cache, processes every prompt whole.
    await coord!.stop();
    openai = await start();
    const uncached = await converse(openai, opening, 4, 1, { cache_prompt: false });
    assert.deepEqual(uncached.map((t) => t.cachedTokens), [0, 0, 0, 0]);
    assert.deepEqual(uncached.map((t) => t.text), cachedRun.map((t) => t.text), 'the same greedy text with and without the cache');
  });

  test('four conversations interleaved each keep their own cache', async () => {
    const openai = coord ? new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 }) : await start();
    const openings = [0, 1, 2, 3].map((c) => `Conversation ${c}. ${prose(300, 10 + c)}`);
    const runs = await Promise.all(openings.map((o, c) => converse(openai, o, 3, 20 + c)));
    for (const [c, run] of runs.entries()) {
      for (let i = 1; i < run.length; i++) {
        // Sent as soon as the reply ends: the whole previous prompt, and the reply's generated tokens as far
        // as they match its rendering, as llama-server reuses them.
        assert.ok(run[i]!.cachedTokens >= run[i - 1]!.promptTokens, `conversation ${c} turn ${i + 1} reused ${run[i]!.cachedTokens} of ${run[i]!.promptTokens} (previous prompt ${run[i - 1]!.promptTokens})`);
      }
    }
  });
});
