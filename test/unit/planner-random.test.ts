// The planner on a few hundred seeded random clusters and models (dense and MoE, measured and unmeasured
// speeds, hops, reserves, pipelines, both objectives): every plan keeps the invariants llama.cpp needs,
// reports the times of the one time model, and accounts for every candidate; every suggestion a refusal
// makes does fit. All in memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice, ModelFacts, Plan, PlanInput, PlanResult, Refusal } from '../../coordinator/planner/types.js';
import { plannerModel } from '../helpers/planner.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const CASES = 300;

/** mulberry32: a small seeded generator, so a failing case can be replayed by its seed. */
function random(seed: number) {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    chance: (p: number) => next() < p,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
    /** Log-uniform in [lo, hi): sizes and speeds spread over orders of magnitude. */
    log: (lo: number, hi: number) => Math.exp(Math.log(lo) + next() * (Math.log(hi) - Math.log(lo))),
  };
}

function randomModel(r: ReturnType<typeof random>): ModelFacts {
  const layerCount = r.int(1, 40);
  const base = r.log(MiB, GiB);
  const layerBytes = Array.from({ length: layerCount }, () => Math.round(base * (r.chance(0.5) ? 1 : 0.5 + r.log(0.01, 1))));
  const count = r.pick([8, 32, 128]);
  const experts = r.chance(0.5) ? { count, used: r.int(1, 8), layerBytes: layerBytes.map((b) => Math.floor(b * 0.9)) } : null;
  return plannerModel({
    layerCount,
    layerBytes,
    inputBytes: Math.round(r.log(MiB, 512 * MiB)),
    outputBytes: Math.round(r.log(MiB, GiB)),
    fileType: r.pick([0, 1, 7, 15, null]),
    embeddingLength: r.pick([256, 4096]),
    headCount: r.pick([4, 32]),
    experts,
    ...(r.chance(0.2) ? { slidingWindow: 512, swaLayers: Array.from({ length: layerCount }, (_, il) => il % 6 < 5) } : {}),
  });
}

/** A local device (sometimes), then workers of one to three devices; some workers pair a fast GPU with their CPU. */
function randomInput(seed: number): PlanInput {
  const r = random(seed);
  const model = randomModel(r);
  const weights = model.layerBytes.reduce((a, b) => a + b, 0) + model.outputBytes;
  const reserveBytes = r.chance(0.3) ? 0 : Math.round(r.log(MiB, 256 * MiB));
  const speed = () => (r.chance(0.2) ? null : r.log(5e9, 1e12));
  const devices: CandidateDevice[] = [];
  if (r.chance(0.4)) {
    const freeBytes = reserveBytes + Math.round(weights * r.log(0.05, 3));
    devices.push({ key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null, freeBytes, totalBytes: freeBytes, bytesPerSecond: speed() });
  }
  // A fifth of the clusters are one workstation, the setting where MoE experts stay in RAM.
  const alone = r.chance(0.2);
  const workers = alone ? 1 : r.int(0, 4);
  for (let w = 0; w < workers; w++) {
    const names = alone ? ['CUDA0', 'CPU'] : r.pick([['CPU'], ['CUDA0'], ['CUDA0', 'CPU'], ['CUDA0', 'CUDA1', 'CPU']]);
    const hopSeconds = r.chance(0.3) ? undefined : r.log(1e-5, 2e-3);
    names.forEach((deviceName, serverIndex) => {
      // A workstation's GPU holds part of the model, its RAM all of it.
      const workstation = names.length > 1;
      const share = workstation ? weights * (deviceName === 'CPU' ? 1 : 0.3) : weights / workers;
      const freeBytes = reserveBytes + Math.round(share * r.log(0.3, 6));
      const bytesPerSecond = workstation ? (deviceName === 'CPU' ? r.log(5e9, 60e9) : r.log(200e9, 1e12)) : speed();
      devices.push({ key: `w${w}/${deviceName}`, kind: 'rpc', owner: `w${w}`, deviceName, endpoint: `w${w}.lan:50052`, serverIndex, freeBytes, totalBytes: freeBytes, bytesPerSecond, hopSeconds });
    });
  }
  return {
    model,
    devices,
    context: {
      ctxSize: r.pick([256, 1000, 4096, 8192]),
      parallel: r.int(1, 4),
      typeK: r.pick(['f16', 'q8_0'] as const),
      typeV: r.pick(['f16', 'q4_0'] as const),
      nUbatch: r.pick([256, 512]),
      pipeline: r.pick(['off', 'auto', 2] as const),
    },
    reserveBytes,
    objective: r.pick(['speed', 'memory'] as const),
  };
}

const results = Array.from({ length: CASES }, (_, i) => {
  const input = randomInput(i + 1);
  return { seed: i + 1, input, result: plan(input) };
});
const plans = results.filter((c): c is typeof c & { result: Plan } => c.result.fits);
const refusals = results.filter((c): c is typeof c & { result: Refusal } => !c.result.fits);

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= 1e-12 * Math.max(1, Math.abs(expected)), `${what}: ${actual}, expected ${expected}`);
}

function planWith(input: PlanInput, change: Partial<PlanInput['context']> = {}, extra: CandidateDevice[] = []): PlanResult {
  return plan({ ...input, devices: [...input.devices, ...extra], context: { ...input.context, ...change } });
}

describe('the planner on seeded random clusters', () => {
  test('the cases cover plans and refusals, both objectives, and MoE spills', () => {
    assert.ok(plans.length >= CASES / 4 && refusals.length >= CASES / 8, `${plans.length} plans, ${refusals.length} refusals`);
    assert.ok(plans.some((c) => c.result.objective === 'speed') && plans.some((c) => c.result.objective === 'memory'));
    assert.ok(plans.some((c) => c.result.expertOverrides.length > 0), 'some plan moves MoE experts');
  });

  test('every slot is placed once, in contiguous ranges, within every device’s memory', () => {
    for (const { seed, input, result: p } of plans) {
      let next = 0;
      for (const [i, d] of p.devices.entries()) {
        assert.equal(d.firstLayer, next, `seed ${seed}: ${d.key} starts where the previous device ends`);
        const expertsOnly = d.layers === 0 && d.expertLayers.length > 0 && i < p.devices.length - 1;
        assert.ok(d.layers >= 1 || expertsOnly, `seed ${seed}: ${d.key} holds a slot, or experts for a faster device`);
        assert.ok(d.totalBytes <= d.usableBytes, `seed ${seed}: ${d.key} holds ${d.totalBytes} within ${d.usableBytes}`);
        assert.equal(d.totalBytes, d.weightBytes + d.kvBytes + d.computeBytes);
        assert.equal(d.holdsOutput, i === p.devices.length - 1, `seed ${seed}: only the last device holds the output head`);
        next += d.layers;
      }
      assert.equal(next, input.model.layerCount + 1, `seed ${seed}: every slot, the output head included`);
      assert.equal(p.nGpuLayers, p.tensorSplit.reduce((a, b) => a + b, 0));
    }
  });

  test('every candidate either takes part or is excluded with a reason', () => {
    for (const { seed, input, result: p } of plans) {
      const keys = [...p.devices.map((d) => d.key), ...p.excluded.map((e) => e.key)].sort();
      assert.deepEqual(keys, input.devices.map((d) => d.key).sort(), `seed ${seed}`);
      assert.ok(p.excluded.every((e) => e.reason.length > 0));
    }
  });

  test('MoE experts move only to a slower device of the same worker', () => {
    for (const { seed, result: p } of plans) {
      const rpc = p.devices.filter((d) => d.kind === 'rpc');
      for (const { layers, device } of p.expertOverrides) {
        const holder = rpc[device]!;
        const owner = p.devices.find((d) => layers[0]! >= d.firstLayer && layers[0]! < d.firstLayer + d.layers)!;
        assert.equal(holder.endpoint, owner.endpoint, `seed ${seed}: the experts of block ${layers[0]} stay on ${owner.owner}`);
        if (holder.bytesPerSecond !== null && owner.bytesPerSecond !== null) {
          assert.ok(holder.bytesPerSecond < owner.bytesPerSecond, `seed ${seed}: ${holder.key} is slower than ${owner.key}`);
        }
      }
    }
  });

  test('each device’s time is the time model’s, and the prediction is their sum', () => {
    for (const { seed, result: p } of plans) {
      for (const d of p.devices) {
        if (d.bytesPerSecond === null) {
          assert.equal(d.secondsPerToken, null);
          continue;
        }
        const expected = d.readBytes / d.bytesPerSecond + (d.layers > 0 ? d.hopSeconds : 0) + d.expertLayers.length * d.hopSeconds;
        close(d.secondsPerToken!, expected, `seed ${seed}: ${d.key}`);
      }
      const measured = p.devices.every((d) => d.secondsPerToken !== null);
      if (!measured) assert.equal(p.predictedSecondsPerToken, null);
      else close(p.predictedSecondsPerToken!, p.devices.reduce((a, d) => a + d.secondsPerToken!, 0), `seed ${seed}: the prediction`);
    }
  });

  test('every number a refusal suggests makes the model fit', () => {
    for (const { seed, input, result: r } of refusals) {
      assert.ok(r.shortfallBytes > 0, `seed ${seed}: something is missing`);
      for (const s of r.suggestions) {
        const worker = /^Add a worker with at least ([\d.]+) GiB free\.$/.exec(s);
        const ctx = /^Reduce --ctx-size from \d+ to (\d+) /.exec(s);
        const parallel = /^Reduce --parallel from \d+ to (\d+) /.exec(s);
        let after: PlanResult | null = null;
        if (worker) {
          const freeBytes = Math.round(Number(worker[1]) * 10) * (GiB / 10);
          after = planWith(input, {}, [{ key: 'added/CPU', kind: 'rpc', owner: 'added', deviceName: 'CPU', endpoint: 'added.lan:50052', freeBytes, totalBytes: freeBytes }]);
        } else if (ctx) after = planWith(input, { ctxSize: Number(ctx[1]) });
        else if (parallel) after = planWith(input, { parallel: Number(parallel[1]) });
        else if (s.startsWith('Start with --pipeline off')) after = planWith(input, { pipeline: 'off' });
        if (after) assert.ok(after.fits, `seed ${seed}: "${s}" fits`);
      }
    }
  });
});
