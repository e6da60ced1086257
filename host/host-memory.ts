// What memory a host really has free. ggml's CPU device reports all of RAM as free; the planner must
// not believe that, so CPU devices are reported with the kernel's MemAvailable instead, bounded by the
// process's memory cgroup (a container, a systemd slice) when it has a limit.
import { readFileSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';

import { memoryLimit, type MemoryLimit } from './cgroup.js';

/** Parses /proc/meminfo's MemAvailable (kB) into bytes; null when absent. */
export function parseMemAvailable(meminfo: string): number | null {
  const m = /^MemAvailable:\s+(\d+)\s+kB$/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : null;
}

export interface HostMemory {
  totalBytes: number;
  availableBytes: number;
  /** The cgroup limit that bounds both figures, when there is one. */
  cgroup: MemoryLimit | null;
}

/** The host's figures bounded by a cgroup limit: total at most the limit, available at most what is left of it. */
export function boundedByCgroup(host: { totalBytes: number; availableBytes: number }, limit: MemoryLimit | null): HostMemory {
  if (!limit) return { ...host, cgroup: null };
  return {
    totalBytes: Math.min(host.totalBytes, limit.limitBytes),
    availableBytes: Math.max(0, Math.min(host.availableBytes, limit.limitBytes - limit.usedBytes)),
    cgroup: limit,
  };
}

export function hostMemory(): HostMemory {
  let available: number | null = null;
  try {
    available = parseMemAvailable(readFileSync('/proc/meminfo', 'utf8'));
  } catch {
    // not Linux: os.freemem() is the best portable figure
  }
  return boundedByCgroup({ totalBytes: totalmem(), availableBytes: available ?? freemem() }, process.platform === 'linux' ? memoryLimit() : null);
}
