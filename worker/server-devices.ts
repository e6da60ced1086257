// The worker's devices as its rpc server's executable sees them (`ggml-rpc-server --hearth-devices`,
// native/src/rpc-server/devices.cpp), and their memory as the serving process reports it on a pipe.
// The worker daemon never loads the addon or a GPU backend: the figures are those of the process that
// owns the devices.
import { execFile } from 'node:child_process';

import { ErrorCode, HearthError } from '../common/errors.js';
import type { DeviceInfo } from '../native/binding.js';
import { requireNativeBuild } from '../native/binding.js';

export interface ServerBuild {
  ggmlVersion: string;
  ggmlCommit: string;
  rpcProtocol: string;
  backends: string[];
}

export interface ServerDescription {
  system: ServerBuild;
  devices: DeviceInfo[];
}

/** One memory report of the serving process: free and total bytes per device name. */
export type MemoryReport = { name: string; free: number; total: number }[];

export function parseDescription(text: string): ServerDescription {
  const line = text.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new HearthError(ErrorCode.Internal, `ggml-rpc-server --hearth-devices printed no description: ${text.slice(0, 200)}`);
  return JSON.parse(line) as ServerDescription;
}

/** A memory line from the serving process, or null for anything else. */
export function parseMemoryReport(line: string): MemoryReport | null {
  try {
    const r = JSON.parse(line) as { memory?: MemoryReport };
    return Array.isArray(r.memory) ? r.memory : null;
  } catch {
    return null;
  }
}

export function describeServer(timeoutMs = 30_000): Promise<ServerDescription> {
  const { rpcServer } = requireNativeBuild();
  return new Promise((resolve, reject) => {
    execFile(rpcServer, ['--hearth-devices'], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new HearthError(ErrorCode.FailedPrecondition, `cannot list this machine's devices with ${rpcServer} (${err.message}): ${stderr.trim().slice(-400)}`));
        return;
      }
      try {
        resolve(parseDescription(stdout));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** The devices with the newest figures the serving process reported (devices it did not report keep theirs). */
export function withReport(devices: readonly DeviceInfo[], report: MemoryReport | null): DeviceInfo[] {
  return devices.map((d) => {
    const r = report?.find((x) => x.name === d.name);
    return r ? { ...d, freeBytes: r.free, totalBytes: r.total } : { ...d };
  });
}
