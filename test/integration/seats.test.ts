// A worker serves several engines at once (one per model a coordinator serves): llama.cpp's rpc server
// takes one client at a time, so each connection to the worker's rpc port gets a server of its own.
// Checked with real connections that speak the RPC protocol, to a real worker.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { probeRpcServer } from '../../native/rpc-probe.js';
import { heldClient } from '../helpers/rpc-server.js';
import { startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

describe('a worker with several engines connected', () => {
  let worker: WorkerHandle;

  before(async () => {
    worker = await startWorker(['--name', 'seats']);
  });
  after(async () => {
    await worker?.stop();
  });

  test('a second client is served while the first holds its server; a third reuses the server the second left; it stops when idle', async () => {
    const first = await heldClient(worker.rpcPort);
    try {
      // With one llama.cpp server this HELLO would wait for the first client to leave.
      const second = await probeRpcServer(`127.0.0.1:${worker.rpcPort}`, { timeoutMs: 8000 });
      assert.ok(second.version.major >= 1);
      const third = await heldClient(worker.rpcPort);
      const info = await worker.client.getInfo({ timeoutMs: 3000 });
      assert.ok(Number(info.held_bytes) > 0, 'the servers hold memory, and the worker says how much');
      third.destroy();
    } finally {
      first.destroy();
    }
    await waitFor('the extra server stopped', async () => (worker.logs().match(/an engine left: stopped its rpc server/g)?.length ?? 0) >= 1, 15_000);
    // llama.cpp's client opens short connections one after another while it loads: one server serves them in turn.
    assert.equal(worker.logs().match(/another engine connected: started an rpc server for it/g)?.length, 1, 'the third client took the server the second left');
    // The primary serves again once it is free: a probe is answered without starting another server.
    const before = worker.logs().match(/another engine connected/g)?.length ?? 0;
    await probeRpcServer(`127.0.0.1:${worker.rpcPort}`, { timeoutMs: 5000 });
    assert.equal(worker.logs().match(/another engine connected/g)?.length ?? 0, before);
  });
});
