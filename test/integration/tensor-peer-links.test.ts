// A tensor split whose partial sums go directly between real hearth workers, over the routes this
// issue adds: each worker's rpc servers dial the others at the addresses the coordinator's
// peerAddresses gives (the other worker's public rpc port when open; a relay on the dialling worker,
// from OpenPeerLink, when closed), and each worker's rpc port hands the PEER_HELLO connection to the
// server it names. The engine's part is done here in-process (the addon's rpcPeerAddress, then a
// tensor-split load), as engine-main.ts does it; the tokens must equal the one-process reference.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { Logger } from '../../common/logger.js';
import { peerAddresses, type PeerDirectory } from '../../coordinator/links.js';
import { SecureRelay } from '../../link/relay.js';
import { ClusterSecret, newToken } from '../../link/token.js';
import { loadBinding } from '../../native/binding.js';
import { attachNativeLogger, connectRpcServers, LlamaModel } from '../../native/llama.js';
import { assertGreedyMatches, greedy, referenceRuns, type GreedyRun } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const PROMPTS = ['The quick brown fox jumps over the lazy dog because', 'Rain fell on the old stone bridge'];
const TOKENS = 16;

describe('a tensor split reduced directly between hearth workers', () => {
  let modelPath: string;
  let reference: GreedyRun[];
  const lines: string[] = [];

  before(async () => {
    modelPath = await testModel('small', 'f16');
    reference = await referenceRuns(modelPath, PROMPTS, TOKENS);
    const log = Object.fromEntries(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].map((l) => [l, (_o: unknown, line: string) => lines.push(line)]));
    attachNativeLogger(log as unknown as Logger, 'info');
  });

  /** Loads the model split by tensors over `endpoints`, with the peer addresses peerAddresses finds, and checks the tokens. */
  async function run(endpoints: string[], secure: boolean, peers: PeerDirectory, what: string): Promise<void> {
    const { addresses, failures } = await peerAddresses(endpoints, secure, peers);
    assert.deepEqual(failures, []);
    assert.equal(addresses.length, endpoints.length * (endpoints.length - 1));
    const devices = await connectRpcServers(endpoints);
    for (const p of addresses) loadBinding().rpcPeerAddress(p.from, p.to, p.address);
    lines.length = 0;
    const model = await LlamaModel.load(modelPath, { devices: devices.map((d) => d.name), splitMode: 'tensor', nGpuLayers: -1 });
    const ctx = await model.createContext({ nCtx: 512, nThreads: 1 });
    try {
      for (let i = 0; i < PROMPTS.length; i++) assertGreedyMatches((await greedy(model, ctx, PROMPTS[i]!, TOKENS)).tokens, reference[i]!, `${what}, prompt ${i}`);
    } finally {
      ctx.dispose();
      model.dispose();
    }
    const why = lines.filter((l) => /comm|reduce|peer/i.test(l)).join('\n');
    assert.ok(lines.some((l) => new RegExp(`${endpoints.length} servers all-reduce among themselves`).test(l)), `the servers did not reduce among themselves:\n${why}`);
  }

  describe('open workers', () => {
    const workers: WorkerHandle[] = [];
    before(async () => {
      for (const name of ['tp-a', 'tp-b']) workers.push(await startWorker(['--name', name]));
    });
    after(async () => {
      await Promise.all(workers.map((w) => w.stop()));
    });

    test("two workers: each server reaches the other at the other worker's public rpc port", async () => {
      const endpoints = workers.map((w) => `127.0.0.1:${w.rpcPort}`);
      await run(endpoints, false, { announced: (e) => e, openPeerLink: () => Promise.reject(new Error('an open cluster needs no relay')) }, 'open');
    });
  });

  describe('closed workers', () => {
    const token = newToken();
    const secret = ClusterSecret.fromToken(token, 'flag');
    const workers: WorkerHandle[] = [];
    const relays: SecureRelay[] = [];
    before(async () => {
      for (const name of ['tp-c', 'tp-d', 'tp-e']) workers.push(await startWorker(['--name', name], { token }));
      // The coordinator's side: a relay per worker's rpc port, as coordinator/links.ts opens them.
      for (const w of workers) relays.push(await SecureRelay.open({ secret, kind: 'rpc', remote: `127.0.0.1:${w.rpcPort}` }));
    });
    after(async () => {
      await Promise.all(relays.map((r) => r.close()));
      await Promise.all(workers.map((w) => w.stop()));
    });

    test("three workers: each server dials a relay on its own worker (OpenPeerLink) to the others' gateways", async () => {
      const peers: PeerDirectory = {
        announced: (e) => relays.find((r) => r.endpoint === e)?.remote ?? null,
        openPeerLink: async (from, remote) => (await workers[relays.findIndex((r) => r.endpoint === from)]!.client.openPeerLink(remote)).address,
      };
      await run(relays.map((r) => r.endpoint), true, peers, 'closed');
      for (const w of workers) assert.match(w.logs(), /peer link ready/);
    });
  });
});
