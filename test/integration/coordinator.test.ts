// The coordinator as users run it: real worker processes, a real coordinator process with its engine
// child, real gRPC. Each test checks one promise of the design.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { grpc, serviceDefinition } from '../../common/grpc.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, referenceRuns as reference, type GreedyRun, GREEDY, PROMPTS } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { freePort } from '../helpers/rpc-server.js';
import { readyHealth, runCli, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';


function assertUnavailable(e: unknown, pattern: RegExp): true {
  assert.ok(e instanceof HearthError, String(e));
  assert.equal(e.code, ErrorCode.Unavailable, e.message);
  assert.match(e.message, pattern);
  return true;
}

describe('coordinator with two workers', () => {
  let model: string;
  let refs: GreedyRun[];
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let fake: grpc.Server | null = null;

  before(async () => {
    model = await testModel('tiny');
    refs = await reference(model, PROMPTS, 32);
    workers.push(await startWorker(['--name', 'w-a']), await startWorker(['--name', 'w-b']));
    // A worker whose build speaks another RPC protocol (its advertised info says 6.0.0).
    fake = new grpc.Server();
    fake.addService(serviceDefinition('WorkerService'), {
      GetInfo: (_c: unknown, cb: grpc.sendUnaryData<object>) =>
        cb(null, { worker_id: '00000000-0000-4000-8000-000000000006', name: 'old-build', state: 'READY', build: { llama_cpp_release: 'b4000', ggml_version: '0.0.1', rpc_protocol: '6.0.0', backends: ['CPU'] }, devices: [{ name: 'CPU', backend: 'CPU', type: 'cpu', free_bytes: '1000000000', total_bytes: '1000000000' }], rpc_host: '127.0.0.1', rpc_port: 1 }),
      Health: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { state: 'READY', ready: true }),
    });
    const fakePort = await new Promise<number>((resolve, reject) => fake!.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    coord = await startCoordinator(model, [...workers.map((w) => w.control), `127.0.0.1:${fakePort}`]);
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
    fake?.forceShutdown();
  });

  test('the model is split across both workers and Generate gives the single-process tokens', async () => {
    const status = await coord.client.getStatus();
    assert.equal(status.plan.fits, true);
    assert.equal(status.plan.devices.length, 2);
    assert.ok(status.plan.devices.every((d) => d.layers >= 1));
    assert.equal(status.plan.devices.reduce((s, d) => s + d.layers, 0), 5, '4 blocks and the output head');
    const out = await coord.client.generate(PROMPTS[0]!, { maxTokens: 32, sampling: GREEDY });
    assert.deepEqual(out.tokens, refs[0]!.tokens);
    assert.equal(out.finishReason, 'length');
    assert.equal(out.usage.completion_tokens, 32);
    assert.ok(out.text.length > 0);
  });

  test('8 concurrent requests all complete, each equal to its own single-request result', async () => {
    const outs = await Promise.all(PROMPTS.map((p) => coord.client.generate(p, { maxTokens: 32, sampling: GREEDY })));
    outs.forEach((o, i) => assertGreedyMatches(o.tokens, refs[i]!, `prompt ${i}: ${PROMPTS[i]}`));
  });

  test('a worker with another RPC protocol version is refused, naming both versions', async () => {
    const { workers: list } = await coord.client.listWorkers();
    const old = list.find((w) => w.name === 'old-build');
    assert.ok(old, JSON.stringify(list));
    assert.equal(old.state, 'refused');
    assert.match(old.reason, /RPC protocol version is 6\.0\.0, this coordinator speaks 7\.1\.0/);
    assert.equal(list.filter((w) => w.state === 'admitted').length, 2);
  });

  test('stop strings are never emitted, and bad settings are INVALID_ARGUMENT naming the field', async () => {
    const full = await coord.client.generate(PROMPTS[1]!, { maxTokens: 24, sampling: GREEDY });
    const cut = full.text.slice(6, 12);
    const stopped = await coord.client.generate(PROMPTS[1]!, { maxTokens: 24, sampling: GREEDY, stop: [cut] });
    assert.equal(stopped.finishReason, 'stop');
    assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(cut)));
    await assert.rejects(coord.client.generate('x', { sampling: { temperature: -1 } }), /temperature: must be between 0 and 5/);
    await assert.rejects(coord.client.generate('x', { maxTokens: 100_000 }), /max_tokens: must be between 1 and 512/);
    await assert.rejects(coord.client.generate('', {}), /prompt: must be a non-empty string/);
    await assert.rejects(coord.client.generate('word '.repeat(600), { maxTokens: 4 }), /exceeds the available context size of 512 tokens/);
  });

  test('a client that goes away frees its slot within a second; a deadline ends the stream', async () => {
    const abort = new AbortController();
    let chunks = 0;
    const gone = coord.client.generate(PROMPTS[6]!, { maxTokens: 480, sampling: GREEDY, signal: abort.signal, onChunk: () => ++chunks === 3 && abort.abort() });
    await assert.rejects(gone, (e: unknown) => e instanceof HearthError && e.code === ErrorCode.Cancelled);
    const cancelledAt = Date.now();
    await waitFor('the slot to be freed', async () => (await coord.client.getStatus()).in_flight === 0, 1000, 50);
    assert.ok(Date.now() - cancelledAt <= 1000);

    await assert.rejects(coord.client.generate(PROMPTS[6]!, { maxTokens: 480, sampling: GREEDY, timeoutMs: 300 }), (e: unknown) => e instanceof HearthError && e.code === ErrorCode.DeadlineExceeded);
    await waitFor('the slot to be freed', async () => (await coord.client.getStatus()).in_flight === 0, 1000, 50);
  });

  test('hearth status shows workers, plan, model and queue on one screen', async () => {
    const child = runCli(['status', '--coordinator', coord.address]);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 0, out);
    assert.match(out, /: serving/);
    assert.match(out, /w-a\s+admitted\s+CPU/);
    assert.match(out, /old-build\s+refused/);
    assert.match(out, /load: 100%/);
    assert.match(out, /slots/);
    assert.match(out, /\+out/);
  });
});

describe('losing a worker', () => {
  let model: string;

  before(async () => {
    model = await testModel('tiny');
  });

  test('with --max-resumes 0, SIGKILL of a worker rpc server mid-generation ends the stream UNAVAILABLE naming it, and serving resumes', async () => {
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    const coord = await startCoordinator(model, [a.control, b.control], ['--max-resumes', '0']);
    try {
      const victim = await readyHealth(b.client);
      let chunks = 0;
      const long = coord.client.generate(PROMPTS[0]!, {
        maxTokens: 480,
        sampling: GREEDY,
        onChunk: () => {
          if (++chunks === 5) process.kill(victim.rpc_server_pid, 'SIGKILL');
        },
      });
      const started = Date.now();
      await assert.rejects(long, (e) => assertUnavailable(e, /worker w-b \(127\.0\.0\.1:\d+\) lost its rpc server/));
      assert.ok(Date.now() - started < 15_000);
      assert.equal(coord.process.exitCode, null, 'the coordinator survives');
      await coord.waitStatus((s) => s.state === 'serving' && s.load.loads >= 2);
      const again = await coord.client.generate(PROMPTS[2]!, { maxTokens: 8, sampling: GREEDY });
      assert.equal(again.tokens.length, 8);
    } finally {
      await coord.stop();
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  test('SIGSTOP of a worker rpc server: the watchdog stops the engine, the request goes on without it, and after SIGCONT serving resumes on both', async () => {
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    const coord = await startCoordinator(model, [a.control, b.control], ['--watchdog-seconds', '3']);
    const victim = await readyHealth(a.client);
    let stopped = false;
    try {
      let chunks = 0;
      const long = coord.client.generate(PROMPTS[3]!, {
        maxTokens: 480,
        sampling: GREEDY,
        onChunk: () => {
          if (++chunks === 5) {
            process.kill(victim.rpc_server_pid, 'SIGSTOP');
            stopped = true;
          }
        },
      });
      const started = Date.now();
      const out = await long;
      const took = Date.now() - started;
      assert.equal(out.tokens.length, 480, 'the request went on to its end');
      assert.equal(out.resumed, 1);
      assert.ok(took < 30_000, `ended after ${took} ms`);
      const { events } = await coord.client.getStatus();
      assert.ok(events.some((e) => /^resumed 1 request after worker w-a \(127\.0\.0\.1:\d+\) stopped answering: /.test(e.message)), JSON.stringify(events.slice(-5)));
      // Serving goes on without the stopped worker...
      const alone = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 1);
      assert.ok(alone.workers.some((w) => w.name === 'w-a' && w.state === 'suspect'));
      assert.equal((await coord.client.generate(PROMPTS[4]!, { maxTokens: 8, sampling: GREEDY })).tokens.length, 8);
      // ...and once it answers again, the coordinator takes it back.
      process.kill(victim.rpc_server_pid, 'SIGCONT');
      stopped = false;
      await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 2);
      assert.equal((await coord.client.generate(PROMPTS[5]!, { maxTokens: 8, sampling: GREEDY })).tokens.length, 8);
    } finally {
      if (stopped) process.kill(victim.rpc_server_pid, 'SIGCONT');
      await coord.stop();
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

describe('a worker falling silent', () => {
  test('a stopped worker daemon is marked lost by heartbeat timeout (no goodbye needed), and taken back when it returns', async () => {
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    const dir = mkdtempSync(join(tmpdir(), 'hearth-hb-'));
    const config = join(dir, 'cluster.yaml');
    writeFileSync(config, 'heartbeatMs: 300\nworkerTimeoutMs: 1500\n');
    const coord = await startCoordinator(model, [a.control, b.control], ['--config', config]);
    let stopped = false;
    try {
      b.process.kill('SIGSTOP');
      stopped = true;
      const silent = await coord.waitStatus((s) => s.workers.some((w) => w.name === 'w-b' && w.state === 'lost'), 10_000);
      assert.match(silent.workers.find((w) => w.name === 'w-b')!.reason, /no heartbeat from w-b/);
      await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 1 && s.plan.devices[0]!.owner === 'w-a');
      assert.equal((await coord.client.generate(PROMPTS[1]!, { maxTokens: 8, sampling: GREEDY })).tokens.length, 8);
      b.process.kill('SIGCONT');
      stopped = false;
      await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 2);
      assert.equal((await coord.client.generate(PROMPTS[2]!, { maxTokens: 8, sampling: GREEDY })).tokens.length, 8);
    } finally {
      if (stopped) b.process.kill('SIGCONT');
      await coord.stop();
      await Promise.all([a.stop(), b.stop()]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a worker joining', () => {
  test('a third worker is admitted, the model is re-planned onto three devices, and the reload sends fewer bytes', async () => {
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    // The third worker is listed but not running yet.
    const cRpc = await freePort();
    const cControl = await freePort();
    const coord = await startCoordinator(model, [a.control, b.control, `127.0.0.1:${cControl}`]);
    let c: WorkerHandle | null = null;
    try {
      const first = await coord.client.getStatus();
      assert.equal(first.plan.devices.length, 2);
      const firstBytes = Object.values(first.load.bytes_sent).reduce((s, v) => s + Number(v), 0);
      assert.ok(firstBytes > 16 * 2 ** 20, `first load sent ${firstBytes} bytes`);

      c = await startWorker(['--name', 'w-c'], { rpcPort: cRpc, controlPort: cControl });
      const second = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3 && s.load.loads >= 2);
      const secondBytes = Object.values(second.load.bytes_sent).reduce((s, v) => s + Number(v), 0);
      assert.ok(secondBytes < firstBytes / 2, `warm reload sent ${secondBytes} bytes, the cold load ${firstBytes}`);
      assert.ok(second.plan.devices.some((d) => d.owner === 'w-c' && d.layers >= 1));
      const out = await coord.client.generate(PROMPTS[7]!, { maxTokens: 8, sampling: GREEDY });
      assert.equal(out.tokens.length, 8);
    } finally {
      await coord.stop();
      await Promise.all([a.stop(), b.stop(), c?.stop()]);
    }
  });
});


describe('admission and planning', () => {
  test('hearth plan prints the split, or says why the model does not fit', async () => {
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'w-a']);
    const b = await startWorker(['--name', 'w-b']);
    const run = async (args: string[]) => {
      const child = runCli(['plan', '--model', model, '--no-mdns', '--worker', a.control, '--worker', b.control, ...args]);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      return { code, out };
    };
    try {
      const fits = await run(['--local-device', 'off', '--ctx-size', '512', '--placement', 'memory']);
      assert.equal(fits.code, 0, fits.out);
      assert.match(fits.out, /w-a\s+127\.0\.0\.1:\d+\s+\d \(/);
      assert.match(fits.out, /w-b\s+127\.0\.0\.1:\d+\s+\d \(/);
      assert.match(fits.out, /\+out/);
      const refused = await run(['--local-device', 'off', '--ctx-size', '1048576', '--parallel', '64']);
      assert.equal(refused.code, 3, refused.out);
      assert.match(refused.out, /does not fit: .* needs [\d.]+ GiB .* short by [\d.]+ GiB/);
      assert.match(refused.out, /Add a worker with at least [\d.]+ GiB free/);
      assert.match(refused.out, /Reduce --ctx-size from 1048576 to \d+/);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  test('past the waiting limit, requests are refused with RESOURCE_EXHAUSTED', async () => {
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'w-a']);
    const coord = await startCoordinator(model, [a.control], ['--parallel', '1', '--max-waiting', '1']);
    try {
      const results = await Promise.allSettled([0, 1, 2, 3].map((i) => coord.client.generate(PROMPTS[i]!, { maxTokens: 64, sampling: GREEDY })));
      const refused = results.filter((r) => r.status === 'rejected');
      assert.ok(refused.length >= 1, 'some requests were refused');
      for (const r of refused) {
        const e = (r as PromiseRejectedResult).reason as HearthError;
        assert.equal(e.code, ErrorCode.ResourceExhausted, e.message);
        assert.match(e.message, /server busy: \d+ requests are waiting \(limit 1\)/);
      }
      assert.ok(results.some((r) => r.status === 'fulfilled'), 'the first one was served');
    } finally {
      await coord.stop();
      await a.stop();
    }
  });
});
