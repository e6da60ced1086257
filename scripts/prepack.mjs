#!/usr/bin/env node
// What `npm pack` and `npm publish` run first. The package ships dist/ (the compiled TypeScript) rather
// than the sources, so dist/ is emptied here, a module deleted from the sources must not ship from an
// old build, and then filled by the prepare script (tsc), which npm runs next while it packs the folder.
// dist/pack-info.json records which commit the package was packed from, for `hearth info`.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

/** `git ARGS` in the checkout, or null where there is no git or no checkout (a package packed again). */
function git(...args) {
  const r = spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const commit = git('rev-parse', 'HEAD');
// Changes to tracked files: untracked ones (a scratch model, a log) are left out, though an untracked
// source file among the compiled folders would ship compiled.
const modified = commit === null ? null : git('status', '--porcelain', '--untracked-files=no') !== '';
const info = { version, commit, modified };
writeFileSync(join(dist, 'pack-info.json'), JSON.stringify(info, null, 2) + '\n');
process.stderr.write(`[hearth prepack] dist/ emptied for prepare's build; hearth ${version}, commit ${commit ?? 'unknown'}${modified ? ' with changes not committed' : ''}\n`);
