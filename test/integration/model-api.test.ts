// The model-level calls of the binding on the tiny model: tokenizer, chat template, sampling settings.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Batch, LlamaModel } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';

describe('model API on the tiny test model', () => {
  let model: LlamaModel;
  before(async () => {
    model = await LlamaModel.load(await testModel('tiny'), { devices: [], nGpuLayers: 0 });
  });
  after(() => model.dispose());

  test("tokenize and detokenize round-trip through llama.cpp's SPM tokenizer", () => {
    const text = 'Hello world, héllo wörld!';
    const tokens = model.tokenize(text);
    assert.equal(tokens[0], model.info.bos, 'BOS first');
    // SPM adds a space before the first word; detokenizing keeps it.
    assert.equal(model.detokenize(tokens, { removeSpecial: true }), ' ' + text);
    const pieces = Buffer.concat([...tokens.slice(1)].map((t) => model.tokenToPiece(t)));
    assert.equal(pieces.toString('utf8').trimStart(), text);
    assert.ok(model.isEndOfGeneration(model.info.eos));
    assert.equal(model.info.nVocab, 32000);
  });

  test("the chat template is the model's own", () => {
    const prompt = model.applyChatTemplate([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'What is a hearth?' },
    ]);
    assert.match(prompt, /<\|im_start\|>system\nBe brief\.<\|im_end\|>/);
    assert.match(prompt, /What is a hearth\?/);
    assert.match(prompt, /Be brief\./);
    assert.match(model.applyChatTemplate([{ role: 'user', content: 'hi' }], { template: 'chatml' }), /<\|im_start\|>user\nhi<\|im_end\|>/);
  });

  test('seeded sampling is reproducible and differs from greedy', async () => {
    const ctx = await model.createContext({ nCtx: 256, nSeqMax: 1, nThreads: 1 });
    const prompt = model.tokenize('A seeded run');
    const run = async (settings: Parameters<LlamaModel['createSampler']>[0]) => {
      const sampler = model.createSampler(settings);
      const out: number[] = [];
      try {
        let batch = new Batch();
        batch.sample(batch.addSequence(prompt, 0, 0, true), sampler);
        for (let i = 0; i < 12; i++) {
          const tok = (await ctx.decode(batch))[0]!;
          out.push(tok);
          batch = new Batch();
          batch.sample(batch.add(tok, prompt.length + i, 0, true), sampler);
        }
      } finally {
        sampler.dispose();
        ctx.removeSequence(0);
      }
      return out;
    };
    try {
      const hot = { temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 1234, greedy: false };
      const a = await run(hot);
      const b = await run(hot);
      const c = await run({ ...hot, seed: 99 });
      const g = await run({});
      assert.deepEqual(a, b, 'same seed, same tokens');
      assert.notDeepEqual(a, c, 'another seed, other tokens');
      assert.notDeepEqual(a, g, 'not greedy');
    } finally {
      ctx.dispose();
    }
  });

  test('misuse is refused, not crashed', async () => {
    const ctx = await model.createContext({ nCtx: 256, nSeqMax: 2, nBatch: 8, nThreads: 1 });
    try {
      const tooLong = new Batch();
      tooLong.addSequence(new Array(9).fill(1), 0, 0, true);
      await assert.rejects(ctx.decode(tooLong), /9 tokens exceed nBatch 8/);
      const badSeq = new Batch();
      badSeq.add(1, 0, 5, true);
      await assert.rejects(ctx.decode(badSeq), /seqIds\[0\] must be in 0..1/);
      const badToken = new Batch();
      badToken.add(99999, 0, 0, true);
      await assert.rejects(ctx.decode(badToken), /outside the vocabulary/);
      assert.throws(() => ctx.logits(3), /had no logits/);
      assert.throws(() => model.detokenize([-1]), /outside the vocabulary/);
      await assert.rejects(model.createContext({ typeK: 'q9' as never }), /typeK: unknown cache type 'q9'/);
      assert.throws(() => model.dispose(), /dispose the model's contexts before the model/);
    } finally {
      ctx.dispose();
    }
  });
});
