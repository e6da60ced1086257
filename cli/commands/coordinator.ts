// `hearth coordinator`, `hearth plan` and `hearth status`.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';

import { configureLogger, logger, type LogLevel } from '../../common/logger.js';
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { loadBinding } from '../../native/binding.js';
import { CoordinatorClient } from '../../coordinator/client.js';
import type { WireStatus } from '../../coordinator/wire.js';
import { checkChatTemplates, checkDraftModel } from '../../coordinator/draft-check.js';
import { compileCoordinatorConfig, modelRefusal, protectedModeRefusal, type ClusterFileSettings, type CoordinatorConfig } from '../../coordinator/config.js';
import type { ClusterSecret } from '../../link/token.js';
import { Coordinator } from '../../coordinator/coordinator.js';
import { previewPlan, previewPlans, type ModelPreview, type PlanPreview } from '../../coordinator/preview.js';
import { StaticDiscovery, type Discovery } from '../../coordinator/discovery/discovery.js';
import { MdnsDiscovery } from '../../coordinator/discovery/mdns.js';
import { CoordinatorGrpcServer } from '../../coordinator/grpc-server.js';
import { HttpApi, type HttpOptions } from '../../coordinator/http/server.js';
import { CoordinatorMetrics } from '../../coordinator/metrics.js';
import { plan as makePlan } from '../../coordinator/planner/planner.js';
import { parsePipelineSetting, PIPELINE_HELP } from '../../coordinator/planner/pipeline.js';
import { readSimulation } from '../../coordinator/planner/simulation.js';
import { parseSplitSetting, SPLIT_HELP } from '../../coordinator/planner/split.js';
import { readModelFacts } from '../../models/gguf-info.js';
import { HUB_PREFIX } from '../../models/model-ref.js';
import { PLACEMENT_OBJECTIVES, type PlacementObjective, type Plan, type PlanInput, type SplitChoice, type SplitMode, type SplitOption } from '../../coordinator/planner/types.js';
import { rpcProtocolVersion } from '../../native/llama.js';
import { formatBytes, formatGiB, formatSpeed, table } from '../format.js';
import { withLocalModel } from '../model-source.js';
import { runUntilSignal } from '../lifecycle.js';
import { parseInteger } from '../options.js';

export interface ClusterFlags {
  config?: string;
  /** Every --model given, in order. */
  model?: string[];
  hfRepo?: string;
  worker?: string[];
  mdns: boolean;
  host?: string;
  grpcPort?: string;
  httpPort?: string;
  ctxSize?: string;
  parallel?: string;
  pipeline?: string;
  localDevice?: string;
  placement?: string;
  split?: string;
  threads?: string;
  watchdogSeconds?: string;
  requestTimeout?: string;
  maxResumes?: string;
  maxWaiting?: string;
  apiKey?: string[];
  logLevel?: string;
  token?: string;
  tokenFile?: string;
  insecure?: boolean;
  draftModel?: string;
  draftWorker?: string;
  draftMax?: string;
  draftMin?: string;
  draftPMin?: string;
  draftNgram?: string;
  draftMaxSeqs?: string;
  draftTune?: string;
}

function probability(v: string | undefined, option: string): number | undefined {
  if (v === undefined) return undefined;
  const p = /^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(v) ? Number(v) : NaN;
  if (!(p >= 0 && p <= 1)) throw new HearthError(ErrorCode.InvalidArgument, `${option}: '${v}' is not a probability from 0 to 1`);
  return p;
}

function onOff(v: string | undefined, option: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  throw new HearthError(ErrorCode.InvalidArgument, `${option}: '${v}' must be on or off`);
}

function placementOf(v: string | undefined): PlacementObjective | undefined {
  if (v === undefined) return undefined;
  if ((PLACEMENT_OBJECTIVES as readonly string[]).includes(v)) return v as PlacementObjective;
  throw new HearthError(ErrorCode.InvalidArgument, `--placement: '${v}' must be speed (least time per token within memory) or memory (layers in proportion to free memory)`);
}

/** The coordinator's config from its parsed flags, as `hearth coordinator` and `hearth plan` compile it. */
export function clusterConfig(flags: ClusterFlags, cmd: Command, env: { HEARTH_TOKEN?: string | undefined } = process.env): CoordinatorConfig {
  const int = (v: string | undefined, name: string, min: number, max: number) => (v === undefined ? undefined : parseInteger(v, name, { min, max }));
  if (flags.model !== undefined && flags.hfRepo !== undefined) {
    throw new HearthError(ErrorCode.InvalidArgument, `--model ${flags.model.join(', ')} and -hf ${flags.hfRepo} both name the model; give --model hf:${flags.hfRepo} beside the others instead`);
  }
  const settings: ClusterFileSettings = {
    model: flags.hfRepo !== undefined ? `${HUB_PREFIX}${flags.hfRepo}` : undefined,
    modelList: flags.model,
    workers: flags.worker,
    mdns: cmd.getOptionValueSource('mdns') === 'cli' ? flags.mdns : undefined,
    host: flags.host,
    grpcPort: int(flags.grpcPort, '--grpc-port', 0, 65535),
    httpPort: int(flags.httpPort, '--http-port', 0, 65535),
    ctxSize: int(flags.ctxSize, '--ctx-size', 256, 1 << 20),
    parallel: int(flags.parallel, '--parallel', 1, 64),
    pipeline: flags.pipeline === undefined ? undefined : parsePipelineSetting(flags.pipeline, '--pipeline'),
    localDevice: onOff(flags.localDevice, '--local-device'),
    placement: placementOf(flags.placement),
    split: flags.split === undefined ? undefined : parseSplitSetting(flags.split, '--split'),
    threads: int(flags.threads, '--threads', 1, 1024),
    watchdogSeconds: int(flags.watchdogSeconds, '--watchdog-seconds', 1, 3600),
    requestTimeoutSeconds: int(flags.requestTimeout, '--request-timeout', 1, 86_400),
    maxResumes: int(flags.maxResumes, '--max-resumes', 0, 100),
    maxWaiting: int(flags.maxWaiting, '--max-waiting', 0, 100_000),
    apiKeys: flags.apiKey,
    logLevel: flags.logLevel as ClusterFileSettings['logLevel'],
    token: flags.token,
    tokenFile: flags.tokenFile,
    insecure: flags.insecure,
    draftModel: flags.draftModel,
    draftWorker: flags.draftWorker,
    draftMax: int(flags.draftMax, '--draft-max', 1, 256),
    draftMin: int(flags.draftMin, '--draft-min', 0, 256),
    draftPMin: probability(flags.draftPMin, '--draft-p-min'),
    draftNgram: int(flags.draftNgram, '--draft-ngram', 0, 64),
    draftMaxSequences: int(flags.draftMaxSeqs, '--draft-max-seqs', 1, 64),
    draftTune: onOff(flags.draftTune, '--draft-tune'),
  };
  return compileCoordinatorConfig({ file: flags.config ?? null, flags: settings, env });
}

export function httpOptions(config: CoordinatorConfig): HttpOptions {
  return { apiKeys: config.apiKeys, bodyLimitBytes: config.bodyLimitBytes, pingMs: config.ssePingMs, headersAfterMs: 2000 };
}

export function discoveries(config: CoordinatorConfig): Discovery[] {
  const out: Discovery[] = [new StaticDiscovery(config.workers)];
  if (config.mdns) out.push(new MdnsDiscovery(logger('discovery'), config.secret?.clusterId ?? null));
  return out;
}

function clusterOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'cluster.yaml (flags win over it)')
    .option(
      '--model <model>',
      'a model to serve: a GGUF file (for a split model, any of its shards), hf:OWNER/REPO[:QUANT] from Hugging Face, or the URL of a .gguf; fetched once into the model library. Repeat it to serve several: the first is always loaded and answers requests that name no model, the others load when asked for (models: in cluster.yaml sets ids, aliases and policies)',
      (value: string, before: string[] | undefined) => [...(before ?? []), value],
    )
    .option('--hf, --hf-repo <OWNER/REPO[:QUANT]>', 'as llama-server\'s -hf: the same as --model hf:OWNER/REPO[:QUANT]')
    .option('--worker <host:port...>', "a worker's control address (repeatable)")
    .option('--no-mdns', 'do not discover workers over mDNS')
    .option('--ctx-size <n>', 'context per request, in tokens (default 4096)')
    .option('--parallel <n>', 'requests decoded side by side (default 4)')
    .option('--pipeline <auto|off|n>', `pipelined decode: the requests in flight split over several contexts, so that each worker computes one group's batch while the next worker computes another's; ${PIPELINE_HELP} (default auto)`)
    .option('--local-device <on|off>', "let the coordinator's own CPU take layers when it helps (default on)")
    .option('--placement <speed|memory>', 'speed: least time per token within memory, from measured device speeds; memory: layers in proportion to free memory (default speed)')
    .option('--split <layer|tensor|auto>', `how the model is split over the workers: ${SPLIT_HELP} (default auto)`)
    .option('--draft-model <file>', 'speculative decoding: a small model with the same vocabulary drafts tokens that the model verifies in one batch')
    .option('--draft-worker <name>', "run the draft model on this worker's first device instead of on this machine")
    .option('--token-file <file>', 'file holding the cluster token: workers are reached only over links keyed by it')
    .option('--token <token>', 'the cluster token itself (HEARTH_TOKEN or --token-file keep it out of the process list)');
}

/**
 * The command a new machine runs to join. The token is shown only on a terminal (stdout is not the
 * log, but it may be redirected into one); elsewhere the line names the token file, or a placeholder.
 */
export function joinCommand(secret: ClusterSecret, terminal: boolean): string {
  if (terminal) return `npx hearth worker --token ${secret.revealForJoinCommand()}`;
  if (secret.file) return `npx hearth worker --token-file ${secret.file}   (copy that file to the new machine)`;
  return 'npx hearth worker --token <this cluster\'s token>   (the full command is printed only on a terminal)';
}

export function printPlan(plan: PlanPreview, out: (s: string) => void = (s) => process.stdout.write(s)): void {
  if (!plan.fits) {
    out(`does not fit: ${plan.reason}\n`);
    for (const s of plan.suggestions) out(`  - ${s}\n`);
    for (const x of plan.excluded) out(`  (left out ${x.owner}/${x.deviceName}: ${x.reason})\n`);
    if (plan.splitChoice) out(splitLines(plan.splitChoice, null));
    return;
  }
  const total = plan.predictedSecondsPerToken;
  const tensor = plan.split === 'tensor';
  const rows = [['device', 'owner', 'endpoint', tensor ? 'share of every layer' : 'layers', 'weights', 'kv cache', 'compute', 'free', 'speed', 'hop', tensor ? 'compute/token' : 'time/token']];
  for (const d of plan.devices) {
    const range = d.share !== undefined ? `${(d.share * 100).toFixed(2)}% of ${d.layers - 1} blocks +out` : d.layers > 0 ? `${d.firstLayer}-${d.firstLayer + d.layers - 1}${d.holdsOutput ? ' +out' : ''}` : 'none';
    const experts = d.expertLayers.length > 0 ? ` +experts of ${layerRanges(d.expertLayers)}` : '';
    const share = d.secondsPerToken === null ? '-' : `${(d.secondsPerToken * 1000).toFixed(2)} ms${total && !tensor ? ` (${Math.round((100 * d.secondsPerToken) / total)}%)` : ''}`;
    rows.push([
      d.deviceName, d.owner, d.endpoint ?? 'local', d.share !== undefined ? range : `${d.layers} (${range})${experts}`, formatBytes(d.weightBytes), formatBytes(d.kvBytes), formatBytes(d.computeBytes),
      formatBytes(d.freeBytes), d.bytesPerSecond === null ? 'unmeasured' : formatSpeed(d.bytesPerSecond), d.kind === 'local' ? '-' : `${(d.hopSeconds * 1000).toFixed(2)} ms`, share,
    ]);
  }
  out(table(rows) + '\n');
  out(`coordinator host memory for the input embedding: ${formatBytes(plan.hostBytes)}; total ${formatGiB(plan.totalBytes)}\n`);
  out(`${pipelineLine(plan)}\n`);
  out(`placement: ${plan.objective}; predicted ${predictedSpeed(total, plan.split)}\n`);
  if (plan.alternative) {
    const alt = plan.alternative;
    out(`  with --placement ${alt.objective}: ${alt.fits ? predictedSpeed(alt.predictedSecondsPerToken, plan.split) : 'does not fit'}\n`);
  }
  out(splitLines(plan.splitChoice, plan));
  for (const note of plan.tensor?.notes ?? []) out(`${note}\n`);
  for (const d of plan.devices.filter((x) => x.expertLayers.length > 0)) {
    out(
      `MoE experts of blocks ${layerRanges(d.expertLayers)} stay on ${d.owner}/${d.deviceName}, beside the faster device of the same machine that holds the rest of those blocks: ` +
        `a token reads only the experts it uses, so the fast device's memory goes to the parts every token reads\n`,
    );
  }
  for (const x of plan.excluded) out(`left out ${x.owner}/${x.deviceName}: ${x.reason}\n`);
  if (plan.draft) {
    out(`draft model (speculative decoding) on ${plan.draft.where}: ${formatBytes(plan.draft.bytes)} of weights, KV cache and compute buffer, which the layers do not count on${plan.draft.note ? ` (${plan.draft.note})` : ''}\n`);
  }
}

/** `hearth plan` for several models: each one's plan, and which on-demand models take each other's place. */
export function printModelPlans(models: readonly ModelPreview[], out: (s: string) => void = (s) => process.stdout.write(s)): void {
  for (const m of models) {
    const beside = m.policy === 'pinned' ? 'beside the pinned models before it' : 'beside the pinned models';
    out(`\nmodel ${m.id} (${m.policy}), ${beside}:\n`);
    printPlan(m.plan, (s) => out(s.replace(/^/gm, '  ')));
    if (m.excludes.length > 0) out(`  does not fit beside ${m.excludes.join(', ')}: loading it unloads ${m.excludes.length === 1 ? 'it' : 'them, least recently used first, as many as it takes'}\n`);
    else if (m.policy === 'on-demand' && m.plan.fits) out('  fits beside any one other on-demand model\n');
  }
}

/** "0-5, 9, 12-13": block numbers as ranges. */
export function layerRanges(layers: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < layers.length; ) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j]! + 1) j++;
    parts.push(i === j ? `${layers[i]}` : `${layers[i]}-${layers[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** What pipelined decode costs in the plan: every context's compute buffers, the KV cache only split. */
export function pipelineLine(plan: Plan): string {
  if (plan.groups <= 1 && plan.split === 'tensor') return 'pipelined decode: off (in tensor mode the workers compute every layer together: one stage)';
  if (plan.groups <= 1) return 'pipelined decode: off (one context; --pipeline, or fewer than two stages or sequences)';
  const low = Math.floor(plan.context.parallel / plan.groups);
  const high = Math.ceil(plan.context.parallel / plan.groups);
  const each = plan.devices.map((d) => `${d.owner} ${formatBytes(d.computeBytes / plan.groups)}`).join(', ');
  return (
    `pipelined decode: ${plan.groups} contexts of ${low === high ? low : `${low}-${high}`} sequences, ` +
    `each with its own compute buffers (per context: ${each}; "compute" counts all ${plan.groups}); the KV cache is split between them, not repeated`
  );
}

/** The plan for a simulated cluster, with the other objective's prediction beside it. */
function simulatedPlan(input: PlanInput): PlanPreview {
  const plan = makePlan(input);
  if (!plan.fits) return plan;
  const objective = input.objective === 'memory' ? 'speed' : 'memory';
  const other = makePlan({ ...input, objective });
  return { ...plan, alternative: { objective, fits: other.fits, predictedSecondsPerToken: other.fits ? other.predictedSecondsPerToken : null } };
}

/** "41.2 tokens/s (24.3 ms per token)" for a single stream, from the time model; or why there is no figure. */
export function predictedSpeed(secondsPerToken: number | null, split: SplitMode = 'layer'): string {
  if (secondsPerToken === null || secondsPerToken <= 0) return 'speed unknown (a device that takes part has no measured speed)';
  const how = split === 'tensor' ? "the slowest share of the weights ÷ its speed, the reductions between workers, the coordinator's part" : 'weights ÷ measured speed, plus a hop per worker';
  return `${(1 / secondsPerToken).toFixed(1)} tokens/s for one stream (${(secondsPerToken * 1000).toFixed(2)} ms per token: ${how})`;
}

function msPerToken(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms per token (${(1 / seconds).toFixed(2)} tokens/s)`;
}

/**
 * Both split modes' predictions and which one the plan takes, and why; with the tensor split's parts
 * when it is the plan. A prediction with a device unmeasured counts it as typical of the others.
 */
export function splitLines(choice: SplitChoice, plan: Plan | null): string {
  const option = (o: SplitOption, label: string) => {
    if (o.secondsPerToken === null) return `  ${label}: no plan: ${o.refusal ?? 'not planned'}\n`;
    const t = o.parts;
    const parts = t
      ? ` on ${t.devices} devices: compute ${(t.computeSeconds * 1000).toFixed(1)} ms (the slowest share), ${t.reductions} reductions × ${t.steps} step(s) ${(t.reduceSeconds * 1000).toFixed(1)} ms, ` +
        `coordinator ${(t.coordinatorSeconds * 1000).toFixed(1)} ms (each worker's graph every token, a hop)`
      : '';
    return `  ${label}: ${msPerToken(o.secondsPerToken)}${parts}\n`;
  };
  const taken = plan ? `${plan.split} (${choice.reason})` : choice.reason;
  return `split: ${taken}\n${option(choice.layer, 'whole layers')}${option(choice.tensor, 'tensor split')}`;
}

/** `hearth coordinator`'s options on `cmd`: the command itself and `hearth service install coordinator` parse with them. */
export function coordinatorOptions(cmd: Command): Command {
  return clusterOptions(cmd)
    .option('--host <addr>', 'address the APIs listen on (default 127.0.0.1)')
    .option('--grpc-port <port>', 'gRPC API port (default 50050; 0 picks a free one)')
    .option('--http-port <port>', 'HTTP API port (default 8080)')
    .option('--threads <n>', "CPU threads for the coordinator's own layers")
    .option('--watchdog-seconds <n>', 'kill the engine after this long without progress while work is pending (default 30)')
    .option('--request-timeout <seconds>', 'the longest a request waits for the cluster in all: for a slot, and for its resume after a worker is lost (default 600)')
    .option('--max-resumes <n>', 'how many engine losses (a worker or the engine failing) a request is resumed after before it fails (default 3); re-plans that retire the engine do not count')
    .option('--max-waiting <n>', 'requests that may wait for a slot before new ones are refused (default 64)')
    .option('--api-key <key...>', 'require this API key on the HTTP and gRPC APIs (repeatable)')
    .option('--insecure', 'serve the APIs on a non-loopback address without API keys (protected mode off)')
    .option('--log-level <level>', 'trace, debug, info, warn or error')
    .option('--draft-max <n>', 'most tokens drafted per step (default 8)')
    .option('--draft-min <n>', 'a shorter draft is not verified (default 0)')
    .option('--draft-p-min <p>', "the draft stops at a token it gives less than this probability (default 0: greedy)")
    .option('--draft-ngram <n>', 'speculative decoding without a draft model: look the last n tokens up in the prompt and reply, and draft what followed them (0: off)')
    .option('--draft-tune <on|off>', 'draft as many tokens per step as pays on this cluster (measured verification cost and acceptance), up to --draft-max; off: always --draft-max (default on)')
    .option('--draft-max-seqs <n>', 'speculate only while at most this many requests generate; more make the batch compute-bound (default 2)');
}

/**
 * What stops `hearth coordinator` before it starts anything: the APIs on the network without keys
 * (protected mode), or no model to serve.
 */
export function checkCoordinatorStart(config: CoordinatorConfig): void {
  const refusal = protectedModeRefusal(config);
  if (refusal) throw new HearthError(ErrorCode.FailedPrecondition, refusal);
  const noModel = modelRefusal(config);
  if (noModel) throw new HearthError(ErrorCode.InvalidArgument, noModel);
}

export function registerCoordinatorCommands(program: Command): void {
  coordinatorOptions(program.command('coordinator').description('discover workers, plan the split, load the model across them and serve it'))
    .action(async (flags: ClusterFlags, cmd: Command) => {
      let config = clusterConfig(flags, cmd);
      checkCoordinatorStart(config);
      const log = configureLogger({ level: config.logLevel as LogLevel, name: 'hearth-coordinator' }).child({ component: 'coordinator' });
      config = await withLocalModel(config, log.child({ part: 'models' }));
      config = await checkDraftModel(config, log);
      await checkChatTemplates(config);
      const sys = loadBinding().systemInfo();
      const coordinator = new Coordinator(config, log, discoveries(config), rpcProtocolVersion());
      const metrics = new CoordinatorMetrics(coordinator);
      const grpcServer = new CoordinatorGrpcServer(coordinator, sys, { apiKeys: config.apiKeys });
      const http = new HttpApi(coordinator, metrics, httpOptions(config), log.child({ part: 'http' }));
      await runUntilSignal(
        log,
        async () => {
          const grpcPort = await grpcServer.listen(config.host, config.grpcPort);
          const httpPort = await http.listen(config.host, config.httpPort);
          log.info(
            { grpc: `${config.host}:${grpcPort}`, http: `http://${config.host}:${httpPort}/v1`, auth: config.apiKeys.length > 0, cluster: config.secret?.clusterId ?? 'open' },
            'APIs listening',
          );
          if (config.insecure && protectedModeRefusal({ ...config, insecure: false })) {
            log.warn({ host: config.host }, `--insecure: the APIs on ${config.host} take requests from anyone who can reach them`);
          }
          await coordinator.start();
          if (config.secret) {
            process.stdout.write(`To add a machine to this cluster, run on it:\n  ${joinCommand(config.secret, process.stdout.isTTY === true)}\n`);
            if (!config.mdns) process.stdout.write('  (mDNS is off here: also list it with --worker HOST:50051 or in workers: of cluster.yaml)\n');
          }
        },
        async () => {
          await coordinator.stop();
          await Promise.all([grpcServer.close(), http.close()]);
        },
      );
    });

  clusterOptions(program.command('plan').description('print how the model would be split across the workers, without loading anything'))
    .option('--wait <ms>', 'how long to listen for mDNS workers first', '1500')
    .option('--simulate <file>', 'plan a cluster described in YAML (devices with memory and speed, a model by GGUF or shape) instead of the real one; see examples/home-cluster.yaml')
    .option('--json', 'print the plan as JSON')
    .action(async (flags: ClusterFlags & { wait: string; json?: boolean; simulate?: string }, cmd: Command) => {
      if (flags.simulate) {
        const input = await readSimulation(flags.simulate, readModelFacts);
        if (flags.placement) input.objective = placementOf(flags.placement);
        if (flags.split) input.split = parseSplitSetting(flags.split, '--split');
        const plan = simulatedPlan(input);
        if (flags.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
        else {
          process.stdout.write(`${input.model.name ?? input.model.path}: ${input.model.layerCount} blocks + output head, ${formatGiB(input.model.fileBytes)}; ${input.devices.length} simulated devices\n`);
          printPlan(plan);
        }
        process.exitCode = plan.fits ? 0 : 3;
        return;
      }
      configureLogger({ level: 'warn' });
      const config = await withLocalModel(clusterConfig(flags, cmd), logger('models'));
      if (config.models.length > 1) {
        const { models, workers } = await previewPlans(config, logger('plan'), discoveries(config), rpcProtocolVersion(), config.mdns ? parseInteger(flags.wait, '--wait', { min: 0, max: 60_000 }) : 0);
        for (const w of workers.filter((r) => r.state !== 'admitted')) process.stderr.write(`worker ${w.name}: ${w.state}: ${w.reason}\n`);
        if (flags.json) process.stdout.write(JSON.stringify(models, null, 2) + '\n');
        else printModelPlans(models);
        process.exitCode = models.every((m) => m.plan.fits) ? 0 : 3;
        return;
      }
      const { preview: plan, workers } = await previewPlan(config, logger('plan'), discoveries(config), rpcProtocolVersion(), config.mdns ? parseInteger(flags.wait, '--wait', { min: 0, max: 60_000 }) : 0);
      for (const w of workers.filter((r) => r.state !== 'admitted')) process.stderr.write(`worker ${w.name}: ${w.state}: ${w.reason}\n`);
      if (flags.json) process.stdout.write(JSON.stringify(plan, null, 2) + '\n');
      else printPlan(plan);
      process.exitCode = plan.fits ? 0 : 3;
    });

  program
    .command('status')
    .description("show a running coordinator's workers, plan, model, load progress and queue")
    .option('--coordinator <addr>', "the coordinator's gRPC address", '127.0.0.1:50050')
    .option('--api-key <key>', 'API key, when the coordinator requires one (or HEARTH_API_KEY)')
    .option('--json', 'print the status as JSON')
    .option('--watch', 'redraw the status every second, like top (Ctrl-C stops)')
    .action(async (opts: { coordinator: string; apiKey?: string; json?: boolean; watch?: boolean }) => {
      const client = new CoordinatorClient(opts.coordinator, { apiKey: opts.apiKey ?? process.env.HEARTH_API_KEY ?? null });
      try {
        if (opts.watch) {
          await watchStatus(client, opts.coordinator);
          return;
        }
        const s = await client.getStatus();
        if (opts.json) {
          process.stdout.write(JSON.stringify(s, null, 2) + '\n');
          return;
        }
        printStatus(s, opts.coordinator, (x) => process.stdout.write(x));
      } finally {
        client.close();
      }
    });
}

/** `hearth status`: the coordinator, its model and load, serving figures, workers, plan and recent events. */
export function printStatus(s: WireStatus, address: string, out: (x: string) => void, events = 5): void {
  out(`coordinator ${address}: ${s.state}${s.reason ? ` (${s.reason})` : ''}\n`);
  out(`model: ${s.model_name || '-'} (${s.model})\n`);
  const sent = Object.entries(s.load.bytes_sent).map(([k, v]) => `${k} ${formatBytes(Number(v))}`).join(', ');
  out(`load: ${Math.round(s.load.progress * 100)}%, last load ${s.load.seconds.toFixed(2)} s${sent ? `, sent ${sent}` : ''}, ${s.load.loads} load(s)\n`);
  out(`requests: ${s.in_flight} in flight, ${s.waiting} waiting, ${s.parallel} slots${s.load.groups > 1 ? ` in ${s.load.groups} contexts (pipelined decode)` : ''}\n`);
  out(`build: llama.cpp ${s.build.llama_cpp_release}, RPC protocol ${s.build.rpc_protocol}\n`);
  out(`speculative decoding: ${s.speculation || 'off'}\n`);
  out(`cluster: ${s.cluster_id ? `closed (cluster id ${s.cluster_id}; workers reached over TLS 1.3 keyed by the token)` : 'open (no token: worker links are not authenticated)'}\n\nworkers:\n`);
  const rows = [['name', 'state', 'backend', 'speed', 'free / total', 'version', 'rpc', 'link', 'model on disk', 'tensor cache', 'note']];
  for (const w of s.workers) {
    rows.push([
      w.name, w.state, w.backend || '-', w.bytes_per_second > 0 ? formatSpeed(w.bytes_per_second) : 'unmeasured', `${formatBytes(Number(w.free_bytes))} / ${formatBytes(Number(w.total_bytes))}`,
      w.rpc_protocol || '-', w.rpc_endpoint || '-', w.link || '-', w.model_local || '-', formatBytes(Number(w.tensor_cache_bytes)), w.reason,
    ]);
  }
  out(table(rows) + '\n');
  if ((s.models?.length ?? 0) > 1) out(`\nmodels:\n${modelsTable(s.models)}\n`);
  out(`\nplan${(s.models?.length ?? 0) > 1 ? ` of ${s.models[0]!.id} (the default model)` : ''}:\n`);
  if (!s.plan.fits) {
    out(`  ${s.plan.refusal}\n`);
    for (const x of s.plan.suggestions) out(`  - ${x}\n`);
  } else {
    const prow = [['device', 'owner', 'layers', 'weights', 'kv cache', 'speed', 'time/token']];
    for (const d of s.plan.devices) {
      prow.push([
        d.device, d.owner,
        `${d.layers} (${d.layers > 0 ? `${d.first_layer}-${d.first_layer + d.layers - 1}${d.holds_output ? ' +out' : ''}` : 'none'})${d.expert_layers?.length ? ` +experts of ${layerRanges(d.expert_layers)}` : ''}`, formatBytes(Number(d.weight_bytes)), formatBytes(Number(d.kv_bytes)),
        d.bytes_per_second ? formatSpeed(d.bytes_per_second) : 'unmeasured', d.seconds_per_token ? `${(d.seconds_per_token * 1000).toFixed(2)} ms` : '-',
      ]);
    }
    out(table(prow) + '\n');
    out(`placement: ${s.plan.objective || '-'}; predicted ${predictedSpeed(s.plan.predicted_seconds_per_token || null)}\n`);
    if (s.last_replan) out(`last re-planned by itself: ${s.last_replan}\n`);
    for (const x of s.plan.excluded) out(`left out ${x}\n`);
  }
  const last = s.history[s.history.length - 1];
  if (last) {
    out(`\nserving (last ${Math.round((HISTORY_WINDOW_MS) / 1000)} s): ${servingLine(s.history)}\n`);
  }
  if (events > 0 && s.events.length > 0) {
    out('\nevents:\n');
    for (const e of s.events.slice(-events)) out(`  ${e.time.slice(11, 19)}  ${e.message}\n`);
  }
}

/** Every served model on a line: what it is, whether it is in memory, where its layers are, its queue and idle time. */
export function modelsTable(models: WireStatus['models'], now = Date.now()): string {
  const rows = [['model', 'kind', 'policy', 'status', 'layers on', 'memory', 'requests', 'last used', 'unloads in', 'note']];
  for (const m of models) {
    const where = m.status === 'loaded' || m.status === 'loading' ? m.plan.devices.filter((d) => d.layers > 0).map((d) => `${d.owner} ${d.layers}`).join(', ') : '';
    const ago = m.last_used > 0 ? `${Math.round((now - m.last_used) / 1000)} s ago` : 'never';
    const expires = m.expires > 0 ? `${Math.max(0, Math.round((m.expires - now) / 1000))} s` : '-';
    const note = m.state === 'serving' || m.state === 'unloaded' ? (m.state === 'unloaded' ? m.reason : '') : `${m.state}${m.reason ? `: ${m.reason}` : ''}`;
    rows.push([
      `${m.id}${m.aliases.length > 0 ? ` (${m.aliases.join(', ')})` : ''}`, m.kind, m.policy, m.status, where || '-', m.status === 'loaded' ? formatBytes(Number(m.loaded_bytes)) : '-',
      `${m.in_flight} in flight, ${m.waiting} waiting`, ago, expires, note,
    ]);
  }
  return table(rows);
}

/** How the history's recent samples read: tokens/s, time to first token, requests in flight and waiting. */
function servingLine(history: WireStatus['history']): string {
  const recent = history.filter((h) => h.t >= history[history.length - 1]!.t - HISTORY_WINDOW_MS);
  const tps = recent.reduce((a, h) => a + h.tokens_per_second, 0) / recent.length;
  const ttfts = recent.filter((h) => h.ttft_ms > 0);
  const ttft = ttfts.length > 0 ? `${Math.round(ttfts.reduce((a, h) => a + h.ttft_ms, 0) / ttfts.length)} ms to first token` : 'no new requests';
  const now = history[history.length - 1]!;
  return `${tps.toFixed(1)} tokens/s, ${ttft}; now ${now.in_flight} in flight, ${now.waiting} waiting`;
}

/** The serving line covers this much of the history. */
const HISTORY_WINDOW_MS = 10_000;

/**
 * `hearth status --watch`: the status redrawn every second until Ctrl-C, or until the coordinator goes
 * away (said, and exit code 1).
 */
async function watchStatus(client: CoordinatorClient, address: string): Promise<void> {
  const tty = process.stdout.isTTY === true;
  const quit = new AbortController();
  const stop = () => quit.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    while (!quit.signal.aborted) {
      let s: WireStatus;
      try {
        s = await client.getStatus(2000);
      } catch (e) {
        if (quit.signal.aborted) break;
        process.stdout.write(`\nthe coordinator at ${address} went away (${messageOf(e)}); stopped watching\n`);
        process.exitCode = 1;
        return;
      }
      let frame = '';
      printStatus(s, address, (x) => (frame += x), 10);
      // Home and clear, then the frame: a redraw in place, as top does (plain frames when not a terminal).
      process.stdout.write((tty ? '\x1b[H\x1b[2J' : '\n') + frame + `\n(${new Date().toLocaleTimeString()}; every second; Ctrl-C stops)\n`);
      await sleep(1000, undefined, { signal: quit.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
