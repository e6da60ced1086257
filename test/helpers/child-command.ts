// A command line for a child process that the kernel kills when this process dies, however it dies
// (SIGKILL included): on Linux through `setpriv --pdeathsig KILL`, which then execs the command, so
// the child's pid is the command's own. Elsewhere the command is returned as it is.
import { spawnSync } from 'node:child_process';

export const withParentDeath = process.platform === 'linux' && spawnSync('setpriv', ['--pdeathsig', 'KILL', '--', 'true']).status === 0;

/** `command` and `args` run so that the child dies with this process (on Linux). */
export function childCommand(command: string, args: string[]): [string, string[]] {
  return withParentDeath ? ['setpriv', ['--pdeathsig', 'KILL', '--', command, ...args]] : [command, args];
}
