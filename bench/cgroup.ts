// Control groups for the benchmarks and tests (cgroup v1, as mounted on the CI machine): a slower or
// smaller machine on this one.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestCgroup {
  dir: string;
  remove(): void;
}

/** Whether this machine lets tests make cgroups (root and the v1 controller mounted). */
export function cgroupsAvailable(controller: 'cpu' | 'memory'): boolean {
  return process.getuid?.() === 0 && existsSync(`/sys/fs/cgroup/${controller}/cgroup.procs`);
}

/** A fresh group under `controller` with these settings; remove() moves its processes out first. */
export function makeCgroup(controller: 'cpu' | 'memory', settings: Record<string, string | number>, prefix = 'hearth-test'): TestCgroup {
  const root = `/sys/fs/cgroup/${controller}`;
  const dir = join(root, `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir);
  for (const [file, value] of Object.entries(settings)) writeFileSync(join(dir, file), String(value));
  return {
    dir,
    remove: () => {
      if (!existsSync(dir)) return;
      for (const pid of readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          writeFileSync(join(root, 'cgroup.procs'), pid);
        } catch {
          // already gone
        }
      }
      try {
        rmdirSync(dir);
      } catch {
        // a process still exiting: the kernel refuses; it is empty and harmless
      }
    },
  };
}
