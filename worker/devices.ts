// The devices a worker serves, with memory a planner can trust.
import { readFileSync } from 'node:fs';

import { ErrorCode, HearthError } from '../common/errors.js';
import type { DeviceInfo } from '../native/binding.js';
import { hostMemory } from '../host/host-memory.js';

export type ServedDevice = DeviceInfo;

/**
 * llama.cpp's rpc-server default: every GPU-like device, or the CPU when there is none. With an
 * explicit list, each name must exist.
 */
export function selectDevices(all: readonly DeviceInfo[], requested: readonly string[] | null): DeviceInfo[] {
  if (requested && requested.length > 0) {
    return requested.map((name) => {
      const d = all.find((x) => x.name.toLowerCase() === name.toLowerCase());
      if (!d) {
        throw new HearthError(ErrorCode.InvalidArgument, `--device: no device named '${name}' on this machine (known: ${all.map((x) => x.name).join(', ') || 'none'})`);
      }
      return d;
    });
  }
  const accelerators = all.filter((d) => d.type === 'gpu' || d.type === 'igpu');
  const chosen = accelerators.length > 0 ? accelerators : all.filter((d) => d.type === 'cpu');
  if (chosen.length === 0) throw new HearthError(ErrorCode.FailedPrecondition, 'this machine has no device ggml can serve');
  return chosen;
}

/** CPU devices take the host's available and total memory (both bounded by its cgroup); others are as ggml reports. */
export function withRealMemory(devices: readonly DeviceInfo[], host: { availableBytes: number; totalBytes: number }): ServedDevice[] {
  return devices.map((d) =>
    d.type === 'cpu' ? { ...d, freeBytes: Math.min(d.totalBytes, host.availableBytes), totalBytes: Math.min(d.totalBytes, host.totalBytes) } : { ...d },
  );
}

/**
 * A cap on what the machine lends (`--memory`), over all its devices in their order: each device offers
 * at most what is left of the cap, and what the worker's rpc server already holds counts against it.
 */
export function withinCap(devices: readonly ServedDevice[], capBytes: number | null, heldBytes = 0): ServedDevice[] {
  if (capBytes === null) return devices.map((d) => ({ ...d }));
  let freeLeft = Math.max(0, capBytes - heldBytes);
  let totalLeft = capBytes;
  return devices.map((d) => {
    const freeBytes = Math.min(d.freeBytes, freeLeft);
    const totalBytes = Math.min(d.totalBytes, totalLeft);
    freeLeft -= freeBytes;
    totalLeft -= totalBytes;
    return { ...d, freeBytes, totalBytes };
  });
}

/**
 * The served devices, measured now, within the worker's cap. `all`: the machine's devices as the rpc
 * server's executable reports them (with the serving process's newest memory figures).
 */
export function measureDevices(
  all: readonly DeviceInfo[],
  requested: readonly string[] | null,
  cap: { capBytes: number | null; heldBytes?: number } = { capBytes: null },
): ServedDevice[] {
  return withinCap(withRealMemory(selectDevices(all, requested), hostMemory()), cap.capBytes, cap.heldBytes);
}

/** Resident memory of a process (VmRSS), 0 when it cannot be read: what a CPU rpc server holds. */
export function residentBytes(pid: number | null): number {
  if (!pid) return 0;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}
