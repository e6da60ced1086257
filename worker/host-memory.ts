// What memory a host really has free. ggml's CPU device reports all of RAM as free; the planner must
// not believe that, so CPU devices are reported with the kernel's MemAvailable instead.
import { readFileSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';

/** Parses /proc/meminfo's MemAvailable (kB) into bytes; null when absent. */
export function parseMemAvailable(meminfo: string): number | null {
  const m = /^MemAvailable:\s+(\d+)\s+kB$/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : null;
}

export interface HostMemory {
  totalBytes: number;
  availableBytes: number;
}

export function hostMemory(): HostMemory {
  let available: number | null = null;
  try {
    available = parseMemAvailable(readFileSync('/proc/meminfo', 'utf8'));
  } catch {
    // not Linux: os.freemem() is the best portable figure
  }
  return { totalBytes: totalmem(), availableBytes: available ?? freemem() };
}
