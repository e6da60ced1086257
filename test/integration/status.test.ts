// What the dashboard and `hearth status` read, against a real two-worker cluster: /api/status is
// `hearth status --json` plus the event log and the serving history, behind the API keys when there
// are some; `hearth status --watch` redraws until Ctrl-C, and says so when the coordinator goes away.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { WireStatus } from '../../coordinator/wire.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { GREEDY } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { runCli, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const KEY = 'status-test-key-1';

describe('status for people: /api/status and hearth status --watch', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  before(async () => {
    workers.push(await startWorker(['--name', 'status-a']), await startWorker(['--name', 'status-b']));
    coord = await startCoordinator(await testModel('tiny'), workers.map((w) => w.control), ['--parallel', '2', '--api-key', KEY], { apiKey: KEY });
  });
  after(async () => {
    await coord.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('/api/status is the gRPC status with the events and the serving history; it wants an API key', async () => {
    await coord.client.generate('The river ran past the mill', { maxTokens: 12, sampling: GREEDY });
    const denied = await fetch(`${coord.http}/api/status`);
    assert.equal(denied.status, 401);
    assert.equal(((await denied.json()) as { error: { type: string } }).error.type, 'authentication_error');

    // A sample is taken every 2 s, and the workers' figures are read again every few seconds: wait for a
    // sample that counted the tokens just generated, and for the tensor cache that holds the output head
    // the load sent (the one tensor of the tiny model over the rpc server's caching threshold).
    const s = await waitFor('a serving sample with tokens, and the tensor caches after the load', async () => {
      const r = await fetch(`${coord.http}/api/status`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(r.status, 200);
      const body = (await r.json()) as WireStatus;
      const sampled = body.history.some((h) => h.tokens_per_second > 0 && h.ttft_ms > 0);
      return sampled && body.workers.some((w) => Number(w.tensor_cache_bytes) > 0) ? body : null;
    }, 30_000);
    const grpc = await coord.client.getStatus();
    assert.deepEqual(Object.keys(s).sort(), Object.keys(grpc).sort(), 'the same fields as hearth status --json');
    assert.deepEqual(s.workers.map((w) => w.name).sort(), ['status-a', 'status-b']);
    for (const w of s.workers) {
      assert.ok(w.bytes_per_second > 0, `${w.name}: its measured speed`);
    }
    assert.ok(s.plan.fits && s.plan.devices.length === 2, 'the plan, with both workers');
    const log = s.events.map((e) => `${e.kind}: ${e.message}`);
    for (const pattern of [/^worker: worker status-a \(127\.0\.0\.1:\d+\) admitted$/, /^worker: worker status-b \(127\.0\.0\.1:\d+\) admitted$/, /^state: loading: /, /^load: model loaded in [\d.]+ s onto /, /^state: serving$/]) {
      assert.ok(log.some((l) => pattern.test(l)), `an event matching ${pattern} in:\n${log.join('\n')}`);
    }
    assert.ok(s.events.every((e) => !Number.isNaN(Date.parse(e.time))), 'events carry their time');
  });

  test('hearth status --watch redraws every second and stops cleanly on Ctrl-C', async () => {
    const watch = runCli(['status', '--watch', '--coordinator', coord.address, '--api-key', KEY]);
    let out = '';
    watch.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    watch.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => watch.once('exit', (code) => r(code)));
    await waitFor('two frames', async () => (out.match(/every second; Ctrl-C stops/g)?.length ?? 0) >= 2, 20_000);
    assert.match(out, /coordinator 127\.0\.0\.1:\d+: serving/);
    assert.match(out, /serving \(last 10 s\): [\d.]+ tokens\/s/);
    assert.match(out, /events:\n/);
    watch.kill('SIGINT');
    assert.equal(await exited, 0, out);
  });

  test('hearth status --watch says so, and fails, when the coordinator goes away', async () => {
    const watch = runCli(['status', '--watch', '--coordinator', coord.address, '--api-key', KEY]);
    let out = '';
    watch.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => watch.once('exit', (code) => r(code)));
    await waitFor('a frame', async () => out.includes('Ctrl-C stops'), 20_000);
    await coord.stop();
    assert.equal(await exited, 1, out);
    assert.match(out, /the coordinator at 127\.0\.0\.1:\d+ went away \(.+\); stopped watching/);
  });
});
