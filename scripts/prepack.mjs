#!/usr/bin/env node
// What `npm pack` and `npm publish` run first: the package ships dist/ (the compiled TypeScript) rather
// than the sources, so dist/ is built afresh (a module deleted from the sources must not ship from an
// old build), and dist/pack-info.json records which commit it was built from, for `hearth info`.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

function fail(message) {
  process.stderr.write(`[hearth prepack] error: ${message}\n`);
  process.exit(1);
}

/** `git ARGS` in the checkout, or null where there is no git or no checkout (a package packed again). */
function git(...args) {
  const r = spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const built = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: ['ignore', 2, 2] });
if (built.error || built.status !== 0) fail(`the TypeScript build failed (${built.error?.message ?? `exit ${built.status}`})`);

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const commit = git('rev-parse', 'HEAD');
// Changes to tracked files only: untracked files in a checkout (a scratch model, a log) do not ship.
const modified = commit === null ? null : git('status', '--porcelain', '--untracked-files=no') !== '';
const info = { version, commit, modified };
writeFileSync(join(dist, 'pack-info.json'), JSON.stringify(info, null, 2) + '\n');
process.stderr.write(`[hearth prepack] dist/ built; hearth ${version}, commit ${commit ?? 'unknown'}${modified ? ' with changes not committed' : ''}\n`);
