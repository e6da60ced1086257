// The planner: model × devices → plan or refusal, all in memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ErrorCode, isHearthError } from '../../common/errors.js';
import { formatGiB } from '../../cli/format.js';
import {
  computeBufferBytes,
  kvBytesPerToken,
  kvBytesPerTokenPerLayer,
  logitsBufferBytes,
  paddedContext,
  plan,
} from '../../coordinator/planner/planner.js';
import type { CandidateDevice, ModelFacts, Plan, PlanContext, PlanInput, PlanResult, Refusal } from '../../coordinator/planner/types.js';
import { plannerModel } from '../helpers/planner.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

const model = plannerModel;

const context: PlanContext = { ctxSize: 1024, parallel: 1, typeK: 'f16', typeV: 'f16', nUbatch: 512 };

function rpc(name: string, freeBytes: number): CandidateDevice {
  return { key: `${name}/CPU`, kind: 'rpc', owner: name, deviceName: 'CPU', endpoint: `${name}.lan:50052`, freeBytes, totalBytes: freeBytes };
}

function local(freeBytes: number): CandidateDevice {
  return { key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null, freeBytes, totalBytes: freeBytes };
}

function input(devices: CandidateDevice[], overrides: Partial<PlanInput> = {}): PlanInput {
  return { model: model(), devices, context, reserveBytes: 0, ...overrides };
}

function fitted(r: PlanResult): Plan {
  if (!r.fits) assert.fail(`expected a plan, got a refusal: ${r.reason}`);
  return r;
}

function refused(r: PlanResult): Refusal {
  if (r.fits) assert.fail(`expected a refusal, got a plan over ${r.devices.map((d) => d.key).join(', ')}`);
  return r;
}

/** What a model needs in total on `deviceCount` devices: every slot, every compute buffer, one logits buffer. */
function need(m: ModelFacts, ctx: PlanContext, deviceCount: number): number {
  const kvPerLayer = paddedContext(ctx.ctxSize) * ctx.parallel * kvBytesPerTokenPerLayer(m, ctx.typeK, ctx.typeV);
  const weights = m.layerBytes.reduce((a, b) => a + b, 0) + m.outputBytes;
  return weights + m.layerCount * kvPerLayer + deviceCount * computeBufferBytes(m, ctx) + logitsBufferBytes(m, ctx);
}

/** The invariants every plan keeps, whatever its input. */
function assertWellFormed(p: Plan, m: ModelFacts): void {
  let next = 0;
  for (const d of p.devices) {
    assert.equal(d.firstLayer, next, `${d.key} starts where the previous device ends`);
    assert.ok(d.layers >= 1, `${d.key} takes at least one slot`);
    assert.ok(d.totalBytes <= d.usableBytes, `${d.key} holds ${d.totalBytes} within ${d.usableBytes}`);
    assert.equal(d.totalBytes, d.weightBytes + d.kvBytes + d.computeBytes);
    next += d.layers;
  }
  assert.equal(next, m.layerCount + 1, 'every slot, the output head included, is placed');
  assert.deepEqual(
    p.devices.map((d) => d.holdsOutput),
    p.devices.map((_, i) => i === p.devices.length - 1),
    'the last device holds the output head',
  );
  const rpcDevices = p.devices.filter((d) => d.kind === 'rpc');
  assert.deepEqual(p.rpcEndpoints, rpcDevices.map((d) => d.endpoint));
  assert.deepEqual(p.tensorSplit, rpcDevices.map((d) => d.layers));
  assert.ok(p.tensorSplit.every(Number.isInteger));
  assert.equal(p.nGpuLayers, p.tensorSplit.reduce((a, b) => a + b, 0));
  assert.equal(p.hostBytes, m.inputBytes);
}

function throwsInvalid(i: PlanInput, field: RegExp): void {
  assert.throws(() => plan(i), (e: unknown) => isHearthError(e, ErrorCode.InvalidArgument) && field.test(e.message));
}

describe('memory arithmetic', () => {
  test('KV bytes per token follow n_head_kv × (head_dim_k × bytes(k) + head_dim_v × bytes(v))', () => {
    const shape = { headCountKv: 2, headDimK: 64, headDimV: 64, layerCount: 10 };
    assert.equal(kvBytesPerTokenPerLayer(shape, 'f16', 'f16'), 512);
    assert.equal(kvBytesPerTokenPerLayer(shape, 'q8_0', 'q8_0'), 272);
    assert.equal(kvBytesPerTokenPerLayer(shape, 'f32', 'q4_0'), 2 * (64 * 4 + 36));
    assert.equal(kvBytesPerTokenPerLayer({ ...shape, headDimV: 128 }, 'bf16', 'q5_1'), 2 * (128 + 96));
    assert.equal(kvBytesPerToken(shape, 'f16', 'f16'), 5120);
  });

  test('the context is padded to a multiple of 256 tokens', () => {
    assert.equal(paddedContext(1), 256);
    assert.equal(paddedContext(256), 256);
    assert.equal(paddedContext(257), 512);
    assert.equal(paddedContext(8192), 8192);
  });

  test('GiB are printed with two decimals', () => {
    assert.equal(formatGiB(3.42 * GiB), '3.42 GiB');
    assert.equal(formatGiB(0), '0.00 GiB');
    assert.equal(formatGiB(512 * MiB), '0.50 GiB');
  });

  test('a plan charges each block its KV cache for the padded context and every sequence', () => {
    const ctx = { ...context, ctxSize: 1000, parallel: 3 };
    const p = fitted(plan(input([rpc('a', 8 * GiB)], { context: ctx })));
    const [d] = p.devices;
    assert.equal(d?.kvBytes, 8 * 1024 * 3 * 512);
    assert.equal(p.kvBytesPerToken, 8 * 512);
  });
});

describe('plan', () => {
  test('layers are split in proportion to memory and the output head goes to the last device', () => {
    const m = model();
    const p = fitted(plan(input([rpc('a', 2 * GiB), rpc('b', 2 * GiB), rpc('c', 4 * GiB)])));
    assertWellFormed(p, m);
    assert.deepEqual(p.devices.map((d) => d.key), ['a/CPU', 'b/CPU', 'c/CPU']);
    assert.deepEqual(p.tensorSplit, [2, 2, 5]);
    assert.equal(p.nGpuLayers, 9);
    assert.deepEqual(p.rpcEndpoints, ['a.lan:50052', 'b.lan:50052', 'c.lan:50052']);
    assert.equal(p.devices[2]?.holdsOutput, true);
    assert.equal(p.devices[2]?.computeBytes, computeBufferBytes(m, context) + logitsBufferBytes(m, context));
    assert.equal(p.devices[0]?.computeBytes, computeBufferBytes(m, context));
    assert.deepEqual(p.excluded, []);
  });

  test('uneven memories: 4 GiB and 12 GiB take about 1:3 of the layers', () => {
    const m = model({ layerCount: 32, layerBytes: new Array<number>(32).fill(100 * MiB) });
    const p = fitted(plan(input([rpc('small', 4 * GiB), rpc('big', 12 * GiB)], { model: m })));
    assertWellFormed(p, m);
    assert.deepEqual(p.tensorSplit, [8, 25]);
  });

  test('usable memory exactly equal to the need fits; one byte less is refused by one byte', () => {
    const m = model();
    const reserveBytes = 256 * MiB;
    const exact = need(m, context, 1) + reserveBytes;
    const p = fitted(plan(input([rpc('a', exact)], { reserveBytes })));
    assert.equal(p.devices[0]?.totalBytes, p.devices[0]?.usableBytes);
    assert.equal(p.totalBytes, need(m, context, 1) + m.inputBytes);

    const r = refused(plan(input([rpc('a', exact - 1)], { reserveBytes })));
    assert.equal(r.shortfallBytes, 1);
    assert.equal(r.neededBytes, need(m, context, 1));
    assert.equal(r.availableBytes, need(m, context, 1) - 1);
  });

  test('two devices filled exactly fit; one byte less on either is refused', () => {
    // Four equal slots: three blocks and an output head the size of a block with its KV.
    const kvPerLayer = 1024 * 512;
    const m = model({ layerCount: 3, layerBytes: [100 * MiB, 100 * MiB, 100 * MiB], outputBytes: 100 * MiB + kvPerLayer });
    const compute = computeBufferBytes(m, context);
    const logits = logitsBufferBytes(m, context);
    const first = 2 * (100 * MiB + kvPerLayer) + compute;
    const second = 2 * (100 * MiB + kvPerLayer) + compute + logits;
    const p = fitted(plan(input([rpc('a', first), rpc('b', second)], { model: m })));
    assertWellFormed(p, m);
    assert.deepEqual(p.tensorSplit, [2, 2]);
    assert.equal(refused(plan(input([rpc('a', first - 1), rpc('b', second)], { model: m }))).shortfallBytes, 1);
    assert.equal(refused(plan(input([rpc('a', first), rpc('b', second - 1)], { model: m }))).shortfallBytes, 1);
  });

  test('a device too small for one layer is excluded with a reason; the others take everything', () => {
    const m = model();
    const reserveBytes = 64 * MiB;
    const p = fitted(plan(input([rpc('a', 2 * GiB), rpc('tiny', 128 * MiB), rpc('c', 2 * GiB)], { reserveBytes })));
    assertWellFormed(p, m);
    assert.deepEqual(p.devices.map((d) => d.key), ['a/CPU', 'c/CPU']);
    assert.equal(p.excluded.length, 1);
    assert.equal(p.excluded[0]?.key, 'tiny/CPU');
    assert.equal(p.excluded[0]?.owner, 'tiny');
    assert.match(p.excluded[0]?.reason ?? '', /^0\.06 GiB usable after the 0\.06 GiB reserve, a layer needs 0\.11 GiB/);
  });

  test('a last device too small for the output head is excluded, and the one before it takes the head', () => {
    const m = model({ outputBytes: 500 * MiB });
    const p = fitted(plan(input([rpc('a', 4 * GiB), rpc('b', 300 * MiB)], { model: m })));
    assertWellFormed(p, m);
    assert.deepEqual(p.devices.map((d) => d.key), ['a/CPU']);
    assert.match(p.excluded[0]?.reason ?? '', /the output head needs 0\.5\d GiB/);
  });

  test('a device with less free memory than the reserve is excluded', () => {
    const p = fitted(plan(input([rpc('a', 4 * GiB), rpc('b', 100 * MiB)], { reserveBytes: 200 * MiB })));
    assert.match(p.excluded[0]?.reason ?? '', /^0\.10 GiB free is not more than the 0\.20 GiB reserve/);
  });

  test('a proportional split that overflows is repaired by moving layers to the device with slack', () => {
    // The output head is big, so b's proportional two slots (head + one block) do not fit; one does.
    const m = model({ outputBytes: 550 * MiB });
    const p = fitted(plan(input([rpc('a', 2 * GiB), rpc('b', 600 * MiB)], { model: m })));
    assertWellFormed(p, m);
    assert.deepEqual(p.tensorSplit, [8, 1]);
  });

  test('every device that takes part gets at least one layer, however small its share', () => {
    const m = model();
    for (const devices of [
      [rpc('huge', 64 * GiB), rpc('small', 200 * MiB)],
      [rpc('small', 200 * MiB), rpc('huge', 64 * GiB)],
    ]) {
      const p = fitted(plan(input(devices)));
      assertWellFormed(p, m);
      assert.equal(p.devices.length, 2);
      assert.ok(p.tensorSplit.every((n) => n >= 1), `split ${p.tensorSplit.join(':')}`);
    }
  });

  test('with more devices than layer slots, the smallest devices sit out', () => {
    const m = model({ layerCount: 1, layerBytes: [10 * MiB], outputBytes: 10 * MiB });
    const p = fitted(plan(input([rpc('a', 4 * GiB), rpc('b', 1 * GiB), rpc('c', 4 * GiB)], { model: m })));
    assertWellFormed(p, m);
    assert.deepEqual(p.devices.map((d) => d.key), ['a/CPU', 'c/CPU']);
    assert.match(p.excluded[0]?.reason ?? '', /only 2 layer slots/);
  });

  test('the local device takes the first layers, keeps the input embedding, and never the output head', () => {
    const m = model();
    const reserveBytes = 100 * MiB;
    const p = fitted(plan(input([local(1 * GiB), rpc('a', 4 * GiB)], { reserveBytes })));
    assertWellFormed(p, m);
    const [host, worker] = p.devices;
    assert.equal(host?.kind, 'local');
    assert.equal(host?.firstLayer, 0);
    assert.ok((host?.layers ?? 0) >= 1);
    assert.equal(host?.holdsOutput, false);
    assert.equal(host?.usableBytes, 1 * GiB - reserveBytes - m.inputBytes);
    assert.equal(host?.endpoint, null);
    assert.equal(worker?.holdsOutput, true);
    assert.equal(p.hostBytes, m.inputBytes);
    assert.equal(p.nGpuLayers, m.layerCount + 1 - (host?.layers ?? 0));
    assert.deepEqual(p.rpcEndpoints, ['a.lan:50052']);
    assert.deepEqual(p.tensorSplit, [p.nGpuLayers]);
  });

  test('the local device alone holds everything, output head included, with nothing offloaded', () => {
    const m = model();
    const p = fitted(plan(input([local(4 * GiB)])));
    assertWellFormed(p, m);
    assert.equal(p.devices[0]?.layers, m.layerCount + 1);
    assert.equal(p.devices[0]?.holdsOutput, true);
    assert.equal(p.nGpuLayers, 0);
    assert.deepEqual(p.tensorSplit, []);
    assert.deepEqual(p.rpcEndpoints, []);
  });

  test('the input embedding counts against the local device: enough for the layers but not the embedding is refused', () => {
    const m = model();
    const exact = need(m, context, 1);
    fitted(plan(input([local(exact + m.inputBytes)])));
    assert.equal(refused(plan(input([local(exact + m.inputBytes - 1)]))).shortfallBytes, 1);
  });

  test('the same input gives the same plan, and the order of devices decides who holds the output head', () => {
    const devices = [rpc('a', 3 * GiB), rpc('b', 2 * GiB), rpc('c', 5 * GiB)];
    assert.deepEqual(plan(input(devices)), plan(input(devices)));
    const reversed = fitted(plan(input([...devices].reverse())));
    assert.deepEqual(reversed.devices.map((d) => d.key), ['c/CPU', 'b/CPU', 'a/CPU']);
    assert.equal(reversed.devices[2]?.key, 'a/CPU');
    assert.equal(reversed.devices[2]?.holdsOutput, true);
    const refusal = input([rpc('a', 300 * MiB), rpc('b', 300 * MiB)]);
    assert.deepEqual(plan(refusal), plan(refusal));
  });

  test('an RPC device with a worker holding two devices appears once per device', () => {
    const one: CandidateDevice = { ...rpc('gpu-box', 2 * GiB), key: 'gpu-box/CUDA0', deviceName: 'CUDA0' };
    const two: CandidateDevice = { ...rpc('gpu-box', 2 * GiB), key: 'gpu-box/CUDA1', deviceName: 'CUDA1' };
    const p = fitted(plan(input([one, two])));
    assert.deepEqual(p.rpcEndpoints, ['gpu-box.lan:50052', 'gpu-box.lan:50052']);
    assert.equal(p.tensorSplit.length, 2);
  });
});

describe('refusal', () => {
  test('names the model, the need, the memory available and the exact shortfall', () => {
    const m = model();
    const reserveBytes = 50 * MiB;
    const r = refused(plan(input([rpc('a', 300 * MiB), rpc('b', 300 * MiB)], { reserveBytes })));
    assert.equal(r.neededBytes, need(m, context, 2));
    assert.equal(r.availableBytes, 500 * MiB);
    assert.equal(r.shortfallBytes, need(m, context, 2) - 500 * MiB);
    assert.match(r.reason, /^tiny needs 0\.\d\d GiB .* but only 0\.49 GiB is available after reserves: short by 0\.\d\d GiB\.$/);
    assert.ok(r.reason.includes(formatGiB(r.shortfallBytes)));
    assert.deepEqual(r.excluded, []);
  });

  test('the suggested worker size is the smallest, in 0.1 GiB steps, that makes the model fit', () => {
    const reserveBytes = 50 * MiB;
    const devices = [rpc('a', 300 * MiB), rpc('b', 300 * MiB)];
    const r = refused(plan(input(devices, { reserveBytes })));
    const match = /^Add a worker with at least (\d+\.\d) GiB free\.$/.exec(r.suggestions[0] ?? '');
    assert.ok(match, `first suggestion: ${r.suggestions[0]}`);
    const size = Number(match[1]) * GiB;
    assert.ok(size >= r.shortfallBytes + reserveBytes);
    fitted(plan(input([...devices, rpc('new', size)], { reserveBytes })));
    refused(plan(input([...devices, rpc('new', size - GiB / 10)], { reserveBytes })));
  });

  test('suggests the largest context that fits when the KV cache is what does not fit', () => {
    // 8 × 32 MiB of KV at 8192 tokens; the weights alone fit easily.
    const m = model({ headCountKv: 8, headDimK: 128, headDimV: 128 });
    const ctx = { ...context, ctxSize: 8192 };
    const devices = [rpc('a', 1200 * MiB)];
    const r = refused(plan(input(devices, { model: m, context: ctx })));
    const suggestion = r.suggestions.find((s) => s.includes('--ctx-size')) ?? '';
    const match = /^Reduce --ctx-size from 8192 to (\d+) \(saves (\d+\.\d\d) GiB of KV cache\)\.$/.exec(suggestion);
    assert.ok(match, `suggestions: ${r.suggestions.join(' | ')}`);
    const smaller = Number(match[1]);
    assert.equal(smaller % 256, 0);
    fitted(plan(input(devices, { model: m, context: { ...ctx, ctxSize: smaller } })));
    refused(plan(input(devices, { model: m, context: { ...ctx, ctxSize: smaller + 256 } })));
    assert.equal(match[2], ((8192 - smaller) * 8 * 4096 / GiB).toFixed(2));
  });

  test('suggests fewer parallel sequences when that is enough', () => {
    const ctx = { ...context, ctxSize: 4096, parallel: 8 };
    const m = model({ headCountKv: 8, headDimK: 128, headDimV: 128 });
    const devices = [rpc('a', 1536 * MiB)];
    const r = refused(plan(input(devices, { model: m, context: ctx })));
    const match = /^Reduce --parallel from 8 to (\d+) \(saves \d+\.\d\d GiB of KV cache\)\.$/.exec(r.suggestions.find((s) => s.includes('--parallel')) ?? '');
    assert.ok(match, `suggestions: ${r.suggestions.join(' | ')}`);
    const fewer = Number(match[1]);
    fitted(plan(input(devices, { model: m, context: { ...ctx, parallel: fewer } })));
    refused(plan(input(devices, { model: m, context: { ...ctx, parallel: fewer + 1 } })));
  });

  test('suggests a Q4_K_M quantization for F16 and Q8_0 models, with its estimated size', () => {
    const devices = [rpc('a', 300 * MiB), rpc('b', 300 * MiB)];
    const f16 = refused(plan(input(devices)));
    const weights = 9 * 100 * MiB;
    const expected = formatGiB(f16.neededBytes - weights * (1 - 4.8 / 16));
    assert.ok(
      f16.suggestions.some((s) => s.startsWith('A Q4_K_M quantization of this model') && s.includes('instead of 16 for F16') && s.includes(expected)),
      `suggestions: ${f16.suggestions.join(' | ')}`,
    );
    const q8 = refused(plan(input(devices, { model: model({ fileType: 7 }) })));
    assert.ok(q8.suggestions.some((s) => s.includes('instead of 8.5 for Q8_0')));
    const q4 = refused(plan(input(devices, { model: model({ fileType: 15 }) })));
    assert.ok(!q4.suggestions.some((s) => s.includes('Q4_K_M')));
  });

  test('enough memory in total but no split into whole layers: refused, with the overflow as shortfall', () => {
    // Three slots of ~100 MiB; each device can hold its mandatory slot and half of the middle one.
    const m = model({ layerCount: 2, layerBytes: [100 * MiB, 100 * MiB] });
    const compute = computeBufferBytes(m, context);
    const logits = logitsBufferBytes(m, context);
    const r = refused(plan(input([rpc('a', 160 * MiB + compute), rpc('b', 160 * MiB + compute + logits)], { model: m })));
    assert.ok(r.availableBytes >= r.neededBytes);
    assert.ok(r.shortfallBytes > 0);
    assert.match(r.reason, /no split into whole layers fits/);
  });

  test('no devices at all', () => {
    const m = model();
    const r = refused(plan(input([])));
    assert.equal(r.reason, 'no devices to place the model on: start a worker or enable the local device');
    assert.equal(r.availableBytes, 0);
    assert.equal(r.neededBytes, need(m, context, 1));
    assert.equal(r.shortfallBytes, r.neededBytes);
    assert.match(r.suggestions[0] ?? '', /^Add a worker with at least \d+\.\d GiB free\.$/);
  });
});

describe('invalid input', () => {
  test('throws INVALID_ARGUMENT naming the field', () => {
    throwsInvalid(input([rpc('a', GiB)], { context: { ...context, ctxSize: 0 } }), /context\.ctxSize/);
    throwsInvalid(input([rpc('a', GiB)], { context: { ...context, parallel: 0 } }), /context\.parallel/);
    throwsInvalid(input([rpc('a', GiB)], { context: { ...context, nUbatch: 1.5 } }), /context\.nUbatch/);
    throwsInvalid(input([rpc('a', GiB)], { model: model({ layerCount: 0, layerBytes: [] }) }), /model\.layerCount/);
    throwsInvalid(input([rpc('a', GiB)], { model: model({ layerBytes: [1, 2] }) }), /model\.layerBytes has 2 entries/);
    throwsInvalid(input([rpc('a', GiB)], { reserveBytes: -1 }), /reserveBytes/);
    throwsInvalid(input([rpc('a', GiB)], { context: { ...context, typeK: 'q2_k' as PlanContext['typeK'] } }), /context\.typeK/);
    throwsInvalid(input([rpc('a', GiB), local(GiB)]), /devices\[1\] \(local\/CPU\) is the local device and must come first/);
    throwsInvalid(input([rpc('a', GiB), rpc('a', GiB)]), /key 'a\/CPU' appears twice/);
    throwsInvalid(input([{ ...rpc('a', GiB), endpoint: null }]), /devices\[0\] \(a\/CPU\)\.endpoint is missing/);
    throwsInvalid(input([rpc('a', Number.NaN)]), /freeBytes/);
  });
});
