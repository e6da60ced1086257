// The scheduler's admission around a fake model and context: what happens to a request, its sampler and
// its sequence when admitting it fails. (Decoding itself is tested against real models in test/integration.)
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import type { LlamaContext, LlamaModel } from '../../native/llama.js';
import { PromptCache, type SequenceCells } from '../../coordinator/engine/prompt-cache.js';
import type { FromEngine, GenerateParams } from '../../coordinator/engine/protocol.js';
import { Scheduler } from '../../coordinator/engine/scheduler.js';

/** The token the fake model ends a generation with. */
const EOG = 0;

const PARAMS: GenerateParams = {
  maxTokens: 4,
  sampling: { temperature: 0, topK: 40, topP: 1, minP: 0, repeatPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, seed: 1, greedy: true, ignoreEos: false },
  stop: [],
  constraint: null,
  logprobs: null,
  cachePrompt: true,
};

class FakeSampler {
  disposed = 0;
  constructor(readonly failAccept: boolean) {}
  accept(): void {
    if (this.failAccept) throw new Error('the sampler cannot take these tokens');
  }
  dispose(): void {
    this.disposed++;
  }
}

/** A model whose every reply ends at once, and a one-sequence context whose KV removal can be made to fail. */
function fakes() {
  const samplers: FakeSampler[] = [];
  const state = { failAccept: false, failRemove: false };
  const model = {
    chatTemplates: () => ({}),
    tokenize: (text: string) => Int32Array.from(text, (c) => c.charCodeAt(0)),
    createSampler: () => {
      const s = new FakeSampler(state.failAccept);
      samplers.push(s);
      return s;
    },
    isEndOfGeneration: (token: number) => token === EOG,
    tokenToPiece: (token: number) => Buffer.from(String.fromCharCode(token)),
  } as unknown as LlamaModel;
  const cells = {
    info: { nSeqMax: 1, nCtxSeq: 256, nBatch: 512, nUbatch: 512, nSwa: 0 },
    removeSequence: () => {
      if (state.failRemove) throw new Error('llama_memory_seq_rm failed');
      return true;
    },
    holdsPrefixFor: () => true,
    decode: async (batch: { samples: unknown[] }) => Int32Array.from(batch.samples, () => EOG),
    logprobs: () => null,
  };
  return { model, ctx: cells as unknown as LlamaContext, cells: cells as SequenceCells, samplers, state };
}

/** The first answer (done or request-error) to request `id`, within a second. */
async function answer(messages: FromEngine[], id: string): Promise<FromEngine> {
  for (let waited = 0; waited < 1000; waited += 5) {
    const m = messages.find((m) => (m.type === 'done' || m.type === 'request-error') && m.id === id);
    if (m) return m;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no answer to ${id}`);
}

describe('scheduler admission', () => {
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  beforeEach(() => {
    rejections.length = 0;
    process.on('unhandledRejection', onRejection);
  });
  afterEach(() => {
    process.off('unhandledRejection', onRejection);
  });

  test('a request runs to its end on the fakes', async () => {
    const { model, ctx, samplers } = fakes();
    const messages: FromEngine[] = [];
    new Scheduler(model, ctx, (m) => messages.push(m)).submit('a', { kind: 'text', text: 'hello' }, PARAMS);
    const done = await answer(messages, 'a');
    assert.equal(done.type, 'done');
    assert.deepEqual(samplers.map((s) => s.disposed), [1]);
    assert.deepEqual(rejections, []);
  });

  test('a sampler whose penalties cannot be primed is freed, and only its request fails', async () => {
    const { model, ctx, samplers, state } = fakes();
    const messages: FromEngine[] = [];
    const scheduler = new Scheduler(model, ctx, (m) => messages.push(m));
    state.failAccept = true;
    scheduler.submit('a', { kind: 'text', text: 'hello' }, { ...PARAMS, sampling: { ...PARAMS.sampling, repeatPenalty: 1.1 } });
    const failed = await answer(messages, 'a');
    assert.equal(failed.type, 'request-error');
    assert.match(failed.type === 'request-error' ? failed.message : '', /cannot take these tokens/);
    assert.deepEqual(samplers.map((s) => s.disposed), [1], 'the sampler is freed');
    state.failAccept = false;
    scheduler.submit('b', { kind: 'text', text: 'hello' }, PARAMS);
    assert.equal((await answer(messages, 'b')).type, 'done');
    assert.deepEqual(rejections, []);
  });

  test('a sequence that cannot be claimed fails only its request, and goes back to the free ones', async () => {
    const { model, ctx, samplers, state } = fakes();
    const messages: FromEngine[] = [];
    const scheduler = new Scheduler(model, ctx, (m) => messages.push(m));
    state.failRemove = true;
    scheduler.submit('a', { kind: 'text', text: 'hello' }, PARAMS);
    const failed = await answer(messages, 'a');
    assert.equal(failed.type, 'request-error');
    assert.match(failed.type === 'request-error' ? failed.message : '', /could not clear KV cache sequence 0 .*seq_rm failed/);
    assert.deepEqual(samplers.map((s) => s.disposed), [1], 'the sampler is freed');
    assert.equal(scheduler.active, 0);
    // The one sequence is free again, and the loop still runs.
    state.failRemove = false;
    scheduler.submit('b', { kind: 'text', text: 'hello' }, PARAMS);
    assert.equal((await answer(messages, 'b')).type, 'done');
    assert.deepEqual(rejections, [], 'nothing escapes the loop');
  });
});

describe('prompt cache claims', () => {
  test('a claim that fails gives its sequence back, empty', () => {
    const { cells, state } = fakes();
    const cache = new PromptCache(cells);
    state.failRemove = true;
    assert.throws(() => cache.claim(Int32Array.from([1, 2, 3]), true), /seq_rm failed/);
    assert.equal(cache.freeSequences, 1);
    state.failRemove = false;
    assert.deepEqual(cache.claim(Int32Array.from([1, 2, 3]), true), { seq: 0, cached: 0 });
    assert.equal(cache.freeSequences, 0);
  });
});
