// Resumed requests (issue 24): the pause a fault costs a request in flight. Three 1-thread workers
// carry the model's layers (--placement memory, the coordinator's own CPU off), four greedy requests
// run at once, and a fault strikes when the first stream has its FAULT_AT-th token: a worker's rpc
// server killed, a worker killed or stopped, the coordinator's engine killed, a worker's cable pulled
// (network namespaces, root only). The stream's longest gap between two tokens is the pause its client
// sees; the coordinator's log lines, timed on the same clock, say where the time went.
//
//   npm run bench:resume -- [--models small,1b] [--reps 3] [--faults kill-rpc-server,...] [--tokens 64]
//                           [--watchdog-seconds 6] [--ctx-size 1024]
//
// Writes bench/resume-results.json (a run replaces only its models' entries at its watchdog) and
// regenerates BENCHMARKS.md (its resume section, with bench/resume-notes.md appended).
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

import { spawnHearth, startLocalWorker, waitHealthy, type LocalWorker } from '../cli/local-cluster.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient, type GenerateOutcome } from '../coordinator/client.js';
import type { WireStatus } from '../coordinator/wire.js';
import { WorkerClient } from '../link/worker-client.js';
import { createTestModel, testModelFileName, type TestModelPreset, type TestModelQuant } from '../models/test-models.js';
import { uniqueProse } from './measure.js';
import { followCoordinatorLog, type LogLine } from './coordinator-log.js';
import { HostNetwork, netnsUnavailable } from './netns.js';
import { RESUME_FAULTS, resumePause, resumeSegments, type ResumeFault, type ResumeModelResults, type ResumeResults, type ResumeRun, type ResumeSteps } from './report.js';
import { writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'small,1b' },
    reps: { type: 'string', default: '3' },
    faults: { type: 'string', default: RESUME_FAULTS.join(',') },
    tokens: { type: 'string', default: '64' },
    'ctx-size': { type: 'string', default: '1024' },
    'watchdog-seconds': { type: 'string', default: '6' },
    out: { type: 'string', default: 'bench/resume-results.json' },
  },
});

/** The models measured: `hearth bench`'s 1b in Q8_0, and the small test model. */
const MODELS: Record<string, { preset: TestModelPreset; quant: TestModelQuant }> = { small: { preset: 'small', quant: 'f16' }, '1b': { preset: '1b', quant: 'q8_0' } };
/** The fault strikes when the measured stream has this many tokens (as in test/helpers/resume.ts). */
const FAULT_AT = 8;
/** Requests in flight at the fault: the measured stream and three more. */
const PARALLEL = 4;
/** Words of each request's prompt (uniqueProse). */
const PROMPT_WORDS = 60;
const GREEDY = { temperature: 0, greedy: true, ignore_eos: true };
/** A worker lost this soon after its admission flaps and is held out of plans (coordinator/flaps.ts), so a worker is struck again only after this. */
const FLAP_WINDOW_MS = 10_000;


/** The coordinator's engine child processes, oldest first: the serving engine, then the spare. */
function engineProcesses(coordinator: number): number[] {
  const found: { pid: number; started: number }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== coordinator || fields[0] === 'Z') continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('engine-main')) found.push({ pid: Number(name), started: Number(fields[19]) });
    } catch {
      // gone while we looked
    }
  }
  return found.sort((a, b) => a.started - b.started).map((p) => p.pid);
}

/** A metric's value in Prometheus text; NaN when absent. */
function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Three workers and a coordinator, on 127.0.0.1 or each worker on a host of its own (for the cut cable). */
class Cluster {
  readonly workers: LocalWorker[] = [];
  /** Each worker's last strike (ms), so none is struck again within the flap window. */
  readonly struckAt: number[] = [0, 0, 0];
  readonly lines: LogLine[] = [];
  readonly #dir: string;
  readonly #logFd: number;
  readonly #net: HostNetwork | null;
  #coordinator: ChildProcess | null = null;
  #exited: Promise<void> = Promise.resolve();
  #client: CoordinatorClient | null = null;
  #http = '';

  constructor(dir: string, logFile: string, net: HostNetwork | null) {
    this.#dir = dir;
    this.#logFd = openSync(logFile, 'a');
    this.#net = net;
  }

  get client(): CoordinatorClient {
    return this.#client!;
  }

  get pid(): number {
    return this.#coordinator!.pid!;
  }

  async start(model: string, ctxSize: number, watchdogSeconds: number): Promise<void> {
    const hosts = this.#net?.hosts ?? ['resume-a', 'resume-b', 'resume-c'].map((name) => ({ name, netns: null, address: '127.0.0.1' }));
    for (const h of hosts) this.workers.push(await this.#startWorker(h.name, null));
    const grpc = await freePortOn('127.0.0.1');
    const http = await freePortOn('127.0.0.1');
    const child = spawnHearth(
      ['coordinator', '--model', model, ...this.workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory',
        '--watchdog-seconds', String(watchdogSeconds), '--ctx-size', String(ctxSize), '--parallel', String(PARALLEL), '--threads', '1',
        '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http), '--log-level', 'info'],
      ['ignore', 'pipe', 'pipe'],
    );
    this.#coordinator = child;
    this.#exited = new Promise((r) => child.once('exit', () => r()));
    // Its log (pino's JSON lines on stderr) is what says where a pause went.
    followCoordinatorLog(child, this.#logFd, this.lines);
    this.#http = `http://127.0.0.1:${http}`;
    this.#client = new CoordinatorClient(`127.0.0.1:${grpc}`);
    await waitHealthy(`${this.#http}/health`, 600_000, () => child.exitCode === null);
  }

  async #startWorker(name: string, ports: LocalWorker['ports'] | null): Promise<LocalWorker> {
    const host = this.#net?.hosts.find((h) => h.name === name);
    // A worker started again on its ports may find them still held for a moment.
    for (let attempt = 1; ; attempt++) {
      try {
        return await startLocalWorker({
          name, threads: 1, dir: this.#dir, stdio: ['ignore', this.#logFd, this.#logFd],
          // On the bench's own bridge, open as on 127.0.0.1: the same links as the other faults' cluster.
          ...(ports ? { ports } : {}), ...(host ? { netns: host.netns, host: host.address, insecure: true } : {}),
        });
      } catch (e) {
        if (attempt >= 5) throw e;
        await sleep(1000);
      }
    }
  }

  /** Starts worker `i` again on its ports, its state and tensor cache kept (after it was killed or stopped). */
  async restartWorker(i: number): Promise<void> {
    const old = this.workers[i]!;
    await old.exited;
    this.workers[i] = await this.#startWorker(old.name, old.ports);
  }

  async status(): Promise<WireStatus> {
    return this.client.getStatus(5000);
  }

  async metrics(): Promise<{ resumed: number; pauseSum: number }> {
    const text = await (await fetch(`${this.#http}/metrics`)).text();
    return { resumed: metric(text, 'hearth_resume_pause_seconds_count'), pauseSum: metric(text, 'hearth_resume_pause_seconds_sum') };
  }

  /** Waits until the cluster serves on all three workers, idle, with its spare engine process beside the serving one. */
  async settled(timeoutMs = 300_000): Promise<WireStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#coordinator!.exitCode !== null) throw new HearthError(ErrorCode.Unavailable, `the coordinator exited with code ${this.#coordinator!.exitCode}`);
      const s = await this.status().catch(() => null);
      if (s && s.state === 'serving' && s.plan?.devices.length === 3 && s.in_flight === 0 && s.waiting === 0 && engineProcesses(this.pid).length === 2) return s;
      if (Date.now() > deadline) throw new HearthError(ErrorCode.DeadlineExceeded, `the cluster did not serve on three workers again within ${timeoutMs / 1000} s (${s ? `${s.state}: ${s.reason}` : 'no status'})`);
      await sleep(250);
    }
  }

  /**
   * Readies a fault on worker `i` (or the engine) and returns what strikes it: a synchronous act, so the
   * strike lands within the measured stream's token callback.
   */
  async arm(kind: ResumeFault, i: number): Promise<() => void> {
    const worker = this.workers[i]!;
    switch (kind) {
      case 'kill-rpc-server': {
        const client = await WorkerClient.open(worker.control, null);
        try {
          const pid = (await client.health({ timeoutMs: 2000 })).rpc_server_pid;
          if (pid <= 0) throw new HearthError(ErrorCode.Unavailable, `worker ${worker.name} reports no rpc server`);
          return () => process.kill(pid, 'SIGKILL');
        } finally {
          client.close();
        }
      }
      case 'kill-worker':
        return () => worker.child.kill('SIGKILL');
      case 'term-worker':
        return () => worker.child.kill('SIGTERM');
      case 'kill-engine': {
        // The engine serving is the older of the two: a spare engine process waits beside it for the next load.
        const [engine] = engineProcesses(this.pid);
        if (engine === undefined) throw new HearthError(ErrorCode.Unavailable, 'no engine process found');
        return () => process.kill(engine, 'SIGKILL');
      }
      case 'cut-cable':
        return () => this.#net!.cut(worker.name);
    }
  }

  /** Undoes a fault's lasting part: a stopped worker started again, a cable plugged back in. */
  async recover(kind: ResumeFault, i: number): Promise<void> {
    if (kind === 'kill-worker' || kind === 'term-worker') await this.restartWorker(i);
    if (kind === 'cut-cable') this.#net!.restore(this.workers[i]!.name);
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

/**
 * One answer's shortcomings: not complete, not resumed (where it must be), or failed. A worker that
 * leaves gracefully (term-worker) lets the requests finish on the retiring engine: they are resumed only
 * where the drain cuts them.
 */
function shortcomings(what: string, r: PromiseSettledResult<GenerateOutcome>, tokens: number, mustResume: boolean): string[] {
  if (r.status === 'rejected') return [`${what} failed: ${messageOf(r.reason)}`];
  const o = r.value;
  const out: string[] = [];
  if (o.finishReason !== 'length' || o.tokens.length !== tokens || o.usage.completion_tokens !== tokens) out.push(`${what} incomplete: finish ${o.finishReason}, ${o.tokens.length} tokens (usage ${o.usage.completion_tokens}) of ${tokens}`);
  if (mustResume && (o.resumed ?? 0) < 1) out.push(`${what} not resumed (resumed ${o.resumed ?? 0})`);
  return out;
}

/** Where the coordinator's log puts each step of the resume, ms after the strike. */
function stepsOf(lines: LogLine[], struck: number, resumed: number | null): { steps: ResumeSteps; loaded: LogLine | null; loads: number } {
  const after = lines.filter((l) => l.time >= struck);
  const first = (test: (l: LogLine) => boolean) => after.find(test) ?? null;
  // The load that ended the pause is the last before the stream's next token (a failed load may come first).
  const before = resumed === null ? after : after.filter((l) => l.time <= resumed);
  const last = (test: (l: LogLine) => boolean) => before.findLast(test) ?? null;
  const at = (l: LogLine | null) => (l ? l.time - struck : null);
  const loaded = last((l) => l.msg === 'model loaded; serving');
  const loading = (loaded ? before.slice(0, before.indexOf(loaded)) : before).findLast((l) => l.msg === 'coordinator loading') ?? null;
  const loadStarted = loading ? (before.slice(before.indexOf(loading)).find((l) => /^loading model: \d+%$/.test(l.msg)) ?? null) : null;
  return {
    steps: {
      degraded: at(first((l) => l.msg === 'coordinator degraded')),
      engineLost: at(first((l) => l.msg.startsWith('engine lost: '))),
      loading: at(loading),
      loadStarted: at(loadStarted),
      loaded: at(loaded),
      resumed: resumed === null ? null : resumed - struck,
    },
    loaded,
    loads: before.filter((l) => l.msg === 'model loaded; serving').length,
  };
}

/** One fault struck at four requests in flight, the cluster back on three workers afterwards. */
async function strike(cluster: Cluster, kind: ResumeFault, i: number | null, rep: number, tokens: number, tag: number): Promise<ResumeRun> {
  const loadAverage = loadavg()[0]!;
  const fault = await cluster.arm(kind, i ?? 0);
  const metricsBefore = await cluster.metrics();
  const chunks: number[] = [];
  let received = 0;
  let struck = 0;
  let chunksBeforeFault = 0;
  let strikeError: string | null = null;
  const sent = Date.now();
  const stream = cluster.client.generate(uniqueProse(tag, PROMPT_WORDS), {
    maxTokens: tokens, sampling: GREEDY, cachePrompt: false, timeoutMs: 600_000,
    onChunk: (_text, ids) => {
      if (ids.length === 0) return;
      chunks.push(Date.now());
      received += ids.length;
      if (received >= FAULT_AT && struck === 0) {
        struck = Date.now();
        chunksBeforeFault = chunks.length;
        try {
          fault();
        } catch (e) {
          strikeError = `the fault did not strike: ${messageOf(e)}`;
        }
      }
    },
  });
  const others = [1, 2, 3].map((k) => cluster.client.generate(uniqueProse(tag + k, PROMPT_WORDS), { maxTokens: tokens, sampling: GREEDY, cachePrompt: false, timeoutMs: 600_000 }));
  const answers = await Promise.allSettled([stream, ...others]);
  const failures = answers.flatMap((a, k) => shortcomings(k === 0 ? 'the measured stream' : `request ${k + 1}`, a, tokens, kind !== 'term-worker'));
  if (struck === 0) failures.push(`the fault never struck (the stream had ${received} tokens)`);
  if (strikeError) failures.push(strikeError);
  const target = i === null ? null : cluster.workers[i]!.name;
  if (struck > 0) await cluster.recover(kind, i ?? 0);
  // The resume's event is noted once every request the loss caught has gone on.
  const status = await cluster.status();
  const metricsAfter = await cluster.metrics();
  const event = status.events.findLast((e) => e.kind === 'resume' && Date.parse(e.time) >= sent)?.message ?? null;

  const gapsMs = chunks.slice(1).map((t, k) => t - chunks[k]!);
  const gapsBeforeFault = Math.max(0, chunksBeforeFault - 1);
  // The stream's next token after the fault ends the longest gap after it.
  const after = gapsMs.slice(gapsBeforeFault);
  const longest = after.length > 0 ? gapsBeforeFault + after.indexOf(Math.max(...after)) : -1;
  const resumedAt = longest >= 0 ? chunks[longest + 1]! : null;
  // Without a strike, the steps and the timeline count from the requests' start.
  const zero = struck > 0 ? struck : sent;
  const { steps, loaded, loads } = stepsOf(cluster.lines, zero, resumedAt);
  const end = resumedAt ?? Date.now();
  const timeline = cluster.lines
    .filter((l) => l.time >= zero && l.time <= end && !l.engine && !/^loading model: \d+%$/.test(l.msg))
    .map((l) => ({ ms: l.time - zero, msg: l.msg }));
  return {
    kind, rep, target, failures, resumes: answers.map((a) => (a.status === 'fulfilled' ? (a.value.resumed ?? 0) : -1)), gapsMs, gapsBeforeFault, steps, loads, loadAverage,
    load: loaded?.phases && loaded.seconds !== undefined
      ? { seconds: loaded.seconds, connect: loaded.phases.connectSeconds, weights: loaded.phases.weightsSeconds, context: loaded.phases.contextSeconds, devices: loaded.layers?.length ?? 0 }
      : null,
    coordinator: { resumed: metricsAfter.resumed - metricsBefore.resumed, pauseSumSeconds: metricsAfter.pauseSum - metricsBefore.pauseSum, event },
    timeline,
  };
}

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function modelFile(name: string): Promise<string> {
  const m = MODELS[name];
  if (!m) throw new HearthError(ErrorCode.InvalidArgument, `--models: '${name}' is not one of ${Object.keys(MODELS).join(', ')}`);
  const file = join(homedir(), '.cache', 'hearth', 'models', testModelFileName(m.preset, m.quant));
  if (!existsSync(file)) {
    say(`creating the ${m.preset} test model (${m.quant}) at ${file} ...`);
    await createTestModel({ out: file, preset: m.preset, quant: m.quant, seed: 1 });
  }
  return file;
}

/** The results file with this model's entry at this watchdog replaced (a run of one model keeps the others'). */
function save(out: string, entry: ResumeModelResults): void {
  const old: ResumeResults = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as ResumeResults) : { models: [] };
  const same = (m: ResumeModelResults) => m.model === entry.model && m.watchdogSeconds === entry.watchdogSeconds;
  const order = (m: ResumeModelResults) => Object.keys(MODELS).indexOf(m.model) * 10_000 + m.watchdogSeconds;
  const models = [...old.models.filter((m) => !same(m)), entry].sort((a, b) => order(a) - order(b));
  writeFileSync(out, JSON.stringify({ models }, null, 2) + '\n');
}

/** One repetition in a line, for the console. */
function summary(r: ResumeRun): string {
  const { pause, baseline } = resumePause(r);
  const seg = resumeSegments(r.steps);
  const s = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '?');
  const where = `detect ${s(seg.detection)}, diagnose ${s(seg.diagnosis)}, re-plan ${s(seg.replan)}, engine ${s(seg.engine)}, load ${s(seg.load)}${r.load ? ` (${r.load.devices} workers)` : ''}${r.loads > 1 ? ` after ${r.loads - 1} more` : ''}, resume ${s(seg.prefill)}`;
  const coordinator = r.coordinator.resumed > 0 ? `; coordinator mean ${(r.coordinator.pauseSumSeconds / r.coordinator.resumed).toFixed(2)} s over ${r.coordinator.resumed}` : '';
  return `pause ${pause.toFixed(2)} s (baseline ${baseline.toFixed(3)} s, load average ${r.loadAverage.toFixed(1)}): ${where}${coordinator}; resumed ${r.resumes.join('/')}${r.failures.length > 0 ? `; FAILED: ${r.failures.join('; ')}` : ''}`;
}

/** Every repetition of `faults` on one cluster, the faults' order rotated each repetition and the workers struck in turn. */
async function measure(cluster: Cluster, entry: ResumeModelResults, faults: ResumeFault[], out: string): Promise<void> {
  let next = 0;
  for (let rep = 0; rep < entry.reps; rep++) {
    for (const kind of faults.map((_, k) => faults[(k + rep) % faults.length]!)) {
      let i: number | null = null;
      if (kind !== 'kill-engine') {
        i = next++ % 3;
        const wait = cluster.struckAt[i]! + FLAP_WINDOW_MS - Date.now();
        if (wait > 0) await sleep(wait);
      }
      const run = await strike(cluster, kind, i, rep, entry.tokens, 1000 * (rep + 1) + 10 * RESUME_FAULTS.indexOf(kind));
      entry.runs.push(run);
      save(out, entry);
      say(`${entry.model} rep ${rep + 1}/${entry.reps} ${kind.padEnd(15)}${run.target ? ` ${run.target}` : ''}: ${summary(run)}`);
      for (const f of run.failures) say(`  ${f}`);
      if (run.failures.length > 0) for (const l of run.timeline) say(`  +${(l.ms / 1000).toFixed(2)} s ${l.msg}`);
      await cluster.settled();
      // The struck worker is admitted again by now: its flap window counts from here.
      if (i !== null) cluster.struckAt[i] = Date.now();
    }
  }
}

async function main(): Promise<void> {
  const models = values.models!.split(',').filter(Boolean);
  const reps = parseInteger(values.reps!, '--reps', { min: 1, max: 100 });
  const tokens = parseInteger(values.tokens!, '--tokens', { min: FAULT_AT * 2, max: 4096 });
  const ctxSize = parseInteger(values['ctx-size']!, '--ctx-size', { min: 256, max: 1 << 20 });
  const watchdogSeconds = parseInteger(values['watchdog-seconds']!, '--watchdog-seconds', { min: 1, max: 3600 });
  const faults = values.faults!.split(',').filter(Boolean) as ResumeFault[];
  for (const f of faults) if (!RESUME_FAULTS.includes(f)) throw new HearthError(ErrorCode.InvalidArgument, `--faults: '${f}' is not one of ${RESUME_FAULTS.join(', ')}`);
  const out = values.out!;
  const netns = faults.includes('cut-cable') ? netnsUnavailable() : null;
  if (netns) say(`cut-cable is skipped: ${netns}`);
  const started = Date.now();
  for (const name of models) {
    const model = await modelFile(name);
    const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-resume-'));
    // Kept: a failed answer is explained there.
    const logFile = join(tmpdir(), `hearth-bench-resume-${name}-${process.pid}.log`);
    say(`${name}: servers' output goes to ${logFile}`);
    const entry: ResumeModelResults = {
      model: name, file: basename(model), bytes: statSync(model).size, date: new Date().toISOString(),
      command: `npm run bench:resume -- --models ${name} --reps ${reps} --tokens ${tokens}${values.faults === RESUME_FAULTS.join(',') ? '' : ` --faults ${faults.join(',')}`}${ctxSize === 1024 ? '' : ` --ctx-size ${ctxSize}`}${watchdogSeconds === 6 ? '' : ` --watchdog-seconds ${watchdogSeconds}`}`,
      reps, tokens, faultAt: FAULT_AT, ctxSize, parallel: PARALLEL, watchdogSeconds, promptTokens: 0, split: [],
      skipped: netns && faults.includes('cut-cable') ? [{ kind: 'cut-cable', why: netns }] : [],
      runs: [],
    };
    // The cable is pulled on a cluster of its own, each worker on a host of its own; the other faults strike workers on 127.0.0.1.
    const groups: { net: boolean; faults: ResumeFault[] }[] = [
      { net: false, faults: faults.filter((f) => f !== 'cut-cable') },
      { net: true, faults: faults.filter((f) => f === 'cut-cable' && !netns) },
    ];
    try {
      for (const group of groups.filter((g) => g.faults.length > 0)) {
        const net = group.net ? HostNetwork.create(['cut-a', 'cut-b', 'cut-c'], { joinHere: true, subnet: '10.232.0', tag: 'b' }) : null;
        const cluster = new Cluster(dir, logFile, net);
        try {
          await cluster.start(model, ctxSize, watchdogSeconds);
          const s = await cluster.settled();
          // Just admitted: a worker lost now would flap.
          cluster.struckAt.fill(Date.now());
          if (s.plan.devices.some((d) => d.layers < 1)) throw new HearthError(ErrorCode.Internal, `a worker carries no layers: ${s.plan.devices.map((d) => `${d.owner} ${d.layers}`).join(', ')}`);
          entry.split = s.plan.devices.map((d) => d.layers);
          say(`${name}: serving on three workers, ${entry.split.join(' + ')} layers, loaded in ${s.load.seconds.toFixed(2)} s${net ? ' (each worker on a host of its own)' : ''}`);
          if (entry.promptTokens === 0) entry.promptTokens = (await cluster.client.generate(uniqueProse(1, PROMPT_WORDS), { maxTokens: 1, sampling: GREEDY })).usage.prompt_tokens;
          await measure(cluster, entry, group.faults, out);
        } finally {
          await cluster.stop();
          net?.destroy();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    save(out, entry);
  }
  if (existsSync('bench/results.json')) writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
  say(`done in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${out}`);
}

await main().catch((e: unknown) => {
  say(`bench:resume: ${messageOf(e)}`);
  process.exitCode = 1;
});
