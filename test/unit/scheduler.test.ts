// The scheduler's admission around a fake model and context (what happens to a request, its sampler and
// its sequence when admitting it fails), and the speculator around fake drafters. Decoding itself is
// tested against real models in test/integration.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import type { LlamaContext, LlamaModel, Sampler } from '../../native/llama.js';
import type { Drafter } from '../../coordinator/engine/drafter.js';
import type { PreparedRequest } from '../../coordinator/engine/prepare-request.js';
import { PromptCache, type SequenceCells } from '../../coordinator/engine/prompt-cache.js';
import type { FromEngine, GenerateParams, SpeculationSettings } from '../../coordinator/engine/protocol.js';
import { Scheduler } from '../../coordinator/engine/scheduler.js';
import { openSlot, type Slot } from '../../coordinator/engine/slot.js';
import { Speculator } from '../../coordinator/engine/speculator.js';

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

  /** A scheduler on the fakes, and what it sends. */
  function start() {
    const f = fakes();
    const messages: FromEngine[] = [];
    return { ...f, messages, scheduler: new Scheduler(f.model, f.ctx, (m) => messages.push(m)) };
  }

  /**
   * With `failure` set, request a (with `params`) fails with `message` and its sampler is freed; then,
   * the failure gone, request b runs to its end on the same (only) sequence, and nothing escaped the loop.
   */
  async function failsAlone(failure: 'failAccept' | 'failRemove', params: GenerateParams, message: RegExp): Promise<void> {
    const { scheduler, messages, samplers, state } = start();
    state[failure] = true;
    scheduler.submit('a', { kind: 'text', text: 'hello' }, params);
    const failed = await answer(messages, 'a');
    assert.equal(failed.type, 'request-error');
    assert.match(failed.type === 'request-error' ? failed.message : '', message);
    assert.deepEqual(samplers.map((s) => s.disposed), [1], 'the sampler is freed');
    assert.equal(scheduler.active, 0);
    state[failure] = false;
    scheduler.submit('b', { kind: 'text', text: 'hello' }, PARAMS);
    assert.equal((await answer(messages, 'b')).type, 'done');
    assert.deepEqual(rejections, [], 'nothing escapes the loop');
  }

  test('a request runs to its end on the fakes', async () => {
    const { scheduler, messages, samplers } = start();
    scheduler.submit('a', { kind: 'text', text: 'hello' }, PARAMS);
    assert.equal((await answer(messages, 'a')).type, 'done');
    assert.deepEqual(samplers.map((s) => s.disposed), [1]);
    assert.deepEqual(rejections, []);
  });

  test('a sampler whose penalties cannot be primed is freed, and only its request fails', async () => {
    await failsAlone('failAccept', { ...PARAMS, sampling: { ...PARAMS.sampling, repeatPenalty: 1.1 } }, /cannot take these tokens/);
  });

  test('a sequence that cannot be claimed fails only its request, and goes back to the free ones', async () => {
    await failsAlone('failRemove', PARAMS, /could not clear KV cache sequence 0 .*seq_rm failed/);
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

describe('speculator: drafters in order', () => {
  const SETTINGS: SpeculationSettings = { draftModel: null, draftWorker: null, ngram: 3, draftMax: 4, draftMin: 2, pMin: 0, maxSequences: 4, tune: false };

  /** A drafter that answers from a table and records what it was asked. */
  function drafter(table: Record<number, number[]>, fail = false) {
    const d: Drafter & { asked: number[][]; resets: number[] } = {
      asked: [],
      resets: [],
      stepSeconds: 0,
      async draft(requests) {
        d.asked.push(requests.map((r) => r.seq));
        if (fail) throw new Error('the draft context is gone');
        return new Map(requests.map((r) => [r.seq, (table[r.seq] ?? []).slice(0, r.max)]));
      },
      reset: (seq) => d.resets.push(seq),
    };
    return d;
  }

  /** A slot generating in sequence `seq`. */
  function generating(seq: number, speculation: Speculator): Slot {
    const r: PreparedRequest = { id: `r${seq}`, prompt: Int32Array.from([1, 2, 3, 4]), resumed: 0, params: PARAMS, grammar: {}, stops: [], parser: null, chat: null };
    const slot = openSlot(r, seq, 0, new FakeSampler(false) as unknown as Sampler, speculation.limitsFor(PARAMS), () => new Uint8Array());
    slot.phase = { kind: 'generating', pending: 7 };
    return slot;
  }

  test('the next drafter is asked only for the drafts that fell short of the minimum', async () => {
    const lookup = drafter({ 0: [1, 2, 3], 1: [9] });
    const model = drafter({ 1: [5, 6, 7, 8, 9] });
    const speculator = new Speculator({ settings: SETTINGS, drafters: [lookup, model], tuner: null }, () => {});
    const slots = [generating(0, speculator), generating(1, speculator)];
    const drafts = await speculator.drafts(slots, 256);
    assert.deepEqual([...drafts].map(([s, d]) => [s.seq, d]), [[0, [1, 2, 3]], [1, [5, 6, 7]]], 'within maxTokens - 1');
    assert.deepEqual(lookup.asked, [[0, 1]]);
    assert.deepEqual(model.asked, [[1]]);
  });

  test("a drafter that fails resets its sequences and keeps the earlier drafters' drafts", async () => {
    const warnings: string[] = [];
    const lookup = drafter({ 0: [1, 2, 3] });
    const model = drafter({}, true);
    const speculator = new Speculator({ settings: SETTINGS, drafters: [lookup, model], tuner: null }, (msg) => warnings.push(msg));
    const drafts = await speculator.drafts([generating(0, speculator), generating(1, speculator)], 256);
    assert.deepEqual([...drafts].map(([s, d]) => [s.seq, d]), [[0, [1, 2, 3]]]);
    assert.deepEqual(model.resets, [1]);
    assert.match(warnings.join('\n'), /drafting failed, this step decodes without a draft: the draft context is gone/);
  });
});
