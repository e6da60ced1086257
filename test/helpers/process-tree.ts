// Processes as Linux's /proc shows them: a process and everything below it, and whether a process
// seen earlier is still running (the same process, not a later one that got its pid).
import { readdirSync, readFileSync } from 'node:fs';

export interface Proc {
  pid: number;
  ppid: number;
  /** Clock ticks after boot at which it started: with the pid, it names one process for good. */
  started: number;
  /** Z for a zombie: dead, only not yet reaped. */
  state: string;
  command: string;
}

function read(pid: number): Proc | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return { pid, ppid: Number(fields[1]), started: Number(fields[19]), state: fields[0] ?? '?', command };
  } catch {
    return null; // gone while we looked
  }
}

export function processes(): Proc[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => read(Number(name)) ?? []);
}

/** `pid` and all its descendants that are running now. */
export function processTree(pid: number): Proc[] {
  const all = processes();
  const tree = all.filter((p) => p.pid === pid);
  for (let i = 0; i < tree.length; i++) {
    for (const p of all) if (p.ppid === tree[i]!.pid) tree.push(p);
  }
  return tree;
}

export function stillRunning(p: Proc): boolean {
  const now = read(p.pid);
  return now !== null && now.started === p.started && now.state !== 'Z';
}
