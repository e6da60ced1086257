// Interrupts a real test file's run the way a person or a CI timeout would, and lists any process of
// the run still running afterwards (exit 1 if there is one). test/integration/interrupt.test.ts does
// the same on a small file in every `npm test`; this runs it on any file, with any signal:
//
//   node --import tsx test/tools/interrupt-run.ts [--file test/integration/chat-tools.test.ts]
//     [--signal SIGTERM] [--target runner|file] [--rpc-servers 2] [--engine]
//
// The signal goes to `node --test` (runner) or to the file's own process (file) once the run has
// --rpc-servers ggml-rpc-server processes serving (two workers' worth by default) and, with
// --engine, a coordinator's engine process too.
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { describeTree, interruptTestRun } from '../helpers/interrupt.js';

const { values } = parseArgs({
  options: {
    file: { type: 'string', default: 'test/integration/chat-tools.test.ts' },
    signal: { type: 'string', default: 'SIGTERM' },
    target: { type: 'string', default: 'runner' },
    'rpc-servers': { type: 'string', default: '2' },
    engine: { type: 'boolean', default: false },
  },
});
const target = values.target === 'file' ? 'file' : 'runner';
const servers = Number(values['rpc-servers']);
const signal = values.signal as NodeJS.Signals;

const run = await interruptTestRun(resolve(values.file), {
  signal,
  target,
  ready: (tree) =>
    tree.filter((p) => /ggml-rpc-server -H /.test(p.command)).length >= servers && (!values.engine || tree.some((p) => p.command.includes('engine-main'))),
  readyMs: 120_000,
});
process.stdout.write(`the run when it got ${signal} (to the ${target}):\n${describeTree(run.tree)}\n`);
if (run.left.length > 0) {
  process.stdout.write(`still running 10 s later:\n${describeTree(run.left)}\n`);
  process.exitCode = 1;
} else {
  process.stdout.write('10 s later: none of them is running\n');
}
