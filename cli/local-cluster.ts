// Child `hearth` processes on this machine, for the demo and the benchmark: workers on 127.0.0.1 with
// mDNS off (nothing goes onto the network), and coordinators.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, HearthError } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { ClusterSecret } from '../link/token.js';
import { WorkerClient } from '../link/worker-client.js';

const CLI_ENTRY = fileURLToPath(new URL(`./main${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/**
 * Runs this same `hearth` (compiled or through tsx) with `args`; `env` is added to this process's.
 * `netns`: in that network namespace (`ip netns exec` execs Node itself, so the child is the hearth process).
 */
export function spawnHearth(args: string[], stdio: StdioOptions = ['ignore', 'ignore', 'inherit'], env: NodeJS.ProcessEnv = {}, netns: string | null = null): ChildProcess {
  const node = [process.execPath, ...process.execArgv, CLI_ENTRY, ...args];
  const [command, ...rest] = netns ? ['ip', 'netns', 'exec', netns, ...node] : node;
  return spawn(command!, rest, { stdio, env: { ...process.env, ...env } });
}

export interface LocalWorker {
  name: string;
  /** Its tensor cache directory. */
  cacheDir: string;
  child: ChildProcess;
  control: string;
  /** Its ports, to start it again on them (`startLocalWorker`'s `ports`). */
  ports: { rpc: number; control: number };
  exited: Promise<void>;
  stop(): Promise<void>;
}

/**
 * `token`: the worker joins that closed cluster (its control port then answers only through a relay).
 * `memory`: its --memory cap. `cgroup`: a control group directory it joins at once, before it starts
 * its rpc server or calibrates (a slower or smaller machine, for the benchmarks); `threads: null`
 * leaves the thread count to the worker (its CPU quota). `ports`: the rpc and control ports (a worker
 * started again where it was); free ones otherwise. `netns` and `host`: a worker on a host of its own
 * (a network namespace), bound to its address there; without a token it then needs `insecure`.
 */
export async function startLocalWorker(o: {
  name: string;
  threads: number | null;
  dir: string;
  stdio?: StdioOptions;
  token?: string;
  memory?: string;
  cgroup?: string;
  env?: NodeJS.ProcessEnv;
  ports?: { rpc: number; control: number };
  netns?: string;
  host?: string;
  insecure?: boolean;
}): Promise<LocalWorker> {
  const host = o.host ?? '127.0.0.1';
  const rpcPort = o.ports?.rpc ?? (await freePortOn('127.0.0.1'));
  let controlPort = o.ports?.control ?? (await freePortOn('127.0.0.1'));
  while (controlPort === rpcPort) controlPort = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    ['worker', '--name', o.name, '--host', host, '--rpc-port', String(rpcPort), '--control-port', String(controlPort),
      ...(o.threads === null ? [] : ['--threads', String(o.threads)]), ...(o.memory ? ['--memory', o.memory] : []), ...(o.insecure ? ['--insecure'] : []),
      '--no-mdns', '--state-dir', join(o.dir, 'state'), '--cache-dir', join(o.dir, `cache-${o.name}`), '--log-level', 'warn'],
    o.stdio,
    { ...o.env, ...(o.token ? { HEARTH_TOKEN: o.token } : {}) },
    o.netns ?? null,
  );
  // Node takes far longer to start than this write: the rpc server and the calibration, spawned
  // later, are in the group from their first instruction.
  if (o.cgroup && child.pid) writeFileSync(join(o.cgroup, 'cgroup.procs'), String(child.pid));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const control = `${host}:${controlPort}`;
  const client = await WorkerClient.open(control, o.token ? ClusterSecret.fromToken(o.token, 'flag') : null);
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new HearthError(ErrorCode.Unavailable, `worker ${o.name} exited with code ${child.exitCode}`);
      if (await client.health({ timeoutMs: 1000 }).then((h) => h.ready, () => false)) break;
      if (Date.now() > deadline) throw new HearthError(ErrorCode.Unavailable, `worker ${o.name} did not become ready within 30 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    client.close();
  }
  return {
    name: o.name,
    cacheDir: join(o.dir, `cache-${o.name}`),
    child,
    control,
    ports: { rpc: rpcPort, control: controlPort },
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Polls `url` until it answers 200 (a server's /health), or fails after `timeoutMs`. */
export async function waitHealthy(url: string, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!alive()) throw new HearthError(ErrorCode.Unavailable, `the server behind ${url} exited`);
    const ok = await fetch(url).then((r) => r.status === 200, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new HearthError(ErrorCode.DeadlineExceeded, `${url} did not become healthy within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
