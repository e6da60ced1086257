#!/usr/bin/env node
// What `npm publish` runs first (prepublishOnly): a release is published from a committed tree whose
// commit carries the version's tag, so the commit `hearth info` reports can be checked out by anyone.
// Packing for a test or a few machines (`npm pack`) needs none of this.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

function git(...args) {
  const r = spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function refuse(why) {
  process.stderr.write(`[hearth publish] refusing to publish hearth ${version}: ${why}\n`);
  process.exit(1);
}

if (git('rev-parse', 'HEAD') === null) refuse('this is not a git checkout (publish from the repository)');
if (git('status', '--porcelain', '--untracked-files=no') !== '') refuse('tracked files have changes not committed');
const tags = (git('tag', '--points-at', 'HEAD') ?? '').split('\n');
if (!tags.includes(`v${version}`)) refuse(`HEAD is not tagged v${version} (git tag v${version}, then publish)`);
