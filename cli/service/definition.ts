// What `hearth service install` writes: a systemd unit or a launchd property list that runs one
// hearth command at boot and again after a failure. Pure: text from a resolved definition.
import { ErrorCode, HearthError } from '../../common/errors.js';

export const SERVICE_ROLES = ['worker', 'coordinator'] as const;
export type ServiceRole = (typeof SERVICE_ROLES)[number];

/** system: started by the machine at boot, as `user`; user: by the user's own service manager. */
export type ServiceScope = 'system' | 'user';

/** A service, resolved: absolute paths, the account it runs as, its environment. */
export interface ServiceDefinition {
  readonly role: ServiceRole;
  readonly scope: ServiceScope;
  /** The node binary, hearth's bin/hearth.js, the role, then its flags. */
  readonly command: readonly string[];
  readonly workingDirectory: string;
  /** HOME first, then what hearth reads from the environment (never a secret). */
  readonly environment: Readonly<Record<string, string>>;
  /** The account of a system-wide service; a user service runs as its user. */
  readonly user: string;
}

/** Seconds between a failure and the next start. */
export const RESTART_SECONDS = 5;
/**
 * How long a stop may take before the service manager kills what is left: a worker drains first (the
 * coordinator re-plans without it and releases it, at most --drain-timeout, 60 s by default).
 */
const STOP_SECONDS = 90;

const DESCRIPTION: Record<ServiceRole, string> = {
  worker: "hearth worker: lends this machine's devices to a hearth cluster",
  coordinator: 'hearth coordinator: serves a model across the workers of a hearth cluster',
};

/** Who wrote the file and how to replace or remove it (no `--`, which an XML comment cannot hold). */
function header(def: ServiceDefinition): string[] {
  const how = def.scope === 'user' ? 'with the user flag ' : '';
  return [
    `Written by \`hearth service install ${def.role}\`: installing again ${how}with the force flag replaces it,`,
    `\`hearth service uninstall ${def.role}\` ${how}removes it. Edits made here are lost on the next install.`,
  ];
}

/**
 * The systemd unit. Restart=on-failure: hearth exits 0 when it is stopped (SIGTERM), non-zero when it
 * fails. KillMode=mixed: SIGTERM reaches hearth alone, which stops its own children (the rpc server,
 * the engine) in order; whatever is left after the stop timeout is killed.
 */
export function systemdUnit(def: ServiceDefinition): string {
  const lines = [...header(def).map((l) => `# ${l}`), '', '[Unit]', `Description=${specifierSafe(DESCRIPTION[def.role])}`];
  // A user manager has no network-online.target to wait for: ordering against the system's is ignored there.
  if (def.scope === 'system') lines.push('After=network-online.target', 'Wants=network-online.target');
  lines.push('', '[Service]', 'Type=simple');
  if (def.scope === 'system') lines.push(`User=${systemdUserName(def.user)}`);
  lines.push(`WorkingDirectory=${specifierSafe(checkedText(def.workingDirectory))}`);
  for (const [name, value] of Object.entries(def.environment)) lines.push(`Environment=${systemdWord(`${name}=${value}`, false)}`);
  lines.push(`ExecStart=${def.command.map((a) => systemdWord(a, true)).join(' ')}`);
  lines.push('Restart=on-failure', `RestartSec=${RESTART_SECONDS}`, 'KillMode=mixed', `TimeoutStopSec=${STOP_SECONDS}`, '');
  lines.push('[Install]', `WantedBy=${def.scope === 'system' ? 'multi-user.target' : 'default.target'}`, '');
  return lines.join('\n');
}

/**
 * One word of a systemd command line or assignment (systemd.syntax(7), systemd.service(7)): `%` is a
 * specifier and `$` (on command lines) a variable unless doubled; words with anything but plain
 * characters go in double quotes, where backslash and quote are escaped.
 */
export function systemdWord(text: string, commandLine: boolean): string {
  let s = specifierSafe(checkedText(text));
  if (commandLine) s = s.replaceAll('$', () => '$$');
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `"${s.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function specifierSafe(s: string): string {
  return s.replaceAll('%', '%%');
}

function systemdUserName(name: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?$/.test(name)) throw new HearthError(ErrorCode.InvalidArgument, `'${name}' cannot be a service's User= (systemd takes plain user names)`);
  return name;
}

/** A control character would end a line of the unit or be invalid XML: refused rather than escaped. */
function checkedText(s: string): string {
  if (/[\x00-\x1f\x7f]/.test(s)) throw new HearthError(ErrorCode.InvalidArgument, `${JSON.stringify(s)} holds a control character, which a service definition cannot carry`);
  return s;
}

export interface LaunchdOptions {
  readonly label: string;
  /** Where launchd writes the service's stdout and stderr (launchd keeps no journal). */
  readonly logFile: string;
}

/**
 * The launchd property list: started at load (boot for a daemon, login for an agent), started again
 * when it exits unsuccessfully (KeepAlive.SuccessfulExit = false), no sooner than RESTART_SECONDS apart.
 */
export function launchdPlist(def: ServiceDefinition, o: LaunchdOptions): string {
  const str = (s: string) => `<string>${xml(s)}</string>`;
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    `<!-- ${header(def).join('\n     ')} -->`,
    '<plist version="1.0">',
    '<dict>',
    `  <key>Label</key>${str(o.label)}`,
    '  <key>ProgramArguments</key>',
    '  <array>',
    ...def.command.map((a) => `    ${str(a)}`),
    '  </array>',
    `  <key>WorkingDirectory</key>${str(def.workingDirectory)}`,
    '  <key>EnvironmentVariables</key>',
    '  <dict>',
    ...Object.entries(def.environment).map(([k, v]) => `    <key>${xml(k)}</key>${str(v)}`),
    '  </dict>',
  ];
  if (def.scope === 'system') out.push(`  <key>UserName</key>${str(def.user)}`);
  out.push(
    '  <key>RunAtLoad</key><true/>',
    '  <key>KeepAlive</key>',
    '  <dict>',
    '    <key>SuccessfulExit</key><false/>',
    '  </dict>',
    `  <key>ThrottleInterval</key><integer>${RESTART_SECONDS}</integer>`,
    `  <key>ExitTimeOut</key><integer>${STOP_SECONDS}</integer>`,
    `  <key>StandardOutPath</key>${str(o.logFile)}`,
    `  <key>StandardErrorPath</key>${str(o.logFile)}`,
    '</dict>',
    '</plist>',
    '',
  );
  return out.join('\n');
}

function xml(s: string): string {
  return checkedText(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}
