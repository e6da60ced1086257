// Real architectures: Qwen3-style dense, Qwen3-MoE-style and Gemma3-style (sliding-window layers, tied
// output) test models, each planned by the planner onto two real rpc servers and loaded there. The
// planner's weights and KV bytes per device must be what llama.cpp allocates (its memory breakdown),
// and the split model's greedy tokens must be the one-process tokens.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { kvLayerBytes, plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice, PlanContext } from '../../coordinator/planner/types.js';
import { readModelFacts, type ModelFacts } from '../../models/gguf-info.js';
import type { TestModelPreset } from '../../models/test-models.js';
import { connectRpcServers, LlamaModel, type RpcDevice } from '../../native/llama.js';
import { greedy } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { assertPlanMatchesLlama } from '../helpers/planner.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

const PROMPT = 'The quick brown fox jumps over the lazy dog because';
const N_TOKENS = 16;
const PRESETS: TestModelPreset[] = ['qwen3', 'qwen3-moe', 'gemma3'];
// 2048 tokens: a sliding-window layer (128 + a 512-token micro-batch, padded) holds 768 of them.
const CONTEXT: PlanContext = { ctxSize: 2048, parallel: 2, typeK: 'f16', typeV: 'f16', nUbatch: 512 };

describe('real architectures, split across two rpc servers', () => {
  const models = new Map<TestModelPreset, { path: string; facts: ModelFacts; reference: number[] }>();
  const servers: RpcServerHandle[] = [];
  let devices: RpcDevice[] = [];

  before(async () => {
    // The references first, on the host CPU alone, before any RPC device is registered in this process.
    for (const preset of PRESETS) {
      const path = await testModel(preset);
      const model = await LlamaModel.load(path, { devices: [], nGpuLayers: 0 });
      const ctx = await model.createContext({ nCtx: 1024, nSeqMax: 1, nThreads: 1 });
      try {
        models.set(preset, { path, facts: await readModelFacts(path), reference: (await greedy(model, ctx, PROMPT, N_TOKENS)).tokens });
      } finally {
        ctx.dispose();
        model.dispose();
      }
    }
    servers.push(await startRpcServer(), await startRpcServer());
    devices = await connectRpcServers(servers.map((s) => s.endpoint));
  });

  after(async () => Promise.all(servers.map((s) => s.stop())));

  test('the GGUF reader sees each architecture as llama.cpp does', () => {
    const gemma = models.get('gemma3')!.facts;
    assert.equal(gemma.architecture, 'gemma3');
    assert.equal(gemma.outputTied, true, 'gemma3 ties its output head to the token embedding');
    assert.equal(gemma.slidingWindow, 128);
    assert.deepEqual(gemma.swaLayers, [true, true, false, true, true, false], 'every third layer is global');
    const moe = models.get('qwen3-moe')!.facts;
    assert.equal(moe.architecture, 'qwen3moe');
    // The expert tensors dominate a MoE block: 8 experts × 3 matrices of 256 × 384 in F16.
    assert.ok(moe.layerBytes[0]! > 8 * 3 * 256 * 384 * 2, `block 0: ${moe.layerBytes[0]} bytes`);
    assert.equal(models.get('qwen3')!.facts.architecture, 'qwen3');
  });

  test('sliding-window layers are planned with their smaller cache', () => {
    const gemma = models.get('gemma3')!.facts;
    const kv = kvLayerBytes(gemma, CONTEXT);
    const global = kvLayerBytes({ ...gemma, swaLayers: null }, CONTEXT);
    assert.equal(kv[2], global[2], 'a global layer keeps the whole context');
    assert.equal(kv[0]! * 2048, global[0]! * 768, 'a sliding layer keeps 768 of 2048 tokens');
  });

  for (const preset of PRESETS) {
    test(`${preset}: the plan's weights and KV per device are llama.cpp's, and the split gives the one-process tokens`, async () => {
      const { path, facts, reference } = models.get(preset)!;
      const candidates: CandidateDevice[] = devices.map((d, i) => ({
        key: `w${i}/CPU`, kind: 'rpc', owner: `w${i}`, deviceName: 'CPU', endpoint: d.endpoint,
        // Uneven memories, so the split is not trivially even.
        freeBytes: (i === 0 ? 1 : 2) * 2 ** 30, totalBytes: 4 * 2 ** 30,
      }));
      const p = plan({ model: facts, devices: candidates, context: CONTEXT, reserveBytes: 0, objective: 'memory' });
      assert.ok(p.fits, JSON.stringify(p));
      assert.equal(p.devices.length, 2);
      const model = await LlamaModel.load(path, { devices: devices.map((d) => d.name), tensorSplit: p.tensorSplit, nGpuLayers: p.nGpuLayers });
      const ctx = await model.createContext({ nCtx: CONTEXT.ctxSize * CONTEXT.parallel, nSeqMax: CONTEXT.parallel, nBatch: 512, nUbatch: 512, nThreads: 1 });
      try {
        assertPlanMatchesLlama(p, devices, model, ctx);
        const split = await greedy(model, ctx, PROMPT, N_TOKENS);
        assert.deepEqual(split.tokens, reference);
      } finally {
        ctx.dispose();
        model.dispose();
      }
    });
  }
});
