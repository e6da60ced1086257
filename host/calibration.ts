// Each served device's decode speed, measured once when the worker starts by our ggml-rpc-server in its
// calibration mode (native/src/rpc-server/calibrate.cpp): the same executable, devices and threads that
// will serve the layers, inside the same cgroup, so a CPU quota shows in the figure.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

import { ErrorCode, HearthError } from '../common/errors.js';
import { requireNativeBuild } from '../native/binding.js';

/** The weight types the calibration measures, as keys of `DeviceSpeed.byType`. */
export type CalibrationType = 'f16' | 'q8_0' | 'q4_k';

export interface DeviceSpeed {
  device: string;
  /** Bytes of F16 weights streamed through matrix-vector products per second. */
  bytesPerSecond: number;
  /** The same for each measured type: quantized weights cost compute to unpack, more on a CPU than a GPU. */
  byType: Partial<Record<CalibrationType, number>>;
  seconds: number;
  threads: number;
}

/**
 * The measured type closest to a model's weights, by general.file_type (llama_ftype): F32, F16 and
 * BF16 read like F16; Q8_0 is its own; every other quantization is block-quantized like Q4_K.
 */
export function calibrationTypeOf(fileType: number | null): CalibrationType {
  if (fileType === null || fileType === 0 || fileType === 1 || fileType === 32) return 'f16';
  if (fileType === 7) return 'q8_0';
  return 'q4_k';
}

const TIMEOUT_MS = 60_000;

/** Parses the calibration's JSON lines; a line with an error fails the whole calibration. */
export function parseCalibration(output: string): DeviceSpeed[] {
  const speeds: DeviceSpeed[] = [];
  for (const line of output.split('\n')) {
    if (!line.trim().startsWith('{')) continue;
    const r = JSON.parse(line) as { device: string; bytes_per_second: number; by_type?: Record<string, number>; seconds: number; threads: number; error?: string };
    if (r.error) throw new HearthError(ErrorCode.Internal, `calibrating ${r.device} failed: ${r.error}`);
    speeds.push({ device: r.device, bytesPerSecond: r.bytes_per_second, byType: r.by_type ?? { f16: r.bytes_per_second }, seconds: r.seconds, threads: r.threads });
  }
  return speeds;
}

/** Runs the calibration for these devices (all of them in one process, one after another). */
export async function calibrateDevices(devices: readonly string[], threads: number, options: { milliseconds?: number } = {}): Promise<DeviceSpeed[]> {
  const { rpcServer } = requireNativeBuild();
  const env: NodeJS.ProcessEnv = { ...process.env, HEARTH_PARENT_PID: String(process.pid) };
  if (options.milliseconds !== undefined) env.HEARTH_CALIBRATE_MS = String(options.milliseconds);
  const args = ['--hearth-calibrate', '-t', String(threads)];
  if (devices.length > 0) args.push('-d', devices.join(','));
  const child = spawn(rpcServer, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const out: string[] = [];
  const err: string[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => out.push(l));
  createInterface({ input: child.stderr }).on('line', (l) => {
    err.push(l);
    if (err.length > 20) err.shift();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  }).finally(() => clearTimeout(timer));
  if (exit.error || exit.code !== 0) {
    const why = exit.error?.message ?? (exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`);
    throw new HearthError(ErrorCode.Internal, `device calibration failed (${why}): ${[...out, ...err].join(' | ') || 'no output'}`);
  }
  return parseCalibration(out.join('\n'));
}

/**
 * Per device and type, the median of the measurements (the newest list names the devices). Of two, the
 * older stands until a third says which of them was the odd one.
 */
export function medianSpeeds(history: readonly DeviceSpeed[][]): DeviceSpeed[] {
  const newest = history.at(-1) ?? [];
  const median = (xs: number[]) => (xs.length % 2 ? [...xs].sort((a, b) => a - b)[(xs.length - 1) / 2]! : xs[0]!);
  return newest.map((latest) => {
    const same = history.map((run) => run.find((d) => d.device === latest.device)).filter((d): d is DeviceSpeed => d !== undefined);
    const byType: DeviceSpeed['byType'] = {};
    for (const key of Object.keys(latest.byType) as (keyof DeviceSpeed['byType'])[]) {
      byType[key] = median(same.map((d) => d.byType[key]).filter((v): v is number => v !== undefined));
    }
    return { ...latest, bytesPerSecond: median(same.map((d) => d.bytesPerSecond)), byType };
  });
}
