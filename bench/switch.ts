// Switching models (issue 25): what a client waits for an on-demand model that is not loaded, while
// another on-demand model holds the memory it needs. Two 1-thread workers each lend (--memory) room
// for one of the pair beside a small pinned default model, not for both; a coordinator (--local-device
// off --placement memory) serves the three from a cluster.yaml. A request for the other model of the
// pair evicts the loaded one and loads its own: its time to first token, as the client sees it, is the
// switch. Cold: the workers' tensor caches are emptied first, so every tensor crosses the network;
// warm: the same switch once the caches hold both models (the large tensors found by hash). The
// baseline is the same request again, the model loaded. The coordinator's log, timed on the same clock,
// says where the time went.
//
//   npm run bench:switch -- [--models small,1b] [--reps 3] [--nets loopback,lan] [--pinned tiny|none]
//                           [--tokens 8] [--ctx-size 1024] [--memory-mib N] [--rate 1gbit]
//
// Each repetition empties the caches and switches four times: cold to B, cold to A, warm to B, warm to
// A, each followed by its baseline. `lan`: each worker on a host of its own (network namespaces on a
// bridge, root only), its cable limited to --rate both ways by tc's tbf. A pair's networks run side by
// side, a cluster each, and take turns repetition by repetition. Writes bench/switch-results.json
// (a run replaces only its own setups) and regenerates BENCHMARKS.md (its switch section, with
// bench/switch-notes.md appended).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir, loadavg, tmpdir } from 'node:os';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { spawnHearth, startLocalWorker, waitHealthy, type LocalWorker } from '../cli/local-cluster.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import type { WireModelStatus, WireStatus } from '../coordinator/wire.js';
import { WorkerClient } from '../link/worker-client.js';
import { createTestModel, testModelFileName, type TestModelPreset, type TestModelQuant } from '../models/test-models.js';
import { followCoordinatorLog, type LogLine } from './coordinator-log.js';
import { HostNetwork, netnsUnavailable, type NetHost } from './netns.js';
import { SWITCH_NETS, switchSegments, type SwitchCpu, type SwitchKind, type SwitchNet, type SwitchResults, type SwitchRun, type SwitchSetup, type SwitchSteps } from './report.js';
import { writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'small,1b' },
    reps: { type: 'string', default: '3' },
    nets: { type: 'string', default: SWITCH_NETS.join(',') },
    pinned: { type: 'string', default: 'tiny' },
    tokens: { type: 'string', default: '8' },
    'ctx-size': { type: 'string', default: '1024' },
    'memory-mib': { type: 'string' },
    rate: { type: 'string', default: '1gbit' },
    out: { type: 'string', default: 'bench/switch-results.json' },
  },
});

/**
 * The pairs: two models of one shape, A with seed 1 and B with seed 2 (no tensor in common). `memoryMiB`:
 * what each worker lends, beside the pinned tiny model or without it: one of the pair fits, not both.
 */
const PAIRS: Record<string, { preset: TestModelPreset; quant: TestModelQuant; memoryMiB: { pinned: number; alone: number } }> = {
  small: { preset: 'small', quant: 'f16', memoryMiB: { pinned: 240, alone: 180 } },
  '1b': { preset: '1b', quant: 'q8_0', memoryMiB: { pinned: 1024, alone: 1024 } },
};
/** The pinned default model beside the pair (`--pinned none`: the pair alone). */
const PINNED = { preset: 'tiny' as TestModelPreset, quant: 'f16' as TestModelQuant };
/** A short prompt, the same for every request (the prompt cache off, so each is computed whole). */
const PROMPT = 'The old stone hearth kept the whole house warm through the long winter nights.';
const GREEDY = { temperature: 0, greedy: true, ignore_eos: true };
/** Long enough that no model unloads for idleness during a run. */
const IDLE = '2h';


function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * CPU seconds (user, system) and minor page faults of a process and its descendants so far, and the
 * nanoseconds each of their live threads has been runnable but waited for a CPU (schedstat), by thread.
 */
interface TreeUsage {
  user: number;
  sys: number;
  faults: number;
  waits: Map<number, number>;
}

/** /proc's clock ticks per second (sysconf CLK_TCK; 100 on Linux everywhere in practice). */
const TICKS = 100;

/**
 * What process `root` and its descendants have used so far: each live process's own figures and those
 * of its children already reaped (a process that ends within a window moves into its parent's, so the
 * difference of two readings is what the tree used between them).
 */
function treeUsage(root: number): TreeUsage {
  const stats = new Map<number, { ppid: number; f: string[] }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(name), { ppid: Number(f[1]), f });
    } catch {
      // gone while we looked
    }
  }
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, s] of stats) {
      if (tree.has(pid) || !tree.has(s.ppid)) continue;
      tree.add(pid);
      grew = true;
    }
  }
  const out = { user: 0, sys: 0, faults: 0, waits: new Map<number, number>() };
  for (const pid of tree) {
    const f = stats.get(pid)?.f;
    if (!f) continue;
    runQueueWaits(pid, out.waits);
    // Fields 10, 11 (minflt, cminflt) and 14-17 (utime, stime, cutime, cstime), counted from the state (field 3).
    out.faults += Number(f[7]) + Number(f[8]);
    out.user += (Number(f[11]) + Number(f[13])) / TICKS;
    out.sys += (Number(f[12]) + Number(f[14])) / TICKS;
  }
  return out;
}

/** Adds the nanoseconds each live thread of `pid` has waited on a run queue (the second field of its schedstat) to `into`. */
function runQueueWaits(pid: number, into: Map<number, number>): void {
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        into.set(Number(tid), Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1] ?? 0));
      } catch {
        // the thread ended while we looked
      }
    }
  } catch {
    // the process ended while we looked
  }
}

/** What a tree used between two readings; the wait counts each thread alive at the second (one that ended in between is lost). */
function usageSince(before: TreeUsage, after: TreeUsage): SwitchCpu {
  let waited = 0;
  for (const [tid, ns] of after.waits) waited += ns - (before.waits.get(tid) ?? 0);
  return { user: after.user - before.user, sys: after.sys - before.sys, faults: after.faults - before.faults, waited: waited / 1e9 };
}

/**
 * What a host's cable carries now, Gb/s: 64 MiB sent from here to a sink on the host, timed until the
 * sink has counted them all. On a busy machine the namespaces' veths and bridge may carry less than
 * the cable's limit: then the limit is not what bounds a load.
 */
async function cableGbps(host: NetHost): Promise<number> {
  const bytes = 64 * 2 ** 20;
  const port = await freePortOn('127.0.0.1');
  const sinkCode = `const s=require('net').createServer((c)=>{let n=0;c.on('data',(d)=>{n+=d.length;if(n>=${bytes})c.end('done')})}).listen(${port},'${host.address}',()=>console.log('up'));setTimeout(()=>process.exit(1),60000).unref();process.stdin.on('end',()=>s.close()).resume()`;
  const sink = spawn('ip', ['netns', 'exec', host.netns, process.execPath, '-e', sinkCode], { stdio: ['pipe', 'pipe', 'ignore'] });
  try {
    await new Promise<void>((resolve, reject) => {
      sink.stdout!.once('data', () => resolve());
      sink.once('exit', (code) => reject(new HearthError(ErrorCode.Unavailable, `the rate probe's sink on ${host.name} exited (${code})`)));
    });
    const started = performance.now();
    await new Promise<void>((resolve, reject) => {
      const c = connect(port, host.address, () => c.write(Buffer.alloc(bytes)));
      c.once('data', () => {
        c.destroy();
        resolve();
      });
      c.once('error', reject);
    });
    return (bytes * 8) / 1e9 / ((performance.now() - started) / 1000);
  } finally {
    sink.stdin!.end();
    sink.kill();
  }
}

async function modelFile(preset: TestModelPreset, quant: TestModelQuant, seed: number): Promise<string> {
  const file = join(homedir(), '.cache', 'hearth', 'models', testModelFileName(preset, quant, seed));
  if (!existsSync(file)) {
    say(`creating the ${preset} test model (${quant}, seed ${seed}) at ${file} ...`);
    await createTestModel({ out: file, preset, quant, seed });
  }
  return file;
}

/** Two workers and a coordinator serving the pair (and the pinned model), on 127.0.0.1 or each worker on a host of its own. */
class Cluster {
  readonly workers: LocalWorker[] = [];
  readonly lines: LogLine[] = [];
  readonly #dir: string;
  readonly #logFd: number;
  readonly #net: HostNetwork | null;
  #coordinator: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  #client: CoordinatorClient | null = null;

  constructor(dir: string, logFile: string, net: HostNetwork | null) {
    this.#dir = dir;
    this.#logFd = openSync(logFile, 'a');
    this.#net = net;
  }

  get client(): CoordinatorClient {
    return this.#client!;
  }

  async start(config: string, memoryMiB: number): Promise<void> {
    const hosts = this.#net?.hosts ?? ['sw-a', 'sw-b'].map((name) => ({ name, netns: null, address: '127.0.0.1' }));
    for (const h of hosts) {
      this.workers.push(await startLocalWorker({
        name: h.name, threads: 1, dir: this.#dir, memory: `${memoryMiB}MiB`, stdio: ['ignore', this.#logFd, this.#logFd],
        ...(h.netns ? { netns: h.netns, host: h.address, insecure: true } : {}),
      }));
    }
    const grpc = await freePortOn('127.0.0.1');
    const http = await freePortOn('127.0.0.1');
    const child = spawnHearth(
      ['coordinator', '--config', config, ...this.workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory',
        '--threads', '1', '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http), '--log-level', 'info'],
      ['ignore', 'pipe', 'pipe'],
    );
    this.#coordinator = child;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
    // Its log (pino's JSON lines on stderr) is what says where a switch went.
    followCoordinatorLog(child, this.#logFd, this.lines);
    this.#client = new CoordinatorClient(`127.0.0.1:${grpc}`);
    await waitHealthy(`http://127.0.0.1:${http}/health`, 600_000, () => child.exitCode === null);
  }

  /** What the coordinator (with its engines) and each worker (with its rpc servers) have used so far. */
  usage(): { coordinator: TreeUsage; workers: TreeUsage[] } {
    return { coordinator: treeUsage(this.#coordinator!.pid!), workers: this.workers.map((w) => treeUsage(w.child.pid!)) };
  }

  alive(): void {
    if (this.#coordinator!.exitCode !== null) throw new HearthError(ErrorCode.Unavailable, `the coordinator exited with code ${this.#coordinator!.exitCode}`);
  }

  async status(): Promise<WireStatus> {
    return this.client.getStatus(5000);
  }

  /** What each worker's rpc servers hold (resident bytes), and how many tensors its cache has. */
  async workerMemory(): Promise<{ held: number; free: number; cacheFiles: number }[]> {
    return Promise.all(this.workers.map(async (w) => {
      const client = await WorkerClient.open(w.control, null);
      try {
        const info = await client.getInfo({ timeoutMs: 5000 });
        return { held: Number(info.held_bytes ?? 0), free: Number(info.devices[0]?.free_bytes ?? 0), cacheFiles: cacheFiles(w) };
      } finally {
        client.close();
      }
    }));
  }

  /** Empties every worker's tensor cache: the next load of a model sends all its tensors. */
  clearCaches(): void {
    for (const w of this.workers) {
      const dir = join(w.cacheDir, 'rpc');
      for (const name of existsSync(dir) ? readdirSync(dir) : []) unlinkSync(join(dir, name));
    }
  }

  async stop(): Promise<void> {
    this.#client?.close();
    if (this.#coordinator && this.#coordinator.exitCode === null) this.#coordinator.kill('SIGTERM');
    const timer = setTimeout(() => this.#coordinator?.kill('SIGKILL'), 15_000);
    await this.#exited;
    clearTimeout(timer);
    await Promise.all(this.workers.map((w) => w.stop()));
    closeSync(this.#logFd);
  }
}

function cacheFiles(w: LocalWorker): number {
  const dir = join(w.cacheDir, 'rpc');
  return existsSync(dir) ? readdirSync(dir).length : 0;
}

function modelOf(s: WireStatus, id: string): WireModelStatus {
  const m = s.models.find((x) => x.id === id);
  if (!m) throw new HearthError(ErrorCode.Internal, `model ${id} is not in the coordinator's status (${s.models.map((x) => x.id).join(', ')})`);
  return m;
}

/** One request, timed as its client sees it: sent to first token, and to the last. */
async function timedRequest(cluster: Cluster, model: string, tokens: number): Promise<{ sent: number; ttftMs: number; totalMs: number; cpu: SwitchRun['cpu']; failures: string[] }> {
  const before = cluster.usage();
  const sent = Date.now();
  let first = 0;
  let atFirst: ReturnType<Cluster['usage']> | null = null;
  const failures: string[] = [];
  try {
    const out = await cluster.client.generate(PROMPT, {
      model, maxTokens: tokens, sampling: GREEDY, cachePrompt: false, timeoutMs: 600_000,
      onChunk: (_text, ids) => {
        if (ids.length > 0 && first === 0) {
          first = Date.now();
          atFirst = cluster.usage();
        }
      },
    });
    if (out.finishReason !== 'length' || out.tokens.length !== tokens) failures.push(`the answer from ${model} is incomplete: finish ${out.finishReason}, ${out.tokens.length} of ${tokens} tokens`);
  } catch (e) {
    failures.push(`the request to ${model} failed: ${messageOf(e)}`);
  }
  const after = atFirst ?? cluster.usage();
  const cpu = { coordinator: usageSince(before.coordinator, after.coordinator), workers: after.workers.map((w, i) => usageSince(before.workers[i]!, w)) };
  return { sent, ttftMs: first > 0 ? first - sent : NaN, totalMs: Date.now() - sent, cpu, failures };
}

/** Where the coordinator's log puts each step of the switch, ms after the request was sent. */
function stepsOf(lines: LogLine[], events: WireStatus['events'], sent: number, from: string | null, to: string, ttftMs: number): { steps: SwitchSteps; loaded: LogLine | null } {
  const after = lines.filter((l) => l.time >= sent);
  const find = (test: (l: LogLine) => boolean) => after.find(test) ?? null;
  const at = (l: LogLine | null) => (l ? l.time - sent : null);
  const loading = find((l) => l.model === to && l.msg === 'model loading');
  const loadStarted = loading ? (after.slice(after.indexOf(loading)).find((l) => l.model === to && /^loading model: \d+%$/.test(l.msg)) ?? null) : null;
  const loaded = find((l) => l.model === to && l.msg === 'model loaded; serving');
  const asked = events.find((e) => Date.parse(e.time) >= sent && e.message.endsWith(`model ${to} was asked for: loading it`));
  return {
    steps: {
      asked: asked ? Date.parse(asked.time) - sent : null,
      evicting: from ? at(find((l) => l.model === from && l.msg === 'model draining')) : null,
      evicted: from ? at(find((l) => l.model === from && l.msg === 'model unloaded')) : null,
      planning: at(find((l) => l.model === to && l.msg === 'model planning')),
      loading: at(loading),
      loadStarted: at(loadStarted),
      loaded: at(loaded),
      firstToken: Number.isFinite(ttftMs) ? ttftMs : null,
    },
    loaded,
  };
}

/** Waits until the switch has settled: the target loaded and serving, the other on disk, nothing in flight, the pinned model loaded. */
async function settled(cluster: Cluster, to: string, other: string, pinned: string | null): Promise<WireStatus> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    cluster.alive();
    const s = await cluster.status().catch(() => null);
    if (s) {
      const t = modelOf(s, to);
      const o = modelOf(s, other);
      const ok = t.status === 'loaded' && t.state === 'serving' && o.status === 'on disk' && t.in_flight === 0 && (pinned === null || modelOf(s, pinned).status === 'loaded');
      if (ok) return s;
    }
    if (Date.now() > deadline) {
      const what = s ? s.models.map((m) => `${m.id} ${m.status} (${m.state}${m.reason ? `: ${m.reason}` : ''})`).join(', ') : 'no status';
      throw new HearthError(ErrorCode.DeadlineExceeded, `the switch to ${to} did not settle within 60 s: ${what}`);
    }
    await sleep(250);
  }
}

/** How far what a worker's rpc servers hold may move between two switches to the same model (resident pages come and go a little). */
const HELD_SLACK = { bytes: 16 * 2 ** 20, fraction: 0.1 };

/**
 * One switch to `to` (its `other` loaded now) and the baseline after it; the checks that it behaved:
 * the answer whole, the other model unloaded first, the pinned model untouched, and the memory given
 * back (the workers' rpc servers holding what they held after the last switch to `to`, `heldBefore`).
 */
async function switchTo(cluster: Cluster, setup: SwitchSetup, ids: { to: string; other: string; pinned: string | null }, kind: SwitchKind, rep: number, heldBefore: number[] | null): Promise<SwitchRun> {
  const before = await cluster.status();
  const failures: string[] = [];
  if (modelOf(before, ids.other).status !== 'loaded' || modelOf(before, ids.to).status !== 'on disk') failures.push(`before the switch: ${ids.other} ${modelOf(before, ids.other).status}, ${ids.to} ${modelOf(before, ids.to).status}`);
  const pinnedLoads = ids.pinned ? modelOf(before, ids.pinned).load.loads : 0;
  const toLoads = modelOf(before, ids.to).load.loads;
  const cacheBefore = cluster.workers.map(cacheFiles);
  const loadAverage = loadavg()[0]!;
  const req = await timedRequest(cluster, ids.to, setup.tokens);
  failures.push(...req.failures);
  const s = await settled(cluster, ids.to, ids.other, ids.pinned);
  const events = s.events.filter((e) => Date.parse(e.time) >= req.sent);
  const { steps, loaded } = stepsOf(cluster.lines, events, req.sent, ids.other, ids.to, req.ttftMs);
  const target = modelOf(s, ids.to);
  if (target.load.loads !== toLoads + 1) failures.push(`${ids.to} was loaded ${target.load.loads - toLoads} times for one switch`);
  if (ids.pinned && modelOf(s, ids.pinned).load.loads !== pinnedLoads) failures.push(`the pinned model ${ids.pinned} was loaded again`);
  if (!events.some((e) => e.message.includes(`model ${ids.to} does not fit beside the loaded models: unloading ${ids.other}`))) {
    failures.push(`no eviction of ${ids.other} for ${ids.to} in the events: ${events.map((e) => e.message).join(' | ')}`);
  }
  if (steps.evicted === null || steps.loading === null || steps.evicted > steps.loading) failures.push(`${ids.other} was not unloaded before ${ids.to} loaded (unloaded at ${steps.evicted} ms, loading at ${steps.loading} ms)`);
  const base = await timedRequest(cluster, ids.to, setup.tokens);
  failures.push(...base.failures.map((f) => `baseline: ${f}`));
  // The evicted engine's rpc servers stop after its connections close: give the workers a moment.
  await sleep(1000);
  const memory = await cluster.workerMemory();
  memory.forEach((m, i) => {
    const then = heldBefore?.[i];
    if (then !== undefined && Math.abs(m.held - then) > Math.max(HELD_SLACK.bytes, HELD_SLACK.fraction * then)) {
      failures.push(`worker ${cluster.workers[i]!.name}'s rpc servers hold ${(m.held / 2 ** 20).toFixed(0)} MiB with ${ids.to} loaded, against ${(then / 2 ** 20).toFixed(0)} MiB the last time`);
    }
  });
  return {
    rep, kind, from: ids.other, to: ids.to, ttftMs: req.ttftMs, totalMs: req.totalMs, baselineTtftMs: base.ttftMs, steps, cpu: req.cpu,
    load: loaded?.phases && loaded.seconds !== undefined
      ? {
          seconds: loaded.seconds, connect: loaded.phases.connectSeconds, weights: loaded.phases.weightsSeconds, context: loaded.phases.contextSeconds,
          bytesSent: Object.values(loaded.bytesSent ?? {}).reduce((a, b) => a + b, 0),
          layers: target.plan.devices.map((d) => `${d.owner} ${d.layers}`),
        }
      : null,
    cacheFilesBefore: cacheBefore,
    heldBytes: memory.map((m) => m.held),
    freeBytes: memory.map((m) => m.free),
    loadAverage, failures,
  };
}

/** Milliseconds as seconds, for the console. */
function msAsSeconds(x: number): string {
  return Number.isFinite(x) ? (x / 1000).toFixed(2) : '?';
}

/** One switch in a line, for the console. */
function summary(r: SwitchRun): string {
  const seg = switchSegments(r.steps);
  const s = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '?');
  const load = r.load ? ` (connect ${s(r.load.connect)}, weights ${s(r.load.weights)}, context ${s(r.load.context)}; ${(r.load.bytesSent / 2 ** 20).toFixed(1)} MiB sent; ${r.load.layers.join(', ')})` : '';
  const mib = (v: number[]) => v.map((b) => (b / 2 ** 20).toFixed(0)).join('/');
  const cpu = (u: SwitchCpu) => `${u.user.toFixed(1)}+${u.sys.toFixed(1)} (waited ${(u.waited ?? NaN).toFixed(1)})`;
  return `${r.kind} ${r.from}→${r.to}: first token ${msAsSeconds(r.ttftMs)} s (baseline ${msAsSeconds(r.baselineTtftMs)} s; load average ${r.loadAverage.toFixed(1)}; cpu user+sys s: coordinator ${cpu(r.cpu.coordinator)}, workers ${r.cpu.workers.map(cpu).join(' / ')}): pick ${s(seg.pick)}, unload ${s(seg.unload)}, re-plan ${s(seg.replan)}, engine ${s(seg.engine)}, load ${s(seg.load)}${load}, first token ${s(seg.firstToken)}; held ${mib(r.heldBytes)} MiB${r.failures.length > 0 ? `; FAILED: ${r.failures.join('; ')}` : ''}`;
}

/** The results file with this setup replaced (a run of one model or network keeps the others'). */
function save(out: string, entry: SwitchSetup): void {
  const old: SwitchResults = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as SwitchResults) : { setups: [] };
  const key = (m: SwitchSetup) => `${m.model}/${m.net}/${m.pinned ?? 'none'}`;
  const order = (m: SwitchSetup) => Object.keys(PAIRS).indexOf(m.model) * 100 + (m.pinned ? 0 : 50) + SWITCH_NETS.indexOf(m.net);
  const setups = [...old.setups.filter((m) => key(m) !== key(entry)), entry].sort((a, b) => order(a) - order(b));
  writeFileSync(out, JSON.stringify({ setups }, null, 2) + '\n');
}

interface Options {
  reps: number;
  tokens: number;
  ctxSize: number;
  pinned: boolean;
  memoryMiB: number | null;
  rate: string;
  out: string;
}

/** The served models' ids: the pair's, and the pinned model's (null without one). */
interface PairIds {
  a: string;
  b: string;
  pinned: string | null;
}

/** One pair on one network: its cluster, started with A loaded, and what was measured on it. */
class Setup {
  readonly entry: SwitchSetup;
  readonly #o: Options;
  readonly #ids: PairIds;
  readonly #dir: string;
  readonly #config: string;
  readonly #logFile: string;
  readonly #network: HostNetwork | null;
  readonly #cluster: Cluster;
  /** What the workers' rpc servers held after the last switch to each model. */
  readonly #held = new Map<string, number[]>();

  private constructor(entry: SwitchSetup, o: Options, ids: PairIds, dir: string, config: string, logFile: string) {
    this.entry = entry;
    this.#o = o;
    this.#ids = ids;
    this.#dir = dir;
    this.#config = config;
    this.#logFile = logFile;
    this.#network = entry.net === 'lan' ? HostNetwork.create(['sw-a', 'sw-b'], { joinHere: true, subnet: '10.234.0', tag: 'sw' }) : null;
    this.#cluster = new Cluster(dir, logFile, this.#network);
  }

  get label(): string {
    return `${this.entry.model} on ${this.entry.net}`;
  }

  /** Makes the pair's files and cluster.yaml, starts the cluster (on its own network for `lan`) and loads A. */
  static async start(name: string, net: SwitchNet, o: Options): Promise<Setup> {
    const pair = PAIRS[name]!;
    const files = [await modelFile(pair.preset, pair.quant, 1), await modelFile(pair.preset, pair.quant, 2)] as const;
    const pinnedFile = o.pinned ? await modelFile(PINNED.preset, PINNED.quant, 1) : null;
    const memoryMiB = o.memoryMiB ?? (o.pinned ? pair.memoryMiB.pinned : pair.memoryMiB.alone);
    const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-switch-'));
    const config = join(dir, 'cluster.yaml');
    const ids = { a: `${name}-a`, b: `${name}-b`, pinned: pinnedFile ? 'default' : null };
    writeFileSync(config, [
      'reserveMiB: 0',
      `ctxSize: ${o.ctxSize}`,
      'parallel: 1',
      'models:',
      ...(pinnedFile ? [`  - { model: ${pinnedFile}, id: default, policy: pinned }`] : []),
      `  - { model: ${files[0]}, id: ${ids.a}, policy: on-demand, idle: ${IDLE} }`,
      `  - { model: ${files[1]}, id: ${ids.b}, policy: on-demand, idle: ${IDLE} }`,
      '',
    ].join('\n'));
    // Kept: a failed switch is explained there.
    const logFile = join(tmpdir(), `hearth-bench-switch-${name}-${net}-${process.pid}.log`);
    say(`${name} on ${net}: servers' output goes to ${logFile}`);
    const flags = [
      `--models ${name}`, `--nets ${values.nets}`, `--reps ${o.reps}`,
      ...(o.pinned ? [] : ['--pinned none']), ...(o.tokens === 8 ? [] : [`--tokens ${o.tokens}`]), ...(o.ctxSize === 1024 ? [] : [`--ctx-size ${o.ctxSize}`]),
      ...(o.memoryMiB === null ? [] : [`--memory-mib ${o.memoryMiB}`]), ...(o.rate !== '1gbit' ? [`--rate ${o.rate}`] : []),
    ];
    const entry: SwitchSetup = {
      model: name, net, files: [basename(files[0]), basename(files[1])], bytes: statSync(files[0]).size, pinned: pinnedFile ? basename(pinnedFile) : null,
      memoryMiB, ctxSize: o.ctxSize, parallel: 1, tokens: o.tokens, reps: o.reps, rate: net === 'lan' ? o.rate : null,
      date: new Date().toISOString(), command: `npm run bench:switch -- ${flags.join(' ')}`, promptTokens: 0, firstLoad: null, runs: [],
    };
    const setup = new Setup(entry, o, ids, dir, config, logFile);
    try {
      await setup.#begin(memoryMiB, pinnedFile !== null);
    } catch (e) {
      await setup.stop();
      throw e;
    }
    return setup;
  }

  async #begin(memoryMiB: number, pinned: boolean): Promise<void> {
    const { entry } = this;
    const cluster = this.#cluster;
    if (this.#network) {
      for (const h of this.#network.hosts) this.#network.limit(h.name, this.#o.rate);
      entry.probeGbps = await cableGbps(this.#network.hosts[0]!);
      say(`${this.label}: a worker's cable, limited to ${this.#o.rate}, carried ${entry.probeGbps.toFixed(2)} Gb/s in a 64 MiB probe`);
    }
    await cluster.start(this.#config, memoryMiB);
    const memory = await cluster.workerMemory();
    say(`${this.label}: serving${pinned ? ' the pinned model' : ''}; workers lend ${memoryMiB} MiB each, their rpc servers hold ${memory.map((m) => (m.held / 2 ** 20).toFixed(0)).join('/')} MiB`);
    // The first load of A, nothing to evict: the pair starts with A loaded.
    cluster.clearCaches();
    const first = await timedRequest(cluster, this.#ids.a, this.#o.tokens);
    if (first.failures.length > 0) throw new HearthError(ErrorCode.Internal, first.failures.join('; '));
    const a = modelOf(await cluster.status(), this.#ids.a);
    entry.firstLoad = { ttftMs: first.ttftMs, seconds: a.load.seconds, layers: a.plan.devices.map((d) => `${d.owner} ${d.layers}`) };
    entry.promptTokens = (await cluster.client.generate(PROMPT, { model: this.#ids.a, maxTokens: 1, sampling: GREEDY, cachePrompt: false })).usage.prompt_tokens;
    say(`${this.label}: ${this.#ids.a} loaded in ${a.load.seconds.toFixed(2)} s onto ${entry.firstLoad.layers.join(', ')} (first token ${msAsSeconds(first.ttftMs)} s)`);
  }

  /** One repetition: the caches emptied, then cold to B, cold to A, warm to B, warm to A. Throws at a switch that misbehaved. */
  async rep(rep: number): Promise<void> {
    const { a, b, pinned } = this.#ids;
    const order: [SwitchKind, string, string][] = [['cold', b, a], ['cold', a, b], ['warm', b, a], ['warm', a, b]];
    // Emptied now, each cold switch sends its model whole, and leaves it in the caches for its warm one.
    this.#cluster.clearCaches();
    for (const [kind, to, other] of order) {
      const run = await switchTo(this.#cluster, this.entry, { to, other, pinned }, kind, rep, this.#held.get(to) ?? null);
      this.#held.set(to, run.heldBytes);
      this.entry.runs.push(run);
      save(this.#o.out, this.entry);
      say(`${this.label} rep ${rep + 1}/${this.#o.reps} ${summary(run)}`);
      if (run.failures.length > 0) {
        // Something in hearth misbehaved: stop here, with the log, rather than measure around it.
        throw new HearthError(ErrorCode.Internal, `the switch to ${to} misbehaved: ${run.failures.join('; ')} (log: ${this.#logFile})`);
      }
    }
  }

  async stop(): Promise<void> {
    try {
      await this.#cluster.stop();
    } finally {
      this.#network?.destroy();
      rmSync(this.#dir, { recursive: true, force: true });
    }
  }
}

/**
 * Every repetition of a pair on each network: the networks' clusters run side by side (the idle one
 * waits), and take turns repetition by repetition, the first in turn changing each time, so that the
 * machine's changing load falls on both alike.
 */
async function measurePair(name: string, nets: SwitchNet[], o: Options): Promise<void> {
  const setups: Setup[] = [];
  try {
    for (const net of nets) setups.push(await Setup.start(name, net, o));
    for (let rep = 0; rep < o.reps; rep++) {
      for (let k = 0; k < setups.length; k++) await setups[(k + rep) % setups.length]!.rep(rep);
    }
  } finally {
    for (const s of setups) await s.stop();
  }
}

async function main(): Promise<void> {
  const models = values.models!.split(',').filter(Boolean);
  for (const m of models) if (!PAIRS[m]) throw new HearthError(ErrorCode.InvalidArgument, `--models: '${m}' is not one of ${Object.keys(PAIRS).join(', ')}`);
  const nets = values.nets!.split(',').filter(Boolean) as SwitchNet[];
  for (const n of nets) if (!SWITCH_NETS.includes(n)) throw new HearthError(ErrorCode.InvalidArgument, `--nets: '${n}' is not one of ${SWITCH_NETS.join(', ')}`);
  if (values.pinned !== 'tiny' && values.pinned !== 'none') throw new HearthError(ErrorCode.InvalidArgument, `--pinned: '${values.pinned}' is not tiny or none`);
  const o: Options = {
    reps: parseInteger(values.reps!, '--reps', { min: 1, max: 100 }),
    tokens: parseInteger(values.tokens!, '--tokens', { min: 1, max: 4096 }),
    ctxSize: parseInteger(values['ctx-size']!, '--ctx-size', { min: 256, max: 1 << 20 }),
    pinned: values.pinned === 'tiny',
    memoryMiB: values['memory-mib'] === undefined ? null : parseInteger(values['memory-mib'], '--memory-mib', { min: 64, max: 1 << 20 }),
    rate: values.rate!,
    out: values.out!,
  };
  if (!/^\d+(\.\d+)?[kmg]?bit$/.test(o.rate)) throw new HearthError(ErrorCode.InvalidArgument, `--rate: '${o.rate}' is not a rate as tc spells it (1gbit, 100mbit)`);
  const netns = nets.includes('lan') ? netnsUnavailable() : null;
  if (netns) say(`lan is skipped: ${netns}`);
  const started = Date.now();
  for (const name of models) await measurePair(name, nets.filter((n) => n !== 'lan' || !netns), o);
  if (existsSync('bench/results.json')) writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
  say(`done in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${o.out}`);
}

await main().catch((e: unknown) => {
  say(`bench:switch: ${messageOf(e)}`);
  process.exitCode = 1;
});
