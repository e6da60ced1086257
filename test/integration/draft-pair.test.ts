// The target/draft test pair for speculative decoding: the same vocabulary, and greedy choices that
// agree often but not always, so that a speed-up measured with them is an honest one.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Batch, LlamaModel } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';

const TEXT =
  'The old stone hearth kept the house warm through the long winter nights while the children slept and the wind howled outside ' +
  'the little cottage by the river, and in the morning the baker walked to the market with bread';

/** Each position's greedy choice, every position in one batch (teacher-forced on the same text). */
async function choices(path: string, tokens: Int32Array): Promise<number[]> {
  const model = await LlamaModel.load(path, { devices: [], nGpuLayers: 0 });
  const ctx = await model.createContext({ nCtx: 512, nThreads: 1 });
  try {
    const batch = new Batch();
    for (let i = 0; i < tokens.length; i++) batch.add(tokens[i]!, i, 0, true);
    await ctx.decode(batch);
    return Array.from(tokens, (_, i) => {
      const l = ctx.logits(i);
      let best = 0;
      for (let k = 1; k < l.length; k++) if (l[k]! > l[best]!) best = k;
      return best;
    });
  } finally {
    ctx.dispose();
    model.dispose();
  }
}

describe('the speculative decoding test pair', () => {
  test('draft and target share the vocabulary and agree on most greedy tokens, not all', async (t) => {
    const [targetPath, draftPath] = [await testModel('target'), await testModel('draft')];
    const target = await LlamaModel.load(targetPath, { devices: [], nGpuLayers: 0 });
    const draft = await LlamaModel.load(draftPath, { devices: [], nGpuLayers: 0 });
    assert.equal(draft.info.nVocab, target.info.nVocab);
    assert.ok(draft.info.nLayer * 8 <= target.info.nLayer, `the draft is much cheaper: ${draft.info.nLayer} against ${target.info.nLayer} blocks`);
    const tokens = target.tokenize(TEXT, { addSpecial: true, parseSpecial: false });
    assert.deepEqual([...draft.tokenize(TEXT, { addSpecial: true, parseSpecial: false })], [...tokens]);
    target.dispose();
    draft.dispose();

    const [byTarget, byDraft] = [await choices(targetPath, tokens), await choices(draftPath, tokens)];
    const agreement = byTarget.filter((tok, i) => tok === byDraft[i]).length / byTarget.length;
    t.diagnostic(`greedy agreement ${agreement.toFixed(2)} over ${byTarget.length} positions`);
    assert.ok(agreement >= 0.6 && agreement < 1, `agreement ${agreement.toFixed(2)}: high, but not perfect`);
  });
});
