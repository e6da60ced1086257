// The account a service runs as: its uid (to check who owns the token file) and its home (where
// hearth's caches and model library are found by default).
import { execFileSync } from 'node:child_process';
import { userInfo } from 'node:os';

import { ErrorCode, HearthError } from '../../common/errors.js';

export interface Account {
  readonly name: string;
  readonly uid: number;
  readonly home: string;
}

export function currentAccount(): Account {
  const me = userInfo();
  return { name: me.username, uid: me.uid, home: me.homedir };
}

/**
 * Whom a system-wide service runs as by default: the user who asked for it, which under sudo is the
 * user who ran sudo (SUDO_USER), not root, so that the service finds that user's model library.
 */
export function invokingAccount(env: { SUDO_USER?: string | undefined }, platform: NodeJS.Platform): Account {
  const me = currentAccount();
  if (me.uid === 0 && env.SUDO_USER && env.SUDO_USER !== 'root') return lookupAccount(env.SUDO_USER, platform, 'SUDO_USER');
  return me;
}

/** A user by name, from the system's user database; `option` names where the name came from. */
export function lookupAccount(name: string, platform: NodeJS.Platform, option = '--run-as'): Account {
  const me = currentAccount();
  if (name === me.name) return me;
  const found = platform === 'darwin' ? fromDirectoryService(name) : fromPasswd(name);
  if (!found) throw new HearthError(ErrorCode.InvalidArgument, `${option}: there is no user '${name}' on this machine`);
  return found;
}

function run(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return null;
  }
}

/** `getent passwd NAME`: name:password:uid:gid:gecos:home:shell (NSS, so LDAP users too). */
function fromPasswd(name: string): Account | null {
  const line = run('getent', ['passwd', name])?.split('\n')[0];
  const f = line?.split(':');
  if (!f || f.length < 7 || f[0] !== name) return null;
  return { name, uid: Number(f[2]), home: f[5]! };
}

function fromDirectoryService(name: string): Account | null {
  const out = run('dscl', ['.', '-read', `/Users/${name}`, 'UniqueID', 'NFSHomeDirectory']);
  const uid = out?.match(/^UniqueID:\s*(\d+)/m)?.[1];
  const home = out?.match(/^NFSHomeDirectory:\s*(\S.*)$/m)?.[1];
  return uid && home ? { name, uid: Number(uid), home: home.trim() } : null;
}
