// `hearth service install|status|uninstall|logs`: the worker or the coordinator as a service that
// starts at boot and again after a failure (a systemd unit on Linux, a launchd plist on macOS).
import { chownSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Command } from 'commander';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { currentAccount, invokingAccount, lookupAccount, type Account } from '../service/accounts.js';
import { launchdPlist, SERVICE_ROLES, systemdUnit, type ServiceDefinition, type ServiceRole, type ServiceScope } from '../service/definition.js';
import { servicePlace, servicePlatform, type ServicePlace } from '../service/locations.js';
import { Launchd, Systemd, type ServiceManager } from '../service/manager.js';
import { hearthEntry, serviceArgs } from '../service/service-args.js';
import { serviceEnvironment, serviceLibrary } from '../service/service-environment.js';

interface InstallOptions {
  user?: boolean;
  runAs?: string;
  force?: boolean;
  start: boolean;
  print?: boolean;
}

const out = (s: string) => process.stdout.write(s);

function roleOf(text: string): ServiceRole {
  if ((SERVICE_ROLES as readonly string[]).includes(text)) return text as ServiceRole;
  throw new HearthError(ErrorCode.InvalidArgument, `'${text}' is not a service hearth knows: give worker or coordinator, then its flags`);
}

/** HEARTH_SERVICE_ROOT: definitions go below this folder, and no service manager is asked (tests, packaging). */
function serviceRoot(): string | null {
  return process.env.HEARTH_SERVICE_ROOT || null;
}

function placeOf(role: ServiceRole, scope: ServiceScope, account: Account): ServicePlace {
  const mine = account.uid === currentAccount().uid;
  return servicePlace({ platform: servicePlatform(process.platform), scope, role, home: account.home, configHome: mine ? process.env.XDG_CONFIG_HOME : undefined, root: serviceRoot() });
}

function managerOf(place: ServicePlace, account: Account): ServiceManager {
  return place.platform === 'systemd' ? new Systemd(place) : new Launchd(place, account.uid);
}

const userFlag = (scope: ServiceScope) => (scope === 'user' ? ' --user' : '');

/** A write or removal refused for want of rights says what would have them. */
function withRights<T>(path: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new HearthError(ErrorCode.FailedPrecondition, `cannot ${what} ${path}: permission denied; a system-wide service needs root (run it with sudo), or use --user for a service of your own`);
    }
    throw new HearthError(ErrorCode.Internal, `cannot ${what} ${path}: ${messageOf(e)}`);
  }
}

/** Written beside, then renamed into place: a service manager never reads half a definition. */
function writeDefinition(file: string, text: string): void {
  withRights(file, 'write', () => {
    mkdirSync(dirname(file), { recursive: true });
    const temporary = `${file}.hearth-new`;
    writeFileSync(temporary, text, { mode: 0o644 });
    renameSync(temporary, file);
  });
}

function install(roleText: string, flags: string[], o: InstallOptions): void {
  const role = roleOf(roleText);
  const scope: ServiceScope = o.user ? 'user' : 'system';
  if (o.user && o.runAs !== undefined) throw new HearthError(ErrorCode.InvalidArgument, '--run-as is for a system-wide service; a --user service runs as you');
  const me = currentAccount();
  const account = scope === 'user' ? me : o.runAs !== undefined ? lookupAccount(o.runAs, process.platform) : invokingAccount(process.env, process.platform);
  const environment = serviceEnvironment(process.env, account, account.uid === me.uid, process.cwd());
  const carried = serviceArgs({ role, args: flags, cwd: process.cwd(), env: environment, invokerHasTokenEnv: !!process.env.HEARTH_TOKEN, account });
  const entry = hearthEntry();
  const def: ServiceDefinition = { role, scope, command: [process.execPath, entry, role, ...carried.args], workingDirectory: account.home, environment, user: account.name };
  const place = placeOf(role, scope, account);
  const text = place.platform === 'systemd' ? systemdUnit(def) : launchdPlist(def, { label: place.name, logFile: place.logFile! });
  if (o.print) {
    out(text);
    return;
  }

  const replaced = existsSync(place.file);
  if (replaced && !o.force) {
    throw new HearthError(
      ErrorCode.FailedPrecondition,
      `${place.name} is installed already (${place.file}): add --force to replace it and restart the service, or remove it first with \`hearth service uninstall ${role}${userFlag(scope)}\``,
    );
  }
  writeDefinition(place.file, text);
  if (place.logFile) {
    const logDir = dirname(serviceRoot() === null ? place.logFile : `${serviceRoot()}${place.logFile}`);
    withRights(logDir, 'create', () => mkdirSync(logDir, { recursive: true }));
    if (scope === 'system' && me.uid === 0) chownSync(logDir, account.uid, -1);
  }
  out(`${replaced ? 'replaced' : 'wrote'} ${place.file}\n`);
  out(`  runs:   ${def.command.join(' ')}\n`);
  out(`  as:     ${account.name}, in ${def.workingDirectory}, with ${Object.keys(environment).join(', ')} set\n`);
  out(`  models: ${serviceLibrary(environment)} (the model library, unless the flags name files)\n`);
  if (carried.tokenFile) out(`  token:  ${carried.tokenFile} (${account.name}'s alone)\n`);
  if (place.logFile) out(`  log:    ${place.logFile}\n`);
  if (place.platform === 'systemd' && scope === 'user') {
    out(`  a user service starts at boot only when ${account.name}'s services linger: \`loginctl enable-linger ${account.name}\`\n`);
  }
  if (/[\\/]_npx[\\/]/.test(entry)) {
    process.stderr.write(`hearth: note: ${entry} is in npx's cache, which npm may clear; install hearth for good (npm install -g) and install the service from there\n`);
  }
  if (o.start) start(place, account, replaced);
  else out(`not started (--no-start): it starts at the next boot, or now with \`${startCommand(place, account)}\`\n`);
}

function startCommand(place: ServicePlace, account: Account): string {
  if (place.platform === 'systemd') return `systemctl${userFlag(place.scope)} enable --now ${place.name}`;
  return `launchctl bootstrap ${place.scope === 'system' ? 'system' : `gui/${account.uid}`} ${place.file}`;
}

/** Asks the service manager to take the definition just written and run it; says why when it cannot. */
function start(place: ServicePlace, account: Account, replaced: boolean): void {
  if (serviceRoot() !== null) {
    out(`not started: HEARTH_SERVICE_ROOT=${serviceRoot()} holds the files, and no service manager is asked\n`);
    return;
  }
  const manager = managerOf(place, account);
  const why = manager.unavailable();
  if (why) {
    process.stderr.write(`hearth: ${place.name} could not be started: ${why}. The definition is written; it starts at boot on a machine that runs systemd.\n`);
    return;
  }
  try {
    manager.activate(replaced);
  } catch (e) {
    throw new HearthError(ErrorCode.Unavailable, `${place.name} is written to ${place.file} but could not be started: ${messageOf(e)}`);
  }
  const user = userFlag(place.scope);
  out(
    `${replaced ? 'restarted' : 'started'}: ${place.name} runs now and at every ${place.scope === 'user' && place.platform === 'launchd' ? 'login' : 'boot'}; ` +
      `\`hearth service status ${place.role}${user}\` shows it, \`hearth service logs ${place.role}${user} -f\` follows its log\n`,
  );
}

function status(roleText: string | undefined, o: { user?: boolean }): void {
  const scope: ServiceScope = o.user ? 'user' : 'system';
  const account = scope === 'user' ? currentAccount() : invokingAccount(process.env, process.platform);
  for (const role of roleText === undefined ? SERVICE_ROLES : [roleOf(roleText)]) {
    const place = placeOf(role, scope, account);
    if (!existsSync(place.file)) {
      const other = placeOf(role, scope === 'user' ? 'system' : 'user', scope === 'user' ? invokingAccount(process.env, process.platform) : currentAccount());
      const hint = existsSync(other.file) ? `; a ${other.scope === 'user' ? 'user' : 'system-wide'} one is (${other.file}): ${other.scope === 'user' ? 'add' : 'drop'} --user` : '';
      out(`${role}: not installed (no ${place.file})${hint}\n`);
      continue;
    }
    out(`${role}: installed, ${place.file}\n`);
    const manager = managerOf(place, account);
    const why = serviceRoot() !== null ? 'HEARTH_SERVICE_ROOT is set, so no service manager is asked' : manager.unavailable();
    out(`  state: ${why ? `unknown: ${why}` : manager.state()}\n`);
  }
}

function uninstall(roleText: string, o: { user?: boolean }): void {
  const role = roleOf(roleText);
  const scope: ServiceScope = o.user ? 'user' : 'system';
  const account = scope === 'user' ? currentAccount() : invokingAccount(process.env, process.platform);
  const place = placeOf(role, scope, account);
  if (!existsSync(place.file)) {
    out(`${place.name} is not installed (no ${place.file}): nothing to remove\n`);
    return;
  }
  const manager = serviceRoot() === null ? managerOf(place, account) : null;
  const why = manager === null ? 'HEARTH_SERVICE_ROOT is set' : manager.unavailable();
  if (manager && !why) {
    try {
      manager.deactivate();
    } catch (e) {
      process.stderr.write(`hearth: ${messageOf(e)}; removing the definition anyway\n`);
    }
  }
  withRights(place.file, 'remove', () => rmSync(place.file));
  if (manager && !why) manager.forget();
  out(`removed ${place.file}${why ? ` (nothing was stopped: ${why})` : `; ${place.name} is stopped`}; token files and the model library are left as they are\n`);
}

async function logs(roleText: string, o: { user?: boolean; follow?: boolean; lines: string }): Promise<void> {
  const role = roleOf(roleText);
  const scope: ServiceScope = o.user ? 'user' : 'system';
  const account = scope === 'user' ? currentAccount() : invokingAccount(process.env, process.platform);
  const place = placeOf(role, scope, account);
  const lines = Number(o.lines);
  if (!Number.isSafeInteger(lines) || lines < 0) throw new HearthError(ErrorCode.InvalidArgument, `--lines: '${o.lines}' is not a whole number >= 0`);
  const installed = existsSync(place.file) ? `installed at ${place.file}` : `not installed (no ${place.file})`;
  if (serviceRoot() !== null) throw new HearthError(ErrorCode.FailedPrecondition, `${place.name} is ${installed}; HEARTH_SERVICE_ROOT is set, so no service manager is asked for logs`);
  const manager = managerOf(place, account);
  const why = manager.unavailable();
  if (why) throw new HearthError(ErrorCode.FailedPrecondition, `${why}: no journal holds ${place.name}'s logs (it is ${installed})`);
  if (place.logFile && !existsSync(place.logFile)) throw new HearthError(ErrorCode.NotFound, `no log at ${place.logFile} yet: ${place.name} is ${installed}`);
  process.exitCode = await manager.logs(lines, o.follow === true);
}

export function registerServiceCommands(program: Command): void {
  const service = program
    .command('service')
    .description('run the worker or the coordinator at boot, started again after a failure (systemd on Linux, launchd on macOS)');

  service
    .command('install')
    .description("write a service that runs `hearth ROLE FLAGS...` at boot, and start it; the flags are checked as the role's command checks them")
    .argument('<role>', 'worker or coordinator')
    .argument('[flags...]', 'the flags `hearth worker` or `hearth coordinator` would take; paths are made absolute; the token only as --token-file, private to the service\'s user')
    .option('--user', "a service of the invoking user's (systemd --user, a launchd agent) instead of a system-wide one")
    .option('--run-as <user>', 'the account a system-wide service runs as (default: you; under sudo, the user who ran sudo)')
    .option('--force', 'replace an installed service of this role, and restart it')
    .option('--no-start', 'write the definition only; it starts at the next boot')
    .option('--print', 'print the definition instead of installing it')
    .allowUnknownOption()
    .action((role: string, flags: string[], o: InstallOptions) => install(role, flags, o));

  service
    .command('status')
    .description('whether the worker and coordinator services are installed, and whether they run')
    .argument('[role]', 'worker or coordinator (default: both)')
    .option('--user', "the invoking user's services")
    .action((role: string | undefined, o: { user?: boolean }) => status(role, o));

  service
    .command('uninstall')
    .description('stop a service, take it out of the boot and remove its definition')
    .argument('<role>', 'worker or coordinator')
    .option('--user', "the invoking user's service")
    .action((role: string, o: { user?: boolean }) => uninstall(role, o));

  service
    .command('logs')
    .description("a service's logs: the journal under systemd, its log file under launchd")
    .argument('<role>', 'worker or coordinator')
    .option('--user', "the invoking user's service")
    .option('-f, --follow', 'keep showing new lines (Ctrl-C stops)')
    .option('-n, --lines <n>', 'how many of the last lines to show first', '100')
    .action((role: string, o: { user?: boolean; follow?: boolean; lines: string }) => logs(role, o));
}
