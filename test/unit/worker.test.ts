// The worker's pure decisions: config compilation, backoff, memory reporting, the mDNS TXT record, and
// when a leaving worker stops waiting for its release.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import type { DeviceInfo } from '../../native/binding.js';
import { compileWorkerConfig } from '../../worker/config.js';
import { selectDevices, withRealMemory } from '../../worker/devices.js';
import { CoordinatorWatch, Drain } from '../../worker/leave.js';
import { parseMemAvailable } from '../../host/host-memory.js';
import { advertTxt, materialChange } from '../../worker/mdns.js';
import { backoffDelay, DEFAULT_BACKOFF } from '../../worker/supervisor.js';

const env = { XDG_CACHE_HOME: '/var/cache/x', XDG_STATE_HOME: '/var/state/x' };
const TOKEN = 'hearth1_' + 'A'.repeat(43);

describe('worker config', () => {
  test('defaults work with no flags but the token (protected mode)', () => {
    const c = compileWorkerConfig({ file: null, flags: {}, env: { ...env, HEARTH_TOKEN: TOKEN } });
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.secret?.source, 'env');
    assert.equal(c.insecure, false);
    assert.equal(c.rpcPort, 50052);
    assert.equal(c.controlPort, 50051);
    assert.equal(c.mdns, true);
    assert.equal(c.drainTimeoutMs, 60_000);
    assert.equal(c.devices, null);
    assert.equal(c.cacheDir, '/var/cache/x/hearth/rpc-cache');
    assert.equal(c.stateDir, '/var/state/x/hearth');
    assert.ok(c.threads >= 1);
    assert.ok(Object.isFrozen(c));
  });

  test('flags win over the file, and the file over defaults', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-cfg-'));
    try {
      const file = join(dir, 'worker.yaml');
      writeFileSync(file, 'name: gpu-box\nrpcPort: 6000\ncontrolPort: 6001\ndevices: [CUDA0, CPU]\nmdns: false\ncacheDir: null\ninsecure: true\ndrainTimeoutSeconds: 5\n');
      const c = compileWorkerConfig({ file, flags: { rpcPort: 7000 }, env });
      assert.equal(c.name, 'gpu-box');
      assert.equal(c.rpcPort, 7000);
      assert.equal(c.controlPort, 6001);
      assert.deepEqual(c.devices, ['CUDA0', 'CPU']);
      assert.equal(c.mdns, false);
      assert.equal(c.cacheDir, null, 'cacheDir: null turns the cache off');
      assert.equal(c.drainTimeoutMs, 5000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('errors name the key and the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-cfg-'));
    try {
      const file = join(dir, 'worker.yaml');
      writeFileSync(file, 'rpcPort: "fast"\nthreds: 4\n');
      assert.throws(() => compileWorkerConfig({ file, flags: {}, env }), (e: Error) => /worker\.yaml: .*rpcPort: .*number/.test(e.message) && /threds/.test(e.message));
      writeFileSync(file, 'rpcPort: [unclosed\n');
      assert.throws(() => compileWorkerConfig({ file, flags: {}, env }), /is not valid YAML/);
      assert.throws(() => compileWorkerConfig({ file: join(dir, 'missing.yaml'), flags: {}, env }), /cannot read config file .*missing\.yaml/);
      assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '::1' }, env }), /host: '::1' is not an IPv4 address/);
      assert.throws(() => compileWorkerConfig({ file: null, flags: { rpcPort: 5, controlPort: 5 }, env }), /both 5/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('supervisor backoff', () => {
  test('doubles from 250 ms and stops at 10 s', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(DEFAULT_BACKOFF, n)), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  });
});

const dev = (name: string, type: DeviceInfo['type'], free: number, total: number): DeviceInfo => ({ name, description: name, backend: name.replace(/\d+$/, ''), type, freeBytes: free, totalBytes: total });

describe('device reporting', () => {
  const all = [dev('CPU', 'cpu', 64, 64), dev('CUDA0', 'gpu', 20, 24), dev('CUDA1', 'gpu', 10, 12)];

  test("defaults follow llama.cpp's rpc-server: the GPUs, or the CPU when there are none", () => {
    assert.deepEqual(selectDevices(all, null).map((d) => d.name), ['CUDA0', 'CUDA1']);
    assert.deepEqual(selectDevices([all[0]!], null).map((d) => d.name), ['CPU']);
    assert.deepEqual(selectDevices(all, ['cpu', 'CUDA1']).map((d) => d.name), ['CPU', 'CUDA1']);
    assert.throws(() => selectDevices(all, ['Metal']), /--device: no device named 'Metal' on this machine \(known: CPU, CUDA0, CUDA1\)/);
  });

  test("a CPU device reports the host's available memory, GPUs what their driver says", () => {
    const real = withRealMemory(all, { availableBytes: 40, totalBytes: 1000 });
    assert.equal(real[0]!.freeBytes, 40);
    assert.equal(real[1]!.freeBytes, 20);
    assert.equal(withRealMemory([dev('CPU', 'cpu', 64, 64)], { availableBytes: 100, totalBytes: 1000 })[0]!.freeBytes, 64, 'never above total');
    // A cgroup limit lowers the host total: the CPU device's total follows it.
    assert.equal(withRealMemory([dev('CPU', 'cpu', 64, 64)], { availableBytes: 10, totalBytes: 32 })[0]!.totalBytes, 32);
  });

  test('MemAvailable is read from /proc/meminfo', () => {
    assert.equal(parseMemAvailable('MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n'), 20000000 * 1024);
    assert.equal(parseMemAvailable('MemTotal: 1 kB\n'), null);
  });
});

describe('mDNS advert', () => {
  const facts = { workerId: '2b0c6c3e-0000-4000-8000-000000000000', name: 'box', controlPort: 50051, rpcPort: 50052, rpcProtocol: '7.0.0', backend: 'CPU', memTotalBytes: 100, memFreeBytes: 60, clusterId: null };

  test('TXT carries the fields a coordinator plans from, and nothing else', () => {
    const txt = advertTxt(facts);
    assert.deepEqual(Object.keys(txt).sort(), ['backend', 'cport', 'id', 'mem_free', 'mem_total', 'name', 'proto', 'rport', 'txtvers']);
    assert.ok(Object.values(txt).every((v) => typeof v === 'string' && !v.includes('/')), 'no paths');
    assert.equal(txt.mem_free, '60');
  });

  test('re-announces only on a material change of free memory', () => {
    const GiB = 2 ** 30;
    assert.equal(materialChange(10 * GiB, 10 * GiB + 100 * 2 ** 20, 24 * GiB), false);
    assert.equal(materialChange(10 * GiB, 8 * GiB, 24 * GiB), true);
    assert.equal(materialChange(1 * GiB, 1 * GiB + 300 * 2 ** 20, 2 * GiB), true, '256 MiB floor on small hosts');
  });
});

describe('leaving', () => {
  test('a coordinator watches the worker until its promise to call again lapses, or it releases the worker', () => {
    const watch = new CoordinatorWatch();
    assert.equal(watch.watched(1000), false, 'nobody yet');
    watch.note(0, 1000);
    assert.equal(watch.watched(1000), false, 'a Health call without a watch (a test, `hearth status`) promises nothing');
    watch.note(5000, 1000);
    watch.note(2000, 2000);
    assert.equal(watch.watched(5999), true, 'the later promise does not shorten the earlier');
    assert.equal(watch.watched(6000), false);
    watch.note(5000, 7000);
    watch.clear();
    assert.equal(watch.watched(7001), false, 'released');
  });

  test('a drain ends at once when nobody watches, at the release, at the timeout, or when the watch lapses', async () => {
    assert.deepEqual(await new Drain('SIGTERM', 60_000, new CoordinatorWatch()).ended, { outcome: 'unwatched', message: 'no coordinator uses this worker' });

    const watched = () => {
      const w = new CoordinatorWatch();
      w.note(60_000, Date.now());
      return w;
    };
    const released = new Drain('drain requested', 60_000, watched());
    assert.equal(released.watched, true);
    released.release('the coordinator runs the model without it');
    const r = await released.ended;
    assert.equal(r.outcome, 'released');
    assert.match(r.message, /^released by the coordinator after 0\.\d s \(the coordinator runs the model without it\)$/);

    const timedOut = await new Drain('SIGTERM', 50, watched()).ended;
    assert.deepEqual(timedOut, { outcome: 'timed-out', message: 'no release within 0.05 s (--drain-timeout); leaving anyway' });

    const lapsing = new CoordinatorWatch();
    lapsing.note(100, Date.now());
    const lapsed = await new Drain('SIGTERM', 60_000, lapsing).ended;
    assert.equal(lapsed.outcome, 'unwatched');
    assert.match(lapsed.message, /went silent/);
  });
});
