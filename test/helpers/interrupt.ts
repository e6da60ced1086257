// Interrupting a test run as a person or a CI timeout would: node's test runner on one test file,
// signalled once that file's processes are up; then every process of the run is looked for again.
import { spawn, type ChildProcess } from 'node:child_process';

import { childCommand } from './child-command.js';
import { processTree, stillRunning, type Proc } from './process-tree.js';

export interface Interruption {
  /** The run's processes when it was signalled: the runner first, then everything below it. */
  tree: Proc[];
  /** Those still running `goneMs` after the signal. */
  left: Proc[];
  /** What the file's test process printed (its TAP, through the runner). */
  output: string;
}

/**
 * `target`: `runner` signals `node --test` itself (as `kill` on `npm test` does), `file` the test
 * file's own process (as the OOM killer might). `ready` says when the tree is worth interrupting.
 */
export async function interruptTestRun(
  file: string,
  o: { signal: NodeJS.Signals; target: 'runner' | 'file'; ready: (tree: Proc[]) => boolean; readyMs?: number; goneMs?: number; env?: NodeJS.ProcessEnv },
): Promise<Interruption> {
  // NODE_TEST_CONTEXT would tell the runner that it runs inside a test file, so it would run nothing.
  const { NODE_TEST_CONTEXT: _, ...env } = { ...process.env, ...o.env };
  // Not through spawnChild, whose hooks would make a script that uses this a test file of its own.
  const runner = spawn(...childCommand(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', file]), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  runner.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  runner.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((r) => runner.once('exit', () => r()));
  const pid = runner.pid!;
  try {
    const tree = await until(`the run of ${file} to be ready`, o.readyMs ?? 60_000, runner, () => output, () => {
      const t = processTree(pid);
      return o.ready(t) ? t : null;
    });
    const target = o.target === 'runner' ? pid : tree.find((p) => p.ppid === pid && p.command.includes(file))?.pid;
    if (target === undefined) throw new Error(`no test file process for ${file} under the runner:\n${describeTree(tree)}`);
    process.kill(target, o.signal);
    const deadline = Date.now() + (o.goneMs ?? 10_000);
    let left = tree;
    while (Date.now() < deadline) {
      left = tree.filter(stillRunning);
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return { tree, left, output };
  } finally {
    runner.kill('SIGKILL');
    await exited;
    // A process the run left behind may hold the runner's output open: that must not keep this one alive.
    runner.stdout!.destroy();
    runner.stderr!.destroy();
  }
}

async function until<T>(what: string, ms: number, runner: ChildProcess, output: () => string, f: () => T | null): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (runner.exitCode !== null || Date.now() > deadline) throw new Error(`gave up waiting for ${what}:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function describeTree(procs: Proc[]): string {
  return procs.map((p) => `  ${p.pid} (parent ${p.ppid}) ${p.command.slice(0, 160)}`).join('\n');
}
