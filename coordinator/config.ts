// The coordinator's settings: CLI flags over cluster.yaml over defaults, validated once and frozen.
// cluster.example.yaml documents every key.
import { cpus } from 'node:os';
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { z } from 'zod';

import { describeIssues, readYamlFile } from '../common/config-file.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { isLoopback, resolveSecret, type ClusterSecret } from '../link/token.js';
import { formatModelRef, parseModelRef, type ModelRef } from '../models/model-ref.js';
import { firstShardPath, parseSplitName } from '../models/split.js';
import type { SpeculationSettings } from './engine/protocol.js';
import { PIPELINE_HELP, type PipelineSetting } from './planner/pipeline.js';
import { SPLIT_HELP } from './planner/split.js';
import type { PlacementObjective, SplitSetting } from './planner/types.js';

const port = z.number().int().min(0, 'must be a port from 0 to 65535').max(65535, 'must be a port from 0 to 65535');
const cacheType = z.enum(['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1']);
const PIPELINE_MUST = `must be ${PIPELINE_HELP} from 1 to 64`;
const split = z.enum(['layer', 'tensor', 'auto'], { error: `must be ${SPLIT_HELP}` });
const hostPort = z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'must be host:port, such as 192.168.1.20:50051');

const DURATION_MUST = 'must be a duration such as 90s, 10m or 2h (or a number of seconds)';
const duration = z.union([z.string().regex(/^\s*\d+(\.\d+)?\s*(ms|s|m|h)\s*$/, DURATION_MUST), z.number().min(0, DURATION_MUST)], { error: DURATION_MUST });
const modelId = z.string().min(1).max(200).regex(/^[^\s/][^\s]*$/, 'must be a name without spaces that does not start with /');

/** One model of `models:`: a reference, or the reference with its own name, policy and settings. */
export const modelEntrySchema = z.strictObject({
  model: z.string().min(1),
  id: modelId.optional(),
  aliases: z.array(modelId).optional(),
  policy: z.enum(['pinned', 'on-demand']).optional(),
  idle: duration.optional(),
  ctxSize: z.number().int().min(256, 'must be at least 256 tokens').max(1 << 20).optional(),
  parallel: z.number().int().min(1).max(64).optional(),
  draftModel: z.string().min(1).optional(),
  draftWorker: z.string().min(1).optional(),
  draftNgram: z.number().int().min(0).max(64, 'must be at most 64 tokens').optional(),
  chatTemplate: z.string().min(1).optional(),
  split: split.optional(),
});
export type ModelEntry = z.infer<typeof modelEntrySchema>;

/** Keys accepted in cluster.yaml; unknown keys are errors. */
export const clusterFileSchema = z.strictObject({
  model: z.string().min(1).optional(),
  // A bare reference is an entry with only `model`.
  models: z.array(z.preprocess((v) => (typeof v === 'string' ? { model: v } : v), modelEntrySchema)).min(1, 'must list at least one model').optional(),
  workers: z.array(hostPort).optional(),
  mdns: z.boolean().optional(),
  localDevice: z.boolean().optional(),
  placement: z.enum(['speed', 'memory']).optional(),
  split: split.optional(),
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

/** The command line's settings: the file's keys, and every `--model` given (in order). */
export const clusterFlagsSchema = clusterFileSchema.extend({ modelList: z.array(z.string().min(1)).optional() });

export type ClusterFileSettings = z.infer<typeof clusterFlagsSchema>;

/** How long an on-demand model stays loaded without requests, unless its entry says otherwise. */
export const DEFAULT_IDLE_MS = 10 * 60_000;

/** One model the cluster serves, its settings resolved. */
export interface ServedModelConfig {
  /** The name requests use: the entry's id, or the file's or hub reference's name. */
  readonly id: string;
  readonly aliases: readonly string[];
  /** Absolute path of its GGUF (shard 1 of a split set), or null until the CLI resolves `modelRef`. */
  readonly model: string | null;
  readonly modelRef: ModelRef | null;
  readonly policy: 'pinned' | 'on-demand';
  /** An on-demand model is unloaded after this long without requests. */
  readonly idleMs: number;
  readonly ctxSize: number;
  readonly parallel: number;
  readonly speculation: SpeculationSettings | null;
  readonly speculationNote?: string | null;
  /** A Jinja chat template used in place of the model's own (its text), or null. */
  readonly chatTemplate: string | null;
  /** How this model is split over the workers (planner/split.ts). */
  readonly split: SplitSetting;
}
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
  /** Whole layers per device, a share of every layer on every worker, or the faster (planner/split.ts); the default model's. */
  readonly split: SplitSetting;
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
  /**
   * Every model the cluster serves, the default (what a request that names none gets) first. The
   * top-level model, ctxSize, parallel and speculation are the first model's.
   */
  readonly models: readonly ServedModelConfig[];
  /** The default model's chat template override (its text), or null. */
  readonly chatTemplate: string | null;
}

/** The coordinator's config as one served model sees it: the top-level model settings are that model's. */
export function configFor(c: CoordinatorConfig, m: ServedModelConfig): CoordinatorConfig {
  return Object.freeze({
    ...c, model: m.model, modelRef: m.modelRef, ctxSize: m.ctxSize, parallel: m.parallel,
    speculation: m.speculation, speculationNote: m.speculationNote ?? null, chatTemplate: m.chatTemplate, split: m.split, models: [m],
  });
}

/** "90s", "10m", "2h", "250ms" or seconds as a number, in milliseconds. */
export function durationMs(v: string | number): number {
  if (typeof v === 'number') return v * 1000;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(v)!;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}

/** A model's default id: its file's name without .gguf and shard suffix, or the hub reference without hf:, or the URL's file name. */
export function defaultModelId(ref: ModelRef): string {
  const stem = (path: string) => basename(parseSplitName(path)?.prefix ?? path).replace(/\.gguf$/i, '');
  switch (ref.kind) {
    case 'file':
      return stem(ref.path);
    case 'hub':
      return `${ref.repo}${ref.tag === null ? '' : `:${ref.tag}`}`;
    case 'url':
      return stem(new URL(ref.url).pathname);
  }
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
  const flags = clusterFlagsSchema.safeParse(sources.flags);
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
  // Model paths in cluster.yaml are relative to the file; on the command line, to the shell. Any
  // shard of a split model names the model; llama.cpp loads it from shard 1. Models on the command
  // line replace the file's.
  const cliModels = f.modelList ?? (f.model !== undefined ? [f.model] : null);
  if (fromFile.model !== undefined && fromFile.models !== undefined) {
    throw new HearthError(ErrorCode.InvalidArgument, `${sources.file}: give model: (one model) or models: (a list), not both`);
  }
  const entries: { entry: ModelEntry; where: string; base: string }[] = cliModels
    ? cliModels.map((text) => ({ entry: { model: text }, where: '--model', base: process.cwd() }))
    : fromFile.models
      ? fromFile.models.map((e, i) => ({ entry: e, where: `models.${i}`, base }))
      : fromFile.model !== undefined
        ? [{ entry: { model: fromFile.model }, where: 'model', base }]
        : [];
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
  const speculationOf = (draft: string | null, draftWorker: string | null, ngram: number): SpeculationSettings | null =>
    draft !== null || ngram > 0
      ? { draftModel: draft, draftWorker, ngram, draftMax, draftMin, pMin: m.draftPMin ?? SPECULATION_DEFAULTS.pMin, maxSequences: m.draftMaxSequences ?? SPECULATION_DEFAULTS.maxSequences, tune: m.draftTune ?? true }
      : null;
  const ctxSize = m.ctxSize ?? 4096;
  const parallel = m.parallel ?? 4;
  // A flag applies to every model; the file's top-level split to the models whose entries give none.
  const splitOf = (entry: ModelEntry): SplitSetting => f.split ?? entry.split ?? fromFile.split ?? 'auto';
  // The top-level draft model drafts for the first model (a draft must share its model's vocabulary);
  // another model names its own.
  const models = entries.map(({ entry: e, where, base: from }, i): ServedModelConfig => {
    const ref = parseModelRef(e.model, `${where}${where === '--model' ? '' : '.model'}`);
    if (e.draftModel !== undefined && parseModelRef(e.draftModel, `${where}.draftModel`).kind !== 'file') {
      throw new HearthError(ErrorCode.InvalidArgument, `${where}.draftModel: '${e.draftModel}' must be a file: fetch it first with \`hearth model pull ${e.draftModel}\`, which prints its path`);
    }
    const draft = e.draftModel !== undefined ? firstShardPath(resolve(from, e.draftModel)) : i === 0 ? draftModel : null;
    if (e.draftWorker !== undefined && draft === null) throw new HearthError(ErrorCode.InvalidArgument, `${where}.draftWorker: '${e.draftWorker}' names where the draft model runs, but no draftModel is given`);
    return Object.freeze({
      id: e.id ?? defaultModelId(ref),
      aliases: Object.freeze([...new Set(e.aliases ?? [])]),
      model: ref.kind === 'file' ? firstShardPath(resolve(from, ref.path)) : null,
      modelRef: ref.kind === 'file' ? null : ref,
      // One model is always loaded; of several, the first (the default) is, and the rest load when asked for.
      policy: e.policy ?? (i === 0 ? 'pinned' : 'on-demand'),
      idleMs: e.idle === undefined ? DEFAULT_IDLE_MS : durationMs(e.idle),
      ctxSize: e.ctxSize ?? ctxSize,
      parallel: e.parallel ?? parallel,
      speculation: speculationOf(draft, e.draftWorker ?? (i === 0 ? (m.draftWorker ?? null) : null), e.draftNgram ?? (i === 0 ? (m.draftNgram ?? 0) : 0)),
      chatTemplate: e.chatTemplate === undefined ? null : readTemplate(e.chatTemplate, from, `${where}.chatTemplate`),
      split: splitOf(e),
    });
  });
  checkModelNames(models, entries.map((e) => e.where));
  const first = models[0] ?? null;
  return Object.freeze({
    model: first?.model ?? null,
    modelRef: first?.modelRef ?? null,
    workers: Object.freeze([...new Set(m.workers ?? [])]),
    mdns: m.mdns ?? true,
    localDevice: m.localDevice ?? true,
    placement: m.placement ?? 'speed',
    split: first?.split ?? m.split ?? 'auto',
    host,
    grpcPort: m.grpcPort ?? 50050,
    httpPort: m.httpPort ?? 8080,
    ctxSize: first?.ctxSize ?? ctxSize,
    parallel: first?.parallel ?? parallel,
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
    speculation: first?.speculation ?? speculationOf(null, null, m.draftNgram ?? 0),
    models: Object.freeze(models),
    chatTemplate: first?.chatTemplate ?? null,
  });
}

/** A chat template given in a model's entry: inline Jinja, or a file (relative to the config's folder). */
function readTemplate(text: string, base: string, where: string): string {
  if (/\{[{%]/.test(text)) return text;
  try {
    return readFileSync(resolve(base, text), 'utf8');
  } catch (e) {
    throw new HearthError(ErrorCode.InvalidArgument, `${where}: cannot read the template file ${resolve(base, text)} (${(e as Error).message}); give a file of Jinja, or the template itself`);
  }
}

/** Ids and aliases name one model each: a name given twice is refused with both places. */
function checkModelNames(models: readonly ServedModelConfig[], where: readonly string[]): void {
  const seen = new Map<string, number>();
  models.forEach((m, i) => {
    for (const name of [m.id, ...m.aliases.filter((a) => a !== m.id)]) {
      const before = seen.get(name);
      if (before !== undefined) {
        throw new HearthError(
          ErrorCode.InvalidArgument,
          `${where[i]}: the model name '${name}' is already ${before === i ? 'its id' : `taken by ${where[before]} (${models[before]!.model ?? formatModelRef(models[before]!.modelRef!)})`}; give each model its own id: (and aliases:)`,
        );
      }
      seen.set(name, i);
    }
  });
}
