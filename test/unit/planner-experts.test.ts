// MoE expert tensors on a second device of the same worker (a worker serving GPU0 and CPU): the fast
// device takes the dense parts of blocks and the slow one of the same machine keeps their experts,
// when and only when that lowers the predicted time per token within memory. All in memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { plan } from '../../coordinator/planner/planner.js';
import { readSimulation } from '../../coordinator/planner/simulation.js';
import type { CandidateDevice, ModelFacts, Plan, PlanInput, PlanResult } from '../../coordinator/planner/types.js';
import { expertTensorPattern } from '../../models/gguf-info.js';
import { plannerModel } from '../helpers/planner.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const GB = 1e9;

/** 8 blocks of 1 GiB, 900 MiB of which are 8 experts; a token uses 2 of them. */
function moe(overrides: Partial<ModelFacts> = {}): ModelFacts {
  return plannerModel({
    path: '/models/moe.gguf',
    name: 'moe',
    layerBytes: new Array<number>(8).fill(GiB),
    experts: { count: 8, used: 2, layerBytes: new Array<number>(8).fill(900 * MiB) },
    ...overrides,
  });
}

function device(owner: string, deviceName: string, freeBytes: number, bytesPerSecond: number, hopSeconds = 0.0002): CandidateDevice {
  return { key: `${owner}/${deviceName}`, kind: 'rpc', owner, deviceName, endpoint: `${owner}.lan:50052`, freeBytes, totalBytes: freeBytes, bytesPerSecond, hopSeconds };
}

/** One machine with a 3 GiB GPU and 32 GiB of RAM (its server lists the GPU first). */
const box = (hop?: number) => [device('box', 'GPU0', 3 * GiB, 500 * GB, hop), device('box', 'CPU', 32 * GiB, 30 * GB, hop)];

function input(devices: CandidateDevice[], model = moe()): PlanInput {
  return { model, devices, context: { ctxSize: 1024, parallel: 1, typeK: 'f16', typeV: 'f16', nUbatch: 512 }, reserveBytes: 0, objective: 'speed' };
}

function fits(result: PlanResult): Plan {
  if (!result.fits) assert.fail(`expected a plan, got a refusal: ${result.reason}`);
  return result;
}

const byName = (p: Plan, name: string) => p.devices.find((d) => d.deviceName === name)!;

describe('MoE experts on another device of the same worker', () => {
  test('the GPU takes every block\'s dense part and the CPU of the same machine keeps experts, within memory', () => {
    const m = moe();
    const p = fits(plan(input(box(), m)));
    const gpu = byName(p, 'GPU0');
    const cpu = byName(p, 'CPU');
    assert.ok(cpu.expertLayers.length > 0, 'some blocks\' experts stay on the CPU');
    assert.ok(gpu.layers > 3, `the GPU holds more blocks than whole blocks would fit (${gpu.layers})`);
    for (const d of p.devices) assert.ok(d.totalBytes <= d.usableBytes, `${d.deviceName}: ${d.totalBytes} > ${d.usableBytes}`);
    // No byte is lost or counted twice.
    const weights = m.layerBytes.reduce((a, b) => a + b, 0) + m.outputBytes;
    assert.equal(p.devices.reduce((a, d) => a + d.weightBytes, 0), weights);
    // The experts held on the CPU belong to blocks in the GPU's range, and the override names the CPU.
    for (const b of cpu.expertLayers) assert.ok(b >= gpu.firstLayer && b < gpu.firstLayer + gpu.layers, `block ${b}`);
    assert.deepEqual(p.expertOverrides, [{ layers: cpu.expertLayers, device: p.devices.filter((d) => d.kind === 'rpc').indexOf(cpu) }]);
    assert.equal(p.rpcEndpoints.length, 2);
  });

  test('it is faster than whole blocks on the same two devices in two machines, which cannot share a block', () => {
    const spilled = fits(plan(input(box())));
    const apart = fits(plan(input([device('gpu-box', 'GPU0', 3 * GiB, 500 * GB), device('cpu-box', 'CPU', 32 * GiB, 30 * GB)])));
    assert.deepEqual(apart.expertOverrides, []);
    assert.ok(
      spilled.predictedSecondsPerToken! < 0.8 * apart.predictedSecondsPerToken!,
      `${spilled.predictedSecondsPerToken} vs ${apart.predictedSecondsPerToken}`,
    );
  });

  test('the prediction counts a spilled block\'s experts at the share a token uses, and a round trip for it', () => {
    const p = fits(plan(input(box())));
    const cpu = byName(p, 'CPU');
    const expertReads = cpu.expertLayers.length * 900 * MiB * (2 / 8);
    const own = cpu.readBytes - expertReads;
    const expected = cpu.readBytes / (30 * GB) + (cpu.layers > 0 ? 0.0002 : 0) + cpu.expertLayers.length * 0.0002;
    assert.ok(own >= 0);
    assert.ok(Math.abs(cpu.secondsPerToken! - expected) < 1e-12);
  });

  test('no spill where it cannot pay: a dense model, equal devices, or round trips dearer than the gain', () => {
    assert.deepEqual(fits(plan(input(box(), moe({ experts: null })))).expertOverrides, []);
    const equal = [device('box', 'CPU0', 3 * GiB, 30 * GB), device('box', 'CPU1', 32 * GiB, 30 * GB)];
    assert.deepEqual(fits(plan(input(equal))).expertOverrides, []);
    const slowLink = fits(plan(input(box(0.05))));
    assert.deepEqual(slowLink.expertOverrides, [], 'at 50 ms a round trip, a spilled block costs more than it saves');
  });

  test('the memory objective keeps whole blocks', () => {
    const p = fits(plan({ ...input(box()), objective: 'memory' }));
    assert.deepEqual(p.expertOverrides, []);
  });

  test('bad expert facts are refused with the field named', () => {
    assert.throws(() => plan(input(box(), moe({ experts: { count: 8, used: 9, layerBytes: new Array<number>(8).fill(0) } }))), /model\.experts\.used \(9\)/);
    assert.throws(() => plan(input(box(), moe({ experts: { count: 8, used: 2, layerBytes: [1] } }))), /model\.experts\.layerBytes has 1 entries/);
    assert.throws(() => plan(input(box(), moe({ experts: { count: 8, used: 2, layerBytes: new Array<number>(8).fill(2 * GiB) } }))), /more than the whole block/);
  });

  test('the override pattern selects exactly the named blocks\' expert tensors', () => {
    const re = new RegExp(expertTensorPattern([3, 12]));
    for (const name of ['blk.3.ffn_up_exps.weight', 'blk.12.ffn_gate_exps.weight', 'blk.3.ffn_down_exps.weight', 'blk.3.ffn_gate_up_exps.weight', 'blk.12.ffn_down_chexps.weight']) {
      assert.ok(re.test(name), name);
    }
    for (const name of ['blk.13.ffn_up_exps.weight', 'blk.1.ffn_up_exps.weight', 'blk.3.ffn_up_shexp.weight', 'blk.3.attn_q.weight', 'blk.3.ffn_gate_inp.weight']) {
      assert.ok(!re.test(name), name);
    }
  });

  test('the README\'s workstation example: the GPU holds every block\'s dense part, its own RAM the experts', async () => {
    const example = fileURLToPath(new URL('../../examples/moe-workstation.yaml', import.meta.url));
    const input = await readSimulation(example, () => assert.fail('the example describes its model by shape'));
    const p = fits(plan(input));
    const gpu = byName(p, 'CUDA0');
    assert.equal(gpu.layers, 37, 'all 36 blocks and the output head');
    assert.deepEqual(p.rpcDevices, [1, 0], 'the workstation serves CUDA0 first, the plan lists its CPU first');
    assert.equal(byName(p, 'CPU').layers, 0);
    assert.ok(byName(p, 'CPU').expertLayers.length > 0);
    // Two machines with the same devices cannot split a block, and are predicted slower.
    const apart = fits(plan({ ...input, devices: input.devices.map((d) => (d.deviceName === 'CPU' && d.owner === 'workstation' ? { ...d, endpoint: 'other:50052' } : d)) }));
    assert.ok(p.predictedSecondsPerToken! < apart.predictedSecondsPerToken!);
  });
});
