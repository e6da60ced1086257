// hearth before and after a change: `hearth bench` run from two checkouts in turn (before, after,
// before, after, …), each run measuring hearth beside llama-server on the same workers, so a change's
// effect is read as a ratio within the same conditions. Writes bench/ab-results.json, which the
// report turns into a section of BENCHMARKS.md.
//
//   node --import tsx bench/ab.ts --before ../hearth-old --after . --rounds 2 -- --concurrency 1,8 --reps 2
//   node --import tsx bench/ab.ts --from before1.json,after1.json,before2.json,after2.json ...
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import type { AbResults, BenchResults } from './report.js';

function commitOf(dir: string): string {
  try {
    return execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function benchOnce(dir: string, benchArgs: string[], out: string): BenchResults {
  const r = spawnSync(process.execPath, [join(dir, 'bin/hearth.js'), 'bench', ...benchArgs, '--out', out, '--markdown', `${out}.md`, '--chart', `${out}.svg`], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`hearth bench in ${dir} failed (${r.status ?? r.signal})`);
  return JSON.parse(readFileSync(out, 'utf8')) as BenchResults;
}

const { values, positionals } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string' },
    rounds: { type: 'string', default: '2' },
    from: { type: 'string' },
    'before-label': { type: 'string' },
    'after-label': { type: 'string' },
    out: { type: 'string', default: 'bench/ab-results.json' },
  },
  allowPositionals: true,
});

const runs: AbResults['runs'] = [];
let before = { dir: values.before ?? '', commit: values['before-label'] ?? '' };
let after = { dir: values.after ?? '', commit: values['after-label'] ?? '' };
if (values.from) {
  // Results of runs made earlier, alternating before and after.
  values.from.split(',').forEach((file, i) => runs.push({ side: i % 2 === 0 ? 'before' : 'after', results: JSON.parse(readFileSync(file, 'utf8')) as BenchResults }));
} else {
  if (!values.before || !values.after) throw new Error('give --before DIR and --after DIR (two checkouts with their builds), or --from with result files');
  before = { dir: resolve(values.before), commit: values['before-label'] ?? commitOf(values.before) };
  after = { dir: resolve(values.after), commit: values['after-label'] ?? commitOf(values.after) };
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const side of ['before', 'after'] as const) {
      const dir = side === 'before' ? before.dir : after.dir;
      runs.push({ side, results: benchOnce(dir, positionals, join(tmpdir(), `hearth-ab-${side}-${round}.json`)) });
    }
  }
}
const results: AbResults = {
  date: new Date().toISOString(),
  command: `node --import tsx bench/ab.ts ${process.argv.slice(2).join(' ')}`,
  before: before.commit,
  after: after.commit,
  runs,
};
writeFileSync(values.out!, JSON.stringify(results, null, 1) + '\n');
process.stdout.write(`wrote ${values.out}; regenerate BENCHMARKS.md with \`npx hearth bench --report-only\`\n`);
