// bench:split's report (bench/report.ts): medians per side, tensor ÷ layer per network, a side that could
// not run named with its reason, a quick run marked as such.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { splitMarkdown, splitSummary, type SplitResults, type SplitRun, type SplitSetup } from '../../bench/report.js';

function run(side: SplitRun['side'], rep: number, single: number, aggregate: number, error: string | null = null): SplitRun {
  return { side, rep, singleTps: error ? [] : [single - 1, single, single + 1], aggregateTps: error ? NaN : aggregate, ttftMs: 300, loadAverage: 1, plan: null, error };
}

const link = { rttMs: { median: 2.01, p10: 1.9, p90: 2.3 }, upMbit: 940, downMbit: 900 };

function setup(net: 'loopback' | 'lan', runs: SplitRun[]): SplitSetup {
  return {
    workers: 2, net, rttMs: net === 'lan' ? 2 : null, relayRttMs: net === 'lan' ? 1.6 : null, rateMbit: net === 'lan' ? 1000 : null,
    links: { toWorkers: [link, link], between: [link] }, workerSpeeds: [2.4e10, 2.2e10], runs,
  };
}

const results: SplitResults = {
  date: '2026-12-05T00:00:00Z',
  command: 'npm run bench:split',
  quick: false,
  machine: { cpu: 'test', cores: 2, memoryGiB: 24, os: 'linux', node: 'v20' },
  build: { llamaCpp: 'v0.5.0', rpcProtocol: '7.1.0' },
  model: { file: '1b-q8_0-seed1-r2.gguf', bytes: 2 ** 30, weightType: 'q8_0' },
  settings: { reps: 2, tokens: 32, singles: 3, concurrency: 8, ctxSize: 1024, threadsPerWorker: 1, warmUp: true },
  setups: [
    setup('loopback', [run('hearth-layer', 0, 20, 20), run('hearth-layer', 1, 18, 22), run('hearth-tensor', 0, 30, 30), run('hearth-tensor', 1, 32, 26), run('llama-layer', 0, 19, 20), run('llama-tensor', 0, 25, 21)]),
    setup('lan', [run('hearth-layer', 0, 16, 18), run('hearth-tensor', 0, 0, 0, 'the coordinator exited (1): tensor split refused'), run('llama-layer', 0, 15, 17), run('llama-tensor', 0, 10, 9)]),
  ],
};

describe('bench:split report', () => {
  test('medians per side over the repetitions, each a median of its single requests', () => {
    const s = splitSummary(results.setups[0]!);
    assert.equal(s['hearth-layer'].single.median, 19);
    assert.equal(s['hearth-tensor'].single.median, 31);
    assert.equal(s['hearth-tensor'].aggregate.median, 28);
    assert.equal(s['hearth-tensor'].runs, 2);
  });

  test('a table per metric with the ratios, the LAN labelled with its RTT and the measured links', () => {
    const md = splitMarkdown(results, '### Notes\n\nhand-written');
    assert.match(md, /## Tensor split/);
    assert.match(md, /### 2 workers: single-stream decode, tokens\/s/);
    assert.match(md, /### 2 workers: aggregate at 8 concurrent, tokens\/s/);
    // loopback: hearth tensor ÷ layer 31 / 19, llama-server 25 / 19, hearth tensor ÷ llama-server tensor 31 / 25.
    assert.match(md, /\| loopback \| 2\.01 ms, 920 Mb\/s \| 2\.01 ms, 920 Mb\/s \| 19\.0 \(18\.0–20\.0\) \| 31\.0 \(30\.0–32\.0\) \| 1\.63 \| 19\.0 \(19\.0–19\.0\) \| 25\.0 \(25\.0–25\.0\) \| 1\.32 \| 1\.24 \|/);
    assert.match(md, /\| LAN 1 Gb\/s, RTT 2 ms \|.*\| 16\.0 \(16\.0–16\.0\) \| n\/a \| n\/a \|/);
    assert.match(md, /LAN 1 Gb\/s, RTT 2 ms, hearth-tensor: the coordinator exited \(1\): tensor split refused/);
    assert.match(md, /hand-written/);
    assert.doesNotMatch(md, /Quick run/);
    assert.match(splitMarkdown({ ...results, quick: true }), /Quick run/);
  });
});
