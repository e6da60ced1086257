#!/usr/bin/env node
// Entry point of the `hearth` command: runs the compiled CLI (npm ci / npm run build make it).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('hearth: the TypeScript build is missing (dist/cli/main.js); run `npm ci` or `npm run build`\n');
  process.exit(1);
}
await import(entry.href);
