// Which hearth this is, for `hearth info`: its version, the commit it was built from and where it runs
// from. A package records its commit when it is packed (scripts/prepack.mjs writes dist/pack-info.json);
// a checkout is asked through git.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { isCheckout, packageRoot } from '../native/binding.js';

export interface Installation {
  version: string;
  /** `package`: made by npm pack (installed, or unpacked); `checkout`: a git working tree. */
  kind: 'package' | 'checkout';
  /** The full commit id; null when unknown (a package packed without git, git missing). */
  commit: string | null;
  /** Tracked files differed from the commit; null when unknown. */
  modified: boolean | null;
  /** The folder hearth runs from. */
  root: string;
}

interface PackInfo {
  version: string;
  commit: string | null;
  modified: boolean | null;
}

function git(root: string, ...args: string[]): string | null {
  const r = spawnSync('git', ['-C', root, ...args], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? r.stdout.trim() : null;
}

export function installation(): Installation {
  const root = packageRoot();
  const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  if (isCheckout(root)) {
    // A checkout may hold dist/pack-info.json from an earlier npm pack: its commit may be old, so git says.
    const commit = git(root, 'rev-parse', 'HEAD');
    const modified = commit === null ? null : git(root, 'status', '--porcelain', '--untracked-files=no') !== '';
    return { version, kind: 'checkout', commit, modified, root };
  }
  const packInfo = join(root, 'dist', 'pack-info.json');
  const packed = existsSync(packInfo) ? (JSON.parse(readFileSync(packInfo, 'utf8')) as PackInfo) : null;
  return { version, kind: 'package', commit: packed?.commit ?? null, modified: packed?.modified ?? null, root };
}

/** `0.1.0 (package, commit 1e79ec7)`, `0.1.0 (checkout, commit 1e79ec7 with changes not committed)`. */
export function describeInstallation(i: Installation): string {
  const commit = i.commit === null ? 'commit unknown' : `commit ${i.commit.slice(0, 7)}${i.modified ? ' with changes not committed' : ''}`;
  return `${i.version} (${i.kind}, ${commit})`;
}
