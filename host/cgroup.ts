// What a process's control groups allow it: the memory limit (cgroup v1 `memory.limit_in_bytes`, v2
// `memory.max`) and the CPU quota (v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, v2 `cpu.max`). A worker in
// a container or a systemd slice must offer what its limits allow, not what the host has.
//
// Limits nest: every ancestor's limit applies too, so each is read from the process's own group up to
// the root of the mount, and the tightest wins. The parsing is pure (it is given a file reader), so the
// unit tests cover both versions without a kernel that has them.
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';

/** Reads a file as text, or null when it is not there. */
export type ReadText = (path: string) => string | null;

export const readText: ReadText = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
};

/** A v1 "no limit" is the largest page-aligned int64; anything this large is no limit in practice. */
const UNLIMITED = 2 ** 60;

interface Mount {
  version: 1 | 2;
  /** The mount's root inside the hierarchy (not "/" inside some containers). */
  root: string;
  mountPoint: string;
  controllers: string[];
}

/** cgroup mounts from /proc/self/mountinfo: "id parent dev root mountpoint opts - fstype source superopts". */
export function parseCgroupMounts(mountinfo: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fstype, , superOptions = ''] = right.split(' ');
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    mounts.push({
      version: fstype === 'cgroup2' ? 2 : 1,
      root: unescapeMountPath(fields[3] ?? '/'),
      mountPoint: unescapeMountPath(fields[4] ?? ''),
      controllers: fstype === 'cgroup' ? superOptions.split(',') : [],
    });
  }
  return mounts;
}

function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The directories holding this process's group for a controller, innermost first, up to the mount. */
export function groupDirs(controller: string, procCgroup: string, mounts: Mount[]): { version: 1 | 2; dirs: string[] } | null {
  const lines = procCgroup
    .split('\n')
    .map((l) => /^(\d+):([^:]*):(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null);
  const v1 = lines.find((m) => m[2]!.split(',').includes(controller));
  const v2 = lines.find((m) => m[1] === '0' && m[2] === '');
  const pick = v1
    ? { version: 1 as const, path: v1[3]!, mount: mounts.find((m) => m.version === 1 && m.controllers.includes(controller)) }
    : v2
      ? { version: 2 as const, path: v2[3]!, mount: mounts.find((m) => m.version === 2) }
      : null;
  if (!pick?.mount) return null;
  const { mount } = pick;
  // Inside a container the mount's root is the container's own group: the path is relative to it.
  const root = mount.root === '/' ? '' : mount.root;
  const relative = root && pick.path.startsWith(root) ? pick.path.slice(root.length) : pick.path;
  const dirs: string[] = [];
  let rel = posix.normalize(`/${relative}`);
  for (;;) {
    dirs.push(posix.join(mount.mountPoint, rel));
    if (rel === '/') break;
    rel = posix.dirname(rel);
  }
  return { version: pick.version, dirs };
}

export interface MemoryLimit {
  limitBytes: number;
  /** Memory the group uses now, less the file cache it could drop. */
  usedBytes: number;
  /** Where the limit was found, for logs. */
  dir: string;
  version: 1 | 2;
}

function statField(stat: string | null, key: string): number {
  const m = stat ? new RegExp(`^${key} (\\d+)$`, 'm').exec(stat) : null;
  return m ? Number(m[1]) : 0;
}

/** The tightest memory limit over this process's groups, or null when there is none. */
export function memoryLimit(read: ReadText = readText): MemoryLimit | null {
  const procCgroup = read('/proc/self/cgroup');
  const mountinfo = read('/proc/self/mountinfo');
  if (!procCgroup || !mountinfo) return null;
  const groups = groupDirs('memory', procCgroup, parseCgroupMounts(mountinfo));
  if (!groups) return null;
  let best: MemoryLimit | null = null;
  for (const dir of groups.dirs) {
    const raw = read(posix.join(dir, groups.version === 1 ? 'memory.limit_in_bytes' : 'memory.max'))?.trim();
    if (!raw || raw === 'max') continue;
    const limit = Number(raw);
    if (!Number.isFinite(limit) || limit >= UNLIMITED) continue;
    if (best && best.limitBytes <= limit) continue;
    const usage = Number(read(posix.join(dir, groups.version === 1 ? 'memory.usage_in_bytes' : 'memory.current'))?.trim() ?? 0) || 0;
    const stat = read(posix.join(dir, 'memory.stat'));
    const inactiveFile = groups.version === 1 ? statField(stat, 'total_inactive_file') : statField(stat, 'inactive_file');
    best = { limitBytes: limit, usedBytes: Math.max(0, usage - inactiveFile), dir, version: groups.version };
  }
  return best;
}

/** The tightest CPU quota in cores (0.25 for a quarter of a core), or null when there is none. */
export function cpuQuota(read: ReadText = readText): { cores: number; dir: string } | null {
  const procCgroup = read('/proc/self/cgroup');
  const mountinfo = read('/proc/self/mountinfo');
  if (!procCgroup || !mountinfo) return null;
  const groups = groupDirs('cpu', procCgroup, parseCgroupMounts(mountinfo));
  if (!groups) return null;
  let best: { cores: number; dir: string } | null = null;
  for (const dir of groups.dirs) {
    let quota: number;
    let period: number;
    if (groups.version === 1) {
      quota = Number(read(posix.join(dir, 'cpu.cfs_quota_us'))?.trim() ?? -1);
      period = Number(read(posix.join(dir, 'cpu.cfs_period_us'))?.trim() ?? 0);
    } else {
      const [q, p] = (read(posix.join(dir, 'cpu.max')) ?? 'max').trim().split(/\s+/);
      quota = q === 'max' || q === undefined ? -1 : Number(q);
      period = Number(p ?? 100000);
    }
    if (!(quota > 0) || !(period > 0)) continue;
    const cores = quota / period;
    if (!best || cores < best.cores) best = { cores, dir };
  }
  return best;
}

/** Threads worth running under a quota: its cores rounded up, at most the CPUs there are, at least one. */
export function threadsFor(cpuCount: number, quota: { cores: number } | null): number {
  const cpus = Math.max(1, cpuCount);
  return quota ? Math.max(1, Math.min(cpus, Math.ceil(quota.cores - 1e-9))) : cpus;
}
