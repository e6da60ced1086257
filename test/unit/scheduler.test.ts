// The scheduler's admission around a fake model and context (what happens to a request, its sampler and
// its sequence when admitting it fails), and the speculator around fake drafters. Decoding itself is
// tested against real models in test/integration.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';

import type { LlamaContext, LlamaModel, Sampler } from '../../native/llama.js';
import type { Drafter } from '../../coordinator/engine/drafter.js';
import type { PreparedRequest } from '../../coordinator/engine/prepare-request.js';
import { lastMessageStart } from '../../coordinator/engine/prepare-request.js';
import { planReuse, PromptCache, type SequenceCells } from '../../coordinator/engine/prompt-cache.js';
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
    assert.deepEqual(cache.claim(Int32Array.from([1, 2, 3]), true), { seq: 0, cached: 0, inexactFrom: null });
    assert.equal(cache.freeSequences, 0);
  });

  /** A 300-token prompt, its cells released with `generated` reply tokens after it. */
  const conversation = (generated: number) => {
    const { cells } = fakes();
    const cache = new PromptCache(cells);
    const prompt = Int32Array.from({ length: 300 }, (_, i) => 1000 + i);
    assert.deepEqual(cache.claim(prompt, true), { seq: 0, cached: 0, inexactFrom: null });
    const held = Int32Array.from([...prompt, ...Array.from({ length: generated }, (_, i) => 5000 + i)]);
    cache.release(0, held, prompt.length, prompt.length);
    return { cache, held };
  };

  test("a chat's next turn takes the reply's generated cells, the rest computed in chunks of any size", () => {
    const { cache, held } = conversation(32);
    // The reply re-tokenized as generated but for its last 2 tokens, then a 40-token new message.
    const next = Int32Array.from([...held.subarray(0, 330), ...Array.from({ length: 42 }, (_, i) => 9000 + i)]);
    assert.equal(cache.cachedPrefix(next, true), 330);
    assert.deepEqual(cache.claim(next, true), { seq: 0, cached: 330, inexactFrom: 300 });
    assert.equal(cache.chunk(42, 512, false), 42, 'no minimum chunk once the cells are not exact');
    assert.equal(cache.chunk(70, 512, true), 70);
    assert.equal(cache.chunk(150, 100, true), 86, 'an exact prompt never leaves fewer than 64 for later');
    assert.equal(cache.chunk(100, 60, true), 0, 'nor takes fewer');
    // The cells after 300 are not exact: a prompt that does not go on from the last one reuses only exact cells.
    cache.release(0, next, 300, next.length);
    assert.deepEqual(cache.claim(next.subarray(0, 340), true), { seq: 0, cached: 276, inexactFrom: null });
  });

  test('the exact rule holds when the generated cells spare only a handful of rows', () => {
    // The reply re-tokenized differently from its third token: 2 generated cells match.
    const { cache, held } = conversation(32);
    const next = Int32Array.from([...held.subarray(0, 302), ...Array.from({ length: 70 }, (_, i) => 9000 + i)]);
    assert.deepEqual(cache.claim(next, true), { seq: 0, cached: 300, inexactFrom: null });
  });

  test("a turn whose short last message begins where the exact cells end computes only that message, alone", () => {
    const { cache } = conversation(0);
    // The warm-up left 340 exact cells (the reply re-rendered and the next message's opening); the turn
    // adds a 30-token message at 340.
    const warmed = Int32Array.from({ length: 340 }, (_, i) => 1000 + i);
    cache.release(0, warmed, 340, 340);
    const next = Int32Array.from([...warmed, ...Array.from({ length: 30 }, (_, i) => 9000 + i)]);
    assert.equal(cache.lastSegment(next.length, 340), 340);
    assert.equal(cache.lastSegment(next.length + 40, 340), null, 'a last message of 64 tokens or more is computed as any prompt');
    assert.deepEqual(cache.claim(next, true, 340), { seq: 0, cached: 340, inexactFrom: null });
    assert.equal(cache.promptChunk(340, 370, 512, true, 340), 30, 'the last message whole');
    assert.equal(cache.promptChunk(340, 370, 20, true, 340), 0, 'or not yet');
    // A fresh run computes up to the split in chunks of 64 or more, then the last message alone.
    assert.equal(cache.promptChunk(0, 370, 512, true, 340), 340);
    assert.equal(cache.promptChunk(0, 370, 300, true, 340), 276, 'never leaving fewer than 64 before the split');
    // Without the warm-up, the exact part stops at the previous prompt: the last 64 before the split again.
    assert.deepEqual(planReuse({ exact: 300, promptEnd: 300 }, 370, 300, 64, 340), { cached: 300, inexactFrom: 300 }, 'a turn that goes on from the last prompt: as llama-server computes it');
    assert.deepEqual(planReuse({ exact: 300, promptEnd: 330 }, 370, 300, 64, 340), { cached: 276, inexactFrom: null }, 'another prompt: the 64 tokens before the split again');
    assert.deepEqual(planReuse({ exact: 300, promptEnd: 300 }, 370, 339, 64, 340), { cached: 339, inexactFrom: 300 }, 'the generated cells that match taken too');
    assert.deepEqual(planReuse({ exact: 40, promptEnd: 40 }, 60, 40, 64, 40), { cached: 40, inexactFrom: null }, 'a split under 64 tokens: the part before it was computed whole');
    assert.deepEqual(planReuse({ exact: 30, promptEnd: 35 }, 60, 30, 64, 40), { cached: 0, inexactFrom: null });
  });

  test('a prompt within exact cells computes at least its last 64 tokens again; without reuse, nothing is taken', () => {
    const { cache, held } = conversation(32);
    assert.deepEqual(cache.claim(held.subarray(0, 300), true), { seq: 0, cached: 236, inexactFrom: null });
    cache.release(0, held, 300, 300);
    assert.deepEqual(cache.claim(held.subarray(0, 320), false), { seq: 0, cached: 0, inexactFrom: null });
  });
});

describe("a chat prompt's last message", () => {
  // One token per character; the first is the BOS, whose piece is empty.
  const model = { tokenToPiece: (t: number) => Buffer.from(t === 1 ? '' : String.fromCharCode(t), 'latin1') };
  const tokens = (text: string) => Int32Array.from([1, ...Array.from(text, (c) => c.charCodeAt(0))]);

  test('begins at its content as rendered, counted from the end', () => {
    const rendered = 'U:hello\nA:hi there\nU:go on\nA:';
    const messages = [{ content: 'hello' }, { content: 'hi there' }, { content: 'go on' }];
    assert.equal(lastMessageStart(model, rendered, tokens(rendered), messages), 1 + rendered.indexOf('go on'));
  });

  test('a token that straddles its first byte belongs to it', () => {
    const rendered = 'U:hello\nA:hi\nU:go\nA:';
    // 'U:go' as one token: the content begins inside it.
    const t = Int32Array.from([1, ...Array.from('U:hello\nA:hi\n', (c) => c.charCodeAt(0)), 0x10000, ...Array.from('\nA:', (c) => c.charCodeAt(0))]);
    const m = { tokenToPiece: (x: number) => (x === 0x10000 ? Buffer.from('U:go') : model.tokenToPiece(x)) };
    assert.equal(lastMessageStart(m, rendered, t, [{ content: 'hello' }, { content: 'hi' }, { content: 'go' }]), t.length - 4);
  });

  test('is none for a first message, an empty one, or one the rendering does not hold', () => {
    assert.equal(lastMessageStart(model, 'U:hello\nA:', tokens('U:hello\nA:'), [{ content: 'hello' }]), null);
    assert.equal(lastMessageStart(model, 'U:a\nA:b\nA:', tokens('U:a\nA:b\nA:'), [{ content: 'a' }, { content: null }]), null);
    assert.equal(lastMessageStart(model, 'U:a\nU:B\nA:', tokens('U:a\nU:B\nA:'), [{ content: 'a' }, { content: 'b' }]), null);
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
    const r: PreparedRequest = { id: `r${seq}`, prompt: Int32Array.from([1, 2, 3, 4]), resumed: 0, split: null, params: PARAMS, grammar: {}, stops: [], parser: null, chat: null };
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
