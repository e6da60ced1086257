// The speed objective: the fastest devices take as much as fits, a device takes part only when the model
// needs its memory or it saves time, and the prediction follows the time model. All in memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { DEFAULT_HOP_SECONDS, plan } from '../../coordinator/planner/planner.js';
import { readSimulation } from '../../coordinator/planner/simulation.js';
import { plannerModel } from '../helpers/planner.js';
import type { CandidateDevice, ModelFacts, Plan, PlanInput, PlanResult } from '../../coordinator/planner/types.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const GB = 1e9;

const model = (overrides: Partial<ModelFacts> = {}) => plannerModel({ path: '/models/m.gguf', name: 'm', ...overrides });

function rpc(name: string, freeBytes: number, bytesPerSecond: number | null): CandidateDevice {
  return { key: `${name}/CPU`, kind: 'rpc', owner: name, deviceName: 'CPU', endpoint: `${name}.lan:50052`, freeBytes, totalBytes: freeBytes, bytesPerSecond };
}

function input(devices: CandidateDevice[], overrides: Partial<PlanInput> = {}): PlanInput {
  return {
    model: model(),
    devices,
    context: { ctxSize: 1024, parallel: 1, typeK: 'f16', typeV: 'f16', nUbatch: 512 },
    reserveBytes: 0,
    objective: 'speed',
    ...overrides,
  };
}

function fits(result: PlanResult): Plan {
  if (!result.fits) assert.fail(`expected a plan, got a refusal: ${result.reason}`);
  return result;
}

function layersOf(p: Plan): Record<string, number> {
  return Object.fromEntries(p.devices.map((d) => [d.owner, d.layers]));
}

describe('speed objective', () => {
  test('a model that fits on the fast device alone leaves the slow one out, and says why', () => {
    const p = fits(plan(input([rpc('slow', 8 * GiB, 2 * GB), rpc('fast', 8 * GiB, 20 * GB)])));
    assert.deepEqual(layersOf(p), { fast: 9 });
    assert.equal(p.excluded.length, 1);
    assert.equal(p.excluded[0]!.owner, 'slow');
    assert.match(p.excluded[0]!.reason, /not needed: faster devices hold the whole model.*2\.0 GB\/s/);
    // 900 MiB of weights at 20 GB/s, plus one hop.
    assert.ok(Math.abs(p.predictedSecondsPerToken! - ((900 * MiB) / (20 * GB) + DEFAULT_HOP_SECONDS)) < 1e-9);
  });

  test('the memory objective on the same devices uses both, and predicts a slower token', () => {
    const devices = [rpc('slow', 8 * GiB, 2 * GB), rpc('fast', 8 * GiB, 20 * GB)];
    const speed = fits(plan(input(devices)));
    const memory = fits(plan(input(devices, { objective: 'memory' })));
    assert.equal(memory.devices.length, 2);
    assert.equal(memory.objective, 'memory');
    assert.ok(memory.predictedSecondsPerToken! > 3 * speed.predictedSecondsPerToken!);
  });

  test('when memory forces both in, the slow device gets the fewest layers that fit and the fast one the output head', () => {
    // The fast device holds 6 of the 9 slots (with KV and compute), so the slow one must take 3.
    const p = fits(plan(input([rpc('fast', 700 * MiB, 20 * GB), rpc('slow', 8 * GiB, 2 * GB)])));
    const fast = p.devices.find((d) => d.owner === 'fast')!;
    const slow = p.devices.find((d) => d.owner === 'slow')!;
    assert.ok(fast.totalBytes <= fast.usableBytes);
    // One more slot on the fast device would not fit.
    assert.ok(fast.totalBytes + 100 * MiB > fast.usableBytes);
    assert.ok(slow.layers < fast.layers, JSON.stringify(layersOf(p)));
    assert.equal(p.devices.at(-1)!.owner, 'fast', 'the fastest device comes last and holds the output head');
    assert.ok(fast.holdsOutput);
    assert.equal(p.rpcEndpoints.at(-1), 'fast.lan:50052');
  });

  test('the local device stays first, and takes part only when it is fast enough to help', () => {
    const localCpu = (bytesPerSecond: number): CandidateDevice => ({
      key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null, freeBytes: 8 * GiB, totalBytes: 8 * GiB, bytesPerSecond,
    });
    const busy = fits(plan(input([localCpu(3 * GB), rpc('w', 8 * GiB, 20 * GB)])));
    assert.deepEqual(busy.devices.map((d) => d.owner), ['w']);
    const quick = fits(plan(input([localCpu(40 * GB), rpc('w', 8 * GiB, 20 * GB)])));
    assert.deepEqual(quick.devices.map((d) => d.owner), ['coordinator']);
    assert.equal(quick.nGpuLayers, 0);
  });

  test('a fast device too small to save its hop is left out', () => {
    // 1 layer on the tiny device saves 100 MiB / 10 GB/s - 100 MiB / 20 GB/s ≈ 5 ms; its hop costs 50 ms.
    const tiny = { ...rpc('tiny', 400 * MiB, 20 * GB), hopSeconds: 0.05 };
    const p = fits(plan(input([tiny, rpc('big', 8 * GiB, 10 * GB)])));
    assert.deepEqual(p.devices.map((d) => d.owner), ['big']);
    assert.match(p.excluded.find((e) => e.owner === 'tiny')!.reason, /not needed/);
  });

  test('speeds within 10 % keep the candidates’ order, so noise does not reshuffle a plan', () => {
    const a = fits(plan(input([rpc('a', 700 * MiB, 10 * GB), rpc('b', 700 * MiB, 10.4 * GB)])));
    const b = fits(plan(input([rpc('a', 700 * MiB, 10.4 * GB), rpc('b', 700 * MiB, 10 * GB)])));
    assert.deepEqual(a.devices.map((d) => d.owner), b.devices.map((d) => d.owner));
    assert.deepEqual(a.tensorSplit, b.tensorSplit);
  });

  test('unknown speeds count as typical: with none measured, the plan is the fewest devices in candidate order', () => {
    const p = fits(plan(input([rpc('a', 8 * GiB, null), rpc('b', 8 * GiB, null)])));
    assert.deepEqual(p.devices.map((d) => d.owner), ['a']);
    assert.equal(p.predictedSecondsPerToken, null);
  });

  test('a model too big for everything is refused as under the memory objective', () => {
    const r = plan(input([rpc('a', 300 * MiB, 10 * GB), rpc('b', 300 * MiB, 20 * GB)]));
    assert.equal(r.fits, false);
    if (!r.fits) assert.match(r.reason, /short by/);
  });

  test('a 70B-class model over 64 devices is planned in under 50 ms', () => {
    // 80 blocks of 1.6 GiB (Q8_0-like), a 2 GiB output head, devices from 8 to 64 GiB at 5 to 50 GB/s.
    const big = model({ layerCount: 80, layerBytes: new Array<number>(80).fill(1.6 * GiB), outputBytes: 2 * GiB, headCountKv: 8, headDimK: 128, headDimV: 128, embeddingLength: 8192, feedForwardLength: 28672, headCount: 64, vocabSize: 128256 });
    const devices = Array.from({ length: 64 }, (_, i) => rpc(`d${i}`, (8 + ((i * 7) % 57)) * GiB, (5 + ((i * 13) % 46)) * GB));
    for (const objective of ['speed', 'memory'] as const) {
      plan(input(devices, { model: big, objective })); // warm the JIT
      const start = performance.now();
      const p = fits(plan(input(devices, { model: big, objective, context: { ctxSize: 8192, parallel: 1, typeK: 'q8_0', typeV: 'q8_0', nUbatch: 512 } })));
      const ms = performance.now() - start;
      assert.ok(ms < 50, `${objective}: ${ms.toFixed(1)} ms`);
      assert.equal(p.devices.reduce((s, d) => s + d.layers, 0), 81);
      for (const d of p.devices) assert.ok(d.totalBytes <= d.usableBytes, `${d.owner} overcommitted`);
    }
  });

  test('the speed plan is never slower than the memory plan by its own model', () => {
    // A sweep of mixed clusters: the speed objective must win or tie every time.
    for (let seed = 1; seed <= 200; seed++) {
      const n = 2 + (seed % 5);
      const devices = Array.from({ length: n }, (_, i) => rpc(`d${i}`, (200 + ((seed * 31 + i * 97) % 900)) * MiB, (1 + ((seed * 17 + i * 29) % 40)) * GB));
      const speed = plan(input(devices));
      const memory = plan(input(devices, { objective: 'memory' }));
      if (!memory.fits) continue;
      assert.ok(speed.fits, `seed ${seed}: memory fits but speed refused`);
      if (speed.fits) assert.ok(speed.predictedSecondsPerToken! <= memory.predictedSecondsPerToken! + 1e-9, `seed ${seed}: ${speed.predictedSecondsPerToken} > ${memory.predictedSecondsPerToken}`);
    }
  });
});

describe('hearth plan --simulate', () => {
  const example = fileURLToPath(new URL('../../examples/home-cluster.yaml', import.meta.url));
  const noGguf = () => Promise.reject(new Error('the example describes its model by shape'));

  test('the README example: the GPU and the Mac hold the 70B model; the desktops would only add time', async () => {
    const input = await readSimulation(example, noGguf);
    const p = fits(plan(input));
    assert.deepEqual(p.devices.map((d) => d.owner).sort(), ['gaming-pc', 'macbook']);
    assert.deepEqual(p.excluded.map((e) => e.owner).sort(), ['desktop-1', 'desktop-2']);
    const memory = fits(plan({ ...input, objective: 'memory' }));
    assert.equal(memory.devices.length, 4);
    assert.ok(memory.predictedSecondsPerToken! > 5 * p.predictedSecondsPerToken!);
  });

  test('a bad simulation file names the key and what to write', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-sim-'));
    try {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, 'model: {layers: 4, layerSize: 1GiB, outputSize: 1GiB, embedding: 8, heads: 1, kvHeads: 1, headDim: 8, vocab: 8}\ndevices:\n  - {name: a, memory: lots}\n');
      await assert.rejects(readSimulation(file, noGguf), /devices\.0 \(a\)\.memory: 'lots' is not a size/);
      writeFileSync(file, 'model: {layers: 4, layerSize: 1GiB, outputSize: 1GiB, embedding: 8, heads: 1, kvHeads: 1, headDim: 8, vocab: 8}\ndevices:\n  - {name: a, memory: 8GiB, speed: fast}\n');
      await assert.rejects(readSimulation(file, noGguf), /'fast' is not a speed; write it like 300GB\/s/);
      writeFileSync(file, 'model: m.gguf\ndevices: []\n');
      await assert.rejects(readSimulation(file, noGguf), /list at least one device/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('speed drift', () => {
  test('a device that moved 30 % or more from the speed the plan used is named; smaller moves and unknown speeds are not', async () => {
    const { speedDrift, describeDrift } = await import('../../coordinator/drift.js');
    const before = new Map<string, number | null>([['a/CPU', 20 * GB], ['b/CPU', 10 * GB], ['c/CPU', null]]);
    assert.equal(speedDrift(before, [rpc('a', GiB, 16 * GB), rpc('b', GiB, 12 * GB), rpc('c', GiB, 5 * GB)]), null);
    const d = speedDrift(before, [rpc('a', GiB, 6 * GB), rpc('b', GiB, 14 * GB)])!;
    assert.equal(d.key, 'a/CPU', 'the largest move wins');
    assert.equal(describeDrift(d), 'the measured speed of a/CPU moved from 20.0 to 6.0 GB/s (-70 %)');
    assert.equal(speedDrift(before, [rpc('d', GiB, 1 * GB)]), null, 'a device the plan did not know is no drift');
  });
});

describe('hops priced from round trips', () => {
  test("the kernel's minrtt per peer, and what a hop costs from it", async () => {
    const { parseSsMinRtt } = await import('../../host/tcp-bytes.js');
    const { hopSecondsFromRtt } = await import('../../coordinator/cluster-view.js');
    const ss = [
      '0      0      10.0.0.1:40000 10.0.0.5:50051 users:(("node",pid=42,fd=21))',
      '\t bbr rtt:8.504/11.126 ato:40 bytes_acked:5 minrtt:0.310 snd_wnd:65536',
      '0      0      10.0.0.1:40002 10.0.0.5:50051 users:(("node",pid=42,fd=22))',
      '\t bbr rtt:0.9/0.1 minrtt:0.250',
      '0      0      10.0.0.1:40004 10.0.0.6:50051 users:(("node",pid=7,fd=3))',
      '\t bbr rtt:0.5/0.1 minrtt:0.100',
    ].join('\n');
    // srtt (8.5 ms here) is inflated by delayed ACKs on request/response traffic; minrtt is not.
    assert.deepEqual([...parseSsMinRtt(ss, 42)], [['10.0.0.5:50051', 0.25]]);
    assert.ok(Math.abs(hopSecondsFromRtt(0.25) - 0.0008) < 1e-12);
    // A Wi-Fi link (5 ms) makes a hop cost about ten times a wired one.
    assert.ok(hopSecondsFromRtt(5) > 10 * hopSecondsFromRtt(0.25));
  });
});
