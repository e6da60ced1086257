// The flags a service runs `hearth worker` or `hearth coordinator` with, checked at install by the
// command's own parser and config compiler, so a service that could not start is refused now, with
// the words the command itself would use. Secrets never go into the definition, which others can read.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';

import { ErrorCode, HearthError, isHearthError } from '../../common/errors.js';
import type { ClusterSecret } from '../../link/token.js';
import { parseModelRef } from '../../models/model-ref.js';
import { checkCoordinatorStart, clusterConfig, coordinatorOptions, type ClusterFlags } from '../commands/coordinator.js';
import { workerConfig, workerOptions, type WorkerFlags } from '../commands/worker.js';
import { llamaServerFlags } from '../options.js';
import type { Account } from './accounts.js';
import type { ServiceRole } from './definition.js';
import { privateFileRefusal } from './private-file.js';

export interface ServiceArgsInputs {
  readonly role: ServiceRole;
  /** The flags given after the role. */
  readonly args: readonly string[];
  /** Relative paths among them are resolved against this folder. */
  readonly cwd: string;
  /** The environment the service will have (serviceEnvironment): what the config compilers see. */
  readonly env: Readonly<Record<string, string>>;
  /** Whether HEARTH_TOKEN is set where install runs: it does not reach a service, and a refusal says so. */
  readonly invokerHasTokenEnv: boolean;
  readonly account: Account;
}

export interface ServiceArgs {
  /** The flags, with every path made absolute (a service's working directory is its user's home). */
  readonly args: string[];
  /** The file the service reads its cluster token from, checked private to its user; null without one. */
  readonly tokenFile: string | null;
}

const TOKEN_ADVICE =
  'a service definition can be read by every user of this machine. Keep the token in a file: `hearth token > cluster.token` ' +
  '(or save the cluster\'s token there), `chmod 600 cluster.token`, and give --token-file cluster.token';

const TOKEN_ENV_NOTE = 'HEARTH_TOKEN is set here, but a service does not get it (a definition is no place for a secret): give --token-file FILE';

export function serviceArgs(i: ServiceArgsInputs): ServiceArgs {
  // Checked as the service will run it: with absolute paths, from any working directory.
  const args = absolutePaths(llamaServerFlags(i.args), i.role, i.cwd);
  const { flags, cmd } = parseAs(i.role, args);
  if (flags.token !== undefined) throw new HearthError(ErrorCode.InvalidArgument, `--token: ${TOKEN_ADVICE}`);
  if (flags.apiKey !== undefined) {
    throw new HearthError(ErrorCode.InvalidArgument, '--api-key: a service definition can be read by every user of this machine. Put the keys in cluster.yaml (apiKeys:), `chmod 600` it, and give --config cluster.yaml');
  }
  const { secret, apiKeysInConfig } = compiled(i, cmd);
  if (secret === null && i.invokerHasTokenEnv) throw new HearthError(ErrorCode.InvalidArgument, `${TOKEN_ENV_NOTE}, or unset it for an open cluster`);
  const config = typeof flags.config === 'string' ? flags.config : null;
  const tokenFile = secret?.source === 'file' ? secret.file : null;
  const refusal =
    (tokenFile && privateFileRefusal('the token file', tokenFile, i.account)) ||
    (config && secret?.source === 'config' && privateFileRefusal('the config file (it holds the cluster token)', config, i.account)) ||
    (config && apiKeysInConfig && privateFileRefusal('the config file (it holds API keys)', config, i.account));
  if (refusal) throw new HearthError(ErrorCode.FailedPrecondition, refusal);
  return { args, tokenFile };
}

/** The role's config compiled, and checked, as the command does before it starts anything. */
function compiled(i: ServiceArgsInputs, cmd: Command): { secret: ClusterSecret | null; apiKeysInConfig: boolean } {
  try {
    if (i.role === 'worker') return { secret: workerConfig(cmd.opts<WorkerFlags>(), cmd, i.env).secret, apiKeysInConfig: false };
    const config = clusterConfig(cmd.opts<ClusterFlags>(), cmd, i.env);
    checkCoordinatorStart(config);
    // What the coordinator would say first when it starts: a model named as a file must be there.
    for (const file of [config.model, config.speculation?.draftModel ?? null]) {
      if (file !== null && !existsSync(file)) throw new HearthError(ErrorCode.NotFound, `model file not found: ${file}`);
    }
    return { secret: config.secret, apiKeysInConfig: config.apiKeys.length > 0 };
  } catch (e) {
    // The worker's protected mode: the token it would have found in HEARTH_TOKEN here is not there.
    if (isHearthError(e, ErrorCode.FailedPrecondition) && i.role === 'worker' && i.invokerHasTokenEnv) {
      throw new HearthError(e.code, `${e.message}. ${TOKEN_ENV_NOTE}`);
    }
    throw e;
  }
}

/** The flags parsed by the command's own options: an unknown or malformed flag fails as it would there. */
function parseAs(role: ServiceRole, args: readonly string[]): { flags: Record<string, unknown>; cmd: Command } {
  const cmd = (role === 'worker' ? workerOptions : coordinatorOptions)(new Command(role)).exitOverride().action(() => undefined);
  cmd.parse([...args], { from: 'user' });
  return { flags: cmd.opts(), cmd };
}

/** Flags whose values are paths, and (for --model) which values are. */
const PATH_FLAGS: Record<ServiceRole, Record<string, (value: string) => boolean>> = {
  worker: { '--token-file': always, '--config': always, '--models': always, '--cache-dir': always, '--state-dir': always },
  coordinator: { '--token-file': always, '--config': always, '--draft-model': always, '--model': (v) => parseModelRef(v).kind === 'file' },
};

function always(): boolean {
  return true;
}

function absolutePaths(args: readonly string[], role: ServiceRole, cwd: string): string[] {
  const out: string[] = [];
  for (let k = 0; k < args.length; k++) {
    const a = args[k]!;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const isPath = PATH_FLAGS[role][name];
    const fix = (v: string) => (isPath?.(v) ? resolve(cwd, v) : v);
    if (!isPath) out.push(a);
    else if (eq > 0) out.push(`${name}=${fix(a.slice(eq + 1))}`);
    else if (k + 1 < args.length) out.push(a, fix(args[++k]!));
    else out.push(a);
  }
  return out;
}

/** bin/hearth.js of this installation: the nearest one above this module, from source or from dist/. */
export function hearthEntry(from = fileURLToPath(import.meta.url)): string {
  for (let dir = dirname(from); ; dir = dirname(dir)) {
    const entry = join(dir, 'bin', 'hearth.js');
    if (existsSync(entry)) return entry;
    if (dirname(dir) === dir) throw new HearthError(ErrorCode.Internal, `cannot find bin/hearth.js of this hearth installation above ${from}`);
  }
}
