// Hostile input at a worker's network ports. In secure mode none of it reaches ggml-rpc-server (its
// connection log stays still, its pid does not change) and the worker keeps serving its coordinator
// throughout. In --insecure mode the raw port is llama.cpp's own: input that makes ggml-rpc-server
// abort is survived by the worker daemon, which restarts it and says so.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ClusterSecret, newToken } from '../../link/token.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { referenceTokens, GREEDY } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { crashRpcServer, fuzzInputs, fuzzPort } from '../helpers/rpc-fuzz.js';
import { readyHealth, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const PROMPT = 'The quick brown fox jumps over the lazy dog because';
const ACCEPTED = /accepted client connection/gi;

describe('fuzzing a secured worker', () => {
  const token = newToken();
  let ref: number[];
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  before(async () => {
    const model = await testModel('tiny');
    ref = (await referenceTokens(model, [PROMPT], 16))[0]!;
    // Debug logging shows every connection ggml-rpc-server accepts.
    workers.push(await startWorker(['--name', 'target', '--log-level', 'debug'], { token }), await startWorker(['--name', 'other'], { token }));
    coord = await startCoordinator(model, workers.map((w) => w.control), [], { token });
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('1,000+ malformed inputs: none reaches ggml-rpc-server, and the coordinator is served throughout', async () => {
    const target = workers[0]!;
    const before = await readyHealth(target.client);
    const infoBefore = await target.client.getInfo();
    const acceptedBefore = target.logs().match(ACCEPTED)?.length ?? 0;

    // Generation keeps running against the cluster while the fuzzer works.
    let fuzzing = true;
    const served: number[][] = [];
    const serving = (async () => {
      while (fuzzing) served.push((await coord.client.generate(PROMPT, { maxTokens: 16, sampling: GREEDY })).tokens);
    })();

    const wrongPsk = ClusterSecret.fromToken(newToken(), 'flag');
    const rpcInputs = fuzzInputs(9, { random: 300, crafted: 300, tlsGarbage: 150, wrongPsk: 50, slowDrip: 8 });
    const controlInputs = fuzzInputs(10, { random: 100, crafted: 50, tlsGarbage: 50, wrongPsk: 0, slowDrip: 2 });
    const started = Date.now();
    const [rpcResults, controlResults] = await Promise.all([
      fuzzPort(target.rpcPort, rpcInputs, { concurrency: 12, holdMs: 150, dripMs: 200, dripHoldMs: 15_000 }),
      fuzzPort(target.controlPort, controlInputs, { concurrency: 4, holdMs: 150, dripMs: 200, dripHoldMs: 15_000 }),
    ]);
    fuzzing = false;
    await serving;
    const results = [...rpcResults, ...controlResults];
    assert.ok(results.length >= 1000, `${results.length} inputs`);

    // Slow drips are cut by the handshake timeout (5 s), not left to hold a connection.
    const drips = results.filter((x) => x.kind === 'slow-drip');
    assert.equal(drips.length, 10);
    for (const r of drips) assert.ok(r.aliveMs < 9000, `a slow drip lived ${r.aliveMs} ms`);

    const after = await readyHealth(target.client);
    assert.equal(after.rpc_server_pid, before.rpc_server_pid, 'ggml-rpc-server was not restarted');
    assert.equal(after.rpc_restarts, before.rpc_restarts);
    const acceptedAfter = target.logs().match(ACCEPTED)?.length ?? 0;
    assert.equal(acceptedAfter, acceptedBefore, 'ggml-rpc-server accepted no connection during the fuzzing');
    const info = await target.client.getInfo();
    assert.ok(info.link.refused - infoBefore.link.refused >= 900, `the gateway refused ${info.link.refused - infoBefore.link.refused} connections`);
    assert.ok(info.link.token_mismatches - infoBefore.link.token_mismatches >= 50, 'the wrong-key handshakes were seen as token mismatches');
    // The log says so, in a few lines rather than one per attempt.
    const refusalLines = target.logs().split('\n').filter((l) => l.includes('refused a connection')).length;
    assert.ok(refusalLines >= 1 && refusalLines < 60, `${refusalLines} refusal log lines for ${results.length} refusals`);

    assert.ok(served.length >= 1, 'the coordinator was served during the fuzzing');
    for (const tokens of served) assert.deepEqual(tokens, ref);
    const s = await coord.client.getStatus();
    assert.equal(s.state, 'serving');
    assert.equal(s.load.loads, 1, `the model never had to be reloaded (fuzzing took ${Date.now() - started} ms)`);
  });
});

describe('fuzzing an --insecure worker', () => {
  test('input that kills ggml-rpc-server is survived: the daemon restarts it and logs it', async () => {
    const w = await startWorker(['--name', 'open']);
    try {
      const before = await readyHealth(w.client);
      const outcome = await crashRpcServer(w.rpcPort);
      assert.equal(outcome, 'closed', 'the crafted GET_TENSOR ended the connection');
      const h = await waitFor('the restarted rpc server', async () => {
        const x = await w.client.health({ timeoutMs: 1000 });
        return x.ready && x.rpc_server_pid !== before.rpc_server_pid ? x : null;
      });
      assert.ok(h.rpc_restarts >= 1);
      assert.match(w.logs(), /ggml-rpc-server exited \(SIGABRT\); restarting/);
      // Then plain garbage and crafted frames: the daemon lives, and its server is READY at the end.
      await fuzzPort(w.rpcPort, fuzzInputs(11, { random: 100, crafted: 100, tlsGarbage: 50, wrongPsk: 0, slowDrip: 0 }), { concurrency: 4, holdMs: 100 });
      assert.equal(w.process.exitCode, null, 'the worker daemon is alive');
      await readyHealth(w.client);
    } finally {
      await w.stop();
    }
  });
});
