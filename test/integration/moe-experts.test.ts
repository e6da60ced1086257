// MoE expert tensors on a second device of the same worker. One real rpc server serves two devices
// (`-d CPU,CPU`, as a machine serving GPU0,CPU would); the planner is told the first is fast and small
// and the second slow and large, so it gives the first the dense part of every block and keeps experts
// on the second. The load must put exactly the planned bytes on each device (llama.cpp's own memory
// breakdown), give the one-process greedy tokens, and need no more memory than llama.cpp's own fit
// (common_fit_params, llama-server --fit) finds for the same devices.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { logger } from '../../common/logger.js';
import { EngineProcess } from '../../coordinator/engine/engine-process.js';
import { plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice, Plan, PlanContext } from '../../coordinator/planner/types.js';
import { expertTensorPattern, readModelFacts, type ModelFacts } from '../../models/gguf-info.js';
import { connectRpcServers, fitParams, LlamaModel, type LlamaContext, type RpcDevice } from '../../native/llama.js';
import { greedy } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { assertPlanMatchesLlama } from '../helpers/planner.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

const PROMPT = 'The quick brown fox jumps over the lazy dog because';
const N_TOKENS = 16;
// A small micro-batch keeps the compute buffers small beside the weights, so that memory limits bite.
const CONTEXT: PlanContext = { ctxSize: 1024, parallel: 1, typeK: 'f16', typeV: 'f16', nUbatch: 32 };
const GB = 1e9;
/**
 * ggml's graph allocator sizes a compute buffer from the graph's shape, and two placements of the same
 * tensors give graphs that differ by a few hundred bytes (128 was seen): the comparison allows 4 KiB.
 */
const GRAPH_SLACK = 4096;

/** Every byte llama.cpp holds for a model and its context, over all buffers (the host's too). */
function heldBytes(ctx: LlamaContext): number {
  return ctx.memoryBreakdown().reduce((a, e) => a + e.modelBytes + e.contextBytes + e.computeBytes, 0);
}

describe('MoE experts on another device of the same worker', () => {
  let path = '';
  let facts: ModelFacts;
  let reference: number[] = [];
  let server: RpcServerHandle;
  let devices: RpcDevice[] = [];

  before(async () => {
    path = await testModel('qwen3-moe');
    facts = await readModelFacts(path);
    // The reference on the host CPU alone, before any RPC device is registered in this process.
    const model = await LlamaModel.load(path, { devices: [], nGpuLayers: 0 });
    const ctx = await model.createContext({ nCtx: CONTEXT.ctxSize, nSeqMax: 1, nThreads: 1 });
    try {
      reference = (await greedy(model, ctx, PROMPT, N_TOKENS)).tokens;
    } finally {
      ctx.dispose();
      model.dispose();
    }
    server = await startRpcServer({ devices: ['CPU', 'CPU'] });
    devices = await connectRpcServers([server.endpoint]);
  });

  after(async () => server?.stop());

  /** The fast device holds `gpuBytes`; the large one 4 GiB. Round trips are nearly free on loopback. */
  function candidates(gpuBytes: number, on: RpcDevice[] = devices): CandidateDevice[] {
    return on.map((d, i) => ({
      key: `box/${i === 0 ? 'GPU0' : 'CPU'}`, kind: 'rpc', owner: 'box', deviceName: i === 0 ? 'GPU0' : 'CPU', endpoint: d.endpoint, serverIndex: i,
      freeBytes: i === 0 ? gpuBytes : 4 * 2 ** 30, totalBytes: 4 * 2 ** 30,
      bytesPerSecond: i === 0 ? 500 * GB : 30 * GB, hopSeconds: 1e-7,
    }));
  }

  /** Room for every block's dense part, the KV, the compute buffers and the output head, and for half the experts. */
  function gpuBudget(): number {
    const whole = plan({ model: facts, devices: candidates(4 * 2 ** 30).slice(0, 1), context: CONTEXT, reserveBytes: 0, objective: 'speed' });
    assert.ok(whole.fits);
    const experts = facts.experts!.layerBytes.reduce((a, b) => a + b, 0);
    return whole.devices[0]!.totalBytes - experts / 2;
  }

  /** The plan's RPC devices in its order (slowest first), which is not the server's. */
  const inPlanOrder = (p: Plan) => p.rpcDevices.map((i) => devices[i]!);

  async function load(p: Plan): Promise<{ model: LlamaModel; ctx: LlamaContext }> {
    const names = inPlanOrder(p).map((d) => d.name);
    const model = await LlamaModel.load(path, {
      devices: names,
      tensorSplit: p.tensorSplit,
      nGpuLayers: p.nGpuLayers,
      tensorOverrides: p.expertOverrides.map((o) => ({ pattern: expertTensorPattern(o.layers), device: names[o.device]! })),
    });
    const ctx = await model.createContext({ nCtx: CONTEXT.ctxSize, nSeqMax: 1, nBatch: 32, nUbatch: 32, nThreads: 1 });
    return { model, ctx };
  }

  test('the reader finds the experts: most of each block, 2 of 8 used per token', () => {
    assert.deepEqual({ count: facts.experts?.count, used: facts.experts?.used }, { count: 8, used: 2 });
    facts.experts!.layerBytes.forEach((b, il) => {
      // 8 experts × (up, gate, down) of 256 × 384 in F16.
      assert.equal(b, 8 * 3 * 256 * 384 * 2, `block ${il}`);
      assert.ok(b > 0.8 * facts.layerBytes[il]!);
    });
  });

  test('the fast device takes every block with half the experts on the slow one, and llama.cpp places exactly that', async () => {
    const p = plan({ model: facts, devices: candidates(gpuBudget()), context: CONTEXT, reserveBytes: 0, objective: 'speed' });
    assert.ok(p.fits, JSON.stringify(p));
    const [slow, fast] = [p.devices.find((d) => d.deviceName === 'CPU')!, p.devices.find((d) => d.deviceName === 'GPU0')!];
    assert.equal(fast.layers, facts.layerCount + 1, 'every block and the output head on the fast device');
    assert.ok(slow.expertLayers.length >= facts.layerCount / 2, `experts of ${slow.expertLayers.join(',')} on the slow device`);
    assert.equal(p.expertOverrides.length, 1);
    const { model, ctx } = await load(p);
    try {
      assert.deepEqual(p.rpcDevices, [1, 0], 'the slow device (the server\'s second) comes first');
      assertPlanMatchesLlama(p, inPlanOrder(p), model, ctx);
      assert.deepEqual((await greedy(model, ctx, PROMPT, N_TOKENS)).tokens, reference);
    } finally {
      ctx.dispose();
      model.dispose();
    }
  });

  test('the plan needs no more memory than llama.cpp\'s own fit finds for the same devices', async (t) => {
    // From room for everything on the fast device down to little more than an output head: the fit has
    // to move experts to the host on the way, and the planner spills them to the slow device or gives
    // it whole blocks.
    const roomy = gpuBudget();
    const budgets = [1, 0.7, 0.5, 0.4, 0.3].map((f) => Math.round(roomy * f));
    const compared: string[] = [];
    let fitMoved = 0;
    for (const budget of budgets) {
      const p = plan({ model: facts, devices: candidates(budget), context: CONTEXT, reserveBytes: 0, objective: 'speed' });
      if (!p.fits) continue;
      const limits = [budget, 4 * 2 ** 30];
      const fit = await fitParams(path, {
        devices: devices.map((d) => d.name),
        margins: devices.map((d, i) => Math.max(0, d.freeBytes - limits[i]!)),
        nCtx: CONTEXT.ctxSize,
        nSeqMax: 1,
        nBatch: 32,
        nUbatch: 32,
      });
      if (!fit.fits) continue;
      if (fit.tensorOverrides.length > 0) fitMoved++;
      const ours = await load(p);
      const held = heldBytes(ours.ctx);
      // Within every device's limit, by llama.cpp's own count.
      for (const [i, d] of inPlanOrder(p).entries()) {
        const used = ours.ctx.memoryBreakdown().filter((e) => e.device === d.name).reduce((a, e) => a + e.modelBytes + e.contextBytes + e.computeBytes, 0);
        assert.ok(used <= p.devices[i]!.usableBytes, `${p.devices[i]!.deviceName}: ${used} > ${p.devices[i]!.usableBytes}`);
      }
      ours.ctx.dispose();
      ours.model.dispose();
      const theirs = await LlamaModel.load(path, {
        devices: devices.map((d) => d.name),
        tensorSplit: fit.tensorSplit.some((v) => v > 0) ? fit.tensorSplit : null,
        nGpuLayers: fit.nGpuLayers,
        tensorOverrides: fit.tensorOverrides,
      });
      const theirCtx = await theirs.createContext({ nCtx: fit.nCtx, nSeqMax: 1, nBatch: 32, nUbatch: 32, nThreads: 1 });
      const fitHeld = heldBytes(theirCtx);
      theirCtx.dispose();
      theirs.dispose();
      compared.push(`${(budget / 2 ** 20).toFixed(1)} MiB: hearth ${held}, fit ${fitHeld} (${fit.tensorOverrides.length} overrides)`);
      assert.ok(held <= fitHeld + GRAPH_SLACK, `with ${budget} bytes on the fast device, hearth's plan holds ${held} bytes and llama.cpp's fit ${fitHeld}`);
    }
    t.diagnostic(compared.join('; '));
    assert.ok(compared.length >= 3, `compared at ${compared.length} budgets`);
    assert.ok(fitMoved >= 1, 'at one budget at least, llama.cpp\'s fit had to override tensors');
  });

  test('the engine process loads a plan\'s expert overrides onto the device the plan names', async () => {
    // A server of its own: llama.cpp's rpc server serves one client at a time, and this process holds the first.
    const second = await startRpcServer({ devices: ['CPU', 'CPU'] });
    const engine = new EngineProcess(logger('test'), { watchdogMs: 30_000 });
    try {
      const on = [0, 1].map((i) => ({ ...devices[i]!, endpoint: second.endpoint }));
      const p = plan({ model: facts, devices: candidates(gpuBudget(), on), context: CONTEXT, reserveBytes: 0, objective: 'speed' });
      assert.ok(p.fits && p.expertOverrides.length === 1);
      const info = await engine.load({
        modelPath: path, rpcEndpoints: p.rpcEndpoints, rpcDevices: p.rpcDevices, tensorSplit: p.tensorSplit, expertOverrides: p.expertOverrides,
        nGpuLayers: p.nGpuLayers, ctxSize: CONTEXT.ctxSize, parallel: 1, groups: 1, nBatch: 32, nUbatch: 32, typeK: 'f16', typeV: 'f16', threads: 1, speculation: null,
      });
      p.devices.forEach((planned, i) => {
        const name = info.devices[i]!.name;
        const held = info.memory.filter((e) => e.device === name).reduce((a, e) => a + e.modelBytes, 0);
        assert.ok(Math.abs(held - planned.weightBytes) <= 64 * 1024, `${planned.deviceName} (${name}): planned ${planned.weightBytes}, llama.cpp ${held}`);
      });
      const tokens: number[] = [];
      const sampling = { temperature: 0, topK: 40, topP: 1, minP: 0, repeatPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, seed: 0, greedy: true, ignoreEos: true };
      await engine.generate('r1', { kind: 'text', text: PROMPT }, { maxTokens: N_TOKENS, sampling, stop: [], constraint: null, logprobs: null, cachePrompt: false }, {
        onToken: (_text, token) => token >= 0 && tokens.push(token),
      });
      assert.deepEqual(tokens, reference, 'the one-process greedy tokens');
    } finally {
      await engine.shutdown();
      await second.stop();
    }
  });
});
