// The planner's memory model checked against llama.cpp's own accounting: load what the planner
// planned onto two real rpc servers and compare with llama_get_memory_breakdown per device.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice, PlannedDevice } from '../../coordinator/planner/types.js';
import { readModelFacts } from '../../models/gguf-info.js';
import { groupShares } from '../../coordinator/planner/pipeline.js';
import { connectRpcServers, LlamaModel, type LlamaContext, type RpcDevice } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';
import { assertPlanMatchesLlama } from '../helpers/planner.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

const servers: RpcServerHandle[] = [];
after(async () => Promise.all(servers.map((s) => s.stop())));

let connected: RpcDevice[] | null = null;

/** The two servers, started and registered once for the file. */
async function candidatesOn(): Promise<{ devices: RpcDevice[]; candidates: CandidateDevice[] }> {
  if (!connected) {
    servers.push(await startRpcServer(), await startRpcServer());
    connected = await connectRpcServers(servers.map((s) => s.endpoint));
  }
  const devices = connected;
  const candidates: CandidateDevice[] = devices.map((d, i) => ({
    key: `w${i}/CPU`,
    kind: 'rpc',
    owner: `w${i}`,
    deviceName: 'CPU',
    endpoint: d.endpoint,
    // Uneven memories, so the split is not trivially even.
    freeBytes: (i === 0 ? 1 : 2) * 2 ** 30,
    totalBytes: 4 * 2 ** 30,
  }));
  return { devices, candidates };
}

test("the plan's weights and KV bytes per device are what llama.cpp allocates, and its compute estimate is not below llama.cpp's", async () => {
  const path = await testModel('small');
  const facts = await readModelFacts(path);
  const { devices, candidates } = await candidatesOn();
  const context = { ctxSize: 512, parallel: 2, typeK: 'f16' as const, typeV: 'f16' as const, nUbatch: 512 };
  const p = plan({ model: facts, devices: candidates, context, reserveBytes: 0 });
  assert.ok(p.fits, JSON.stringify(p));

  const model = await LlamaModel.load(path, { devices: devices.map((d) => d.name), tensorSplit: p.tensorSplit, nGpuLayers: p.nGpuLayers });
  const ctx = await model.createContext({ nCtx: context.ctxSize * context.parallel, nSeqMax: context.parallel, nBatch: 512, nUbatch: 512, nThreads: 1 });
  try {
    assertPlanMatchesLlama(p, devices, model, ctx);
  } finally {
    ctx.dispose();
    model.dispose();
  }
});

test('pipelined decode: one context per worker, the KV cache split between them and every compute buffer counted', async () => {
  const path = await testModel('small');
  const facts = await readModelFacts(path);
  const { devices, candidates } = await candidatesOn();
  const context = { ctxSize: 512, parallel: 4, typeK: 'f16' as const, typeV: 'f16' as const, nUbatch: 512, pipeline: 'auto' as const };
  const p = plan({ model: facts, devices: candidates, context, reserveBytes: 0 });
  assert.ok(p.fits, JSON.stringify(p));
  assert.equal(p.groups, 2);

  const model = await LlamaModel.load(path, { devices: devices.map((d) => d.name), tensorSplit: p.tensorSplit, nGpuLayers: p.nGpuLayers });
  // As the engine makes them (engine-main.ts).
  const contexts: LlamaContext[] = [];
  try {
    for (const share of groupShares(context.parallel, p.groups)) {
      contexts.push(await model.createContext({ nCtx: context.ctxSize * share, nSeqMax: share, nBatch: 512, nUbatch: 512, nThreads: 1 }));
    }
    assertPlanMatchesLlama(p, devices, model, contexts);
  } finally {
    for (const c of contexts) c.dispose();
    model.dispose();
  }
});

test("tensor mode: the largest share's weights, KV cache and compute buffer are what llama.cpp's meta device allocates", async () => {
  const path = await testModel('small');
  const facts = await readModelFacts(path);
  const { devices, candidates } = await candidatesOn();
  const context = { ctxSize: 512, parallel: 2, typeK: 'f16' as const, typeV: 'f16' as const, nUbatch: 512 };
  // Shares of about a third and two thirds: 4 KV heads do not divide so, and the rounding takes turns.
  const p = plan({ model: facts, devices: candidates, context, reserveBytes: 0, split: 'tensor', objective: 'memory' });
  assert.ok(p.fits, JSON.stringify(p));
  assert.equal(p.split, 'tensor');
  assert.ok(p.tensor!.notes.length > 0, 'the plan says the heads do not divide evenly');

  const model = await LlamaModel.load(path, { devices: devices.map((d) => d.name), splitMode: 'tensor', tensorSplit: p.tensorSplit, nGpuLayers: p.nGpuLayers });
  const ctx = await model.createContext({ nCtx: context.ctxSize * context.parallel, nSeqMax: context.parallel, nBatch: 512, nUbatch: 512, nThreads: 1 });
  try {
    // The meta device reports its buffers' sizes, each the largest of its devices' (ggml-backend-meta.cpp).
    const meta = ctx.memoryBreakdown().find((e) => e.device?.startsWith('Meta'));
    assert.ok(meta, 'llama.cpp made a meta device');
    const largest = (f: (d: PlannedDevice) => number) => Math.max(...p.devices.map(f));
    assert.ok(Math.abs(meta.modelBytes - largest((d) => d.weightBytes)) <= 64 * 1024, `weights: planned ${largest((d) => d.weightBytes)}, llama.cpp ${meta.modelBytes}`);
    assert.equal(meta.contextBytes, largest((d) => d.kvBytes), 'kv');
    assert.ok(largest((d) => d.computeBytes) >= meta.computeBytes, `compute: planned ${largest((d) => d.computeBytes)} < llama.cpp ${meta.computeBytes}`);
  } finally {
    ctx.dispose();
    model.dispose();
  }
});
