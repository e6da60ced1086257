#!/usr/bin/env node
// Entry point of the `hearth` command: the compiled CLI (npm ci / npm run build make it) and, on top
// of it, `hearth bench`, which lives in bench/ because the benchmark itself runs hearth's commands.
import { existsSync } from 'node:fs';

const dist = new URL('../dist/', import.meta.url);
const cli = new URL('cli/program.js', dist);
const bench = new URL('bench/command.js', dist);
if (!existsSync(cli) || !existsSync(bench)) {
  process.stderr.write('hearth: the TypeScript build is missing (dist/); run `npm ci` or `npm run build`\n');
  process.exit(1);
}
const { hearthProgram, runHearth } = await import(cli.href);
const { registerBenchCommand } = await import(bench.href);
const program = hearthProgram();
registerBenchCommand(program);
await runHearth(program);
