// A file a service reads a secret from must be its user's alone: a service keeps running for good,
// so a token file others can read would leave the cluster open to every user of the machine.
import { statSync } from 'node:fs';

import { messageOf } from '../../common/errors.js';
import type { Account } from './accounts.js';

/** Why `path` (holding `what`) is not private to `owner`, with the commands that fix it; null when it is. */
export function privateFileRefusal(what: string, path: string, owner: Account, stat: (p: string) => { uid: number; mode: number } = statSync): string | null {
  let st: { uid: number; mode: number };
  try {
    st = stat(path);
  } catch (e) {
    return `cannot read ${what} ${path}: ${messageOf(e).replace(/^[A-Z]+: /, '')}`;
  }
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  const fix = [...(st.uid !== owner.uid ? [`chown ${owner.name} ${path}`] : []), `chmod 600 ${path}`].map((c) => `\`${c}\``).join(' and ');
  if (st.mode & 0o077) {
    return `${what} ${path} can be read by other users (mode ${mode}), and a service would keep it that way for good: run ${fix}, then install again`;
  }
  if (st.uid !== owner.uid) {
    return `${what} ${path} belongs to uid ${st.uid}, not to ${owner.name} (uid ${owner.uid}), who runs the service: run ${fix}, then install again`;
  }
  if (!(st.mode & 0o400)) return `${what} ${path} cannot be read even by its owner (mode ${mode}): run ${fix}, then install again`;
  return null;
}
