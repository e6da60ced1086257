// Pipelined decode's pure parts: how many groups, how the sequences split, which group a request
// joins, and what the planner counts for the extra contexts. All in memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { pickGroup, WORTH_FOLLOWING, type GroupScheduler } from '../../coordinator/engine/groups.js';
import { groupShares, parsePipelineSetting, pipelineGroups, stageCount } from '../../coordinator/planner/pipeline.js';
import { computeBufferBytes, logitsBufferBytes, plan } from '../../coordinator/planner/planner.js';
import type { CandidateDevice, Plan, PlanContext, PlanResult } from '../../coordinator/planner/types.js';
import { plannerModel } from '../helpers/planner.js';

const GiB = 1024 ** 3;

function rpc(name: string, freeBytes: number): CandidateDevice {
  return { key: `${name}/CPU`, kind: 'rpc', owner: name, deviceName: 'CPU', endpoint: `${name}.lan:50052`, freeBytes, totalBytes: freeBytes };
}

function fitted(r: PlanResult): Plan {
  if (!r.fits) assert.fail(`expected a plan, got a refusal: ${r.reason}`);
  return r;
}

describe('pipeline groups', () => {
  test('auto: one group per stage when every group gets a sequence; one with a single stage', () => {
    assert.equal(pipelineGroups('auto', 2, 8), 2);
    assert.equal(pipelineGroups('auto', 3, 8), 3);
    assert.equal(pipelineGroups('auto', 2, 1), 1);
    assert.equal(pipelineGroups('auto', 1, 8), 1);
    assert.equal(pipelineGroups('off', 3, 8), 1);
    assert.equal(pipelineGroups(4, 2, 8), 4);
    assert.equal(pipelineGroups(4, 2, 3), 3, 'never more groups than sequences');
  });

  test('stages are hosts with layers: a worker with two devices is one stage, the coordinator another', () => {
    assert.equal(stageCount([{ endpoint: 'a:1' }, { endpoint: 'a:1' }, { endpoint: 'b:1' }]), 2);
    assert.equal(stageCount([{ endpoint: null, layers: 3 }, { endpoint: 'b:1', layers: 2 }]), 2);
    assert.equal(stageCount([{ endpoint: null, layers: 0 }, { endpoint: 'b:1', layers: 2 }]), 1);
  });

  test('sequences split evenly, larger shares first', () => {
    assert.deepEqual(groupShares(8, 2), [4, 4]);
    assert.deepEqual(groupShares(5, 2), [3, 2]);
    assert.deepEqual(groupShares(4, 1), [4]);
  });

  test('the setting reads auto, off or a count; 1 is off; anything else names the field', () => {
    assert.equal(parsePipelineSetting('auto', '--pipeline'), 'auto');
    assert.equal(parsePipelineSetting('off', '--pipeline'), 'off');
    assert.equal(parsePipelineSetting('3', '--pipeline'), 3);
    assert.equal(parsePipelineSetting('1', '--pipeline'), 'off');
    assert.throws(() => parsePipelineSetting('two', '--pipeline'), /--pipeline: 'two' must be auto/);
    assert.throws(() => parsePipelineSetting('0', '--pipeline'), /--pipeline: '0'/);
  });
});

describe('pickGroup', () => {
  const group = (active: number, capacity: number, saved = 0): GroupScheduler =>
    ({ active, capacity, cachedPrefix: () => saved, prepare: async () => assert.fail(), enqueue: () => {}, cancel: () => {} }) as unknown as GroupScheduler;
  const prompt = Int32Array.from([1, 2, 3]);

  test('the group whose free sequence spares the most prompt tokens, when that is worth following', () => {
    assert.equal(pickGroup([group(0, 4, 100), group(0, 4, 200), group(0, 4, 150)], prompt, true), 1);
    assert.equal(pickGroup([group(1, 4, 200), group(0, 4)], prompt, true), 0, 'one request busier is close enough');
    assert.equal(pickGroup([group(0, 4, WORTH_FOLLOWING - 1), group(0, 4, 10)], prompt, true), 0, 'a short shared prefix does not decide');
    assert.equal(pickGroup([group(1, 4, 10), group(2, 4, 30)], prompt, true), 0);
  });

  test('balance comes first: a group two requests busier is passed over even with its cache', () => {
    assert.equal(pickGroup([group(2, 4, 500), group(0, 4)], prompt, true), 1);
  });

  test('with no saving, the least loaded group, lowest index on ties', () => {
    assert.equal(pickGroup([group(2, 4), group(1, 4), group(1, 4)], prompt, true), 1);
    assert.equal(pickGroup([group(0, 4), group(0, 4)], prompt, true), 0);
  });

  test('a full group is passed over even when its cache would help; all full: the least loaded queues it', () => {
    assert.equal(pickGroup([group(4, 4, 500), group(3, 4)], prompt, true), 1);
    assert.equal(pickGroup([group(6, 4), group(5, 4)], prompt, true), 1);
  });
});

describe('planner with pipelined decode', () => {
  const m = plannerModel();
  const ctx: PlanContext = { ctxSize: 1024, parallel: 4, typeK: 'f16', typeV: 'f16', nUbatch: 512 };

  test('each context has its own compute buffers on every device; the KV cache is only partitioned', () => {
    const off = fitted(plan({ model: m, devices: [rpc('a', 4 * GiB), rpc('b', 4 * GiB)], context: { ...ctx, pipeline: 'off' }, reserveBytes: 0 }));
    const auto = fitted(plan({ model: m, devices: [rpc('a', 4 * GiB), rpc('b', 4 * GiB)], context: { ...ctx, pipeline: 'auto' }, reserveBytes: 0 }));
    assert.equal(off.groups, 1);
    assert.equal(auto.groups, 2);
    assert.deepEqual(auto.tensorSplit, off.tensorSplit);
    assert.deepEqual(auto.devices.map((d) => d.kvBytes), off.devices.map((d) => d.kvBytes));
    assert.equal(auto.devices[0]!.computeBytes, 2 * computeBufferBytes(m, ctx));
    assert.equal(auto.devices[1]!.computeBytes, 2 * (computeBufferBytes(m, ctx) + logitsBufferBytes(m, ctx)));
  });

  test('a placement on one stage plans one context, even when the candidates allowed more', () => {
    // The model fits on the bigger worker alone under the speed objective.
    const p = fitted(plan({ model: m, devices: [rpc('a', 1 * GiB), rpc('b', 8 * GiB)], context: { ...ctx, pipeline: 'auto' }, reserveBytes: 0, objective: 'speed' }));
    assert.equal(stageCount(p.devices), 1);
    assert.equal(p.groups, 1);
    assert.equal(p.devices[0]!.computeBytes, computeBufferBytes(m, ctx) + logitsBufferBytes(m, ctx));
  });

  test('when only the extra contexts do not fit, the refusal says to turn pipelining off', () => {
    const devices = [rpc('a', 1 * GiB), rpc('b', 1 * GiB)];
    const one = fitted(plan({ model: m, devices, context: { ...ctx, pipeline: 'off' }, reserveBytes: 0 }));
    // Just enough room for one context's buffers, not for a second one's.
    const room = one.devices.map((d) => d.totalBytes + computeBufferBytes(m, ctx) / 2);
    const tight = devices.map((d, i) => ({ ...d, freeBytes: room[i]!, totalBytes: room[i]! }));
    const refused = plan({ model: m, devices: tight, context: { ...ctx, pipeline: 'auto' }, reserveBytes: 0 });
    assert.equal(refused.fits, false);
    if (refused.fits) return;
    assert.ok(refused.suggestions.some((x) => /^Start with --pipeline off \(one context instead of 2; saves up to .* of compute buffers\)\.$/.test(x)), refused.suggestions.join('\n'));
  });
});
