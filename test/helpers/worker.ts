// Real `hearth worker` processes for tests, on free 127.0.0.1 ports, always stopped afterwards.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ClusterSecret } from '../../link/token.js';
import { WorkerClient } from '../../link/worker-client.js';
import type { WireHealth } from '../../link/worker-wire.js';
import { spawnChild } from './children.js';
import { freePort } from './rpc-server.js';

export const CLI = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));

export interface WorkerHandle {
  process: ChildProcess;
  rpcPort: number;
  controlPort: number;
  control: string;
  client: WorkerClient;
  dir: string;
  logs: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` (SIGTERM by default) and waits for the exit. */
  stop: (signal?: NodeJS.Signals) => Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** How the tests run hearth unless told otherwise: this checkout's sources, through tsx. */
export const CHECKOUT_HEARTH = [process.execPath, '--import', 'tsx', CLI];

/**
 * `cgroups`: control group directories the process joins before it starts (so its children are in them
 * too). `hearth`: the command line that runs hearth (an installed copy's bin, say); `cwd`: where it runs.
 */
export function runCli(args: string[], options: { netns?: string; env?: NodeJS.ProcessEnv; cgroups?: string[]; hearth?: string[]; cwd?: string } = {}): ChildProcess {
  let node = [...(options.hearth ?? CHECKOUT_HEARTH), ...args];
  if (options.cgroups?.length) {
    const join = options.cgroups.map((d) => `echo $$ > '${d}/cgroup.procs'`).join(' && ');
    node = ['sh', '-c', `${join} && exec "$@"`, 'sh', ...node];
  }
  const [cmd, ...rest] = options.netns ? ['ip', 'netns', 'exec', options.netns, ...node] : node;
  // Calibration is measured, not asserted, in most tests: a short one keeps each worker start quick.
  // A test that fails halfway may not reach its own cleanup: spawnChild stops the process anyway.
  return spawnChild(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd, env: { HEARTH_CALIBRATE_MS: '200', ...process.env, ...options.env } });
}

/**
 * `token`: start the worker with that cluster token (in a file of its own); the handle's client then
 * reaches the control service the only way there is, through a secure relay. `netns`: run it in that
 * network namespace (a TestNetwork host), bound to `host`, its address there.
 */
export async function startWorker(
  extra: string[] = [],
  options: { mdns?: boolean; rpcPort?: number; controlPort?: number; token?: string; host?: string; netns?: string; threads?: number | null; cgroups?: string[]; env?: NodeJS.ProcessEnv; hearth?: string[]; cwd?: string } = {},
): Promise<WorkerHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-worker-'));
  const rpcPort = options.rpcPort ?? (await freePort());
  let controlPort = options.controlPort ?? (await freePort());
  while (controlPort === rpcPort) controlPort = await freePort();
  const tokenArgs: string[] = [];
  if (options.token) {
    writeFileSync(join(dir, 'cluster.token'), options.token, { mode: 0o600 });
    tokenArgs.push('--token-file', join(dir, 'cluster.token'));
  }
  const threads = options.threads === null ? [] : ['--threads', String(options.threads ?? 1)];
  const args = ['worker', '--host', options.host ?? '127.0.0.1', '--rpc-port', String(rpcPort), '--control-port', String(controlPort), ...threads,
    '--state-dir', join(dir, 'state'), '--cache-dir', join(dir, 'cache'), ...(options.mdns ? [] : ['--no-mdns']), ...tokenArgs, ...extra];
  const child = runCli(args, { cgroups: options.cgroups, env: options.env, hearth: options.hearth, cwd: options.cwd, ...(options.netns ? { netns: options.netns } : {}) });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const control = `${options.netns && options.host ? options.host : '127.0.0.1'}:${controlPort}`;
  const client = await WorkerClient.open(control, options.token ? ClusterSecret.fromToken(options.token, 'flag') : null);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const r = await exited;
    client.close();
    rmSync(dir, { recursive: true, force: true });
    return r;
  };
  try {
    await waitFor('the worker to be ready', async () => {
      if (child.exitCode !== null) throw new Error(`worker exited with ${child.exitCode}: ${out}`);
      return (await client.health({ timeoutMs: 1000 })).ready;
    });
  } catch (e) {
    await stop('SIGKILL');
    throw new Error(`${String(e)}\n${out}`);
  }
  return { process: child, rpcPort, controlPort, control, client, dir, logs: () => out, exited, stop };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function readyHealth(client: WorkerClient): Promise<WireHealth> {
  return waitFor('READY', async () => {
    const h = await client.health({ timeoutMs: 1000 });
    return h.ready ? h : null;
  });
}
