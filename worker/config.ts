// The worker's settings: CLI flags over an optional YAML file over defaults, validated once and frozen.
import { hostname, cpus, homedir } from 'node:os';
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';

import { parseByteSize } from '../common/bytes.js';
import { describeIssues, readYamlFile } from '../common/config-file.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { isLoopback, resolveSecret, type ClusterSecret } from '../link/token.js';
import { cpuQuota, threadsFor } from '../host/cgroup.js';

const port = z.number().int().min(1, 'must be a port from 1 to 65535').max(65535, 'must be a port from 1 to 65535');

/** Keys accepted in the worker's YAML file; unknown keys are errors. */
export const workerFileSchema = z.strictObject({
  name: z.string().min(1).max(63).optional(),
  host: z.string().optional(),
  rpcPort: port.optional(),
  controlPort: port.optional(),
  devices: z.array(z.string().min(1)).optional(),
  threads: z.number().int().min(1).max(1024).optional(),
  /** The most memory this machine lends the cluster: "8GiB", "512MiB", or bytes. */
  memory: z.union([z.string(), z.number()]).optional(),
  /** Measure each device's decode speed at start (for speed-aware placement). */
  calibrate: z.boolean().optional(),
  /** Measure again this often (seconds) while the rpc server is idle; 0: only at start. */
  recalibrateSeconds: z.number().min(0).max(86_400).optional(),
  /** A directory of GGUF models on this machine: their weights are put in the tensor cache ahead of time. */
  models: z.string().min(1).optional(),
  cacheDir: z.string().min(1).nullable().optional(),
  mdns: z.boolean().optional(),
  /** On SIGTERM or a Drain call, how long to wait for the coordinator to release the worker (seconds). */
  drainTimeoutSeconds: z.number().min(0).max(3600).optional(),
  stateDir: z.string().min(1).optional(),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).optional(),
  token: z.string().min(1).optional(),
  tokenFile: z.string().min(1).optional(),
  insecure: z.boolean().optional(),
});

export type WorkerFileSettings = z.infer<typeof workerFileSchema>;

export interface WorkerConfig {
  readonly name: string;
  /** IPv4 address both servers bind; 0.0.0.0 for every interface. */
  readonly host: string;
  readonly rpcPort: number;
  readonly controlPort: number;
  readonly devices: readonly string[] | null;
  readonly threads: number;
  /** Cap on the memory offered to the cluster, over all devices; null for no cap. */
  readonly memoryBytes: number | null;
  readonly calibrate: boolean;
  /** Re-measure the devices this often while the rpc server is idle (0: never). */
  readonly recalibrateMs: number;
  /** Directory of local GGUF models to seed the tensor cache from, or null. */
  readonly modelsDir: string | null;
  /** Tensor cache directory, or null when the cache is off. */
  readonly cacheDir: string | null;
  readonly mdns: boolean;
  /** When it leaves, the longest it waits for the coordinator's release (0: it stops at once). */
  readonly drainTimeoutMs: number;
  /** Where the worker keeps its identity. */
  readonly stateDir: string;
  readonly logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** The cluster token's derived keys: with one, both ports accept only authenticated links. */
  readonly secret: ClusterSecret | null;
  /** Listen on the network without a token (protected mode overridden). */
  readonly insecure: boolean;
}

export interface WorkerConfigSources {
  file: string | null;
  flags: WorkerFileSettings;
  /** For the defaults of cacheDir and stateDir, and the token. */
  env: { XDG_CACHE_HOME?: string | undefined; XDG_STATE_HOME?: string | undefined; HEARTH_TOKEN?: string | undefined };
}

export function compileWorkerConfig(sources: WorkerConfigSources): WorkerConfig {
  let fromFile: WorkerFileSettings = {};
  let base = process.cwd();
  if (sources.file) {
    base = dirname(resolve(sources.file));
    const parsed = workerFileSchema.safeParse(readYamlFile(sources.file));
    if (!parsed.success) throw new HearthError(ErrorCode.InvalidArgument, describeIssues(parsed.error, sources.file));
    fromFile = parsed.data;
  }
  const flags = workerFileSchema.safeParse(sources.flags);
  if (!flags.success) throw new HearthError(ErrorCode.InvalidArgument, describeIssues(flags.error, 'command line'));
  const merged: WorkerFileSettings = { ...fromFile, ...stripUndefined(flags.data) };

  const host = merged.host ?? '0.0.0.0';
  if (isIP(host) !== 4) {
    throw new HearthError(ErrorCode.InvalidArgument, `host: '${host}' is not an IPv4 address (llama.cpp's RPC server binds IPv4 literals; use 0.0.0.0 for every interface)`);
  }
  const rpcPort = merged.rpcPort ?? 50052;
  const controlPort = merged.controlPort ?? 50051;
  if (rpcPort === controlPort) {
    throw new HearthError(ErrorCode.InvalidArgument, `rpcPort and controlPort are both ${rpcPort}; give them different ports`);
  }
  const cacheHome = sources.env.XDG_CACHE_HOME ? resolve(sources.env.XDG_CACHE_HOME) : join(homedir(), '.cache');
  const stateHome = sources.env.XDG_STATE_HOME ? resolve(sources.env.XDG_STATE_HOME) : join(homedir(), '.local', 'state');
  const name = merged.name ?? hostname().split('.')[0] ?? 'worker';
  const secret = resolveSecret({
    flag: sources.flags.token,
    file: sources.flags.tokenFile,
    env: sources.env.HEARTH_TOKEN,
    config: { token: fromFile.token, tokenFile: fromFile.tokenFile === undefined ? undefined : resolve(base, fromFile.tokenFile) },
  });
  const insecure = merged.insecure ?? false;
  // A models directory in the YAML is relative to the file; on the command line, to the shell.
  const modelsDir = flags.data.models !== undefined ? resolve(flags.data.models) : fromFile.models !== undefined ? resolve(base, fromFile.models) : null;
  if (modelsDir && merged.cacheDir === null) {
    throw new HearthError(ErrorCode.InvalidArgument, `models: ${modelsDir} is seeded into the tensor cache, which is off (--no-cache or cacheDir: null); turn the cache on or drop --models`);
  }
  if (modelsDir && !isDirectory(modelsDir)) {
    throw new HearthError(ErrorCode.InvalidArgument, `models: ${modelsDir} is not a directory; give the directory that holds your .gguf files`);
  }
  if (!secret && !insecure && !isLoopback(host)) {
    throw new HearthError(
      ErrorCode.FailedPrecondition,
      `refusing to serve on ${host} without a cluster token: anyone on the network could use this machine's devices and memory through llama.cpp's RPC port. ` +
        'Give the cluster token (--token-file FILE, HEARTH_TOKEN, or --token; make one with `hearth token`), bind --host 127.0.0.1, or pass --insecure on a network you trust',
    );
  }
  return Object.freeze({
    name,
    host,
    rpcPort,
    controlPort,
    devices: merged.devices && merged.devices.length > 0 ? Object.freeze([...merged.devices]) : null,
    // A CPU quota (a container, a cgroup) makes more threads than its cores only contend.
    threads: merged.threads ?? threadsFor(cpus().length, cpuQuota()),
    memoryBytes: memoryOf(merged.memory),
    calibrate: merged.calibrate ?? true,
    recalibrateMs: Math.round((merged.recalibrateSeconds ?? 300) * 1000),
    modelsDir,
    cacheDir: merged.cacheDir === null ? null : resolve(merged.cacheDir ?? join(cacheHome, 'hearth', 'rpc-cache')),
    mdns: merged.mdns ?? true,
    drainTimeoutMs: Math.round((merged.drainTimeoutSeconds ?? 60) * 1000),
    stateDir: resolve(merged.stateDir ?? join(stateHome, 'hearth')),
    logLevel: merged.logLevel ?? 'info',
    secret,
    insecure,
  });
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const MIN_MEMORY = 64 * 1024 ** 2;

function memoryOf(value: string | number | undefined): number | null {
  if (value === undefined) return null;
  const bytes = parseByteSize(value);
  if (bytes === null) {
    throw new HearthError(ErrorCode.InvalidArgument, `memory: '${value}' is not a size; write it like 8GiB, 512MiB or a number of bytes`);
  }
  if (bytes < MIN_MEMORY) throw new HearthError(ErrorCode.InvalidArgument, `memory: ${value} is less than 64 MiB, too little to hold any layer`);
  return bytes;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
