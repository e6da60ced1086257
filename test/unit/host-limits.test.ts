// What a worker offers: cgroup v1 and v2 limits (parsed from fake files), the --memory cap, byte sizes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parseByteSize } from '../../common/bytes.js';
import { compileWorkerConfig } from '../../worker/config.js';
import { cpuQuota, memoryLimit, threadsFor, type ReadText } from '../../host/cgroup.js';
import { calibrationTypeOf, parseCalibration } from '../../host/calibration.js';
import { withinCap } from '../../worker/devices.js';
import { boundedByCgroup } from '../../host/host-memory.js';
import type { DeviceInfo } from '../../native/binding.js';

const GiB = 1024 ** 3;
const NO_LIMIT_V1 = '9223372036854771712';

function files(map: Record<string, string>): ReadText {
  return (path) => map[path] ?? null;
}

const V1_MOUNTS = [
  '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
].join('\n');

describe('cgroup v1', () => {
  const read = files({
    '/proc/self/cgroup': '4:memory:/lab/worker\n1:cpu:/lab/worker\n0::/\n',
    '/proc/self/mountinfo': V1_MOUNTS,
    '/sys/fs/cgroup/memory/lab/worker/memory.limit_in_bytes': `${2 * GiB}\n`,
    '/sys/fs/cgroup/memory/lab/worker/memory.usage_in_bytes': `${GiB / 2}\n`,
    '/sys/fs/cgroup/memory/lab/worker/memory.stat': `cache 1000\ntotal_inactive_file ${GiB / 4}\n`,
    '/sys/fs/cgroup/memory/lab/memory.limit_in_bytes': `${4 * GiB}\n`,
    '/sys/fs/cgroup/memory/memory.limit_in_bytes': NO_LIMIT_V1,
    '/sys/fs/cgroup/cpu/lab/worker/cpu.cfs_quota_us': '25000\n',
    '/sys/fs/cgroup/cpu/lab/worker/cpu.cfs_period_us': '100000\n',
    '/sys/fs/cgroup/cpu/lab/cpu.cfs_quota_us': '-1\n',
    '/sys/fs/cgroup/cpu/lab/cpu.cfs_period_us': '100000\n',
  });

  test('the tightest memory limit on the path wins, and reclaimable file cache does not count as used', () => {
    const limit = memoryLimit(read)!;
    assert.equal(limit.version, 1);
    assert.equal(limit.limitBytes, 2 * GiB);
    assert.equal(limit.usedBytes, GiB / 4);
    assert.equal(limit.dir, '/sys/fs/cgroup/memory/lab/worker');
  });

  test('the CPU quota in cores, and the threads it is worth', () => {
    assert.deepEqual(cpuQuota(read), { cores: 0.25, dir: '/sys/fs/cgroup/cpu/lab/worker' });
    assert.equal(threadsFor(8, cpuQuota(read)), 1);
    assert.equal(threadsFor(8, { cores: 2.5 }), 3);
    assert.equal(threadsFor(2, { cores: 16 }), 2);
    assert.equal(threadsFor(8, null), 8);
  });

  test('no limit anywhere is null', () => {
    const none = files({ '/proc/self/cgroup': '4:memory:/\n', '/proc/self/mountinfo': V1_MOUNTS, '/sys/fs/cgroup/memory/memory.limit_in_bytes': NO_LIMIT_V1 });
    assert.equal(memoryLimit(none), null);
    assert.equal(cpuQuota(none), null);
  });
});

describe('cgroup v2', () => {
  const mounts = '25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate';
  test('memory.max, memory.current less inactive_file, and cpu.max', () => {
    const read = files({
      '/proc/self/cgroup': '0::/system.slice/hearth.service\n',
      '/proc/self/mountinfo': mounts,
      '/sys/fs/cgroup/system.slice/hearth.service/memory.max': 'max\n',
      '/sys/fs/cgroup/system.slice/memory.max': `${3 * GiB}\n`,
      '/sys/fs/cgroup/system.slice/memory.current': `${GiB}\n`,
      '/sys/fs/cgroup/system.slice/memory.stat': `anon 1\ninactive_file ${GiB / 2}\n`,
      '/sys/fs/cgroup/system.slice/hearth.service/cpu.max': '150000 100000\n',
      '/sys/fs/cgroup/system.slice/cpu.max': 'max 100000\n',
    });
    assert.deepEqual(memoryLimit(read), { limitBytes: 3 * GiB, usedBytes: GiB / 2, dir: '/sys/fs/cgroup/system.slice', version: 2 });
    assert.equal(cpuQuota(read)!.cores, 1.5);
  });

  test('inside a container whose mount root is its own group, paths are relative to it', () => {
    const read = files({
      '/proc/self/cgroup': '0::/docker/abc\n',
      '/proc/self/mountinfo': '25 20 0:22 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw',
      '/sys/fs/cgroup/memory.max': `${GiB}\n`,
      '/sys/fs/cgroup/memory.current': '0\n',
    });
    assert.equal(memoryLimit(read)!.limitBytes, GiB);
  });
});

describe('what a worker offers', () => {
  test('host figures bounded by the cgroup: total at most the limit, available at most what is left', () => {
    const limit = { limitBytes: 2 * GiB, usedBytes: GiB / 2, dir: '/x', version: 1 as const };
    assert.deepEqual(boundedByCgroup({ totalBytes: 24 * GiB, availableBytes: 20 * GiB }, limit), { totalBytes: 2 * GiB, availableBytes: 1.5 * GiB, cgroup: limit });
    assert.equal(boundedByCgroup({ totalBytes: 24 * GiB, availableBytes: GiB }, limit).availableBytes, GiB);
  });

  const device = (name: string, free: number, total: number): DeviceInfo => ({ name, backend: 'CPU', type: 'cpu', description: '', freeBytes: free, totalBytes: total });

  test('--memory caps the devices in order, and what the rpc server holds counts against it', () => {
    const devices = [device('CUDA0', 6 * GiB, 8 * GiB), device('CPU', 20 * GiB, 24 * GiB)];
    assert.deepEqual(withinCap(devices, 8 * GiB).map((d) => [d.freeBytes / GiB, d.totalBytes / GiB]), [[6, 8], [2, 0]]);
    assert.deepEqual(withinCap(devices, 8 * GiB, 3 * GiB).map((d) => d.freeBytes / GiB), [5, 0]);
    assert.deepEqual(withinCap(devices, null), devices);
  });

  test('byte sizes as people write them, and clear errors for the rest', () => {
    assert.equal(parseByteSize('8GiB'), 8 * GiB);
    assert.equal(parseByteSize('512 MiB'), 512 * 1024 ** 2);
    assert.equal(parseByteSize('2.5GB'), 2.5e9);
    assert.equal(parseByteSize(1234), 1234);
    assert.equal(parseByteSize('8 gigs'), null);
    assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '127.0.0.1', memory: 'lots' }, env: {} }), /memory: 'lots' is not a size; write it like 8GiB/);
    assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '127.0.0.1', memory: '1MiB' }, env: {} }), /less than 64 MiB/);
    assert.equal(compileWorkerConfig({ file: null, flags: { host: '127.0.0.1', memory: '8GiB' }, env: {} }).memoryBytes, 8 * GiB);
  });

  test('calibration output: one JSON line per device, with a speed per weight type; an error line fails it', () => {
    assert.deepEqual(
      parseCalibration('noise\n{"device":"CPU","bytes_per_second":3e10,"by_type":{"f16":3e10,"q8_0":2.5e10,"q4_k":1.5e10},"seconds":1.0,"iterations":9,"threads":2}\n'),
      [{ device: 'CPU', bytesPerSecond: 3e10, byType: { f16: 3e10, q8_0: 2.5e10, q4_k: 1.5e10 }, seconds: 1, threads: 2 }],
    );
    // The model's file type picks the figure: F16 and BF16 read like F16, Q8_0 is its own, the rest like Q4_K.
    assert.deepEqual([1, 32, 7, 15, 2, 30, null].map(calibrationTypeOf), ['f16', 'f16', 'q8_0', 'q4_k', 'q4_k', 'q4_k', 'f16']);
    assert.throws(() => parseCalibration('{"device":"CUDA0","bytes_per_second":0,"seconds":0,"iterations":0,"threads":1,"error":"cannot allocate"}'), /calibrating CUDA0 failed: cannot allocate/);
  });
});

describe("the rpc server's own figures", () => {
  test('the device description and the memory reports of the serving process', async () => {
    const { parseDescription, parseMemoryReport, withReport } = await import('../../worker/server-devices.js');
    const d = parseDescription(
      'noise\n{"system":{"ggmlVersion":"0.25.1","ggmlCommit":"abc","rpcProtocol":"7.0.0","backends":["RPC","CPU","CUDA"]},"devices":[' +
        '{"name":"CUDA0","description":"RTX","backend":"CUDA","type":"gpu","freeBytes":20,"totalBytes":24},' +
        '{"name":"CPU","description":"EPYC","backend":"CPU","type":"cpu","freeBytes":64,"totalBytes":64}]}\n',
    );
    assert.equal(d.system.rpcProtocol, '7.0.0');
    assert.deepEqual(d.devices.map((x) => x.name), ['CUDA0', 'CPU']);
    const report = parseMemoryReport('{"memory":[{"name":"CUDA0","free":7,"total":24}]}');
    assert.deepEqual(report, [{ name: 'CUDA0', free: 7, total: 24 }]);
    assert.equal(parseMemoryReport('ggml_cuda_init: found 1 CUDA devices'), null);
    const now = withReport(d.devices, report);
    assert.equal(now[0]!.freeBytes, 7, 'the serving process says the GPU has 7 bytes free now');
    assert.equal(now[1]!.freeBytes, 64, 'devices it did not report keep their figures');
  });
});

describe('speeds a worker reports', () => {
  test('the median of the last measurements: one odd run does not move the figure, two that agree do', async () => {
    const { medianSpeeds } = await import('../../host/calibration.js');
    const run = (f16: number) => [{ device: 'CPU', bytesPerSecond: f16, byType: { f16, q8_0: f16 / 2 }, seconds: 1, threads: 1 }];
    assert.equal(medianSpeeds([run(30)])[0]!.bytesPerSecond, 30);
    assert.equal(medianSpeeds([run(30), run(6)])[0]!.bytesPerSecond, 30, 'a single new figure waits for confirmation');
    assert.equal(medianSpeeds([run(30), run(6), run(31)])[0]!.bytesPerSecond, 30, 'an odd run is outvoted');
    assert.deepEqual(medianSpeeds([run(30), run(6), run(7)])[0]!.byType, { f16: 7, q8_0: 3.5 }, 'two that agree move it');
  });
});
