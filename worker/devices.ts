// The devices a worker serves, with memory a planner can trust.
import { ErrorCode, HearthError } from '../common/errors.js';
import type { DeviceInfo } from '../native/binding.js';
import { localDevices } from '../native/llama.js';
import { hostMemory } from './host-memory.js';

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

/** CPU devices take the host's available memory (capped at their total); others are as ggml reports. */
export function withRealMemory(devices: readonly DeviceInfo[], host: { availableBytes: number }): ServedDevice[] {
  return devices.map((d) => (d.type === 'cpu' ? { ...d, freeBytes: Math.min(d.totalBytes, host.availableBytes) } : { ...d }));
}

/** The served devices, measured now. */
export function measureDevices(requested: readonly string[] | null): ServedDevice[] {
  return withRealMemory(selectDevices(localDevices(), requested), hostMemory());
}
