// Every process a test starts goes through spawnChild, so none outlives the test process, however it
// ends. node's test runner (Node 20) runs each file in a process of its own; interrupted by SIGTERM or
// SIGINT it sends that process SIGTERM and exits at once (no wait, no SIGKILL after); killed, or hung
// up (it has no SIGHUP handler), it sends nothing and the file's process runs on as an orphan. So:
// - the file's tests are done (passed, or failed halfway before a test's own cleanup): after() kills
//   what is left, so the file ends instead of hanging on live children;
// - exit, including an uncaught exception: the 'exit' hook kills them;
// - SIGTERM, SIGINT or SIGHUP: the handler kills them and exits, which runs the 'exit' hooks (those
//   also remove test network namespaces);
// - the runner gone (its pid is no longer this process's parent): the same, within half a second;
// - this process killed with SIGKILL, when none of the above runs: every child starts through
//   childCommand, so the kernel kills it too (on Linux).
// hearth's own children follow: a worker's rpc server dies with the worker, a coordinator's engine
// with the coordinator.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { constants } from 'node:os';
import { after } from 'node:test';

import { childCommand } from './child-command.js';

const live = new Set<ChildProcess>();

function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

after(killAll);
process.on('exit', killAll);

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.on(signal, () => {
    killAll();
    process.exit(128 + constants.signals[signal]);
  });
}

const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) {
    killAll();
    process.exit(128 + constants.signals.SIGHUP);
  }
}, 500).unref();

/** child_process.spawn, for a child that never outlives this process. */
export function spawnChild(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(...childCommand(command, args), options);
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}
