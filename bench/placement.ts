// Speed-aware placement against memory-proportional placement on unequal machines: two workers on this
// machine, one slowed to a quarter of a core with a cgroup CPU quota. The same coordinator build serves
// the same model with --placement speed and with --placement memory, alternating, and single-request
// generation speed is compared as a ratio within the run. A second part caps a fast worker's memory
// (--memory) so the model needs both, and reports where the layers went.
//
//   npm run bench:placement -- [--model FILE] [--reps 3] [--tokens 32]
//
// Writes bench/placement-results.json and regenerates BENCHMARKS.md (its placement section).
//
// Needs root and the cgroup v1 cpu controller (as on the CI machine).
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { spawnHearth, startLocalWorker, waitHealthy, type LocalWorker } from '../cli/local-cluster.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import type { WireStatus } from '../coordinator/wire.js';
import { createTestModel, testModelFileName } from '../models/test-models.js';
import { readModelFacts } from '../models/gguf-info.js';
import { calibrationTypeOf } from '../host/calibration.js';
import { WorkerClient } from '../link/worker-client.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { cgroupsAvailable, makeCgroup } from './cgroup.js';
import { streamCompletion, uniquePrompt } from './measure.js';
import { stat, type PlacementResults } from './report.js';
import { writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    reps: { type: 'string', default: '3' },
    tokens: { type: 'string', default: '32' },
    out: { type: 'string', default: 'bench/placement-results.json' },
  },
});
let reps = 3;
let tokens = 32;

type SideRun = PlacementResults['runs'][number];
const CAP = '1300MiB';

async function serve(model: string, workers: LocalWorker[], placement: 'speed' | 'memory'): Promise<{ base: string; status: WireStatus; stop(): Promise<void> }> {
  const grpc = await freePortOn('127.0.0.1');
  const http = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    ['coordinator', '--model', model, ...workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', placement,
      '--ctx-size', '1024', '--parallel', '1', '--threads', '1', '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http), '--log-level', 'warn'],
    ['ignore', 'ignore', 'inherit'],
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitHealthy(`http://127.0.0.1:${http}/health`, 180_000, () => child.exitCode === null);
    const client = new CoordinatorClient(`127.0.0.1:${grpc}`);
    const status = await client.getStatus();
    client.close();
    return { base: `http://127.0.0.1:${http}`, status, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function measure(model: string, workers: LocalWorker[], placement: 'speed' | 'memory', tag: number): Promise<SideRun> {
  const s = await serve(model, workers, placement);
  try {
    await streamCompletion(s.base, uniquePrompt(tag, 8), 4); // warm-up
    const t = await streamCompletion(s.base, uniquePrompt(tag + 1, 8), tokens);
    const predicted = s.status.plan.predicted_seconds_per_token;
    return {
      placement,
      tokensPerSecond: (t.completionTokens - 1) / (t.decodeMs / 1000),
      predictedTokensPerSecond: predicted ? 1 / predicted : null,
      layers: Object.fromEntries(s.status.plan.devices.map((d) => [d.owner, d.layers])),
    };
  } finally {
    await s.stop();
  }
}

async function main(): Promise<void> {
  reps = parseInteger(values.reps!, '--reps', { min: 1, max: 100 });
  tokens = parseInteger(values.tokens!, '--tokens', { min: 2, max: 4096 });
  if (!cgroupsAvailable('cpu')) {
    throw new HearthError(ErrorCode.FailedPrecondition, 'the placement benchmark slows a worker with a cgroup CPU quota: it needs root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu');
  }
  const model = values.model ?? join(homedir(), '.cache', 'hearth', 'models', testModelFileName('1b', 'q8_0'));
  if (!existsSync(model)) await createTestModel({ out: model, preset: '1b', quant: 'q8_0', seed: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-placement-'));
  // A quarter of one core: the "old desktop" of the cluster.
  const group = makeCgroup('cpu', { 'cpu.cfs_period_us': 100_000, 'cpu.cfs_quota_us': 25_000 }, 'hearth-bench-slow');
  const env = { HEARTH_CALIBRATE_MS: '1000' };
  const workers: LocalWorker[] = [];
  try {
    workers.push(await startLocalWorker({ name: 'fast', threads: 1, dir, env, stdio: ['ignore', 'ignore', 'ignore'] }));
    workers.push(await startLocalWorker({ name: 'slow', threads: null, dir, env, cgroup: group.dir, stdio: ['ignore', 'ignore', 'ignore'] }));
    const runs: SideRun[] = [];
    for (let r = 0; r < reps; r++) {
      // Alternate which side goes first, so drift of the machine hits both alike.
      const order: ('speed' | 'memory')[] = r % 2 === 0 ? ['speed', 'memory'] : ['memory', 'speed'];
      for (const placement of order) {
        const run = await measure(model, workers, placement, 100 * r + (placement === 'speed' ? 0 : 50));
        runs.push(run);
        process.stderr.write(`rep ${r + 1} ${placement}: ${run.tokensPerSecond.toFixed(2)} tok/s (predicted ${run.predictedTokensPerSecond?.toFixed(1) ?? '-'}) layers ${JSON.stringify(run.layers)}\n`);
      }
    }
    const of = (p: 'speed' | 'memory') => runs.filter((x) => x.placement === p).map((x) => x.tokensPerSecond);
    const ratios = runs.filter((x) => x.placement === 'speed').map((x, i) => x.tokensPerSecond / of('memory')[i]!);

    // Caps that force both workers in: a fast worker lending too little for the whole model.
    const capped = await startLocalWorker({ name: 'fast-capped', threads: 1, dir, env, memory: CAP, stdio: ['ignore', 'ignore', 'ignore'] });
    workers.push(capped);
    const pair = [workers[1]!, capped];
    const cappedSpeed = await measure(model, pair, 'speed', 900);
    const cappedMemory = await measure(model, pair, 'memory', 950);
    process.stderr.write(`capped speed: ${JSON.stringify(cappedSpeed)}\ncapped memory: ${JSON.stringify(cappedMemory)}\n`);

    // The figures the planner used: each worker's speed for the model's weight type.
    const weightType = calibrationTypeOf((await readModelFacts(model)).fileType);
    const speeds: Record<string, number> = {};
    for (const w of workers.slice(0, 2)) {
      const client = await WorkerClient.open(w.control, null);
      const device = (await client.getInfo()).devices[0];
      speeds[w.name] = device?.bytes_per_second_by_type[weightType] ?? device?.bytes_per_second ?? 0;
      client.close();
    }
    const result: PlacementResults = {
      date: new Date().toISOString(),
      model,
      modelBytes: statSync(model).size,
      speeds,
      weightType,
      tokens,
      reps,
      speed: stat(of('speed')),
      memory: stat(of('memory')),
      ratio: stat(ratios),
      runs,
      capped: { memoryCap: CAP, speed: cappedSpeed, memory: cappedMemory },
    };
    writeFileSync(values.out!, JSON.stringify(result, null, 2) + '\n');
    if (existsSync('bench/results.json')) writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
    process.stdout.write(JSON.stringify({ speed: result.speed, memory: result.memory, ratio: result.ratio, capped: result.capped }, null, 2) + '\n');
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    group.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main().catch((e: unknown) => {
  process.stderr.write(`bench:placement: ${messageOf(e)}\n`);
  process.exitCode = 1;
});
