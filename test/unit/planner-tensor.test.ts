// Tensor mode in the planner: llama.cpp's rounding of the split, the memory each device holds, the
// time model, auto's choice between whole layers and the tensor split, the refusals, and the settings
// that ask for it (cluster.yaml, the command line, simulation files). All in memory.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { compileCoordinatorConfig, configFor } from '../../coordinator/config.js';
import { engineLoadSpec, samePlacement } from '../../coordinator/engine-supervisor.js';
import { computeBufferBytes, kvLayerBytes, logitsBufferBytes, plan } from '../../coordinator/planner/planner.js';
import { readSimulation } from '../../coordinator/planner/simulation.js';
import { architectureRefusal, parseSplitSetting, tensorDeviceRefusal } from '../../coordinator/planner/split.js';
import { sliceSizes, tensorLoads, tensorShape } from '../../coordinator/planner/tensor-split.js';
import { graphTensorsPerToken, hopFromRtt, reductionSteps, REDUCE_STEP_SECONDS, REDUCE_SYNC_SECONDS, GRAPH_TENSOR_SECONDS, tensorSeconds } from '../../coordinator/planner/time-model.js';
import type { CandidateDevice, ModelFacts, Plan, PlanContext, PlanInput, PlanResult, Refusal } from '../../coordinator/planner/types.js';
import { plannerModel } from '../helpers/planner.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const GB = 1e9;

/** A llama-like model whose parts the tensor split cuts: 8 blocks, 8 query and 4 KV heads of 64, 32 MiB of attention and 64 MiB of feed-forward per block. */
function model(overrides: Partial<ModelFacts> = {}): ModelFacts {
  const layerCount = overrides.layerCount ?? 8;
  return plannerModel({
    embeddingLength: 512,
    feedForwardLength: 1536,
    headCount: 8,
    headCountKv: 4,
    headDimK: 64,
    headDimV: 64,
    layerBytes: new Array<number>(layerCount).fill(96 * MiB + 4096),
    outputBytes: 64 * MiB,
    tensorParts: { heads: new Array<number>(layerCount).fill(32 * MiB), rows: new Array<number>(layerCount).fill(64 * MiB), headsBlock: 1, rowsBlock: 1 },
    ...overrides,
  });
}

const context: PlanContext = { ctxSize: 1024, parallel: 1, typeK: 'f16', typeV: 'f16', nUbatch: 512 };

function rpc(name: string, freeBytes: number, bytesPerSecond: number | null, extra: Partial<CandidateDevice> = {}): CandidateDevice {
  return { key: `${name}/CPU`, kind: 'rpc', owner: name, deviceName: 'CPU', endpoint: `${name}.lan:50052`, freeBytes, totalBytes: freeBytes, bytesPerSecond, ...extra };
}

function input(devices: CandidateDevice[], overrides: Partial<PlanInput> = {}): PlanInput {
  return { model: model(), devices, context, reserveBytes: 0, objective: 'speed', split: 'tensor', ...overrides };
}

function fitted(r: PlanResult): Plan {
  if (!r.fits) assert.fail(`expected a plan, got a refusal: ${r.reason}`);
  return r;
}

function refused(r: PlanResult): Refusal {
  if (r.fits) assert.fail(`expected a refusal, got a ${r.split} plan over ${r.devices.map((d) => d.key).join(', ')}`);
  return r;
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

describe("llama.cpp's rounding of the tensor split (llama_meta_device_get_split_state)", () => {
  test('boundaries round down to the granularity; the last device of the rotated scan takes the rest', () => {
    assert.deepEqual(sliceSizes(8, 1, [0.25, 0.25, 0.25, 0.25], 0), [2, 2, 2, 2]);
    // Thirds of 8 heads: 2, 3, 3 (the float scan is 0.3333, 0.6666, 1).
    assert.deepEqual(sliceSizes(8, 1, [0.3333, 0.3333, 0.3334], 0), [2, 3, 3]);
    // Rotated by one layer, device 1 is scanned first and device 0 takes the rest.
    assert.deepEqual(sliceSizes(8, 1, [0.3333, 0.3333, 0.3334], 1), [3, 2, 3]);
    // Rows in blocks of 256: 1536 rows at 70/30 is 1075 → 1024 and the rest.
    assert.deepEqual(sliceSizes(1536, 256, [0.7, 0.3], 0), [1024, 512]);
    // A granularity larger than a share leaves that device nothing and gives the last all.
    assert.deepEqual(sliceSizes(896, 3584, [0.5, 0.5], 0), [0, 896]);
  });

  test('each device holds its share of every block and of the KV cache, the uncut parts whole, and the whole compute buffer', () => {
    const m = model();
    const shape = tensorShape(m, context, 1, 2);
    const loads = tensorLoads(shape, [0.5, 0.5]);
    const whole = 4096 * m.layerCount;
    for (const l of loads) {
      assert.equal(l.weightBytes, Math.ceil((m.layerCount * 96 * MiB + m.outputBytes) / 2 + whole), 'half of the heads, rows and output head; the norms whole');
      assert.equal(l.kvBytes, sum(kvLayerBytes(m, context)) / 2, 'half of the KV heads');
      assert.deepEqual(l.kvHeads, new Array(m.layerCount).fill(2));
      // The whole graph's compute buffer and logits, and one buffer per reduction step for a micro-batch's partial sums.
      assert.equal(l.computeBytes, computeBufferBytes(m, context) + logitsBufferBytes(m, context) + 1 * m.embeddingLength * context.nUbatch * 4);
    }
  });

  test('a tied output head (a copy of token_embd) is held and read whole on every device', () => {
    const m = model({ outputTied: true });
    const loads = tensorLoads(tensorShape(m, context, 1, 2), [0.5, 0.5]);
    assert.ok(loads.every((l) => l.weightBytes >= m.outputBytes + (m.layerCount * 96 * MiB) / 2));
    assert.ok(loads.every((l) => l.readBytes >= m.outputBytes));
  });

  test('uneven KV heads: the rounding takes turns from layer to layer, the plan says so, and the memory follows what each device really gets', () => {
    // 4 KV heads over 3 equal devices: one device gets 2 in each layer, a different one each layer.
    const p = fitted(plan(input([rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB), rpc('c', 4 * GiB, 10 * GB)], { objective: 'memory' })));
    assert.equal(p.split, 'tensor');
    assert.equal(p.devices.length, 3);
    assert.equal(p.tensor!.notes.length, 1);
    assert.match(p.tensor!.notes[0]!, /whole KV heads \(4 per layer, in units of 1\).*a 1-2/);
    const kv = sum(kvLayerBytes(model(), context));
    assert.ok(Math.abs(sum(p.devices.map((d) => d.kvBytes)) - kv) <= 3, 'the KV cache is split, not repeated');
  });

  test('more devices than the attention has whole units: the extra ones sit out, with the reason', () => {
    const m = model({ headCount: 8, headCountKv: 2 });
    const p = fitted(plan(input(['a', 'b', 'c', 'd'].map((n) => rpc(n, 4 * GiB, 10 * GB)), { model: m })));
    assert.equal(p.devices.length, 2);
    assert.equal(p.excluded.length, 2);
    assert.ok(p.excluded.every((e) => /attention splits into whole KV heads for at most 2 devices/.test(e.reason)));
  });

  test('heads the quant block does not let split: refused with the reason, and auto takes whole layers', () => {
    // 14 query and 2 KV heads of 64 at Q4_K (blocks of 256): a unit is lcm(7 × 64, 256) = 3584 columns, more than the 896 of Q.
    const m = model({ headCount: 14, headCountKv: 2, tensorParts: { heads: new Array(8).fill(32 * MiB), rows: new Array(8).fill(64 * MiB), headsBlock: 256, rowsBlock: 256 } });
    const devices = [rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB)];
    const r = refused(plan(input(devices, { model: m })));
    assert.match(r.reason, /attention cannot be split over two devices: llama\.cpp cuts it in units of 4 KV head\(s\).*it has 2/);
    const auto = fitted(plan(input(devices, { model: m, split: 'auto' })));
    assert.equal(auto.split, 'layer');
    assert.match(auto.splitChoice.reason, /auto: whole layers, because .*cannot be split/);
  });
});

describe('the time model in tensor mode', () => {
  test("a reduction's steps follow the meta device's butterfly: log2 n, and two more to fold in and send back the devices beyond a power of two", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 8, 16].map(reductionSteps), [0, 1, 3, 2, 4, 4, 3, 4]);
  });

  test('slowest share over its speed, two reductions per layer of n_embd f32 over the links, the graphs and a hop', () => {
    const devices = [rpc('a', GiB, 10 * GB, { rttSeconds: 0.0004, linkBytesPerSecond: 125e6, hopSeconds: 0.002 }), rpc('b', GiB, 20 * GB, { rttSeconds: 0.0002, linkBytesPerSecond: 1e9, hopSeconds: 0.001 })];
    const t = tensorSeconds([1e9, 1.5e9], [10 * GB, 20 * GB], devices, { layerCount: 10, embeddingLength: 4096 });
    assert.ok(Math.abs(t.computeSeconds - 0.1) < 1e-12, 'a: 1 GB at 10 GB/s is the slower');
    assert.equal(t.reductions, 20);
    assert.equal(t.steps, 1);
    // One step: (0.4 + 0.2) / 4 ms one way, 16 KiB over the slower link, the workers' own time.
    const step = 0.00015 + 16384 / 125e6 + REDUCE_STEP_SECONDS;
    assert.ok(Math.abs(t.reduceSeconds - 20 * (REDUCE_SYNC_SECONDS + step)) < 1e-12);
    const tensors = graphTensorsPerToken(10);
    const graph = (tensors * 296) / 125e6 + (tensors * 296) / 1e9 + 2 * tensors * GRAPH_TENSOR_SECONDS;
    assert.ok(Math.abs(t.coordinatorSeconds - (graph + 0.002)) < 1e-12, 'the graphs to both, and the farther hop');
    assert.ok(Math.abs(t.total - (t.computeSeconds + t.reduceSeconds + t.coordinatorSeconds)) < 1e-15);
  });

  test('the graphs ggml-rpc sends grow with the square of the layers (measured: 2,558 tensors per token for 8 layers)', () => {
    assert.ok(Math.abs(graphTensorsPerToken(8) - 2558) / 2558 < 0.05);
    assert.ok(graphTensorsPerToken(80) > 50 * graphTensorsPerToken(8), 'ten times the layers, about eighty times the tensors');
  });

  test('under the speed objective a faster device takes a larger share, so both finish together', () => {
    const p = fitted(plan(input([rpc('slow', 8 * GiB, 10 * GB), rpc('fast', 8 * GiB, 30 * GB)])));
    const slow = p.devices.find((d) => d.owner === 'slow')!;
    const fast = p.devices.find((d) => d.owner === 'fast')!;
    assert.ok(fast.share! > 2 * slow.share!, `${fast.share} against ${slow.share}`);
    assert.ok(Math.abs(fast.secondsPerToken! - slow.secondsPerToken!) / fast.secondsPerToken! < 0.15, 'compute times within the rounding of whole heads');
    assert.deepEqual(p.tensorSplit, p.devices.map((d) => d.share));
    assert.ok(Math.abs(sum(p.tensorSplit) - 1) < 1e-9);
    assert.equal(p.nGpuLayers, model().layerCount + 1);
    assert.deepEqual(p.expertOverrides, []);
  });

  test("a device's memory caps its share; the others take the rest", () => {
    const p = fitted(plan(input([rpc('small-fast', 300 * MiB, 40 * GB), rpc('big-slow', 8 * GiB, 10 * GB)])));
    const small = p.devices.find((d) => d.owner === 'small-fast')!;
    assert.ok(small.totalBytes <= small.usableBytes);
    assert.ok(small.share! < 0.5, `memory holds it to ${small.share}`);
  });
});

describe("auto: the faster of the two, per cluster", () => {
  // Four equal workers, too slow alone: layers pass through them one after another, the tensor split computes side by side.
  const four = (link: Partial<CandidateDevice>) => ['a', 'b', 'c', 'd'].map((n) => rpc(n, 2 * GiB, 2 * GB, link));

  test('fast links: the tensor split, and the reason gives both figures', () => {
    const p = fitted(plan(input(four({ rttSeconds: 0.00005, linkBytesPerSecond: 10e9, hopSeconds: hopFromRtt(0.00005) }), { split: 'auto' })));
    assert.equal(p.split, 'tensor');
    const { layer, tensor } = p.splitChoice;
    assert.ok(tensor.secondsPerToken! < layer.secondsPerToken!);
    assert.match(p.splitChoice.reason, /^auto: tensor split predicts [\d.]+ ms per token against [\d.]+ ms with whole layers$/);
    assert.equal(tensor.parts!.devices, p.devices.length);
  });

  test('slow links: whole layers, with the tensor figure beside', () => {
    const p = fitted(plan(input(four({ rttSeconds: 0.02, linkBytesPerSecond: 1e6, hopSeconds: hopFromRtt(0.02) }), { split: 'auto' })));
    assert.equal(p.split, 'layer');
    assert.equal(p.tensor, null);
    assert.ok(p.splitChoice.tensor.secondsPerToken! > p.splitChoice.layer.secondsPerToken!);
    assert.match(p.splitChoice.reason, /^auto: whole layers predict/);
  });

  test('without a split setting the planner plans whole layers, as before tensor mode', () => {
    const p = fitted(plan(input(four({ rttSeconds: 0.00005, linkBytesPerSecond: 10e9 }), { split: undefined })));
    assert.equal(p.split, 'layer');
    assert.equal(p.splitChoice.tensor.refusal, 'not planned (--split layer)');
  });

  test('without measured speeds auto keeps whole layers (both figures use stand-ins, and say so)', () => {
    const p = fitted(plan(input(['a', 'b', 'c', 'd'].map((n) => rpc(n, 2 * GiB, null, { rttSeconds: 0.00005, linkBytesPerSecond: 10e9 })), { split: 'auto' })));
    assert.equal(p.split, 'layer');
    assert.equal(p.predictedSecondsPerToken, null);
    assert.match(p.splitChoice.reason, /no measured speed/);
    assert.notEqual(p.splitChoice.tensor.secondsPerToken, null, 'the stand-in figure is still shown');
    assert.equal(fitted(plan(input(['a', 'b'].map((n) => rpc(n, 2 * GiB, null))))).split, 'tensor', '--split tensor does not need speeds');
  });

  test('only the tensor split fits: auto takes it', () => {
    // Two blocks and an output head of 300 MiB each over two devices of 500 MiB: whole slots put 600 MiB
    // on one of them; halves of each fit.
    const m = model({ layerCount: 2, layerBytes: [300 * MiB, 300 * MiB], outputBytes: 300 * MiB, tensorParts: { heads: [100 * MiB, 100 * MiB], rows: [200 * MiB, 200 * MiB], headsBlock: 1, rowsBlock: 1 } });
    const devices = ['a', 'b'].map((n) => rpc(n, 500 * MiB, 10 * GB));
    assert.equal(plan(input(devices, { model: m, split: 'layer' })).fits, false);
    const p = fitted(plan(input(devices, { model: m, split: 'auto' })));
    assert.equal(p.split, 'tensor');
    assert.match(p.splitChoice.reason, /^auto: only the tensor split fits \(layers: .*\)$/);
  });
});

describe('who may take part in tensor mode', () => {
  test("the coordinator's own CPU sits out, with llama.cpp's reason", () => {
    const localCpu: CandidateDevice = { key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null, freeBytes: 8 * GiB, totalBytes: 8 * GiB, bytesPerSecond: 50 * GB };
    const p = fitted(plan(input([localCpu, rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB)])));
    assert.deepEqual(p.devices.map((d) => d.owner), ['a', 'b']);
    assert.match(p.excluded.find((e) => e.key === 'local/CPU')!.reason, /meta device takes no CPU buffer type/);
  });

  test('a worker below RPC 7.1.0 is left out of tensor mode with both versions named, and stays in layer mode', () => {
    const old = rpc('old', 4 * GiB, 10 * GB, { rpcProtocol: '7.0.0' });
    const client = { major: 7, minor: 1, patch: 0 };
    assert.equal(tensorDeviceRefusal(old, client), 'worker old speaks RPC 7.0.0; tensor mode needs 7.1.0 (this coordinator speaks 7.1.0): it takes part in layer mode only until hearth is updated on it');
    const p = fitted(plan(input([old, rpc('a', 4 * GiB, 10 * GB, { rpcProtocol: '7.1.0' }), rpc('b', 4 * GiB, 10 * GB, { rpcProtocol: '7.1.0' })], { rpcProtocol: client })));
    assert.deepEqual(p.devices.map((d) => d.owner), ['a', 'b']);
    assert.match(p.excluded.find((e) => e.owner === 'old')!.reason, /speaks RPC 7\.0\.0; tensor mode needs 7\.1\.0/);
    const layer = fitted(plan(input([old, rpc('a', 4 * GiB, 10 * GB)], { split: 'layer', objective: 'memory' })));
    assert.ok(layer.devices.some((d) => d.owner === 'old'));
  });

  test('fewer than two capable workers: --split tensor is refused with the reasons, auto falls back to whole layers', () => {
    const devices = [rpc('old', 4 * GiB, 10 * GB, { rpcProtocol: '7.0.0' }), rpc('new', 4 * GiB, 10 * GB, { rpcProtocol: '7.1.0' })];
    const r = refused(plan(input(devices)));
    assert.match(r.reason, /tensor mode needs two or more workers' devices that can take part, and only one can \(worker old speaks RPC 7\.0\.0/);
    assert.match(r.suggestions[0]!, /--split layer/);
    assert.equal(r.splitChoice!.setting, 'tensor');
    const auto = fitted(plan(input(devices, { split: 'auto' })));
    assert.equal(auto.split, 'layer');
    assert.match(auto.splitChoice.reason, /auto: whole layers, because tensor mode needs two or more/);
  });

  test('a coordinator below 7.1.0 cannot run tensor mode at all', () => {
    assert.match(tensorDeviceRefusal(rpc('a', GiB, null), { major: 7, minor: 0, patch: 0 })!, /this coordinator speaks RPC 7\.0\.0; tensor mode needs 7\.1\.0/);
  });

  test("architectures llama.cpp cannot split by tensor are refused with the reason; auto takes whole layers", () => {
    assert.equal(architectureRefusal({ architecture: 'llama' }), null);
    const devices = [rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB)];
    const m = model({ architecture: 'mamba' });
    const r = refused(plan(input(devices, { model: m })));
    assert.equal(r.reason, 'llama.cpp cannot split the mamba architecture by tensor (LLAMA_SPLIT_MODE_TENSOR is not implemented for it)');
    const auto = fitted(plan(input(devices, { model: m, split: 'auto' })));
    assert.equal(auto.split, 'layer');
    assert.match(auto.splitChoice.tensor.refusal!, /mamba/);
  });

  test('a model too big for the workers in tensor mode: refused with what every device must hold', () => {
    const r = refused(plan(input([rpc('a', 400 * MiB, 10 * GB), rpc('b', 400 * MiB, 10 * GB)])));
    assert.match(r.reason, /needs [\d.]+ GiB in tensor mode over 2 devices .* short by [\d.]+ GiB/);
    assert.ok(r.shortfallBytes > 0);
  });

  test('a device without room for what every device holds whole sits out', () => {
    const p = fitted(plan(input([rpc('tiny', 20 * MiB, 10 * GB), rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB)])));
    assert.deepEqual(p.devices.map((d) => d.owner).sort(), ['a', 'b']);
    assert.match(p.excluded.find((e) => e.owner === 'tiny')!.reason, /every device holds [\d.]+ GiB whatever its share/);
  });
});

describe('asking for a split', () => {
  test('--split and split: in cluster.yaml, at the top and per model; the flag wins; default auto', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-split-'));
    try {
      const file = join(dir, 'cluster.yaml');
      writeFileSync(file, 'split: tensor\nmodels:\n  - a.gguf\n  - { model: b.gguf, split: layer }\n');
      const c = compileCoordinatorConfig({ file, flags: {} });
      assert.equal(c.split, 'tensor');
      assert.deepEqual(c.models.map((m) => m.split), ['tensor', 'layer']);
      assert.equal(configFor(c, c.models[1]!).split, 'layer');
      const flagged = compileCoordinatorConfig({ file, flags: { split: 'auto' } });
      assert.deepEqual(flagged.models.map((m) => m.split), ['auto', 'auto']);
      assert.equal(compileCoordinatorConfig({ file: null, flags: { model: '/m.gguf' } }).split, 'auto');
      writeFileSync(file, 'model: a.gguf\nsplit: rows\n');
      assert.throws(() => compileCoordinatorConfig({ file, flags: {} }), /split: must be layer \(whole layers per device/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(parseSplitSetting('tensor', '--split'), 'tensor');
    assert.throws(() => parseSplitSetting('row', '--split'), /--split: 'row' must be layer/);
  });

  test("the engine gets the plan's mode, and a change of mode or shares is a new placement", () => {
    const devices = [rpc('a', 4 * GiB, 10 * GB), rpc('b', 4 * GiB, 10 * GB)];
    const tensor = fitted(plan(input(devices)));
    const config = compileCoordinatorConfig({ file: null, flags: { model: '/m.gguf' } });
    const spec = engineLoadSpec(config, tensor, null, 'chat');
    assert.equal(spec.splitMode, 'tensor');
    assert.deepEqual(spec.tensorSplit, tensor.tensorSplit);
    assert.equal(spec.nGpuLayers, model().layerCount + 1);
    const layer = fitted(plan(input(devices, { split: 'layer', objective: 'memory' })));
    assert.equal(engineLoadSpec(config, layer, null, 'chat').splitMode, 'layer');
    assert.equal(samePlacement(tensor, layer), false);
    const other = { ...tensor, devices: tensor.devices.map((d, i) => ({ ...d, share: i === 0 ? 0.6 : 0.4 })) };
    assert.equal(samePlacement(tensor, other), false);
    const nudged = { ...tensor, devices: tensor.devices.map((d, i) => ({ ...d, share: d.share! + (i === 0 ? 0.002 : -0.002) })) };
    assert.equal(samePlacement(tensor, nudged), true, 'a share that moved a little is no reason to reload');
    assert.equal(samePlacement(tensor, fitted(plan(input(devices)))), true);
  });

  test('simulation files: split, rttMs and linkGbps per device or for the cluster, hopMs kept, and the example on a 1 Gb/s LAN', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-sim-'));
    const noGguf = () => Promise.reject(new Error('by shape'));
    try {
      const file = join(dir, 'sim.yaml');
      writeFileSync(
        file,
        'model: {layers: 4, layerSize: 1GiB, outputSize: 1GiB, embedding: 4096, heads: 32, kvHeads: 8, headDim: 128, vocab: 32000}\n' +
          'split: tensor\nrttMs: 0.5\nlinkGbps: 10\n' +
          'devices:\n  - {name: a, memory: 8GiB, speed: 20GB/s}\n  - {name: b, memory: 8GiB, speed: 20GB/s, rttMs: 2, linkGbps: 1}\n  - {name: c, memory: 8GiB, hopMs: 3}\n',
      );
      const sim = await readSimulation(file, noGguf);
      assert.equal(sim.split, 'tensor');
      const [a, b, c] = sim.devices;
      assert.deepEqual([a!.rttSeconds, a!.linkBytesPerSecond, a!.hopSeconds], [0.0005, 1.25e9, hopFromRtt(0.0005)]);
      assert.deepEqual([b!.rttSeconds, b!.linkBytesPerSecond], [0.002, 1.25e8]);
      assert.equal(c!.hopSeconds, 0.003, 'a hop given is kept');
      assert.equal(sim.model.architecture, 'llama');
      writeFileSync(file, 'model: m.gguf\ndevices:\n  - {name: a, memory: 8GiB, linkGbps: 0}\n');
      await assert.rejects(readSimulation(file, noGguf), /linkGbps/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const example = await readSimulation(fileURLToPath(new URL('../../examples/lan-tensor.yaml', import.meta.url)), noGguf);
    assert.equal(example.split, 'auto');
    const p = fitted(plan(example));
    const { layer, tensor } = p.splitChoice;
    assert.ok(layer.secondsPerToken !== null && tensor.secondsPerToken !== null, 'both modes predicted');
    assert.equal(p.split, layer.secondsPerToken < tensor.secondsPerToken ? 'layer' : 'tensor', 'auto takes the faster');
    const forced = fitted(plan({ ...example, split: 'tensor' }));
    assert.ok(forced.devices.every((d) => d.totalBytes <= d.usableBytes));
  });
});
