// `npm run bench:split-predict`: what `hearth plan --simulate` predicts for each network bench:split
// measured, against what it measured. For each setup of bench/split-results.json it writes a simulation
// file from that run's own measurements (the workers' calibrated speeds, the worker-to-worker round trip,
// 1 Gb/s on the emulated LAN), asks the planner for both split modes and auto's choice, and prints the
// predicted and measured milliseconds per token of one stream (medians) with their ratio.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Run { side: string; singleTps?: number[] | null }
interface Setup { workers: number; net: string; rttMs: number | null; workerSpeeds: number[]; links: { between: { rttMs: { median: number } }[] }; runs: Run[] }
interface Choice { layer: { secondsPerToken: number | null }; tensor: { secondsPerToken: number | null }; reason: string }

const root = fileURLToPath(new URL('..', import.meta.url));
const results = JSON.parse(readFileSync(join(root, 'bench', 'split-results.json'), 'utf8')) as { date: string; model: { file: string }; settings: { ctxSize: number; concurrency: number }; setups: Setup[] };
const modelPath = join(process.env.HOME ?? '', '.cache', 'hearth', 'models', results.model.file);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dir = mkdtempSync(join(tmpdir(), 'hearth-split-predict-'));
try {
  const rows = ['| network | RTT measured | layer: predicted / measured ms | ratio | tensor: predicted / measured ms | ratio | auto takes | faster measured |', '|---|---|---|---|---|---|---|---|'];
  for (const s of results.setups) {
    const rtt = s.links.between[0]?.rttMs.median ?? 0.05;
    const file = join(dir, `${s.net}-${s.rttMs ?? 0}.yaml`);
    writeFileSync(
      file,
      [`model: ${modelPath}`, `ctxSize: ${results.settings.ctxSize}`, `parallel: ${results.settings.concurrency}`, 'placement: memory', `rttMs: ${rtt.toFixed(3)}`,
        ...(s.net === 'loopback' ? [] : ['linkGbps: 1']), 'devices:',
        ...s.workerSpeeds.flatMap((speed, i) => [`  - name: w${i + 1}`, '    memory: 8GiB', `    speed: ${(speed / 1e9).toFixed(2)}GB/s`])].join('\n') + '\n',
    );
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'cli', 'main.ts'), 'plan', '--simulate', file, '--json'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`hearth plan --simulate failed for ${s.net}: ${r.stderr}`);
    const choice = (JSON.parse(r.stdout) as { splitChoice: Choice }).splitChoice;
    const measured = (side: string) => 1000 / median(s.runs.filter((x) => x.side === side).flatMap((x) => x.singleTps ?? []));
    const layer = measured('hearth-layer');
    const tensor = measured('hearth-tensor');
    const pl = (choice.layer.secondsPerToken ?? NaN) * 1000;
    const pt = (choice.tensor.secondsPerToken ?? NaN) * 1000;
    const auto = /^auto: (whole layers|tensor split)/.exec(choice.reason)?.[1] === 'tensor split' ? 'tensor' : 'layer';
    rows.push(`| ${s.net === 'loopback' ? 'loopback' : `LAN ${s.rttMs} ms`}, ${s.workers} workers | ${rtt.toFixed(3)} ms | ${pl.toFixed(1)} / ${layer.toFixed(1)} | ${(pl / layer).toFixed(2)} | ${pt.toFixed(1)} / ${tensor.toFixed(1)} | ${(pt / tensor).toFixed(2)} | ${auto} | ${tensor < layer ? 'tensor' : 'layer'} (${(layer / tensor).toFixed(2)}×) |`);
  }
  process.stdout.write(`hearth plan --simulate against bench:split of ${results.date} (one stream, medians):\n\n${rows.join('\n')}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
