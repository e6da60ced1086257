#!/usr/bin/env node
// Entry point of the `hearth` command: the compiled CLI (npm ci / npm run build make it) and, on top
// of it, `hearth bench`, which lives in bench/ because the benchmark itself runs hearth's commands.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = new URL('../dist/', import.meta.url);
const cli = new URL('cli/program.js', dist);
const bench = new URL('bench/command.js', dist);
if (!existsSync(cli) || !existsSync(bench)) {
  // In a checkout, `npm ci` builds dist/; a package carries it (npm pack builds it, unless --ignore-scripts).
  const where = existsSync(new URL('../.git', import.meta.url)) ? 'run `npm ci` or `npm run build`' : 'this package was packed without it: pack it again with `npm pack`';
  process.stderr.write(`hearth: the TypeScript build is missing (${fileURLToPath(dist)}); ${where}\n`);
  process.exit(1);
}
const { hearthProgram, runHearth } = await import(cli.href);
const { registerBenchCommand } = await import(bench.href);
const program = hearthProgram();
registerBenchCommand(program);
await runHearth(program);
