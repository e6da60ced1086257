// Tensor split against layer split (issue 26): single-stream decode and aggregate decode at N concurrent,
// hearth `--split layer` / `--split tensor` beside `llama-server -sm layer` / `-sm tensor` over the same
// 1-thread workers, on loopback and on the emulated LAN (bench/lan.ts: namespaces, tbf, delay relays)
// at each RTT asked for. The sides alternate within a repetition, their order rotating, each started
// afresh; the links are measured before the runs (what `hearth plan --simulate` takes).
//
//   npm run bench:split -- [--workers 2[,3]] [--nets loopback,0.5,2] [--reps 3] [--tokens 32]
//                          [--concurrency 8] [--rate-mbit 1000] [--model auto|1b|small|FILE]
//                          [--sides hearth-layer,hearth-tensor,llama-layer,llama-tensor] [--quick]
//
// --nets: `loopback`, or a number: the emulated LAN with that round trip in ms (root only). Before the
// repetitions each side is loaded once and answers one request (--no-warm-up skips it). --quick: one
// repetition of short requests and no warm-up, to check the harness. The model: the 1b test model (Q8_0) when it is
// in the cache, else the small preset (made if missing). Prints the markdown to stdout, writes the JSON
// (--out, bench/split-results.json) and regenerates BENCHMARKS.md (its tensor split section).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, homedir, loadavg, release, tmpdir, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { spawnHearth, type LocalWorker } from '../cli/local-cluster.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import { WorkerClient } from '../link/worker-client.js';
import { createTestModel, testModelFileName, type TestModelPreset, type TestModelQuant } from '../models/test-models.js';
import { loadBinding } from '../native/binding.js';
import { followCoordinatorLog, type LogLine } from './coordinator-log.js';
import { emulatedLan, readyWorker, type EmulatedLan } from './lan.js';
import { probeLink, type LinkFigures } from './link-probe.js';
import { ensureLlamaTool } from './llama-tools.js';
import { streamCompletion, uniquePrompt } from './measure.js';
import { netnsUnavailable } from './netns.js';
import { SPLIT_SIDES, splitMarkdown, stat, type SplitLink, type SplitResults, type SplitRun, type SplitSetup, type SplitSide } from './report.js';
import { serve, writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '2' },
    nets: { type: 'string', default: 'loopback,0.5,2' },
    sides: { type: 'string', default: SPLIT_SIDES.join(',') },
    reps: { type: 'string' },
    tokens: { type: 'string' },
    singles: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
    'ctx-size': { type: 'string', default: '1024' },
    'rate-mbit': { type: 'string', default: '1000' },
    model: { type: 'string', default: 'auto' },
    quick: { type: 'boolean', default: false },
    'no-warm-up': { type: 'boolean', default: false },
    out: { type: 'string', default: 'bench/split-results.json' },
  },
});

function say(line: string): void {
  process.stderr.write(`[split] ${line}\n`);
}

interface Options {
  workerCounts: number[];
  nets: ({ net: 'loopback' } | { net: 'lan'; rttMs: number })[];
  sides: SplitSide[];
  reps: number;
  tokens: number;
  singles: number;
  concurrency: number;
  ctxSize: number;
  rateMbit: number;
  quick: boolean;
  warmUp: boolean;
  out: string;
}

/** The model file and its weight type: the 1b (Q8_0) when cached, else the small preset; or as given. */
async function modelFile(choice: string): Promise<{ file: string; weightType: string }> {
  const cached = (preset: TestModelPreset, quant: TestModelQuant) => join(homedir(), '.cache', 'hearth', 'models', testModelFileName(preset, quant));
  const make = async (preset: TestModelPreset, quant: TestModelQuant) => {
    const file = cached(preset, quant);
    if (!existsSync(file)) {
      say(`creating the ${preset} test model (${quant}) at ${file} ...`);
      await createTestModel({ out: file, preset, quant, seed: 1 });
    }
    return { file, weightType: quant };
  };
  if (choice === 'auto') return existsSync(cached('1b', 'q8_0')) ? { file: cached('1b', 'q8_0'), weightType: 'q8_0' } : make('small', 'f16');
  if (choice === '1b') return make('1b', 'q8_0');
  if (choice === 'small') return make('small', 'f16');
  const file = resolve(choice);
  if (!existsSync(file)) throw new HearthError(ErrorCode.NotFound, `--model: no file at ${file}`);
  return { file, weightType: /q8_0/i.test(file) ? 'q8_0' : /f16/i.test(file) ? 'f16' : 'unknown' };
}

const asLink = (f: LinkFigures): SplitLink => ({ rttMs: f.rttMs, upMbit: f.upMbit, downMbit: f.downMbit });

/** Workers on one network, with what the runs need to reach them, and the links measured. */
interface Bed {
  workers: LocalWorker[];
  rpcEndpoints: string[];
  lan: EmulatedLan | null;
  links: SplitSetup['links'];
  stop(): Promise<void>;
}

async function startBed(count: number, net: Options['nets'][number], o: Options, dir: string, logFd: number): Promise<Bed> {
  const names = Array.from({ length: count }, (_, i) => `w${i + 1}`);
  // Calibrated once at start; not again mid-run (a worker measures itself while idle, between two sides).
  const workerArgs = ['--recalibrate', '0'];
  const workers: LocalWorker[] = [];
  let lan: EmulatedLan | null = null;
  const stop = async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await lan?.destroy();
  };
  try {
    if (net.net === 'lan') {
      lan = await emulatedLan({ hosts: names, rttMs: net.rttMs, rateMbit: o.rateMbit });
      say(`emulated LAN up: ${count} hosts, ${o.rateMbit} Mb/s cables, RTT ${net.rttMs} ms (the relays add ${lan.relayRttMs.toFixed(3)} ms)`);
      for (const name of names) workers.push(await lan.startWorker(name, { threads: 1, dir, args: workerArgs, stdio: ['ignore', logFd, logFd] }));
      const links = await lan.measureLinks({ mib: o.quick ? 8 : 32 });
      return {
        workers, lan, stop,
        rpcEndpoints: lan.hosts.map((h) => `${h.address}:50052`),
        links: { toWorkers: links.toHosts.map((l) => asLink(l.figures)), between: links.between.map((l) => asLink(l.figures)) },
      };
    }
    for (const name of names) {
      const rpc = await freePortOn('127.0.0.1');
      let control = await freePortOn('127.0.0.1');
      while (control === rpc) control = await freePortOn('127.0.0.1');
      const child = spawnHearth(
        ['worker', '--name', name, '--host', '127.0.0.1', '--rpc-port', String(rpc), '--control-port', String(control), '--threads', '1', '--no-mdns',
          '--state-dir', join(dir, `state-${name}`), '--cache-dir', join(dir, `cache-${name}`), '--log-level', 'warn', ...workerArgs],
        ['ignore', logFd, logFd],
      );
      workers.push(await readyWorker({ name, cacheDir: join(dir, `cache-${name}`), child, control: `127.0.0.1:${control}`, ports: { rpc, control } }));
    }
    // One probe server on 127.0.0.1, a process of its own like a worker: every link here is this one.
    const probe = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'link-probe.ts'), 'serve', '--listen', '127.0.0.1:0', '--exit-with-stdin'], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        probe.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { listening: number }).listening));
        probe.once('exit', (code) => reject(new HearthError(ErrorCode.Unavailable, `the probe server exited (${code})`)));
      });
      const link = asLink(await probeLink({ host: '127.0.0.1', port }, { bytes: (o.quick ? 8 : 32) * 2 ** 20 }));
      return { workers, lan, stop, rpcEndpoints: workers.map((w) => `127.0.0.1:${w.ports.rpc}`), links: { toWorkers: [link], between: [link] } };
    } finally {
      probe.kill();
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Each worker's calibrated decode speed for `weightType` (bytes/s; 0 when it was not measured). */
async function workerSpeeds(workers: LocalWorker[], weightType: string): Promise<number[]> {
  return Promise.all(workers.map(async (w) => {
    const client = await WorkerClient.open(w.control, null);
    try {
      const d = (await client.getInfo({ timeoutMs: 10_000 })).devices[0];
      return d ? (d.bytes_per_second_by_type[weightType] ?? d.bytes_per_second) : 0;
    } finally {
      client.close();
    }
  }));
}

interface Server {
  base: string;
  plan: SplitRun['plan'];
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * hearth's coordinator over the bed's workers with `--split <mode>`, once it serves. Fails with the
 * coordinator's own words when it exits (a flag it does not know, a split it refuses) or its plan stays
 * refused.
 */
async function startHearth(bed: Bed, mode: 'layer' | 'tensor', model: string, o: Options, logFd: number): Promise<Server> {
  const http = await freePortOn('127.0.0.1');
  const grpc = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    ['coordinator', '--model', model, ...bed.workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory', '--split', mode,
      '--ctx-size', String(o.ctxSize), '--parallel', String(o.concurrency), '--threads', '1', '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http), '--log-level', 'info'],
    ['ignore', 'pipe', 'pipe'],
  );
  const lines: LogLine[] = [];
  let tail = '';
  child.stderr!.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-4000)));
  followCoordinatorLog(child, logFd, lines);
  const client = new CoordinatorClient(`127.0.0.1:${grpc}`);
  const stop = async () => {
    client.close();
    await stopChild(child);
  };
  try {
    const deadline = Date.now() + 600_000;
    let refusedSince = 0;
    for (;;) {
      if (child.exitCode !== null) {
        const said = lines.filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg).slice(-3).join(' | ') || tail.trim().split('\n').slice(-3).join(' | ');
        throw new HearthError(ErrorCode.Unavailable, `the coordinator exited (${child.exitCode}): ${said}`);
      }
      if (await fetch(`http://127.0.0.1:${http}/health`).then((r) => r.status === 200, () => false)) break;
      const status = await client.getStatus(2000).catch(() => null);
      if (status && !status.plan.fits && status.plan.refusal) {
        refusedSince ||= Date.now();
        // A refusal that stays (not a plan made before every worker was admitted).
        if (Date.now() - refusedSince > 15_000) throw new HearthError(ErrorCode.FailedPrecondition, `the coordinator refuses the plan: ${status.plan.refusal}`);
      } else {
        refusedSince = 0;
      }
      if (Date.now() > deadline) throw new HearthError(ErrorCode.DeadlineExceeded, 'the coordinator did not serve within 10 min');
      await new Promise((r) => setTimeout(r, 500));
    }
    const status = await client.getStatus(5000);
    const serving = lines.findLast((l) => l.msg === 'model loaded; serving') as (LogLine & { split?: string }) | undefined;
    return {
      base: `http://127.0.0.1:${http}`,
      plan: { split: serving?.split ?? null, layers: status.plan.devices.map((d) => d.layers), predictedSecondsPerToken: status.plan.predicted_seconds_per_token ?? null },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** llama-server over the same workers: `-sm layer` with hearth's layer split when known, `-sm tensor` with equal shares. */
async function startLlamaServer(binary: string, bed: Bed, mode: 'layer' | 'tensor', layers: number[] | null, model: string, o: Options, logFile: string): Promise<Server> {
  const port = await freePortOn('127.0.0.1');
  const split = mode === 'layer' && layers && layers.length === bed.workers.length ? layers : bed.workers.map(() => 1);
  const child = spawn(
    binary,
    // -c is shared by the -np slots: each gets o.ctxSize, as each of hearth's sequences does.
    ['-m', model, '--rpc', bed.rpcEndpoints.join(','), '-ngl', '99', '-sm', mode, '-ts', split.join(','), '-c', String(o.ctxSize * o.concurrency), '-np', String(o.concurrency),
      '-t', '1', '-tb', '1', '-b', '512', '-ub', '512', '--host', '127.0.0.1', '--port', String(port)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const s = await serve(child, `http://127.0.0.1:${port}`, `llama-server -sm ${mode}`, logFile);
  return { base: s.base, plan: null, stop: s.stop };
}

let tag = 1;

/** A warm-up, `singles` requests one after another, then `concurrency` at once. */
async function measure(base: string, o: Options): Promise<Pick<SplitRun, 'singleTps' | 'aggregateTps' | 'ttftMs'>> {
  const check = (r: { completionTokens: number }, what: string) => {
    if (r.completionTokens !== o.tokens) throw new HearthError(ErrorCode.Internal, `${what} generated ${r.completionTokens} of ${o.tokens} tokens`);
  };
  await streamCompletion(base, uniquePrompt(tag++, 8), 4);
  const singles = [];
  for (let i = 0; i < o.singles; i++) {
    const r = await streamCompletion(base, uniquePrompt(tag++, 12), o.tokens);
    check(r, 'a single request');
    singles.push(r);
  }
  const started = performance.now();
  const all = await Promise.all(Array.from({ length: o.concurrency }, () => streamCompletion(base, uniquePrompt(tag++, 12), o.tokens)));
  const seconds = (performance.now() - started) / 1000;
  for (const r of all) check(r, `one of ${o.concurrency} requests at once`);
  const ttft = singles.map((r) => r.ttftMs).sort((a, b) => a - b);
  return {
    singleTps: singles.map((r) => (r.completionTokens - 1) / (r.decodeMs / 1000)),
    aggregateTps: all.reduce((n, r) => n + r.completionTokens, 0) / seconds,
    ttftMs: ttft[Math.floor(ttft.length / 2)]!,
  };
}

function save(o: Options, results: SplitResults): void {
  writeFileSync(o.out, JSON.stringify(results, null, 2) + '\n');
}

async function main(): Promise<void> {
  const quick = values.quick!;
  const int = (v: string | undefined, fallback: number, flag: string, max: number) => (v === undefined ? fallback : parseInteger(v, flag, { min: 1, max }));
  const o: Options = {
    workerCounts: values.workers!.split(',').map((x) => parseInteger(x, '--workers', { min: 2, max: 8 })),
    nets: values.nets!.split(',').filter(Boolean).map((x) => {
      if (x === 'loopback') return { net: 'loopback' as const };
      const rttMs = Number(x);
      if (!Number.isFinite(rttMs) || rttMs < 0 || rttMs > 1000) throw new HearthError(ErrorCode.InvalidArgument, `--nets: '${x}' is not loopback or a round trip in ms`);
      return { net: 'lan' as const, rttMs };
    }),
    sides: values.sides!.split(',').map((x) => {
      if (!(SPLIT_SIDES as readonly string[]).includes(x)) throw new HearthError(ErrorCode.InvalidArgument, `--sides: '${x}' is not one of ${SPLIT_SIDES.join(', ')}`);
      return x as SplitSide;
    }),
    reps: int(values.reps, quick ? 1 : 3, '--reps', 100),
    tokens: int(values.tokens, quick ? 12 : 32, '--tokens', 4096),
    singles: int(values.singles, quick ? 2 : 3, '--singles', 100),
    concurrency: parseInteger(values.concurrency!, '--concurrency', { min: 1, max: 64 }),
    ctxSize: parseInteger(values['ctx-size']!, '--ctx-size', { min: 256, max: 1 << 20 }),
    rateMbit: parseInteger(values['rate-mbit']!, '--rate-mbit', { min: 1, max: 100_000 }),
    quick,
    warmUp: !quick && !values['no-warm-up'],
    out: values.out!,
  };
  const netns = o.nets.some((n) => n.net === 'lan') ? netnsUnavailable() : null;
  if (netns) {
    say(`the emulated LAN is skipped: ${netns}`);
    o.nets = o.nets.filter((n) => n.net !== 'lan');
  }
  const started = Date.now();
  const { file: model, weightType } = await modelFile(values.model!);
  const llamaServer = o.sides.some((s) => s.startsWith('llama')) ? await ensureLlamaTool('llama-server', say) : '';
  const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-split-'));
  const logFile = join(tmpdir(), `hearth-bench-split-${process.pid}.log`);
  const logFd = openSync(logFile, 'a');
  say(`servers' output goes to ${logFile}; model ${basename(model)}`);
  const sys = loadBinding().systemInfo();
  const results: SplitResults = {
    date: new Date().toISOString(),
    command: `npm run bench:split -- ${process.argv.slice(2).join(' ')}`.trim(),
    quick,
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), os: `${process.platform} ${release()}`, node: process.version },
    build: { llamaCpp: sys.llamaCppRelease, rpcProtocol: sys.rpcProtocol },
    model: { file: basename(model), bytes: statSync(model).size, weightType },
    settings: { reps: o.reps, tokens: o.tokens, singles: o.singles, concurrency: o.concurrency, ctxSize: o.ctxSize, threadsPerWorker: 1, warmUp: o.warmUp },
    setups: [],
  };
  try {
    for (const count of o.workerCounts) {
      for (const net of o.nets) {
        const label = `${count} workers, ${net.net === 'lan' ? `LAN RTT ${net.rttMs} ms` : 'loopback'}`;
        const bed = await startBed(count, net, o, dir, logFd);
        const setup: SplitSetup = {
          workers: count, net: net.net, rttMs: net.net === 'lan' ? net.rttMs : null, relayRttMs: bed.lan?.relayRttMs ?? null, rateMbit: net.net === 'lan' ? o.rateMbit : null,
          links: bed.links, workerSpeeds: await workerSpeeds(bed.workers, weightType), runs: [],
        };
        results.setups.push(setup);
        const l = (x: SplitLink) => `${x.rttMs.median.toFixed(3)} ms (p10 ${x.rttMs.p10.toFixed(3)}, p90 ${x.rttMs.p90.toFixed(3)}), ${x.upMbit.toFixed(0)} up / ${x.downMbit.toFixed(0)} down Mb/s`;
        say(`${label}: coordinator → workers ${bed.links!.toWorkers.map(l).join('; ')}`);
        if (net.net === 'lan') say(`${label}: worker ↔ worker ${bed.links!.between.map(l).join('; ')}`);
        say(`${label}: workers' calibrated speed (${weightType}) ${setup.workerSpeeds.map((x) => (x / 1e9).toFixed(2)).join(' / ')} GB/s`);
        // A side that fails (a flag the coordinator lacks, a split it refuses, a server that will not
        // start) is not tried again on this bed: its reason is recorded once.
        const failed = new Set<SplitSide>();
        let layers: number[] | null = null;
        const runSide = async (side: SplitSide, rep: number, warmUp: boolean): Promise<void> => {
          const mode = side.endsWith('tensor') ? 'tensor' : 'layer';
          const run: SplitRun = { side, rep, singleTps: [], aggregateTps: NaN, ttftMs: NaN, loadAverage: loadavg()[0]!, relayCpuShare: null, plan: null, error: null };
          const what = `${label} ${warmUp ? 'warm-up' : `rep ${rep + 1}/${o.reps}`} ${side.padEnd(13)}`;
          let server: Server | null = null;
          try {
            server = side.startsWith('hearth') ? await startHearth(bed, mode, model, o, logFd) : await startLlamaServer(llamaServer, bed, mode, layers, model, o, logFile);
            if (side === 'hearth-layer' && server.plan) layers = server.plan.layers;
            if (warmUp) {
              await streamCompletion(server.base, uniquePrompt(tag++, 8), 4);
              say(`${what}: loaded and answered`);
              return;
            }
            run.plan = server.plan;
            run.loadAverage = loadavg()[0]!;
            const relayCpu = bed.lan?.relayCpuSeconds() ?? null;
            const measuring = performance.now();
            Object.assign(run, await measure(server.base, o));
            run.relayCpuShare = relayCpu === null ? null : (bed.lan!.relayCpuSeconds() - relayCpu) / ((performance.now() - measuring) / 1000);
            const single = stat(run.singleTps).median;
            const plan = run.plan ? ` [ran as ${run.plan.split ?? '?'}, layers ${run.plan.layers.join('+')}, predicted ${run.plan.predictedSecondsPerToken ? (1 / run.plan.predictedSecondsPerToken).toFixed(1) : '?'} tok/s]` : '';
            const relays = run.relayCpuShare == null ? '' : `, relays ${(100 * run.relayCpuShare).toFixed(0)} % of a core`;
            say(`${what}: single ${single.toFixed(2)} tok/s, ${o.concurrency} at once ${run.aggregateTps.toFixed(2)} tok/s, ttft ${run.ttftMs.toFixed(0)} ms (load ${run.loadAverage.toFixed(1)}${relays})${plan}`);
          } catch (e) {
            run.error = messageOf(e);
            failed.add(side);
            say(`${what}: FAILED, not tried again on this network: ${run.error}`);
          } finally {
            await server?.stop();
          }
          if (!warmUp || run.error !== null) {
            setup.runs.push(run);
            save(o, results);
          }
        };
        try {
          // Each side loaded once first: the workers' tensor caches then hold both splits' tensors, so no
          // measured run pays for receiving and writing them.
          if (o.warmUp) for (const side of o.sides) await runSide(side, -1, true);
          for (let rep = 0; rep < o.reps; rep++) {
            const order = o.sides.map((_, i) => o.sides[(i + rep) % o.sides.length]!);
            for (const side of order) if (!failed.has(side)) await runSide(side, rep, false);
          }
        } finally {
          await bed.stop();
        }
      }
    }
  } finally {
    closeSync(logFd);
    rmSync(dir, { recursive: true, force: true });
  }
  save(o, results);
  process.stdout.write(splitMarkdown(results, existsSync('bench/split-notes.md') ? readFileSync('bench/split-notes.md', 'utf8') : null));
  if (existsSync('bench/results.json') && resolve(o.out) === resolve('bench/split-results.json')) writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
  say(`done in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${o.out}`);
}

await main().catch((e: unknown) => {
  say(`bench:split: ${messageOf(e)}`);
  process.exitCode = 1;
});
