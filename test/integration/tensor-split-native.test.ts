// The tensor split straight on the binding, over real rpc servers: llama.cpp's meta device with the
// partial sums all-reduced by the servers among themselves (hearth's patch to ggml-rpc, RPC 7.1), against
// the one-process reference, over two and three servers; and the path through this process that
// llama.cpp takes when the servers cannot reach each other, which must give the same tokens.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { LlamaModel, attachNativeLogger, connectRpcServers } from '../../native/llama.js';
import { loadBinding } from '../../native/binding.js';
import { assertGreedyMatches, greedy, referenceRuns, type GreedyRun } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';
import type { Logger } from '../../common/logger.js';

const PROMPTS = ['The quick brown fox jumps over the lazy dog because', 'Rain fell on the old stone bridge'];
const TOKENS = 24;

describe('tensor split over rpc servers (native)', () => {
  let modelPath: string;
  let reference: GreedyRun[];
  const servers: RpcServerHandle[] = [];
  const lines: string[] = [];

  before(async () => {
    modelPath = await testModel('small', 'f16');
    reference = await referenceRuns(modelPath, PROMPTS, TOKENS);
    for (let i = 0; i < 3; i++) servers.push(await startRpcServer({ threads: 1 }));
    const log = Object.fromEntries(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].map((l) => [l, (_o: unknown, line: string) => lines.push(line)]));
    attachNativeLogger(log as unknown as Logger, 'info');
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  async function run(endpoints: string[], what: string): Promise<void> {
    const devices = await connectRpcServers(endpoints);
    const model = await LlamaModel.load(modelPath, { devices: devices.map((d) => d.name), splitMode: 'tensor', nGpuLayers: -1 });
    const ctx = await model.createContext({ nCtx: 512, nThreads: 1, flashAttention: true });
    try {
      for (let i = 0; i < PROMPTS.length; i++) {
        const out = await greedy(model, ctx, PROMPTS[i]!, TOKENS);
        assertGreedyMatches(out.tokens, reference[i]!, `${what}, prompt ${i}`);
      }
    } finally {
      ctx.dispose();
      model.dispose();
    }
  }

  test('two servers reduce among themselves, and the tokens equal the reference', async () => {
    lines.length = 0;
    await run(servers.slice(0, 2).map((s) => s.endpoint), 'two servers');
    assert.ok(lines.some((l) => /2 servers all-reduce among themselves/.test(l)), `the servers did not reduce among themselves:\n${lines.filter((l) => /comm|reduce|peer/i.test(l)).join('\n')}`);
  });

  test('three servers (not a power of two: one is folded in and out)', async () => {
    lines.length = 0;
    await run(servers.map((s) => s.endpoint), 'three servers');
    assert.ok(lines.some((l) => /3 servers all-reduce among themselves/.test(l)));
  });

  test('a peer address that leads nowhere falls back to the path through this process, with the same tokens', async () => {
    lines.length = 0;
    // the second server is told to reach the first at a port nothing listens on
    loadBinding().rpcPeerAddress(servers[1]!.endpoint, servers[0]!.endpoint, '127.0.0.1:1');
    try {
      await run(servers.slice(0, 2).map((s) => s.endpoint), 'fallback');
      assert.ok(lines.some((l) => /could not reach its peers: partial sums go through this client/.test(l)));
    } finally {
      loadBinding().rpcPeerAddress(servers[1]!.endpoint, servers[0]!.endpoint, servers[0]!.endpoint);
    }
  });
});
