// What a closed cluster's link costs per byte: the CPU time of the coordinator's relay and the worker's
// gateway (TLS 1.3 over Node's `tls`, as hearth runs them) to carry a bulk transfer like a cold load's
// weights, beside a plain Node forwarder (the same socket joining, no TLS) and the kernel alone (no hop).
// Each side runs in its own process on 127.0.0.1, as in `hearth bench`; the three paths alternate.
//
//   npm run bench:link -- [--gib 1] [--reps 3]
//
// Writes bench/link-results.json and regenerates BENCHMARKS.md (its link section).
import { fork, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { parseInteger } from '../cli/options.js';
import { SecureGateway } from '../link/gateway.js';
import { joinSockets } from '../link/pipe.js';
import { SecureRelay } from '../link/relay.js';
import { ClusterSecret, newToken } from '../link/token.js';
import { stat, type LinkResults } from './report.js';
import { writeReport } from './run.js';

type Role = 'sink' | 'forward' | 'relay' | 'gateway';
type FromChild = { type: 'ready'; port: number } | { type: 'cpu'; seconds: number } | { type: 'done'; bytes: number };
export type LinkPath = LinkResults['runs'][number]['path'];

/** The sender writes 1 MiB at a time (the kernel alone, and the sink's cost, are not what is measured). */
const CHUNK = 1 << 20;

// ---------------------------------------------------------------------------------------------------
// The child processes.

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function child(role: Role, args: string[]): Promise<void> {
  const send = (m: FromChild) => process.send!(m);
  process.on('message', (m: { type: string }) => {
    if (m.type === 'cpu') send({ type: 'cpu', seconds: cpuSeconds() });
    if (m.type === 'exit') process.exit(0);
  });
  const target = { host: '127.0.0.1', port: Number(args[0]) };
  const token = process.env.HEARTH_BENCH_TOKEN ?? '';
  const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child: () => quiet } as never;
  if (role === 'sink') {
    const total = Number(args[0]);
    let bytes = 0;
    const server = createServer((s) =>
      s.on('data', (chunk: Buffer) => {
        const before = bytes;
        bytes += chunk.length;
        if (before < total && bytes >= total) send({ type: 'done', bytes });
      }),
    );
    server.listen(0, '127.0.0.1', () => send({ type: 'ready', port: (server.address() as { port: number }).port }));
  } else if (role === 'forward') {
    const server = createServer((s) => joinSockets(s, connect(target), () => undefined));
    server.listen(0, '127.0.0.1', () => send({ type: 'ready', port: (server.address() as { port: number }).port }));
  } else if (role === 'gateway') {
    const gateway = new SecureGateway({ secret: ClusterSecret.fromToken(token, 'env'), kind: 'rpc', target, log: quiet });
    send({ type: 'ready', port: await gateway.listen('127.0.0.1', 0) });
  } else {
    const relay = await SecureRelay.open({ secret: ClusterSecret.fromToken(token, 'env'), kind: 'rpc', remote: `127.0.0.1:${target.port}` });
    send({ type: 'ready', port: Number(relay.endpoint.split(':')[1]) });
  }
}

// ---------------------------------------------------------------------------------------------------
// The orchestrator.

interface Running {
  proc: ChildProcess;
  port: number;
  next(type: FromChild['type']): Promise<FromChild>;
}

function start(role: Role, args: string[], env: NodeJS.ProcessEnv): Promise<Running> {
  const proc = fork(fileURLToPath(import.meta.url), ['--role', role, ...args], { execArgv: process.execArgv, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting: { type: string; resolve: (m: FromChild) => void }[] = [];
  proc.on('message', (m: FromChild) => {
    const i = waiting.findIndex((w) => w.type === m.type);
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(m);
  });
  const next = (type: FromChild['type']) => new Promise<FromChild>((resolve) => waiting.push({ type, resolve }));
  return next('ready').then((m) => ({ proc, port: (m as { port: number }).port, next }));
}

async function run(path: LinkPath, bytes: number): Promise<LinkResults['runs'][number]> {
  const env = { ...process.env, HEARTH_BENCH_TOKEN: newToken() };
  const sink = await start('sink', [String(bytes)], env);
  const hops: { name: 'forward' | 'relay' | 'gateway'; proc: Running }[] = [];
  let entry = sink.port;
  if (path === 'node') {
    hops.push({ name: 'forward', proc: await start('forward', [String(sink.port)], env) });
    entry = hops[0]!.proc.port;
  } else if (path === 'secure') {
    const gateway = await start('gateway', [String(sink.port)], env);
    const relay = await start('relay', [String(gateway.port)], env);
    hops.push({ name: 'gateway', proc: gateway }, { name: 'relay', proc: relay });
    entry = relay.port;
  }
  const before = await Promise.all(hops.map(async (h) => (h.proc.proc.send({ type: 'cpu' }), ((await h.proc.next('cpu')) as { seconds: number }).seconds)));
  const done = sink.next('done');
  const started = performance.now();
  const socket = connect({ host: '127.0.0.1', port: entry });
  socket.setNoDelay(true);
  const chunk = Buffer.alloc(CHUNK, 7);
  for (let sent = 0; sent < bytes; sent += CHUNK) {
    if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
  }
  await done;
  const seconds = (performance.now() - started) / 1000;
  const cpu: Record<string, number> = {};
  for (const [i, h] of hops.entries()) {
    h.proc.proc.send({ type: 'cpu' });
    cpu[h.name] = ((await h.proc.next('cpu')) as { seconds: number }).seconds - before[i]!;
  }
  socket.destroy();
  for (const p of [sink, ...hops.map((h) => h.proc)]) p.proc.send({ type: 'exit' });
  return { path, seconds, cpuSeconds: cpu };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { role: { type: 'string' }, gib: { type: 'string', default: '1' }, reps: { type: 'string', default: '3' }, out: { type: 'string', default: 'bench/link-results.json' } },
    allowPositionals: true,
  });
  if (values.role) return child(values.role as Role, process.argv.slice(process.argv.indexOf(values.role) + 1));
  const gib = parseInteger(values.gib!, '--gib', { min: 1, max: 16 });
  const reps = parseInteger(values.reps!, '--reps', { min: 1, max: 20 });
  const bytes = gib * 2 ** 30;
  const paths: LinkPath[] = ['kernel', 'node', 'secure'];
  const runs: LinkResults['runs'] = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const path of rep % 2 === 0 ? paths : [...paths].reverse()) {
      const r = await run(path, bytes);
      runs.push(r);
      const cpu = Object.entries(r.cpuSeconds).map(([k, v]) => `${k} ${(v / gib).toFixed(2)} CPU-s/GiB`).join(', ');
      process.stderr.write(`rep ${rep + 1}/${reps} ${path.padEnd(6)}: ${(r.seconds / gib).toFixed(2)} s/GiB${cpu ? `; ${cpu}` : ''}\n`);
    }
  }
  const results: LinkResults = { date: new Date().toISOString(), gib, reps, command: `npm run bench:link -- --gib ${gib} --reps ${reps}`, runs };
  writeFileSync(values.out!, JSON.stringify(results, null, 2) + '\n');
  const secure = runs.filter((r) => r.path === 'secure');
  process.stderr.write(
    `secure link, per GiB: relay ${stat(secure.map((r) => r.cpuSeconds.relay! / gib)).median.toFixed(2)} CPU-s, gateway ${stat(secure.map((r) => r.cpuSeconds.gateway! / gib)).median.toFixed(2)} CPU-s\n`,
  );
  writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
}

await main();
