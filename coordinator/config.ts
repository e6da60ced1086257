// The coordinator's settings: CLI flags over cluster.yaml over defaults, validated once and frozen.
// cluster.example.yaml documents every key.
import { cpus } from 'node:os';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';

import { describeIssues, readYamlFile } from '../common/config-file.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { isLoopback, resolveSecret, type ClusterSecret } from '../link/token.js';
import { parseModelRef, type ModelRef } from '../models/model-ref.js';
import { firstShardPath } from '../models/split.js';
import type { SpeculationSettings } from './engine/protocol.js';
import { PIPELINE_HELP, type PipelineSetting } from './planner/pipeline.js';
import type { PlacementObjective } from './planner/types.js';

const port = z.number().int().min(0, 'must be a port from 0 to 65535').max(65535, 'must be a port from 0 to 65535');
const cacheType = z.enum(['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1']);
const PIPELINE_MUST = `must be ${PIPELINE_HELP} from 1 to 64`;
const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'must be host:port, such as 192.168.1.20:50051');

/** Keys accepted in cluster.yaml; unknown keys are errors. */
export const clusterFileSchema = z.strictObject({
  model: z.string().min(1).optional(),
  workers: z.array(hostPort).optional(),
  mdns: z.boolean().optional(),
  localDevice: z.boolean().optional(),
  placement: z.enum(['speed', 'memory']).optional(),
  host: z.string().optional(),
  grpcPort: port.optional(),
  httpPort: port.optional(),
  ctxSize: z.number().int().min(256, 'must be at least 256 tokens').max(1 << 20).optional(),
  parallel: z.number().int().min(1).max(64).optional(),
  pipeline: z.union([z.enum(['auto', 'off']), z.number().int().min(1, PIPELINE_MUST).max(64, PIPELINE_MUST)], { error: PIPELINE_MUST }).optional(),
  batchSize: z.number().int().min(16).max(8192).optional(),
  ubatchSize: z.number().int().min(16).max(8192).optional(),
  cacheTypeK: cacheType.optional(),
  cacheTypeV: cacheType.optional(),
  threads: z.number().int().min(1).max(1024).optional(),
  reserveMiB: z.number().int().min(0).max(1 << 20).optional(),
  maxWaiting: z.number().int().min(0).max(100_000).optional(),
  maxTokensDefault: z.number().int().min(1).max(1 << 20).optional(),
  watchdogSeconds: z.number().min(1).max(3600).optional(),
  requestTimeoutSeconds: z.number().min(1).max(86_400).optional(),
  maxResumes: z.number().int().min(0).max(100).optional(),
  heartbeatMs: z.number().int().min(100).max(60_000).optional(),
  workerTimeoutMs: z.number().int().min(200).max(600_000).optional(),
  autoReplan: z.boolean().optional(),
  apiKeys: z.array(z.string().min(8, 'API keys must be at least 8 characters')).optional(),
  bodyLimitMiB: z.number().min(0.001).max(1024).optional(),
  ssePingSeconds: z.number().min(1).max(600).optional(),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).optional(),
  token: z.string().min(1).optional(),
  tokenFile: z.string().min(1).optional(),
  insecure: z.boolean().optional(),
  draftModel: z.string().min(1).optional(),
  draftWorker: z.string().min(1).optional(),
  draftMax: z.number().int().min(1, 'must be at least 1 token').max(256, 'must be at most 256 tokens').optional(),
  draftMin: z.number().int().min(0).max(256, 'must be at most 256 tokens').optional(),
  draftPMin: z.number().min(0, 'must be a probability from 0 to 1').max(1, 'must be a probability from 0 to 1').optional(),
  draftNgram: z.number().int().min(0).max(64, 'must be at most 64 tokens').optional(),
  draftMaxSequences: z.number().int().min(1).max(64).optional(),
  draftTune: z.boolean().optional(),
});

export type ClusterFileSettings = z.infer<typeof clusterFileSchema>;

export interface CoordinatorConfig {
  /**
   * Absolute path of the GGUF to serve (shard 1 of a split set, whichever shard was named), or null:
   * plan and status commands need none, and a model named by hub or URL has none until the CLI
   * resolves `modelRef`.
   */
  readonly model: string | null;
  /** The model as named when it is not a local file (hf:OWNER/REPO:QUANT, a URL): the library turns it into `model`. */
  readonly modelRef: ModelRef | null;
  /** host:controlPort of workers listed by hand. */
  readonly workers: readonly string[];
  readonly mdns: boolean;
  readonly localDevice: boolean;
  /** What the planner optimises: time per token within memory ('speed'), or shares of memory. */
  readonly placement: PlacementObjective;
  /** Address the APIs bind to. */
  readonly host: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly ctxSize: number;
  readonly parallel: number;
  /** Pipelined decode: how many contexts the sequences are split into (see planner/pipeline.ts). */
  readonly pipeline: PipelineSetting;
  readonly batchSize: number;
  readonly ubatchSize: number;
  readonly cacheTypeK: z.infer<typeof cacheType>;
  readonly cacheTypeV: z.infer<typeof cacheType>;
  readonly threads: number;
  readonly reserveBytes: number;
  readonly maxWaiting: number;
  readonly maxTokensDefault: number;
  readonly watchdogMs: number;
  /** How long a request may wait for the cluster in all (its queue, and pauses after engine losses). */
  readonly requestTimeoutMs: number;
  /** How many engine losses (crashes, watchdog stops) a request is resumed after before it fails. */
  readonly maxResumes: number;
  readonly heartbeatMs: number;
  readonly workerTimeoutMs: number;
  readonly autoReplan: boolean;
  /** Accepted API keys for the HTTP API; empty: no authentication. Never logged. */
  readonly apiKeys: readonly string[];
  readonly bodyLimitBytes: number;
  readonly ssePingMs: number;
  readonly logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** The cluster token's keys: workers are reached only over authenticated, encrypted links. */
  readonly secret: ClusterSecret | null;
  /** Serve the APIs on the network without API keys (protected mode overridden). */
  readonly insecure: boolean;
  /** Speculative decoding (a draft model and/or n-gram lookup); null: off. */
  readonly speculation: SpeculationSettings | null;
  /** Why a draft model that was asked for is not used (it could not be loaded), or null. */
  readonly speculationNote?: string | null;
}

/** Defaults of speculative decoding; the draft's are llama.cpp's own but the length (3 there). */
export const SPECULATION_DEFAULTS = { draftMax: 8, draftMin: 0, pMin: 0, maxSequences: 2 } as const;

/** Protected mode: why APIs on this address may not start, or null. */
export function protectedModeRefusal(c: CoordinatorConfig): string | null {
  if (c.insecure || c.apiKeys.length > 0 || isLoopback(c.host)) return null;
  return (
    `refusing to serve the APIs on ${c.host} without API keys: anyone on the network could use the cluster. ` +
    'Give one with --api-key KEY (or apiKeys: in cluster.yaml), listen on --host 127.0.0.1, or pass --insecure on a network you trust'
  );
}

export const NO_MODEL = 'no model: give --model (a GGUF file, hf:OWNER/REPO[:QUANT] or a URL), -hf OWNER/REPO[:QUANT], or model: in cluster.yaml';

/** Why `hearth coordinator` has nothing to serve, or null: a model given as a file, hub name or URL. */
export function modelRefusal(c: Pick<CoordinatorConfig, 'model' | 'modelRef'>): string | null {
  return c.model === null && c.modelRef === null ? NO_MODEL : null;
}

export function compileCoordinatorConfig(sources: { file: string | null; flags: ClusterFileSettings; env?: { HEARTH_TOKEN?: string | undefined } }): CoordinatorConfig {
  let fromFile: ClusterFileSettings = {};
  let base = process.cwd();
  if (sources.file) {
    const parsed = clusterFileSchema.safeParse(readYamlFile(sources.file));
    if (!parsed.success) throw new HearthError(ErrorCode.InvalidArgument, describeIssues(parsed.error, sources.file));
    fromFile = parsed.data;
    base = dirname(resolve(sources.file));
  }
  const flags = clusterFileSchema.safeParse(sources.flags);
  if (!flags.success) throw new HearthError(ErrorCode.InvalidArgument, describeIssues(flags.error, 'command line'));
  const f = Object.fromEntries(Object.entries(flags.data).filter(([, v]) => v !== undefined)) as ClusterFileSettings;
  const m: ClusterFileSettings = { ...fromFile, ...f };

  const host = m.host ?? '127.0.0.1';
  if (isIP(host) === 0) throw new HearthError(ErrorCode.InvalidArgument, `host: '${host}' is not an IP address`);
  for (const [i, w] of (m.workers ?? []).entries()) {
    const p = Number(w.slice(w.lastIndexOf(':') + 1));
    if (p < 1 || p > 65535) throw new HearthError(ErrorCode.InvalidArgument, `workers.${i}: port ${p} in '${w}' must be from 1 to 65535`);
  }
  const batchSize = m.batchSize ?? 512;
  const ubatchSize = Math.min(m.ubatchSize ?? 512, batchSize);
  // A model path in cluster.yaml is relative to the file; on the command line, to the shell. Any
  // shard of a split model names the model; llama.cpp loads it from shard 1.
  const named = f.model !== undefined ? { ref: parseModelRef(f.model, '--model'), base: process.cwd() } : fromFile.model !== undefined ? { ref: parseModelRef(fromFile.model, 'model'), base } : null;
  const model = named?.ref.kind === 'file' ? firstShardPath(resolve(named.base, named.ref.path)) : null;
  const modelRef = named && named.ref.kind !== 'file' ? named.ref : null;
  const secret = resolveSecret({
    flag: f.token,
    file: f.tokenFile,
    env: sources.env?.HEARTH_TOKEN,
    config: { token: fromFile.token, tokenFile: fromFile.tokenFile === undefined ? undefined : resolve(base, fromFile.tokenFile) },
  });
  for (const [where, text] of [['--draft-model', f.draftModel], ['draftModel', fromFile.draftModel]] as const) {
    if (text !== undefined && parseModelRef(text, where).kind !== 'file') {
      throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${text}' must be a file: fetch it first with \`hearth model pull ${text}\`, which prints its path`);
    }
  }
  const draftModel = f.draftModel !== undefined ? firstShardPath(resolve(f.draftModel)) : fromFile.draftModel !== undefined ? firstShardPath(resolve(base, fromFile.draftModel)) : null;
  const draftMax = m.draftMax ?? SPECULATION_DEFAULTS.draftMax;
  const draftMin = m.draftMin ?? SPECULATION_DEFAULTS.draftMin;
  if (m.draftWorker !== undefined && draftModel === null) throw new HearthError(ErrorCode.InvalidArgument, `draftWorker: '${m.draftWorker}' names where the draft model runs, but no draftModel is given`);
  if (draftMin > draftMax) throw new HearthError(ErrorCode.InvalidArgument, `draftMin: ${draftMin} is more than draftMax ${draftMax}; a draft can never be that long`);
  const ngram = m.draftNgram ?? 0;
  const speculation: SpeculationSettings | null =
    draftModel !== null || ngram > 0
      ? { draftModel, draftWorker: m.draftWorker ?? null, ngram, draftMax, draftMin, pMin: m.draftPMin ?? SPECULATION_DEFAULTS.pMin, maxSequences: m.draftMaxSequences ?? SPECULATION_DEFAULTS.maxSequences, tune: m.draftTune ?? true }
      : null;
  return Object.freeze({
    model,
    modelRef,
    workers: Object.freeze([...new Set(m.workers ?? [])]),
    mdns: m.mdns ?? true,
    localDevice: m.localDevice ?? true,
    placement: m.placement ?? 'speed',
    host,
    grpcPort: m.grpcPort ?? 50050,
    httpPort: m.httpPort ?? 8080,
    ctxSize: m.ctxSize ?? 4096,
    parallel: m.parallel ?? 4,
    pipeline: m.pipeline === 1 ? 'off' : (m.pipeline ?? 'auto'),
    batchSize,
    ubatchSize,
    cacheTypeK: m.cacheTypeK ?? 'f16',
    cacheTypeV: m.cacheTypeV ?? 'f16',
    threads: m.threads ?? Math.max(1, cpus().length),
    reserveBytes: (m.reserveMiB ?? 512) * 1024 * 1024,
    maxWaiting: m.maxWaiting ?? 64,
    maxTokensDefault: m.maxTokensDefault ?? 256,
    watchdogMs: (m.watchdogSeconds ?? 30) * 1000,
    requestTimeoutMs: (m.requestTimeoutSeconds ?? 600) * 1000,
    maxResumes: m.maxResumes ?? 3,
    heartbeatMs: m.heartbeatMs ?? 1000,
    workerTimeoutMs: m.workerTimeoutMs ?? 5000,
    autoReplan: m.autoReplan ?? true,
    apiKeys: Object.freeze([...(m.apiKeys ?? [])]),
    bodyLimitBytes: Math.round((m.bodyLimitMiB ?? 4) * 1024 * 1024),
    ssePingMs: (m.ssePingSeconds ?? 15) * 1000,
    logLevel: m.logLevel ?? 'info',
    secret,
    insecure: m.insecure ?? false,
    speculation,
  });
}
