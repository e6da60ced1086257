// The planner's memory model checked against llama.cpp's own accounting: load what the planner
// planned onto two real rpc servers and compare with llama_get_memory_breakdown per device.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice } from '../../coordinator/planner/types.js';
import { readModelFacts } from '../../models/gguf-info.js';
import { connectRpcServers, LlamaModel } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';
import { assertPlanMatchesLlama } from '../helpers/planner.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

const servers: RpcServerHandle[] = [];
after(async () => Promise.all(servers.map((s) => s.stop())));

test("the plan's weights and KV bytes per device are what llama.cpp allocates, and its compute estimate is not below llama.cpp's", async () => {
  const path = await testModel('small');
  const facts = await readModelFacts(path);
  servers.push(await startRpcServer(), await startRpcServer());
  const devices = await connectRpcServers(servers.map((s) => s.endpoint));
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
