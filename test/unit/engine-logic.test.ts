// Pure pieces of the engine and the benchmark: stop strings, kernel byte counters, report figures.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { abMarkdown, chartSvg, markdown, met, resumeMarkdown, resumePause, resumeSegments, stat, targets, type BenchResults, type ResumeModelResults, type ResumeRun } from '../../bench/report.js';
import { EMPTY_REPLY, replyDelta, withToolCallIds } from '../../coordinator/engine/chat-reply.js';
import { commonPrefix } from '../../coordinator/engine/prefix.js';
import { pickSequence } from '../../coordinator/engine/prompt-cache.js';
import { calibrationRows } from '../../coordinator/engine/decode-timing.js';
import { DraftTuner } from '../../coordinator/engine/draft-tuner.js';
import { ngramDraft } from '../../coordinator/engine/ngram-drafter.js';
import { StopStringFilter } from '../../coordinator/engine/stop-strings.js';
import { singleToolCall, toolCallsOnly } from '../../coordinator/engine/tool-grammar.js';
import { parseSsBytes } from '../../host/tcp-bytes.js';

describe('stop strings', () => {
  const run = (stops: string[], pieces: string[]) => {
    const f = new StopStringFilter(stops);
    let out = '';
    for (const p of pieces) {
      const r = f.push(p);
      out += r.emit;
      if (r.stopped) return { out, stopped: true };
    }
    return { out: out + f.flush(), stopped: false };
  };

  test('a stop string spanning pieces is never emitted', () => {
    assert.deepEqual(run(['END'], ['abc E', 'N', 'D tail']), { out: 'abc ', stopped: true });
    assert.deepEqual(run(['\n\n'], ['line\n', '\nnext']), { out: 'line', stopped: true });
  });

  test('text that only looked like a stop string is released', () => {
    assert.deepEqual(run(['END'], ['EN', 'ough']), { out: 'ENough', stopped: false });
    assert.deepEqual(run(['END'], ['abc EN']), { out: 'abc EN', stopped: false }, 'flushed at the end');
  });

  test('the earliest of several stop strings wins; empty ones are ignored', () => {
    assert.deepEqual(run(['xyz', 'b'], ['axyzb']), { out: 'a', stopped: true });
    assert.deepEqual(run([''], ['plain']), { out: 'plain', stopped: false });
  });

  test('held text is only the longest possible prefix', () => {
    const f = new StopStringFilter(['abcd']);
    assert.deepEqual(f.push('xxab'), { emit: 'xx', stopped: false });
    assert.deepEqual(f.push('x'), { emit: 'abx', stopped: false });
  });
});

test('ss output: bytes acked per peer, for this process only', () => {
  const out = [
    '0 0 127.0.0.1:48744 127.0.0.1:50201 users:(("node",pid=42,fd=19))',
    '\t bbr bytes_sent:21164068 bytes_acked:21124133 bytes_received:85',
    '0 0 127.0.0.1:48800 127.0.0.1:50202 users:(("node",pid=42,fd=20))',
    '\t cubic bytes_acked:1000',
    '0 0 127.0.0.1:48900 127.0.0.1:50201 users:(("other",pid=7,fd=3))',
    '\t cubic bytes_acked:999999',
  ].join('\n');
  assert.deepEqual([...parseSsBytes(out, 42)], [['127.0.0.1:50201', 21124133], ['127.0.0.1:50202', 1000]]);
  assert.deepEqual([...parseSsBytes(out, 4)], [], 'pid=4 is not pid=42');
});

describe('benchmark report', () => {
  const figures = (gen: number, agg8: number, ttft: number) => ({ genTps: gen, ppTps: 100, ppPromptTokens: 512, ttftMs: ttft, aggregateTps: { '1': gen, '8': agg8 } });
  const results: BenchResults = {
    date: '2026-11-22T00:00:00Z',
    command: 'npx hearth bench',
    machine: { cpu: 'cpu', cores: 2, memoryGiB: 24, os: 'linux', node: 'v20' },
    build: { llamaCpp: 'v0.5.0', ggml: '0.25.1', rpcProtocol: '7.0.0' },
    settings: { model: 'm.gguf', modelBytes: 2 ** 30, threadsPerWorker: 1, genTokens: 32, concurrency: [1, 8], reps: 3, split: [8, 9] },
    runs: [
      { side: 'llama-server', rep: 0, figures: figures(10, 20, 100) },
      { side: 'llama-server', rep: 1, figures: figures(12, 22, 110) },
      { side: 'llama-server', rep: 2, figures: figures(11, 21, 90) },
      { side: 'hearth', rep: 0, figures: figures(11, 25, 100) },
      { side: 'hearth', rep: 1, figures: figures(10, 24, 120) },
      { side: 'hearth', rep: 2, figures: figures(12, 26, 130) },
    ],
    local: figures(15, 15, 50),
    load: { coldSeconds: 10, coldBytes: 2 ** 30, warmSeconds: 2, warmBytes: 2 ** 20, coldPhases: { connect: 0.1, weights: 9, context: 0.9 }, warmPhases: { connect: 0.1, weights: 1, context: 0.9 } },
  };

  test('before and after a change: hearth medians, and each run divided by its own llama-server', () => {
    const slower = { ...results, runs: results.runs.map((r) => (r.side === 'hearth' ? { ...r, figures: figures(r.figures.genTps / 2, 25, 100) } : r)) };
    const md = abMarkdown({ date: '2026-12-05T00:00:00Z', command: 'node --import tsx bench/ab.ts --before a --after b', before: 'aaa', after: 'bbb', runs: [{ side: 'before', results }, { side: 'after', results: slower }] });
    assert.match(md, /hearth at `aaa` \(before\) and at `bbb` \(after\)/);
    assert.match(md, /\| single-request generation, tokens\/s \| 11\.0 \(10\.0–12\.0\) \| 5\.5 \(5\.0–6\.0\) \| 0\.500 \| 1\.000 \| 0\.500 \| 0\.500 \|/);
    assert.match(md, /\| aggregate generation, 8 concurrent, tokens\/s \| 25\.0 \(24\.0–26\.0\) \| 25\.0 \(25\.0–25\.0\) \| 1\.000 \|/);
    assert.match(md, /npm run bench:ab -- --before a --after b/);
  });

  test('medians and ranges', () => {
    assert.deepEqual(stat([3, 1, 2]), { median: 2, min: 1, max: 3 });
    assert.deepEqual(stat([4, 1, 2, 3]), { median: 2.5, min: 1, max: 4 });
    assert.ok(Number.isNaN(stat([]).median));
  });

  test('targets are ratios of medians, checked in the right direction', () => {
    const t = targets(results);
    assert.equal(t[0]!.ratio, 11 / 11);
    assert.ok(met(t[0]!));
    assert.equal(t[1]!.ratio, 25 / 21);
    assert.ok(met(t[1]!));
    assert.equal(t[2]!.ratio, 120 / 100);
    assert.ok(!met(t[2]!), 'ttft 1.2 > 1.1 is a miss');
    assert.equal(t[3]!.ratio, 0.2);
    assert.ok(met(t[3]!));
  });

  test('the markdown names the command, the misses and the chart; the SVG draws both sides', () => {
    const md = markdown(results, 'bench/aggregate.svg');
    assert.match(md, /npx hearth bench/);
    assert.match(md, /\| time to first token \(hearth \/ llama-server\) \| 1\.200 \| ≤ 1\.1 \| \*\*no\*\* \(by 0\.100\) \|/);
    assert.match(md, /!\[aggregate tokens\/s against concurrency\]\(bench\/aggregate\.svg\)/);
    const svg = chartSvg(results);
    assert.match(svg, /^<svg /);
    assert.equal((svg.match(/<polyline /g) ?? []).length, 2);
  });

  test('a secure side adds its columns and the secure / open targets, cold loads included', () => {
    const secure: BenchResults = {
      ...results,
      runs: [
        ...results.runs,
        { side: 'hearth-secure', rep: 0, figures: figures(10.8, 24, 100) },
        { side: 'hearth-secure', rep: 1, figures: figures(11.2, 26, 110) },
        { side: 'hearth-secure', rep: 2, figures: figures(9, 23, 105) },
      ],
      secureLoad: { openColdSeconds: [10, 8, 9], secureColdSeconds: [11, 9.5, 10], openBytes: [2 ** 30], secureBytes: [2 ** 30] },
    };
    const t = targets(secure);
    const byName = (n: RegExp) => t.find((x) => n.test(x.name))!;
    assert.equal(byName(/single-request generation \(hearth secure/).ratio, 10.8 / 11);
    assert.ok(met(byName(/single-request generation \(hearth secure/)));
    assert.equal(byName(/aggregate generation at 8 concurrent \(hearth secure/).ratio, 24 / 25);
    assert.ok(!met(byName(/aggregate generation at 8 concurrent \(hearth secure/)), '0.96 < 0.97 is a miss');
    assert.equal(byName(/cold load time \(hearth secure/).ratio, 10 / 9);
    assert.ok(met(byName(/cold load time/)));
    const md = markdown(secure, 'bench/aggregate.svg');
    assert.match(md, /\| metric \| llama-server --rpc \| hearth \| hearth \/ llama-server \| hearth secure \| secure \/ open \|/);
    assert.match(md, /\| hearth secure \| 10\.0 \(9\.50–11\.0\) \(11\.00, 9\.50, 10\.00\)/);
    assert.equal((chartSvg(secure).match(/<polyline /g) ?? []).length, 3);
    assert.equal(targets(results).some((x) => /secure/.test(x.name)), false, 'no secure targets without a secure side');
  });

  test('the multi-turn chat adds its section and a later-turn target; results without it have neither', () => {
    // Per repetition: turn 1's TTFT, the later turns' median, the cached tokens reported by turn.
    const chat = (first: number, later: number, cached: (number | null)[]) => ({
      promptTokens: [1505, 1553, 1599, 1647],
      cachedTokens: cached,
      ttftMs: [first, later - 10, later, later + 10],
      firstTtftMs: first,
      laterTtftMs: later,
    });
    const hearthLater = [440, 450, 445];
    const withChat: BenchResults = {
      ...results,
      settings: { ...results.settings, ctxSize: 4096, chat: { turns: 4, firstPromptWords: 1200, replyTokens: 32 } },
      runs: results.runs.map((x) => ({
        ...x,
        figures: { ...x.figures, chat: x.side === 'hearth' ? chat(26_000, hearthLater[x.rep]!, [0, 1537, 1585, 1631]) : chat(25_000, 400, [0, 1505, 1553, null]) },
      })),
    };
    const t = targets(withChat);
    assert.deepEqual(t.slice(0, 4), targets(results), 'the existing targets keep their order');
    const later = t.find((x) => /later-turn time to first token/.test(x.name))!;
    assert.equal(later.ratio, 445 / 400);
    assert.ok(!met(later), '1.1125 > 1.1 is a miss');
    const md = markdown(withChat, 'bench/aggregate.svg');
    assert.match(md, /## Multi-turn chat \(prompt cache\)/);
    assert.match(md, /\| turn 1 time to first token, ms \| 25000 \(25000–25000\) \| 26000 \(26000–26000\) \| 1\.040 \|/);
    assert.match(md, /\| turns 2–4 time to first token \(median\), ms \| 400 \(400–400\) \| 445 \(440–450\) \| 1\.113 \|/);
    assert.match(md, /\| later turns \/ turn 1, time to first token \| 0\.016 \(0\.016–0\.016\) \| 0\.017 \(0\.017–0\.017\) \|/);
    assert.match(md, /llama-server 0 \/ 1505 \/ 1553 \/ not reported; hearth 0 \/ 1537 \/ 1585 \/ 1631\./);
    assert.doesNotMatch(markdown(results, 'bench/aggregate.svg'), /Multi-turn chat/);
    assert.equal(targets(results).some((x) => /later-turn/.test(x.name)), false);
  });

  test('resumed requests: the pause is the longest gap, the steps are spans between log lines, failed repetitions are listed, not timed', () => {
    const run = (rep: number, gapsMs: number[], failures: string[] = []): ResumeRun => ({
      kind: 'kill-worker', rep, target: 'w1', failures, resumes: failures.length > 0 ? [-1, -1, -1, -1] : [1, 1, 1, 1], gapsMs, gapsBeforeFault: 3,
      steps: { degraded: 100, engineLost: 150, loading: 200, loadStarted: 400, loaded: 1400, resumed: 2600 }, loads: 1, loadAverage: 2,
      load: { seconds: 1, connect: 0.01, weights: 0.8, context: 0.2, devices: 2 },
      coordinator: { resumed: 4, pauseSumSeconds: 10, event: 'resumed 4 requests after worker w1 was lost: 2.7 s pause at most' }, timeline: [],
    });
    const ok = run(0, [40, 60, 50, 2650, 45]);
    assert.deepEqual(resumePause(ok), { pause: 2.65, baseline: 0.05 });
    assert.ok(Number.isNaN(resumePause(run(1, [])).pause), 'no tokens, no pause');
    assert.deepEqual(resumeSegments(ok.steps), { detection: 0.1, diagnosis: 0.05, replan: 0.05, engine: 0.2, load: 1, prefill: 1.2 });
    const m: ResumeModelResults = {
      model: 'small', file: 'small.gguf', bytes: 2 ** 20, date: '2026-12-05T00:00:00Z', command: 'npm run bench:resume -- --models small --reps 2', reps: 2, tokens: 64, faultAt: 8,
      ctxSize: 1024, parallel: 4, watchdogSeconds: 6, promptTokens: 80, split: [3, 3, 3], skipped: [],
      runs: [ok, run(1, [40, 50], ['the measured stream failed: resumed 3 times already', 'request 2 failed: resumed 3 times already'])],
    };
    const md = resumeMarkdown({ models: [m] }, '### Notes\n\nby hand');
    assert.match(md, /\| small, 6 s \| kill-worker \| 2\.65 \(2\.65–2\.65\) \| 0\.05 \| 2\.50 \/ 2\.70 \| 1 \| \*\*1 of 2\*\* \|/);
    assert.match(md, /\| small, 6 s \| kill-worker \| 0\.10 \| 0\.05 \| 0\.05 \| 0\.20 \| 1\.00 \(2; 0\.80 \/ 0\.20\) \| 1\.20 \| 2\.65 \| 1 \|/);
    assert.match(md, /- small, 6 s, `kill-worker`, repetition 2 \(w1\): an answer failed: resumed 3 times already\n/);
    assert.match(md, /npm run bench:resume -- --models small --reps 2/);
    assert.match(md, /### Notes\n\nby hand\n$/);
  });
});

describe('prompt cache: choosing a sequence', () => {
  const cache = [
    { tokens: [1, 2, 3, 4], lastUsed: 5 },
    { tokens: [1, 2, 9], lastUsed: 1 },
    { tokens: [], lastUsed: 0 },
    { tokens: [1, 2, 3], lastUsed: 2 },
  ];

  test('the longest shared prefix wins', () => {
    assert.equal(commonPrefix([1, 2, 3], [1, 2, 4, 5]), 2);
    assert.equal(commonPrefix([], [1]), 0);
    assert.deepEqual(pickSequence([0, 1, 2, 3], cache, [1, 2, 3, 4, 7], true), { seq: 0, prefix: 4 });
  });

  test('ties go to the least recently used; a busy sequence is not a candidate', () => {
    assert.deepEqual(pickSequence([0, 1, 2, 3], cache, [1, 2, 3], true), { seq: 3, prefix: 3 }, 'seq 0 and 3 share 3 tokens; 3 is older');
    assert.deepEqual(pickSequence([1, 2], cache, [1, 2, 3], true), { seq: 1, prefix: 2 });
    assert.deepEqual(pickSequence([0, 1, 2, 3], cache, [8, 8], true), { seq: 2, prefix: 0 }, 'nothing shared: the LRU one');
  });

  test('without reuse, the least recently used sequence and no prefix', () => {
    assert.deepEqual(pickSequence([0, 1, 3], cache, [1, 2, 3, 4], false), { seq: 1, prefix: 0 });
  });
});

describe('chat replies streamed as deltas', () => {
  const reply = (content: string, reasoningContent = '', toolCalls: { id: string; name: string; arguments: string }[] = []) => ({ content, reasoningContent, toolCalls });

  test('content and reasoning grow by their new text', () => {
    assert.deepEqual(replyDelta(EMPTY_REPLY, reply('Hel', 'hm')), { content: 'Hel', reasoningContent: 'hm' });
    assert.deepEqual(replyDelta(reply('Hel', 'hm'), reply('Hello', 'hm')), { content: 'lo' });
    assert.equal(replyDelta(reply('Hello'), reply('Hello')), null, 'nothing new');
  });

  test('a tool call appears with its id and name once, then argument fragments', () => {
    const a = reply('', '', [{ id: 'call_1', name: 'get_weather', arguments: '{"ci' }]);
    const b = reply('', '', [{ id: 'call_1', name: 'get_weather', arguments: '{"city": "Paris"}' }, { id: 'call_2', name: 'now', arguments: '' }]);
    assert.deepEqual(replyDelta(EMPTY_REPLY, a), { toolCalls: [{ index: 0, id: 'call_1', name: 'get_weather', arguments: '{"ci' }] });
    assert.deepEqual(replyDelta(a, b), { toolCalls: [{ index: 0, arguments: 'ty": "Paris"}' }, { index: 1, id: 'call_2', name: 'now', arguments: '' }] });
  });

  test('tool call ids stay the same from one reading to the next', () => {
    const first = withToolCallIds(reply('', '', [{ id: '', name: 'f', arguments: '{' }]), EMPTY_REPLY);
    assert.match(first.toolCalls[0]!.id, /^call_[0-9a-f]{24}$/);
    const second = withToolCallIds(reply('', '', [{ id: '', name: 'f', arguments: '{}' }]), first);
    assert.equal(second.toolCalls[0]!.id, first.toolCalls[0]!.id);
    assert.equal(withToolCallIds(reply('', '', [{ id: 'theirs', name: 'f', arguments: '' }]), first).toolCalls[0]!.id, 'theirs');
  });
});

describe("tool grammars keep OpenAI's rules", () => {
  const grammar = [
    'root ::= "<|im_start|>assistant\\n" space ("<think>" until-13 "</think>")? until-243? tool-calls',
    'tool-call ::= "<tool_call>\\n" space (tool-a | tool-b) space "</tool_call>"',
    'tool-calls ::= (tool-call space)+',
    'until-243 ::= | [<] until-243',
  ].join('\n');

  test('required: no free text before the calls', () => {
    const g = toolCallsOnly(grammar);
    assert.match(g, /^root ::= "<\|im_start\|>assistant\\n" space \("<think>" until-13 "<\/think>"\)\? tool-calls$/m);
    assert.match(g, /^tool-calls ::= \(tool-call space\)\+$/m, 'other rules untouched');
  });

  test('parallel_tool_calls false: one call', () => {
    assert.match(singleToolCall(grammar), /^tool-calls ::= tool-call space$/m);
  });

  test('a grammar of another shape is left alone', () => {
    const other = 'root ::= "{" space "}"';
    assert.equal(toolCallsOnly(other), other);
    assert.equal(singleToolCall(other), other);
  });
});

describe('n-gram lookup drafts', () => {
  test('proposes what followed the most recent earlier occurrence of the last n tokens', () => {
    //              0  1  2  3  4  5  6  7  8  9
    const tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3];
    assert.deepEqual(ngramDraft(tokens, 3, 8), [7, 8, 1, 2, 3], 'the latest match (at 4), up to the end');
    assert.deepEqual(ngramDraft(tokens, 3, 2), [7, 8], 'at most max tokens');
    assert.deepEqual(ngramDraft([5, 6, 5, 6], 2, 4), [5, 6], 'overlapping history');
  });

  test('nothing without an earlier match, or with nothing to look up', () => {
    assert.deepEqual(ngramDraft([1, 2, 3, 4], 2, 8), []);
    assert.deepEqual(ngramDraft([1, 2], 3, 8), []);
    assert.deepEqual(ngramDraft([1, 1, 1], 0, 8), []);
    assert.deepEqual(ngramDraft([1, 1, 1], 1, 0), []);
  });
});

describe('the draft tuner', () => {
  // Verification times shaped as measured here over two CPU workers: 8 rows and more cost twice as much.
  const verify: [number, number][] = [[1, 0.010], [2, 0.016], [3, 0.018], [4, 0.021], [5, 0.023], [6, 0.03], [7, 0.031], [8, 0.059], [9, 0.052]];

  test('drafts as far as pays: short of the row count where verification doubles', () => {
    const tuner = new DraftTuner(verify);
    for (let i = 0; i < 200; i++) tuner.recordAcceptance(8, i % 5 === 0 ? 8 : 4); // positions 0-3 always accepted, later ones a fifth of the time
    const k = tuner.choose(1, 8, 0.0012);
    assert.ok(k >= 4 && k <= 6, `chose ${k}`);
    assert.equal(tuner.choose(1, 2, 0.0012), 2, 'within the maximum given');
  });

  test('drafts nothing when drafts are rarely accepted, or the batch is already large', () => {
    const poor = new DraftTuner(verify);
    for (let i = 0; i < 200; i++) poor.recordAcceptance(4, 0);
    assert.equal(poor.choose(1, 8, 0.0012), 0);
    const good = new DraftTuner([[1, 0.01], [2, 0.02], [4, 0.04], [8, 0.08], [16, 0.16]]); // compute-bound: every row costs the same
    for (let i = 0; i < 200; i++) good.recordAcceptance(4, 3);
    assert.equal(good.choose(4, 8, 0.0012), 0, 'four sequences on compute-bound devices: checking drafts only adds work');
  });

  test('verification time is interpolated between measurements, extrapolated past them, and refined by steps', () => {
    const tuner = new DraftTuner([[1, 0.01], [4, 0.04], [8, 0.1]]);
    assert.ok(Math.abs(tuner.verifySeconds(2) - 0.02) < 1e-12);
    assert.ok(Math.abs(tuner.verifySeconds(16) - 0.2) < 1e-12);
    tuner.recordVerify(4, 0.09);
    assert.ok(Math.abs(tuner.verifySeconds(4) - 0.05) < 1e-12);
    assert.throws(() => new DraftTuner([[2, 0.01]]), /one-row decode time/);
  });

  test('calibration times every row count up to a draft, then a few sparsely', () => {
    assert.deepEqual(calibrationRows(8, 1), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(calibrationRows(8, 2), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 18]);
    assert.deepEqual(calibrationRows(3, 1), [1, 2, 3, 4]);
  });
});
