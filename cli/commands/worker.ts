// `hearth worker`: run this machine's worker daemon until SIGINT or SIGTERM.
import type { Command } from 'commander';

import { configureLogger, type LogLevel } from '../../common/logger.js';
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
    stateDir: flags.stateDir,
    logLevel: flags.logLevel as WorkerFileSettings['logLevel'],
    token: flags.token,
    tokenFile: flags.tokenFile,
    insecure: flags.insecure,
  };
  return compileWorkerConfig({ file: flags.config ?? null, flags: settings, env });
}

export function registerWorkerCommand(program: Command): void {
  workerOptions(program.command('worker').description("serve this machine's devices to a hearth cluster (a supervised ggml-rpc-server, a gRPC control port, an mDNS advert)"))
    .action(async (flags: WorkerFlags, cmd: Command) => {
      const config = workerConfig(flags, cmd, process.env);
      const log = configureLogger({ level: config.logLevel as LogLevel, name: 'hearth-worker' }).child({ component: 'worker' });
      const daemon = new WorkerDaemon(config, log);

      await runUntilSignal(log, () => daemon.start(), () => daemon.stop());
    });
}
