// `hearth worker`: run this machine's worker daemon until SIGINT or SIGTERM, which make it leave the
// cluster gracefully; `hearth worker drain`: ask a running worker to leave the same way.
import type { Command } from 'commander';

import { ErrorCode, HearthError, isHearthError, messageOf } from '../../common/errors.js';
import { configureLogger, type LogLevel } from '../../common/logger.js';
import { LinkError } from '../../link/relay.js';
import { resolveSecret } from '../../link/token.js';
import { WorkerClient } from '../../link/worker-client.js';
import { compileWorkerConfig, type WorkerConfig, type WorkerConfigSources, type WorkerFileSettings } from '../../worker/config.js';
import { WorkerDaemon } from '../../worker/daemon.js';
import { runUntilSignal } from '../lifecycle.js';
import { parseInteger } from '../options.js';

export interface WorkerFlags {
  name?: string;
  host?: string;
  rpcPort?: string;
  controlPort?: string;
  device?: string;
  threads?: string;
  memory?: string;
  calibrate: boolean;
  recalibrate?: string;
  models?: string;
  cacheDir?: string;
  cache: boolean;
  mdns: boolean;
  drainTimeout?: string;
  stateDir?: string;
  config?: string;
  logLevel?: string;
  token?: string;
  tokenFile?: string;
  insecure?: boolean;
}

/** `hearth worker`'s options on `cmd`: the command itself and `hearth service install worker` parse with them. */
export function workerOptions(cmd: Command): Command {
  return cmd
    .option('--name <name>', 'name shown to the cluster (default: the host name)')
    .option('--host <addr>', 'IPv4 address to bind both ports to; 127.0.0.1 keeps the worker local (default 0.0.0.0)')
    .option('--rpc-port <port>', "llama.cpp RPC server's port (default 50052)")
    .option('--control-port <port>', 'gRPC control port (default 50051)')
    .option('--device <list>', 'devices to serve, comma separated, e.g. CUDA0,CPU (default: every GPU, else the CPU)')
    .option('--threads <n>', "CPU threads for the RPC server (default: all cores, or the cgroup's CPU quota)")
    .option('--memory <size>', 'the most memory this machine lends the cluster, over all its devices, e.g. 8GiB (default: all that is free)')
    .option('--models <dir>', "GGUF models on this machine's disk: their weights go into the tensor cache ahead of time, so loads of them send hashes, not weights")
    .option('--recalibrate <seconds>', 'measure the devices again this often while the rpc server is idle, so the coordinator sees a machine that got busy (default 300; 0: only at start)')
    .option('--no-calibrate', "skip measuring the devices' speed at start (speed-aware placement then treats them as typical)")
    .option('--cache-dir <dir>', 'tensor cache directory (default ~/.cache/hearth/rpc-cache)')
    .option('--no-cache', 'do not keep received tensors on disk')
    .option('--no-mdns', 'do not advertise over mDNS (coordinators must list this worker)')
    .option('--drain-timeout <seconds>', 'on SIGTERM, SIGINT or `hearth worker drain`, wait at most this long for the coordinator to re-plan without this worker and release it (default 60; a second signal stops at once)')
    .option('--state-dir <dir>', "where the worker's id is kept (default ~/.local/state/hearth)")
    .option('--config <file>', 'YAML file with these settings (flags win)')
    .option('--token-file <file>', 'file holding the cluster token (made by `hearth token`); only holders of it can use this worker')
    .option('--token <token>', 'the cluster token itself (HEARTH_TOKEN or --token-file keep it out of the process list)')
    .option('--insecure', 'serve on the network without a token (protected mode off): anyone who reaches the ports can use this machine')
    .option('--log-level <level>', 'trace, debug, info, warn or error');
}

/** The worker's config from its parsed flags, as `hearth worker` compiles it (the service install too). */
export function workerConfig(flags: WorkerFlags, cmd: Command, env: WorkerConfigSources['env']): WorkerConfig {
  const fromCli = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  const settings: WorkerFileSettings = {
    name: flags.name,
    host: flags.host,
    rpcPort: flags.rpcPort === undefined ? undefined : parseInteger(flags.rpcPort, '--rpc-port', { min: 1, max: 65535 }),
    controlPort: flags.controlPort === undefined ? undefined : parseInteger(flags.controlPort, '--control-port', { min: 1, max: 65535 }),
    devices: flags.device === undefined ? undefined : flags.device.split(/[,/]/).map((s) => s.trim()).filter(Boolean),
    threads: flags.threads === undefined ? undefined : parseInteger(flags.threads, '--threads', { min: 1, max: 1024 }),
    memory: flags.memory,
    models: flags.models,
    calibrate: fromCli('calibrate') ? flags.calibrate : undefined,
    recalibrateSeconds: flags.recalibrate === undefined ? undefined : parseInteger(flags.recalibrate, '--recalibrate', { min: 0, max: 86_400 }),
    cacheDir: fromCli('cache') && !flags.cache ? null : flags.cacheDir,
    mdns: fromCli('mdns') ? flags.mdns : undefined,
    drainTimeoutSeconds: flags.drainTimeout === undefined ? undefined : parseInteger(flags.drainTimeout, '--drain-timeout', { min: 0, max: 3600 }),
    stateDir: flags.stateDir,
    logLevel: flags.logLevel as WorkerFileSettings['logLevel'],
    token: flags.token,
    tokenFile: flags.tokenFile,
    insecure: flags.insecure,
  };
  return compileWorkerConfig({ file: flags.config ?? null, flags: settings, env });
}

export function registerWorkerCommand(program: Command): void {
  const worker = workerOptions(program.command('worker').description("serve this machine's devices to a hearth cluster (a supervised ggml-rpc-server, a gRPC control port, an mDNS advert)"))
    .action(async (flags: WorkerFlags, cmd: Command) => {
      const config = workerConfig(flags, cmd, process.env);
      const log = configureLogger({ level: config.logLevel as LogLevel, name: 'hearth-worker' }).child({ component: 'worker' });
      const daemon = new WorkerDaemon(config, log);

      // A signal makes the worker leave (a failed start just stops); so does a Drain call, which ends the process too.
      await runUntilSignal(log, () => daemon.start(), (signal) => (signal ? daemon.leave(signal) : daemon.stop()), { ended: daemon.stopped });
    });

  worker
    .command('drain')
    .description('ask a running worker to leave the cluster: its coordinator re-plans without it and releases it, then it stops (what SIGTERM does)')
    .option('--control <host:port>', "the worker's control address (default: from --config, else 127.0.0.1:50051)")
    .option('--config <file>', "the worker's YAML file: its control port and token")
    .option('--token-file <file>', 'file holding the cluster token, when the worker has one')
    .option('--token <token>', 'the cluster token itself (HEARTH_TOKEN or --token-file keep it out of the process list)')
    .option('--reason <text>', 'why, for the coordinator\'s events and `hearth status`', 'drain requested')
    .option('--no-wait', 'return once the worker is draining, without waiting for it to be released')
    .action(async (opts: DrainFlags) => {
      await drainWorker(opts, (line) => process.stdout.write(`${line}\n`));
    });
}

interface DrainFlags {
  control?: string;
  config?: string;
  tokenFile?: string;
  token?: string;
  reason: string;
  wait: boolean;
}

/** `hearth worker drain`: starts the worker's drain, then (unless --no-wait) waits until it has ended. */
async function drainWorker(opts: DrainFlags, say: (line: string) => void): Promise<void> {
  // Only its address and token are read: drain serves nothing, so protected mode is the daemon's concern.
  const fromFile = opts.config ? compileWorkerConfig({ file: opts.config, flags: { insecure: true }, env: {} }) : null;
  const control = opts.control ?? (fromFile ? `${fromFile.host === '0.0.0.0' ? '127.0.0.1' : fromFile.host}:${fromFile.controlPort}` : '127.0.0.1:50051');
  const secret = resolveSecret({ flag: opts.token, file: opts.tokenFile, env: process.env.HEARTH_TOKEN }) ?? fromFile?.secret ?? null;
  let client: WorkerClient;
  try {
    client = await WorkerClient.open(control, secret, { check: true });
  } catch (e) {
    throw e instanceof LinkError ? new HearthError(ErrorCode.Unavailable, `cannot reach the worker at ${control}: ${e.message}`) : e;
  }
  try {
    const started = await client.drain({ reason: opts.reason, wait: false }, { timeoutMs: 5000 }).catch((e: unknown) => {
      const hint = secret ? '' : ' (a worker started with a cluster token answers only clients given it: --token-file)';
      throw new HearthError(ErrorCode.Unavailable, `${messageOf(e)}${hint}`);
    });
    say(
      started.watched
        ? `worker at ${control} is leaving (${started.reason}): its coordinator re-plans without it, then releases it (at most ${started.timeout_ms / 1000} s)`
        : `worker at ${control} is leaving (${started.reason}): no coordinator uses it, so it stops now`,
    );
    if (!opts.wait || !started.watched) return;
    // The same call again joins the drain and answers when it has ended. A drain that ended between
    // the two calls leaves no one to answer: the worker has stopped.
    const end = await client.drain({ reason: opts.reason, wait: true }, { timeoutMs: started.timeout_ms + 15_000 }).catch((e: unknown) => {
      if (isHearthError(e) && e.code === ErrorCode.DeadlineExceeded) throw new HearthError(ErrorCode.DeadlineExceeded, `worker at ${control} is still draining past its timeout: ${e.message}`);
      return null;
    });
    say(end ? `worker at ${control}: ${end.message}; it stops` : `worker at ${control} has stopped`);
  } finally {
    client.close();
  }
}
