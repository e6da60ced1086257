// A resumed request's sampler: a new sampler that replays the tokens an earlier one generated must
// choose exactly what the earlier one goes on to choose, from the same logits: the seeded random
// state, the penalties' history and the grammar's position all carried over. Both samplers read the
// same rows of one decode, so any difference is the sampler's own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Batch, LlamaModel, type LlamaContext, type Sampler } from '../../native/llama.js';
import type { SamplerSettings } from '../../native/binding.js';
import { testModel } from '../helpers/models.js';

const PROMPT = 'A list of the animals on the farm:';
const BEFORE = 12;
const AFTER = 40;

describe('a sampler brought back by replaying its tokens', () => {
  let model: LlamaModel;
  let ctx: LlamaContext;

  before(async () => {
    model = await LlamaModel.load(await testModel('tiny'), { devices: [], nGpuLayers: 0 });
    ctx = await model.createContext({ nCtx: 256, nThreads: 1 });
  });

  after(() => {
    ctx?.dispose();
    model?.dispose();
  });

  /**
   * `original` generates BEFORE tokens alone; then `make()` builds a second sampler, `bringBack` brings it
   * up to date with those tokens, and both sample every row after that. Returns both choices per row.
   */
  async function sideBySide(settings: Partial<SamplerSettings>, bringBack: (s: Sampler, tokens: number[]) => void): Promise<{ original: number[]; second: number[] }> {
    const prompt = model.tokenize(PROMPT, { addSpecial: true, parseSpecial: false });
    const original = model.createSampler(settings);
    let second: Sampler | null = null;
    const generated: number[] = [];
    const out = { original: [] as number[], second: [] as number[] };
    try {
      original.accept(prompt.slice(-64));
      let batch = new Batch();
      let row = batch.addSequence(prompt, 0, 0, true);
      for (let i = 0; i < BEFORE + AFTER; i++) {
        if (i === BEFORE) {
          second = model.createSampler(settings);
          second.accept(prompt.slice(-64));
          bringBack(second, generated);
        }
        batch.sample(row, original);
        if (second) batch.sample(row, second);
        const picked = await ctx.decode(batch);
        const next = picked[0]!;
        if (second) {
          out.original.push(next);
          out.second.push(picked[1]!);
        }
        generated.push(next);
        batch = new Batch();
        row = batch.add(next, prompt.length + i, 0, true);
      }
      return out;
    } finally {
      ctx.removeSequence(0);
      original.dispose();
      second?.dispose();
    }
  }

  const SEEDED: Partial<SamplerSettings> = { greedy: false, temperature: 1.2, topK: 0, topP: 1, minP: 0, seed: 7, repeatPenalty: 1.3, frequencyPenalty: 0.4, presencePenalty: 0.3 };

  test('seeded sampling with penalties goes on exactly as the original', async () => {
    const { original, second } = await sideBySide(SEEDED, (s, tokens) => s.replay(tokens));
    assert.deepEqual(second, original);
    // Not a degenerate run: it chose many different tokens.
    assert.ok(new Set(original).size > AFTER / 4, `${new Set(original).size} distinct tokens`);
  });

  test('without the random draws (only the penalties fed) the choices part: the test can fail', async () => {
    const { original, second } = await sideBySide(SEEDED, (s, tokens) => s.accept(tokens));
    assert.notDeepEqual(second, original);
  });

  test('a grammar goes on from where the original left it', async () => {
    // Words of lower-case letters, each followed by ", ": the grammar's position after the replay decides
    // whether a letter or the separator may come next.
    const settings = { ...SEEDED, grammar: 'root ::= (word ", ")+\nword ::= [a-z]+' };
    const { original, second } = await sideBySide(settings, (s, tokens) => s.replay(tokens));
    assert.deepEqual(second, original);
    const text = Buffer.concat(original.map((t) => model.tokenToPiece(t))).toString();
    assert.match(text, /^[a-z, ]+$/);
  });

  test('a token the grammar does not allow is refused, naming where it is', () => {
    const s = model.createSampler({ grammar: 'root ::= [a-z]+' });
    try {
      const comma = model.tokenize(',', { addSpecial: false, parseSpecial: false });
      assert.throws(() => s.replay(comma), /replay: the grammar rejects token 0 of the resumed output/);
    } finally {
      s.dispose();
    }
  });
});
