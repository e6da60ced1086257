// The service managers hearth asks to start, stop and describe a service: systemd (systemctl,
// journalctl) and launchd (launchctl). Commands go through a Runner, so the order of the calls can be
// tested with a fake; the real one runs them.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { ServicePlace } from './locations.js';

export interface RunResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Set when the command could not be run at all (not installed). */
  readonly error: string | null;
}

export interface Runner {
  run(cmd: string, args: readonly string[]): RunResult;
  /** Runs with the terminal attached (logs, followed); resolves with the exit code. */
  attached(cmd: string, args: readonly string[]): Promise<number>;
}

export const realRunner: Runner = {
  run(cmd, args) {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error ? r.error.message : null };
  },
  attached(cmd, args) {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: 'inherit' });
      child.once('error', (e) => reject(new HearthError(ErrorCode.Unavailable, `${cmd} could not be run: ${e.message}`)));
      child.once('exit', (code) => resolve(code ?? 1));
    });
  },
};

export interface ServiceManager {
  /** Why this manager cannot be asked anything here (it is not running), or null. */
  unavailable(): string | null;
  /** Makes the manager read the definition just written, start it at boot, and start it now (again, when `replaced`). */
  activate(replaced: boolean): void;
  /** Stops the service and takes it out of the boot; the definition stays for the caller to remove. */
  deactivate(): void;
  /** Makes the manager forget a definition that was removed. */
  forget(): void;
  /** One line: whether it runs, since when, whether it starts at boot. */
  state(): string;
  /** Shows the service's logs (the last `lines`, then new ones while `follow`); resolves with the exit code. */
  logs(lines: number, follow: boolean): Promise<number>;
}

/** Facts about this machine that say whether systemd runs it. */
export interface SystemdHost {
  /** sd_booted(): systemd creates /run/systemd/system when it is PID 1. */
  booted(): boolean;
  /** The name of PID 1, for the message when it is not systemd. */
  pid1(): string;
}

export const realSystemdHost: SystemdHost = {
  booted: () => existsSync('/run/systemd/system'),
  pid1: () => {
    try {
      return readFileSync('/proc/1/comm', 'utf8').trim();
    } catch {
      return 'unknown';
    }
  },
};

export class Systemd implements ServiceManager {
  readonly #place: ServicePlace;
  readonly #run: Runner;
  readonly #host: SystemdHost;
  readonly #scope: string[];

  constructor(place: ServicePlace, runner: Runner = realRunner, host: SystemdHost = realSystemdHost) {
    this.#place = place;
    this.#run = runner;
    this.#host = host;
    this.#scope = place.scope === 'user' ? ['--user'] : [];
  }

  unavailable(): string | null {
    if (this.#host.booted()) return null;
    return `systemd is not running on this machine (PID 1 is ${this.#host.pid1()}, and there is no /run/systemd/system), so there is no service manager to ask`;
  }

  activate(replaced: boolean): void {
    this.#systemctl('daemon-reload');
    if (replaced) {
      this.#systemctl('enable', this.#place.name);
      this.#systemctl('restart', this.#place.name);
    } else {
      this.#systemctl('enable', '--now', this.#place.name);
    }
  }

  deactivate(): void {
    this.#systemctl('disable', '--now', this.#place.name);
  }

  forget(): void {
    this.#systemctl('daemon-reload');
  }

  state(): string {
    const r = this.#run.run('systemctl', [...this.#scope, 'show', this.#place.name, '--property=ActiveState,SubState,UnitFileState,MainPID,NRestarts,ActiveEnterTimestamp']);
    if (r.error || r.status !== 0) return `systemctl cannot tell: ${(r.error ?? r.stderr).trim()}`;
    return systemdStateLine(r.stdout);
  }

  logs(lines: number, follow: boolean): Promise<number> {
    return this.#run.attached('journalctl', [...this.#scope, '--unit', this.#place.name, '--lines', String(lines), '--no-pager', ...(follow ? ['--follow'] : [])]);
  }

  #systemctl(...args: string[]): void {
    const full = [...this.#scope, ...args];
    const r = this.#run.run('systemctl', full);
    if (r.error !== null || r.status !== 0) {
      throw new HearthError(ErrorCode.Unavailable, `\`systemctl ${full.join(' ')}\` failed: ${(r.error ?? r.stderr).trim() || `exit code ${r.status}`}`);
    }
  }
}

/** `systemctl show`'s properties as one line: "running (pid 1234) since …, 0 restarts; enabled at boot". */
export function systemdStateLine(show: string): string {
  const p = Object.fromEntries(show.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const run = p.ActiveState === 'active' ? `${p.SubState ?? 'running'}${p.MainPID && p.MainPID !== '0' ? ` (pid ${p.MainPID})` : ''}${p.ActiveEnterTimestamp ? ` since ${p.ActiveEnterTimestamp}` : ''}` : `${p.ActiveState ?? 'unknown'} (${p.SubState ?? '?'})`;
  const restarts = p.NRestarts ? `, ${p.NRestarts} restarts after failures` : '';
  const boot = p.UnitFileState === 'enabled' ? 'starts at boot' : `does not start at boot (${p.UnitFileState || 'unknown'})`;
  return `${run}${restarts}; ${boot}`;
}

export class Launchd implements ServiceManager {
  readonly #place: ServicePlace;
  readonly #run: Runner;
  readonly #domain: string;

  /** `uid`: the user whose GUI domain holds an agent. */
  constructor(place: ServicePlace, uid: number, runner: Runner = realRunner) {
    this.#place = place;
    this.#run = runner;
    this.#domain = place.scope === 'system' ? 'system' : `gui/${uid}`;
  }

  unavailable(): string | null {
    return null;
  }

  activate(replaced: boolean): void {
    const target = `${this.#domain}/${this.#place.name}`;
    if (replaced) this.#run.run('launchctl', ['bootout', target]); // not loaded is fine
    this.#launchctl('enable', target);
    // RunAtLoad starts it as it is loaded.
    this.#launchctl('bootstrap', this.#domain, this.#place.file);
  }

  deactivate(): void {
    this.#run.run('launchctl', ['bootout', `${this.#domain}/${this.#place.name}`]); // not loaded is fine
  }

  forget(): void {}

  state(): string {
    const r = this.#run.run('launchctl', ['print', `${this.#domain}/${this.#place.name}`]);
    if (r.error || r.status !== 0) return 'not loaded in launchd';
    const state = r.stdout.match(/^\s*state = (.+)$/m)?.[1] ?? 'unknown';
    const pid = r.stdout.match(/^\s*pid = (\d+)$/m)?.[1];
    const exit = r.stdout.match(/^\s*last exit code = (.+)$/m)?.[1];
    return `${state}${pid ? ` (pid ${pid})` : ''}${exit ? `, last exit: ${exit}` : ''}`;
  }

  logs(lines: number, follow: boolean): Promise<number> {
    return this.#run.attached('tail', ['-n', String(lines), ...(follow ? ['-F'] : []), this.#place.logFile!]);
  }

  #launchctl(...args: string[]): void {
    const r = this.#run.run('launchctl', args);
    if (r.error !== null || r.status !== 0) {
      throw new HearthError(ErrorCode.Unavailable, `\`launchctl ${args.join(' ')}\` failed: ${(r.error ?? r.stderr).trim() || `exit code ${r.status}`}`);
    }
  }
}
