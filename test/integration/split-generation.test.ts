// The foundation's core promise: a model split across real ggml-rpc-server processes computes exactly
// what the same model computes in one process.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Batch, connectRpcServers, LlamaModel, type LlamaContext } from '../../native/llama.js';
import { greedy, maxAbsDiff, type GreedyRun } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

const PROMPT = 'The quick brown fox jumps over the lazy dog because';
const N_TOKENS = 32;

describe('tiny model: one process vs split across two rpc servers', () => {
  let modelPath: string;
  let local: GreedyRun;
  const servers: RpcServerHandle[] = [];
  let split: LlamaModel | null = null;
  let splitCtx: LlamaContext | null = null;

  before(async () => {
    modelPath = await testModel('tiny');
    // The reference first, on the host CPU alone (no RPC device is registered in this process yet).
    const model = await LlamaModel.load(modelPath, { devices: [], nGpuLayers: 0 });
    const ctx = await model.createContext({ nCtx: 512, nSeqMax: 2, nThreads: 1 });
    try {
      local = await greedy(model, ctx, PROMPT, N_TOKENS);
    } finally {
      ctx.dispose();
      model.dispose();
    }
    servers.push(await startRpcServer(), await startRpcServer());
  });

  after(async () => {
    splitCtx?.dispose();
    split?.dispose();
    await Promise.all(servers.map((s) => s.stop()));
  });

  test('the split load places layers on both servers', async () => {
    const devices = await connectRpcServers(servers.map((s) => s.endpoint));
    assert.equal(devices.length, 2);
    assert.deepEqual(devices.map((d) => d.endpoint), servers.map((s) => s.endpoint));
    const progress: number[] = [];
    // Two blocks on the first server; two blocks and the output head on the second.
    split = await LlamaModel.load(modelPath, {
      devices: devices.map((d) => d.name),
      tensorSplit: [2, 3],
      nGpuLayers: -1,
      onProgress: (p) => progress.push(p),
    });
    const byDevice = split.layersByDevice();
    assert.equal(byDevice.get(devices[0]!.name), 2, `placement: ${JSON.stringify(split.placement)}`);
    assert.equal(byDevice.get(devices[1]!.name), 3, `placement: ${JSON.stringify(split.placement)}`);
    assert.ok(progress.length > 0, 'progress was reported');
    assert.ok(progress.every((p, i) => p >= 0 && p <= 1 && (i === 0 || p > progress[i - 1]!)), `monotonic: ${progress}`);
    assert.equal(progress.at(-1), 1);

    splitCtx = await split.createContext({ nCtx: 512, nSeqMax: 2, nThreads: 1 });
    // The weights really are on the servers: each holds model bytes.
    const remote = splitCtx.memoryBreakdown().filter((m) => m.device !== null && devices.some((d) => d.name === m.device));
    assert.equal(remote.length, 2);
    for (const m of remote) assert.ok(m.modelBytes > 1_000_000, `${m.buffer} holds ${m.modelBytes} bytes of weights`);
  });

  test('greedy decoding gives the same 32 tokens and logits within 1e-4', async () => {
    assert.ok(split && splitCtx, 'the split model loaded');
    const remote = await greedy(split, splitCtx, PROMPT, N_TOKENS);
    assert.equal(remote.tokens.length, N_TOKENS);
    assert.deepEqual(remote.tokens, local.tokens);
    const worst = Math.max(...remote.logits.map((l, i) => maxAbsDiff(l, local.logits[i]!)));
    assert.ok(worst < 1e-4, `largest logit difference ${worst}`);
    // Not a degenerate model: the logits vary.
    assert.ok(local.logits[0]!.some((v) => Math.abs(v - local.logits[0]![0]!) > 1e-3));
  });

  test('two sequences in one batch give the same tokens as each decoded alone', async () => {
    assert.ok(split && splitCtx);
    const prompts = ['Once upon a time in a distant land', 'Rain fell on the old stone bridge'];
    const alone = [];
    for (const p of prompts) alone.push((await greedy(split, splitCtx, p, 16, 0)).tokens);

    const samplers = prompts.map(() => split!.createSampler());
    try {
      const promptTokens = prompts.map((p) => split!.tokenize(p));
      const batch = new Batch();
      promptTokens.forEach((t, seq) => batch.sample(batch.addSequence(t, 0, seq, true), samplers[seq]!));
      let next = Array.from(await splitCtx.decode(batch));
      const together = next.map((t) => [t]);
      for (let i = 1; i < 16; i++) {
        const step = new Batch();
        next.forEach((tok, seq) => step.sample(step.add(tok, promptTokens[seq]!.length + i - 1, seq, true), samplers[seq]!));
        next = Array.from(await splitCtx.decode(step));
        next.forEach((t, seq) => together[seq]!.push(t));
      }
      assert.deepEqual(together, alone);
      assert.notDeepEqual(alone[0], alone[1], 'different prompts give different continuations');
    } finally {
      samplers.forEach((s) => s.dispose());
      splitCtx.removeSequence(0);
      splitCtx.removeSequence(1);
    }
  });
});
