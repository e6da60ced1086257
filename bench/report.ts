// Pure: turns raw benchmark figures into medians, ratios against targets, BENCHMARKS.md and a chart.
import { basename } from 'node:path';
import type { ChatFigures, ChatSettings, SuiteFigures } from './measure.js';

/**
 * hearth-secure: hearth with a cluster token, its worker links TLS 1.3 PSK through the relays.
 * hearth-serial: hearth with --pipeline off (one context), beside hearth's default pipelined decode.
 */
export type Side = 'llama-server' | 'hearth' | 'hearth-serial' | 'hearth-secure';

/** Seconds spent connecting to the workers, on the weights, and on the context. */
export interface LoadPhases {
  connect: number;
  weights: number;
  context: number;
}

export interface BenchResults {
  date: string;
  command: string;
  machine: { cpu: string; cores: number; memoryGiB: number; os: string; node: string };
  build: { llamaCpp: string; ggml: string; rpcProtocol: string };
  settings: {
    model: string;
    modelBytes: number;
    threadsPerWorker: number;
    genTokens: number;
    concurrency: number[];
    reps: number;
    split: number[];
    /** Context per request on both sides; absent in runs before the multi-turn chat. */
    ctxSize?: number;
    /** The multi-turn chat's settings; absent in runs before it. */
    chat?: ChatSettings;
    /** Contexts hearth decoded in (pipelined decode, --pipeline auto); absent in runs before it. */
    pipelineGroups?: number;
  };
  runs: { side: Side; rep: number; figures: SuiteFigures }[];
  local: SuiteFigures | null;
  load: { coldSeconds: number; coldBytes: number; warmSeconds: number; warmBytes: number; coldPhases: LoadPhases; warmPhases: LoadPhases } | null;
  /** Cold loads (emptied tensor caches), open and secure alternating; absent in runs before the secure mode. */
  secureLoad?: { openColdSeconds: number[]; secureColdSeconds: number[]; openBytes: number[]; secureBytes: number[] } | null;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
}

export function stat(values: number[]): Stat {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN };
  const mid = Math.floor(v.length / 2);
  return { median: v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2, min: v[0]!, max: v.at(-1)! };
}

export interface Target {
  name: string;
  ratio: number;
  /** 'min': the ratio must be at least `bound`; 'max': at most. */
  kind: 'min' | 'max';
  bound: number;
}

function metric(r: BenchResults, side: Side, pick: (f: SuiteFigures) => number): Stat {
  return stat(r.runs.filter((x) => x.side === side).map((x) => pick(x.figures)));
}

/** A multi-turn chat figure across a side's runs; runs without the chat count as missing. */
function chatMetric(r: BenchResults, side: Side, pick: (c: ChatFigures) => number): Stat {
  return metric(r, side, (f) => (f.chat ? pick(f.chat) : NaN));
}

/** Whether both sides measured the multi-turn chat (results from before the prompt cache did not). */
function hasChat(r: BenchResults): boolean {
  return (['llama-server', 'hearth'] as const).every((side) => r.runs.some((x) => x.side === side && x.figures.chat));
}

/**
 * The targets of a run. `chats`: bench:chat's results; those newer than the run give the multi-turn chat's
 * target instead of the run's own chat, once per mode (every setup must meet it).
 */
export function targets(r: BenchResults, chats: readonly ChatBenchResults[] = []): Target[] {
  const ratio = (pick: (f: SuiteFigures) => number) => metric(r, 'hearth', pick).median / metric(r, 'llama-server', pick).median;
  const top = String(Math.max(...r.settings.concurrency));
  const out: Target[] = [
    { name: 'single-request generation (hearth / llama-server)', ratio: ratio((f) => f.genTps), kind: 'min', bound: 0.97 },
    { name: `aggregate generation at ${top} concurrent (hearth / llama-server)`, ratio: ratio((f) => f.aggregateTps[top] ?? NaN), kind: 'min', bound: 1.0 },
    { name: 'time to first token (hearth / llama-server)', ratio: ratio((f) => f.ttftMs), kind: 'max', bound: 1.1 },
  ];
  // Issue 12, pipelined decode: ahead of llama-server with several requests in flight, never behind alone.
  if (r.settings.pipelineGroups !== undefined) {
    for (const n of r.settings.concurrency.filter((c) => c === 1 || c >= 4)) {
      out.push({ name: `aggregate generation at ${n} concurrent, pipelined (hearth / llama-server)`, ratio: ratio((f) => f.aggregateTps[String(n)] ?? NaN), kind: 'min', bound: n === 1 ? 0.97 : 1.15 });
    }
  }
  if (r.load) out.push({ name: 'warm reload / cold load (seconds)', ratio: r.load.warmSeconds / r.load.coldSeconds, kind: 'max', bound: 0.3 });
  if (hasSecure(r)) {
    const secure = (pick: (f: SuiteFigures) => number) => metric(r, 'hearth-secure', pick).median / metric(r, 'hearth', pick).median;
    out.push(
      { name: 'single-request generation (hearth secure / hearth open)', ratio: secure((f) => f.genTps), kind: 'min', bound: 0.97 },
      { name: `aggregate generation at ${top} concurrent (hearth secure / hearth open)`, ratio: secure((f) => f.aggregateTps[top] ?? NaN), kind: 'min', bound: 0.97 },
    );
  }
  if (r.secureLoad) {
    out.push({ name: 'cold load time (hearth secure / hearth open)', ratio: stat(r.secureLoad.secureColdSeconds).median / stat(r.secureLoad.openColdSeconds).median, kind: 'max', bound: 1.15 });
  }
  const newer = newerChats(r, chats);
  if (newer.length > 0) {
    // Time to first token, so streamed modes only: a non-streamed answer's time is mostly its generation.
    for (const c of newer) {
      for (const f of chatBenchFigures(c).filter((x) => x.mode.stream)) {
        out.push({ name: `multi-turn chat, later-turn time to first token (hearth / llama-server), ${c.model}, ${chatModeName(f.mode)} (bench:chat)`, ratio: f.later.hearth.median / f.later['llama-server'].median, kind: 'max', bound: 1.1 });
      }
    }
  } else if (hasChat(r)) {
    const later = (side: Side) => chatMetric(r, side, (c) => c.laterTtftMs).median;
    out.push({ name: 'multi-turn chat, later-turn time to first token (hearth / llama-server)', ratio: later('hearth') / later('llama-server'), kind: 'max', bound: 1.1 });
  }
  return out;
}

/** bench:chat's results made after the run `r`. */
function newerChats(r: BenchResults, chats: readonly ChatBenchResults[]): ChatBenchResults[] {
  return chats.filter((c) => Date.parse(c.date) > Date.parse(r.date));
}

function hasSecure(r: BenchResults): boolean {
  return r.runs.some((x) => x.side === 'hearth-secure');
}

export function met(t: Target): boolean {
  return t.kind === 'min' ? t.ratio >= t.bound : t.ratio <= t.bound;
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2) : 'n/a');
const range = (s: Stat) => `${f1(s.median)} (${f1(s.min)}–${f1(s.max)})`;

/**
 * `analysis`: hand-written notes on the figures (bench/analysis.md), kept across regenerations. `chats`:
 * bench:chat's results, whose newer figures replace the run's own in the targets.
 */
export function markdown(r: BenchResults, chartFile: string, analysis: string | null = null, chats: readonly ChatBenchResults[] = []): string {
  const rows: [string, (f: SuiteFigures) => number][] = [
    ['single-request generation, tokens/s', (f) => f.genTps],
    [`prompt processing (${r.runs[0]?.figures.ppPromptTokens ?? '?'}-token prompt), tokens/s`, (f) => f.ppTps],
    ['time to first token, ms', (f) => f.ttftMs],
    ...r.settings.concurrency.map((n): [string, (f: SuiteFigures) => number] => [`aggregate generation, ${n} concurrent, tokens/s`, (f) => f.aggregateTps[String(n)] ?? NaN]),
  ];
  const lines = [
    '# Benchmarks',
    '',
    `hearth against llama.cpp's own \`llama-server --rpc\`, on the same two \`ggml-rpc-server\` workers with the same layer split, measured in one run with the sides alternating (${r.settings.reps} repetitions each). Figures are medians with the min–max of the repetitions.`,
    '',
    'Made by:',
    '',
    '```sh',
    r.command,
    '```',
    '',
    `Date: ${r.date}. Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, ${r.machine.os}, Node ${r.machine.node}. llama.cpp ${r.build.llamaCpp}, ggml ${r.build.ggml}, RPC protocol ${r.build.rpcProtocol}.`,
    '',
    `Model: \`${r.settings.model}\` (${(r.settings.modelBytes / 2 ** 30).toFixed(2)} GiB), split ${r.settings.split.join(' + ')} layers over two workers with ${r.settings.threadsPerWorker} thread each, greedy, ${r.settings.genTokens} generated tokens per request (ignore_eos), streaming through the HTTP API, every prompt unique and not cached.`,
    '',
  ];
  const secure = hasSecure(r);
  if (secure) {
    lines.push(
      '`hearth secure` is hearth with a cluster token: every worker link is TLS 1.3 keyed by it, through the coordinator\'s relays and the workers\' gateways. A worker with a token serves only over that link, so it runs on a second pair of workers started exactly like the first (same threads, same machine), idle while the other sides run; the three sides rotate their order every repetition.',
      '',
      '| metric | llama-server --rpc | hearth | hearth / llama-server | hearth secure | secure / open | one process, 1 thread (no network) |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
  } else {
    lines.push('| metric | llama-server --rpc | hearth | hearth / llama-server | one process, 1 thread (no network) |', '| --- | --- | --- | --- | --- |');
  }
  for (const [name, pick] of rows) {
    const l = metric(r, 'llama-server', pick);
    const h = metric(r, 'hearth', pick);
    const sec = secure ? (() => {
      const x = metric(r, 'hearth-secure', pick);
      return ` ${range(x)} | ${(x.median / h.median).toFixed(3)} |`;
    })() : '';
    lines.push(`| ${name} | ${range(l)} | ${range(h)} | ${(h.median / l.median).toFixed(3)} |${sec} ${r.local ? f1(pick(r.local)) : 'n/a'} |`);
  }
  if (r.load) {
    const phases = (p: LoadPhases) => `${p.connect.toFixed(2)} / ${p.weights.toFixed(2)} / ${p.context.toFixed(2)}`;
    lines.push('', '## Loading', '', '| load | seconds | connect / weights / context, s | bytes sent to the workers |', '| --- | --- | --- | --- |');
    lines.push(`| cold (empty worker tensor caches) | ${r.load.coldSeconds.toFixed(2)} | ${phases(r.load.coldPhases)} | ${(r.load.coldBytes / 2 ** 20).toFixed(1)} MiB |`);
    lines.push(`| warm reload after a re-plan onto the same workers | ${r.load.warmSeconds.toFixed(2)} | ${phases(r.load.warmPhases)} | ${(r.load.warmBytes / 2 ** 20).toFixed(1)} MiB |`);
  }
  if (r.secureLoad) {
    const l = r.secureLoad;
    const secs = (v: number[]) => `${range(stat(v))} (${v.map((x) => x.toFixed(2)).join(', ')})`;
    const mib = (v: number[]) => `${(stat(v).median / 2 ** 20).toFixed(1)} MiB`;
    lines.push(
      '',
      `Cold loads onto emptied tensor caches, hearth open and hearth secure alternating (${l.openColdSeconds.length} each; the secure side's bytes are counted in its relays, the open side's by the kernel):`,
      '',
      '| cold load | seconds, median (min–max) (each) | bytes sent |',
      '| --- | --- | --- |',
      `| hearth open | ${secs(l.openColdSeconds)} | ${mib(l.openBytes)} |`,
      `| hearth secure | ${secs(l.secureColdSeconds)} | ${mib(l.secureBytes)} |`,
    );
  }
  if (r.runs.some((x) => x.side === 'hearth-serial')) lines.push('', ...pipelineMarkdown(r));
  if (hasChat(r)) lines.push('', ...chatMarkdown(r, secure));
  const newer = newerChats(r, chats);
  if (hasChat(r) && newer.length > 0) {
    lines.push('', `These chat figures are this run's (${r.date.slice(0, 10)}); \`npm run bench:chat\` measured the multi-turn chat again since (${[...new Set(newer.map((c) => c.date.slice(0, 10)))].join(', ')}), and the targets below take its figures: see [Multi-turn chat, token by token](#multi-turn-chat-token-by-token).`);
  }
  lines.push('', '## Targets', '', '| target | ratio | bound | met |', '| --- | --- | --- | --- |');
  for (const t of targets(r, chats)) lines.push(`| ${t.name} | ${t.ratio.toFixed(3)} | ${t.kind === 'min' ? '≥' : '≤'} ${t.bound} | ${met(t) ? 'yes' : `**no** (by ${Math.abs(t.ratio - t.bound).toFixed(3)})`} |`);
  lines.push('', `![aggregate tokens/s against concurrency](${chartFile})`, '');
  if (analysis) lines.push(analysis.trim(), '');
  return lines.join('\n');
}

/** Pipelined decode: hearth's default against hearth with one context, and both against llama-server. */
function pipelineMarkdown(r: BenchResults): string[] {
  const g = r.settings.pipelineGroups ?? 0;
  const lines = [
    '## Pipelined decode',
    '',
    `hearth by default (\`--pipeline auto\`) decodes in ${g} context${g === 1 ? '' : 's'} on the same loaded model, the requests in flight split between them, each context in its own thread, so that one worker can compute one group's batch while the other computes another's. \`hearth, one context\` is the same coordinator with \`--pipeline off\`, measured in the same rotation.`,
    '',
    '| aggregate generation, tokens/s | llama-server --rpc | hearth pipelined | hearth, one context | pipelined / llama-server | pipelined / one context |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const n of r.settings.concurrency) {
    const pick = (f: SuiteFigures) => f.aggregateTps[String(n)] ?? NaN;
    const l = metric(r, 'llama-server', pick);
    const h = metric(r, 'hearth', pick);
    const s = metric(r, 'hearth-serial', pick);
    lines.push(`| ${n} concurrent | ${range(l)} | ${range(h)} | ${range(s)} | ${(h.median / l.median).toFixed(3)} | ${(h.median / s.median).toFixed(3)} |`);
  }
  const gen = (side: Side) => metric(r, side, (f) => f.genTps);
  lines.push(`| single-request generation | ${range(gen('llama-server'))} | ${range(gen('hearth'))} | ${range(gen('hearth-serial'))} | ${(gen('hearth').median / gen('llama-server').median).toFixed(3)} | ${(gen('hearth').median / gen('hearth-serial').median).toFixed(3)} |`);
  return lines;
}

/** The multi-turn chat section: time to first token of the first turn against the later, cached ones. */
function chatMarkdown(r: BenchResults, secure: boolean): string[] {
  const runs = r.runs.flatMap((x) => (x.figures.chat ? [x.figures.chat] : []));
  const turns = r.settings.chat?.turns ?? runs[0]!.ttftMs.length;
  const later = turns > 2 ? `turns 2–${turns}` : 'turn 2';
  const firstPrompt = stat(runs.map((c) => c.promptTokens[0] ?? NaN)).median;
  const lastPrompt = stat(runs.map((c) => c.promptTokens.at(-1) ?? NaN)).median;
  const sides: Side[] = secure && r.runs.some((x) => x.side === 'hearth-secure' && x.figures.chat) ? ['llama-server', 'hearth', 'hearth-secure'] : ['llama-server', 'hearth'];
  const row = (name: string, pick: (c: ChatFigures) => number, digits?: number) => {
    const s = Object.fromEntries(sides.map((side) => [side, chatMetric(r, side, pick)])) as Record<Side, Stat>;
    const show = (x: Stat) => (digits === undefined ? range(x) : `${x.median.toFixed(digits)} (${x.min.toFixed(digits)}–${x.max.toFixed(digits)})`);
    const sec = sides.includes('hearth-secure') ? ` ${show(s['hearth-secure'])} | ${(s['hearth-secure'].median / s.hearth.median).toFixed(3)} |` : '';
    return `| ${name} | ${show(s['llama-server'])} | ${show(s.hearth)} | ${(s.hearth.median / s['llama-server'].median).toFixed(3)} |${sec}`;
  };
  // Each turn's cached tokens as the median over the repetitions; null is a server that reported none.
  const cached = (side: Side) => {
    const mine = r.runs.filter((x) => x.side === side && x.figures.chat).map((x) => x.figures.chat!.cachedTokens);
    return Array.from({ length: turns }, (_, t) => {
      const v = mine.map((c) => c[t]).filter((x): x is number => typeof x === 'number');
      return v.length === 0 ? 'not reported' : String(Math.round(stat(v).median));
    }).join(' / ');
  };
  const settings = r.settings.chat;
  return [
    '## Multi-turn chat (prompt cache)',
    '',
    `A ${turns}-turn conversation over \`/v1/chat/completions\`, streamed, greedy, ${settings?.replyTokens ?? '?'} tokens per reply (ignore_eos), each server's prompt cache at its default (\`cache_prompt\` true), ${r.settings.ctxSize ?? '?'} tokens of context per request on both sides. The first user message is ${f1(firstPrompt)} tokens of prose (chat template included) that no earlier request shares; each later turn appends the reply and a short new message (${f1(lastPrompt)} tokens by the last turn), so it can take all but the new part from the cache.${settings?.pauseMs ? ` Each later turn is sent ${(settings.pauseMs / 1000).toFixed(1)} s after the last reply ended (reading time), on every side.` : ' Each later turn is sent as soon as the last reply ends.'} Time to first token is to the first reply text; the later turns' figure is each repetition's median over ${later}. Cached tokens are what each server reports (\`usage.prompt_tokens_details.cached_tokens\`; llama-server's \`timings.cache_n\` is the same count).`,
    '',
    sides.length === 3
      ? '| metric | llama-server --rpc | hearth | hearth / llama-server | hearth secure | secure / open |'
      : '| metric | llama-server --rpc | hearth | hearth / llama-server |',
    sides.length === 3 ? '| --- | --- | --- | --- | --- | --- |' : '| --- | --- | --- | --- |',
    row('turn 1 time to first token, ms', (c) => c.firstTtftMs),
    row(`${later} time to first token (median), ms`, (c) => c.laterTtftMs),
    row('later turns / turn 1, time to first token', (c) => c.laterTtftMs / c.firstTtftMs, 3),
    '',
    `Cached tokens by turn (median): llama-server ${cached('llama-server')}; hearth ${cached('hearth')}${sides.length === 3 ? `; hearth secure ${cached('hearth-secure')}` : ''}.`,
  ];
}

/** A small line chart of aggregate tokens/s against concurrency, both sides. */
export function chartSvg(r: BenchResults): string {
  const W = 560;
  const H = 320;
  const pad = { l: 56, r: 20, t: 30, b: 44 };
  const xs = r.settings.concurrency;
  const present = (['llama-server', 'hearth', 'hearth-serial', 'hearth-secure'] as Side[]).filter((side) => side === 'llama-server' || side === 'hearth' || r.runs.some((x) => x.side === side));
  const series = present.map((side) => ({
    side,
    points: xs.map((n) => metric(r, side, (f) => f.aggregateTps[String(n)] ?? NaN).median),
  }));
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.filter(Number.isFinite))) * 1.15;
  const x = (i: number) => pad.l + (xs.length === 1 ? 0 : (i / (xs.length - 1)) * (W - pad.l - pad.r));
  const y = (v: number) => H - pad.b - (v / yMax) * (H - pad.t - pad.b);
  const colors: Record<Side, string> = { 'llama-server': '#888888', hearth: '#d2691e', 'hearth-serial': '#8fbc8f', 'hearth-secure': '#2e6fb0' };
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">Aggregate generation tokens/s by concurrency</text>`,
    `<line x1="${pad.l}" y1="${H - pad.b}" x2="${W - pad.r}" y2="${H - pad.b}" stroke="black"/>`,
    `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${H - pad.b}" stroke="black"/>`,
  ];
  for (let k = 0; k <= 4; k++) {
    const v = (yMax / 4) * k;
    parts.push(`<text x="${pad.l - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`);
    parts.push(`<line x1="${pad.l}" y1="${y(v)}" x2="${W - pad.r}" y2="${y(v)}" stroke="#eee"/>`);
  }
  xs.forEach((n, i) => parts.push(`<text x="${x(i)}" y="${H - pad.b + 18}" text-anchor="middle">${n}</text>`));
  parts.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle">concurrent requests</text>`);
  series.forEach((s, k) => {
    const pts = s.points.map((v, i) => `${x(i).toFixed(1)},${y(Number.isFinite(v) ? v : 0).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${colors[s.side]}" stroke-width="2.5" points="${pts}"/>`);
    s.points.forEach((v, i) => parts.push(`<circle cx="${x(i).toFixed(1)}" cy="${y(Number.isFinite(v) ? v : 0).toFixed(1)}" r="3.5" fill="${colors[s.side]}"/>`));
    parts.push(`<rect x="${pad.l + 12}" y="${pad.t + 6 + k * 18}" width="12" height="12" fill="${colors[s.side]}"/><text x="${pad.l + 30}" y="${pad.t + 16 + k * 18}">${s.side}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

/** What bench/placement.ts measured (bench/placement-results.json). */
export interface PlacementResults {
  date: string;
  model: string;
  modelBytes: number;
  tokens: number;
  reps: number;
  speeds: Record<string, number>;
  /** The calibration type the speeds are for (the model's weights). */
  weightType?: string;
  speed: Stat;
  memory: Stat;
  ratio: Stat;
  runs: { placement: 'speed' | 'memory'; tokensPerSecond: number; predictedTokensPerSecond: number | null; layers: Record<string, number> }[];
  capped: {
    memoryCap: string;
    speed: PlacementResults['runs'][number];
    memory: PlacementResults['runs'][number];
  };
}

function layersText(layers: Record<string, number>): string {
  return Object.entries(layers).map(([owner, n]) => `${owner} ${n}`).join(' + ');
}

/** The placement section of BENCHMARKS.md. */
export function placementMarkdown(p: PlacementResults): string {
  const fmt = (x: Stat, digits = 1) => `${x.median.toFixed(digits)} (${x.min.toFixed(digits)}–${x.max.toFixed(digits)})`;
  const run = (placement: 'speed' | 'memory') => p.runs.find((r) => r.placement === placement)!;
  const predicted = (placement: 'speed' | 'memory') => {
    const values = p.runs.filter((r) => r.placement === placement).map((r) => r.predictedTokensPerSecond ?? NaN);
    return values.some(Number.isNaN) ? '-' : (values.reduce((a, b) => a + b, 0) / values.length).toFixed(1);
  };
  const speeds = Object.entries(p.speeds).map(([name, bps]) => `${name} ${(bps / 1e9).toFixed(1)} GB/s`).join(', ');
  return [
    '## Placement on unequal machines',
    '',
    `Two workers on this machine, one slowed to a quarter of a core by a cgroup CPU quota (\`cpu.cfs_quota_us\` 25000 of 100000), serving \`${basename(p.model)}\` (${(p.modelBytes / 2 ** 30).toFixed(2)} GiB); the same coordinator with \`--placement speed\` and with \`--placement memory\`, alternating, ${p.reps} repetitions each, single-request generation of ${p.tokens} tokens (greedy, streamed over HTTP). Measured speeds (the workers' calibration${p.weightType ? `, for ${p.weightType} weights` : ''}): ${speeds}.`,
    '',
    ...madeBy('npm run bench:placement', 'bench/placement.ts', p.date),
    '',
    '| placement | layers | generation, tokens/s | predicted by the plan, tokens/s |',
    '| --- | --- | --- | --- |',
    `| speed | ${layersText(run('speed').layers)} | ${fmt(p.speed)} | ${predicted('speed')} |`,
    `| memory | ${layersText(run('memory').layers)} | ${fmt(p.memory)} | ${predicted('memory')} |`,
    '',
    `**speed / memory: ${fmt(p.ratio, 2)}** (target ≥ 1.5: ${p.ratio.median >= 1.5 ? 'met' : 'missed'}).`,
    '',
    `With a fast worker that lends only \`--memory ${p.capped.memoryCap}\` (too little for the whole model) beside the slow one, the speed objective puts ${layersText(p.capped.speed.layers)} layers (the slow worker gets the fewest that fit) and generates ${p.capped.speed.tokensPerSecond.toFixed(1)} tokens/s (predicted ${p.capped.speed.predictedTokensPerSecond?.toFixed(1) ?? '-'}); the memory objective puts ${layersText(p.capped.memory.layers)} and generates ${p.capped.memory.tokensPerSecond.toFixed(1)} tokens/s (predicted ${p.capped.memory.predictedTokensPerSecond?.toFixed(1) ?? '-'}).`,
    '',
  ].join('\n');
}

/** bench/speculative.ts's sides: each program plain, with the draft model, and with n-gram lookup. */
export type SpeculativeSide = 'hearth' | 'hearth-draft' | 'hearth-ngram' | 'llama-server' | 'llama-server-draft' | 'llama-server-ngram';
/** prose: a short prompt of English prose; repeat: a long passage and a request to repeat it. */
export type SpeculativePrompt = 'prose' | 'repeat';

export interface SpeculativeRun {
  side: SpeculativeSide;
  prompt: SpeculativePrompt;
  rep: number;
  /** Single-request generation, first token → last: the median of the start's requests. */
  tokensPerSecond: number;
  /** Each timed request's, in order. */
  requests: number[];
  /** Drafted and accepted tokens as the server reported them, the start's requests together; null where it reported none. */
  drafted: number | null;
  accepted: number | null;
  /** A speculative run's text against its program's plain run of the same prompt and repetition; null for a plain run. */
  sameTextAsPlain: boolean | null;
}

/** What bench/speculative.ts measured (bench/speculative-results.json). */
export interface SpeculativeResults {
  date: string;
  command: string;
  target: string;
  targetBytes: number;
  draft: string;
  draftBytes: number;
  tokens: number;
  reps: number;
  draftMax: number;
  ngram: number;
  ctxSize: number;
  /** Words of the passage the repeat prompt asks to be repeated. */
  passageWords: number;
  /** Timed requests per prompt each time a side started (one after a warm-up request). */
  requestsPerStart: number;
  promptTokens: Record<SpeculativePrompt, number>;
  /** hearth's own account of its speculation, by side (its status). */
  speculation: Record<string, string>;
  runs: SpeculativeRun[];
}

export interface SpeculativeFigure {
  side: SpeculativeSide;
  prompt: SpeculativePrompt;
  tokensPerSecond: Stat;
  /** Accepted over drafted tokens, all repetitions together; null where nothing was drafted. */
  acceptance: number | null;
  drafted: number;
  accepted: number;
  /** Runs whose text differed from the plain run's (greedy speculation should leave it unchanged). */
  textMismatches: number;
}

export interface SpeculativeRatio {
  name: string;
  /** Per repetition, the two sides measured in the same repetition. */
  ratio: Stat;
  bound: number | null;
}

function speculativeFigure(p: SpeculativeResults, side: SpeculativeSide, prompt: SpeculativePrompt): SpeculativeFigure | null {
  const runs = p.runs.filter((r) => r.side === side && r.prompt === prompt);
  if (runs.length === 0) return null;
  const drafted = runs.reduce((n, r) => n + (r.drafted ?? 0), 0);
  const accepted = runs.reduce((n, r) => n + (r.accepted ?? 0), 0);
  return {
    side,
    prompt,
    tokensPerSecond: stat(runs.map((r) => r.tokensPerSecond)),
    acceptance: drafted > 0 ? accepted / drafted : null,
    drafted,
    accepted,
    textMismatches: runs.filter((r) => r.sameTextAsPlain === false).length,
  };
}

/** The figures of every side and the ratios issue 12 asks for, each ratio paired within a repetition. */
export function speculativeSummary(p: SpeculativeResults): { figures: SpeculativeFigure[]; ratios: SpeculativeRatio[] } {
  const figures = (['hearth', 'hearth-draft', 'llama-server', 'llama-server-draft'] as const).map((s) => speculativeFigure(p, s, 'prose'))
    .concat((['hearth', 'hearth-ngram', 'llama-server', 'llama-server-ngram'] as const).map((s) => speculativeFigure(p, s, 'repeat')))
    .filter((f): f is SpeculativeFigure => f !== null);
  const ratio = (name: string, prompt: SpeculativePrompt, top: SpeculativeSide, bottom: SpeculativeSide, bound: number | null): SpeculativeRatio => {
    const per = Array.from({ length: p.reps }, (_, rep) => {
      const at = (side: SpeculativeSide) => p.runs.find((r) => r.side === side && r.prompt === prompt && r.rep === rep)?.tokensPerSecond ?? NaN;
      return at(top) / at(bottom);
    });
    return { name, ratio: stat(per), bound };
  };
  return {
    figures,
    ratios: [
      ratio('hearth + draft / hearth', 'prose', 'hearth-draft', 'hearth', 1.5),
      ratio('hearth + draft / llama-server + draft', 'prose', 'hearth-draft', 'llama-server-draft', 1.0),
      ratio('llama-server + draft / llama-server', 'prose', 'llama-server-draft', 'llama-server', null),
      ratio('hearth / llama-server (no speculation)', 'prose', 'hearth', 'llama-server', null),
      ratio('hearth n-gram / hearth (repeat prompt)', 'repeat', 'hearth-ngram', 'hearth', null),
      ratio('llama-server n-gram / llama-server (repeat prompt)', 'repeat', 'llama-server-ngram', 'llama-server', null),
      ratio('hearth n-gram / llama-server n-gram (repeat prompt)', 'repeat', 'hearth-ngram', 'llama-server-ngram', null),
    ],
  };
}

const SPECULATIVE_SIDE_NAMES: Record<SpeculativeSide, string> = {
  hearth: 'hearth',
  'hearth-draft': 'hearth + draft model',
  'hearth-ngram': 'hearth + n-gram lookup',
  'llama-server': 'llama-server --rpc',
  'llama-server-draft': 'llama-server --rpc + draft model',
  'llama-server-ngram': 'llama-server --rpc + ngram-simple',
};

/**
 * What a "no" in the greedy-text column means: verifying a draft computes a position's logits in a
 * batch of another shape than one-token decoding, so where two tokens nearly tie the choice can flip.
 * Said only when llama-server's speculation flipped in the same runs as hearth's.
 */
function mismatchNote(p: SpeculativeResults): string[] {
  const flipped = p.runs.filter((r) => r.sameTextAsPlain === false);
  if (flipped.length === 0) return [];
  const counterpart: Partial<Record<SpeculativeSide, SpeculativeSide>> = { 'hearth-draft': 'llama-server-draft', 'hearth-ngram': 'llama-server-ngram' };
  const hearthFlips = flipped.filter((r) => counterpart[r.side]);
  const both = hearthFlips.every((r) => flipped.some((l) => l.side === counterpart[r.side] && l.prompt === r.prompt && l.rep === r.rep));
  const where = flipped.map((r) => `${SPECULATIVE_SIDE_NAMES[r.side]}, ${r.prompt}, repetition ${r.rep + 1}`).join('; ');
  return [
    '',
    `Greedy text that speculation changed: ${where}. A drafted position's logits are computed in a batch of another shape than one-token decoding, so where two tokens nearly tie the choice can go the other way.${both && hearthFlips.length > 0 ? " llama-server's speculation changed the text in the same runs as hearth's." : ''}`,
  ];
}

/** The speculative decoding section of BENCHMARKS.md. */
export function speculativeMarkdown(p: SpeculativeResults): string {
  const { figures, ratios } = speculativeSummary(p);
  const fmt = (x: Stat, digits = 1) => `${x.median.toFixed(digits)} (${x.min.toFixed(digits)}–${x.max.toFixed(digits)})`;
  const row = (f: SpeculativeFigure) =>
    `| ${SPECULATIVE_SIDE_NAMES[f.side]} | ${f.prompt} | ${fmt(f.tokensPerSecond)} | ${f.side === 'hearth' || f.side === 'llama-server' ? '–' : f.acceptance === null ? 'nothing drafted' : `${(100 * f.acceptance).toFixed(0)} % (${f.accepted}/${f.drafted})`} | ${f.side === 'hearth' || f.side === 'llama-server' ? '–' : f.textMismatches === 0 ? 'yes' : `**no** (${f.textMismatches} of ${p.reps})`} |`;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  return [
    '## Speculative decoding (single request)',
    '',
    `The \`target\`/\`draft\` test pair (\`${p.target}\`, ${mib(p.targetBytes)}; \`${p.draft}\`, ${mib(p.draftBytes)}: the draft is the target's first block with the same embeddings and output head), split over two 1-thread workers on this machine as \`--placement memory\` puts it, the same split given to llama-server with \`-ts\`. One request at a time, greedy, ${p.tokens} tokens (\`ignore_eos\`), streamed over HTTP; generation tokens/s is first token → last, each start's figure the median of ${p.requestsPerStart} requests after a warm-up one. hearth's coordinator \`--threads 1 --parallel 1\`, llama-server \`-t 1 -tb 1 -np 1\`, ${p.ctxSize} tokens of context on both. The draft runs on each program's own CPU (hearth's coordinator; llama-server \`-devd none\`), drafting up to ${p.draftMax} tokens per step (\`--draft-max\` / \`--spec-draft-n-max\`). The n-gram sides look up the last ${p.ngram} tokens (\`--draft-ngram ${p.ngram}\` / \`--spec-type ngram-simple --spec-ngram-simple-size-n ${p.ngram} --spec-ngram-simple-size-m ${p.draftMax}\`). Every repetition starts each side afresh, in an order rotated each time; ${p.reps} repetitions, median (min–max).`,
    '',
    `Prompts: *prose* is ${p.promptTokens.prose} tokens of English prose; *repeat* is a ${p.passageWords}-word passage followed by "Repeat the passage above word for word:" and its first words (${p.promptTokens.repeat} tokens). The models have random weights and were never taught to copy, so the reply is not the passage: whatever the n-gram lookup gets accepted comes from stretches where the reply happens to repeat the prompt or itself.`,
    '',
    ...madeBy(p.command, 'bench/speculative.ts', p.date),
    '',
    '| side | prompt | generation, tokens/s | accepted / drafted | same greedy text as plain |',
    '| --- | --- | --- | --- | --- |',
    ...figures.map(row),
    ...mismatchNote(p),
    '',
    '| ratio (per repetition) | median (min–max) | target |',
    '| --- | --- | --- |',
    ...ratios.map((r) => `| ${r.name} | ${fmt(r.ratio, 2)} | ${r.bound === null ? '–' : `≥ ${r.bound}: ${r.ratio.median >= r.bound ? 'met' : '**missed**'}`} |`),
    '',
    ...Object.entries(p.speculation).map(([side, how]) => `- ${side}, as hearth reported it: ${how}`),
    '',
  ].join('\n');
}

/** bench/link.ts: CPU time per GiB of the closed cluster's relay and gateway, beside a plain Node hop and none. */
export interface LinkResults {
  date: string;
  gib: number;
  reps: number;
  command: string;
  runs: { path: 'kernel' | 'node' | 'secure'; seconds: number; cpuSeconds: Partial<Record<'forward' | 'relay' | 'gateway', number>> }[];
}

/** The lines that say how a bench script's section was made, and when. */
function madeBy(command: string, script: string, date: string): string[] {
  return ['Made by:', '', '```sh', `${command}      # node --import tsx ${script}`, '```', '', `Date: ${date}.`];
}

export function linkMarkdown(p: LinkResults): string {
  const fmt = (x: Stat) => `${x.median.toFixed(2)} (${x.min.toFixed(2)}–${x.max.toFixed(2)})`;
  const of = (path: LinkResults['runs'][number]['path']) => p.runs.filter((r) => r.path === path);
  const perGiB = (values: number[]) => stat(values.map((v) => v / p.gib));
  const cpu = (path: LinkResults['runs'][number]['path'], name: 'forward' | 'relay' | 'gateway') => fmt(perGiB(of(path).map((r) => r.cpuSeconds[name] ?? NaN)));
  return [
    '## Secure link: what it costs per byte',
    '',
    `A bulk transfer of ${p.gib} GiB on 127.0.0.1, as a cold load's weights cross a closed cluster's link: sender → coordinator relay → TLS 1.3 with the cluster's pre-shared key → worker gateway → receiver, each in its own process (\`link/relay.ts\`, \`link/gateway.ts\`). Beside it, the same bytes through one plain Node process joining two sockets as the relay does (\`link/pipe.ts\`, no TLS), and through the kernel alone. CPU time is each hop process's own (\`process.cpuUsage\`); the sender and the receiver are Node processes too, so the seconds are for comparing the paths, not a link's top speed. The paths alternate; ${p.reps} repetitions, median (min–max).`,
    '',
    ...madeBy(p.command, 'bench/link.ts', p.date),
    '',
    '| path | wall seconds per GiB | CPU-s per GiB in the hop processes |',
    '| --- | --- | --- |',
    `| kernel alone (no hop) | ${fmt(perGiB(of('kernel').map((r) => r.seconds)))} | – |`,
    `| plain Node hop | ${fmt(perGiB(of('node').map((r) => r.seconds)))} | forwarder ${cpu('node', 'forward')} |`,
    `| secure link (relay + gateway) | ${fmt(perGiB(of('secure').map((r) => r.seconds)))} | relay ${cpu('secure', 'relay')}, gateway ${cpu('secure', 'gateway')} |`,
    '',
  ].join('\n');
}

/** What bench/ab.ts measured (bench/ab-results.json): `hearth bench` runs from two checkouts, alternating. */
export interface AbResults {
  date: string;
  command: string;
  /** The checkouts' commits (or labels). */
  before: string;
  after: string;
  runs: { side: 'before' | 'after'; results: BenchResults }[];
}

/**
 * Each figure for hearth before and after a change, as a median over every repetition of the side's
 * runs, and as a ratio to llama-server measured in the same run (which cancels a run's noise).
 */
export function abMarkdown(p: AbResults): string {
  const fmt = (x: Stat, digits = 1) => `${x.median.toFixed(digits)} (${x.min.toFixed(digits)}–${x.max.toFixed(digits)})`;
  const concurrency = [...new Set(p.runs.flatMap((r) => r.results.settings.concurrency))].sort((a, b) => a - b);
  const figures: { name: string; pick: (f: SuiteFigures) => number }[] = [
    { name: 'single-request generation, tokens/s', pick: (f) => f.genTps },
    { name: 'prompt processing, tokens/s', pick: (f) => f.ppTps },
    ...concurrency.map((c) => ({ name: `aggregate generation, ${c} concurrent, tokens/s`, pick: (f: SuiteFigures) => f.aggregateTps[String(c)] ?? NaN })),
  ];
  const of = (side: 'before' | 'after') => p.runs.filter((r) => r.side === side).map((r) => r.results);
  const hearth = (side: 'before' | 'after', pick: (f: SuiteFigures) => number) => stat(of(side).flatMap((r) => r.runs.filter((x) => x.side === 'hearth').map((x) => pick(x.figures))));
  /** hearth ÷ llama-server within each run, medians of each side of a run first. */
  const relative = (side: 'before' | 'after', pick: (f: SuiteFigures) => number) =>
    stat(of(side).map((r) => metric(r, 'hearth', pick).median / metric(r, 'llama-server', pick).median));
  const rows = figures.map(({ name, pick }) => {
    const [hb, ha, rb, ra] = [hearth('before', pick), hearth('after', pick), relative('before', pick), relative('after', pick)];
    return `| ${name} | ${fmt(hb)} | ${fmt(ha)} | ${(ha.median / hb.median).toFixed(3)} | ${rb.median.toFixed(3)} | ${ra.median.toFixed(3)} | ${(ra.median / rb.median).toFixed(3)} |`;
  });
  const first = p.runs[0]!.results;
  return [
    '## Before and after a change',
    '',
    `hearth at \`${p.before}\` (before) and at \`${p.after}\` (after), each measured by \`hearth bench\` beside llama-server on the same two workers, the two checkouts alternating (${p.runs.length} runs, ${first.settings.reps} repetitions each, model \`${first.settings.model}\`). "÷ llama-server" divides hearth's median by llama-server's in the same run: it takes out what slows a whole run down on this shared machine, not the noise between repetitions.`,
    '',
    '| metric | hearth before | hearth after | after ÷ before | before ÷ llama-server | after ÷ llama-server | ratio of those |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    ...madeBy(p.command.replace(/^node --import tsx bench\/ab\.ts/, 'npm run bench:ab --'), 'bench/ab.ts', p.date),
    '',
  ].join('\n');
}

/** The faults bench/resume.ts strikes requests in flight with. */
export const RESUME_FAULTS = ['kill-rpc-server', 'kill-worker', 'term-worker', 'kill-engine', 'cut-cable'] as const;
export type ResumeFault = (typeof RESUME_FAULTS)[number];

/** The steps of a resume, each the time of a coordinator log line (or the stream's next token), ms after the strike. */
export interface ResumeSteps {
  /** `coordinator degraded`: the loss noticed. */
  degraded: number | null;
  /** `engine lost: …`: the diagnosis done. */
  engineLost: number | null;
  /** `coordinator loading`: the re-plan done, the next engine loading. */
  loading: number | null;
  /** The load's first `loading model: N%`: an engine process ready and loading (the spare, or one started then). */
  loadStarted: number | null;
  /** `model loaded; serving`. */
  loaded: number | null;
  /** The measured stream's first token after the fault. */
  resumed: number | null;
}

/** One fault struck at four requests in flight. */
export interface ResumeRun {
  kind: ResumeFault;
  rep: number;
  /** The worker struck; null for the engine. */
  target: string | null;
  /** Answers that failed or came back incomplete or not resumed, and why; empty when all were complete. */
  failures: string[];
  /** How often each answer was resumed (the measured stream's first; -1 for a failed one). */
  resumes: number[];
  /** The measured stream's gaps between consecutive tokens, ms; the first `gapsBeforeFault` came before the strike. */
  gapsMs: number[];
  gapsBeforeFault: number;
  steps: ResumeSteps;
  /** Loads the coordinator finished between the strike and the resume (more than one: the requests were caught again). */
  loads: number;
  /** This machine's 1-minute load average as the repetition began (it is shared: a busy moment shows here). */
  loadAverage: number;
  /** The load that ended the pause, as the coordinator logged it. */
  load: { seconds: number; connect: number; weights: number; context: number; devices: number } | null;
  /** The coordinator's own account: its /metrics pause histogram over this repetition, and its event log. */
  coordinator: { resumed: number; pauseSumSeconds: number; event: string | null };
  /** The coordinator's log from the strike to the first token after (progress lines left out), ms after the strike. */
  timeline: { ms: number; msg: string }[];
}

/** What bench/resume.ts measured on one model (a run of it replaces only its models' entries). */
export interface ResumeModelResults {
  /** The test model preset. */
  model: string;
  file: string;
  bytes: number;
  date: string;
  command: string;
  reps: number;
  tokens: number;
  /** The fault strikes when the measured stream has this many tokens. */
  faultAt: number;
  ctxSize: number;
  parallel: number;
  watchdogSeconds: number;
  promptTokens: number;
  /** Layers on each of the three workers, undisturbed. */
  split: number[];
  skipped: { kind: ResumeFault; why: string }[];
  runs: ResumeRun[];
}

/** bench/resume-results.json. */
export interface ResumeResults {
  models: ResumeModelResults[];
}

/** A run's pause as the client saw it (its stream's longest gap), and the median gap before the fault, s. */
export function resumePause(r: ResumeRun): { pause: number; baseline: number } {
  return { pause: r.gapsMs.length > 0 ? Math.max(...r.gapsMs) / 1000 : NaN, baseline: stat(r.gapsMs.slice(0, r.gapsBeforeFault)).median / 1000 };
}

/** The segments between a run's steps, s: each ends at a step, the first starts at the strike. */
export function resumeSegments(s: ResumeSteps): Record<'detection' | 'diagnosis' | 'replan' | 'engine' | 'load' | 'prefill', number> {
  const span = (from: number | null, to: number | null) => (from === null || to === null ? NaN : (to - from) / 1000);
  return {
    detection: span(0, s.degraded),
    diagnosis: span(s.degraded, s.engineLost),
    replan: span(s.engineLost, s.loading),
    engine: span(s.loading, s.loadStarted),
    load: span(s.loadStarted, s.loaded),
    prefill: span(s.loaded, s.resumed),
  };
}

const RESUME_FAULT_TEXT: Record<ResumeFault, string> = {
  'kill-rpc-server': "a worker's ggml-rpc-server killed (SIGKILL; the worker restarts it)",
  'kill-worker': 'a worker killed (SIGKILL; its rpc server dies with it), started again after the repetition',
  'term-worker': 'a worker stopped (SIGTERM), started again after the repetition',
  'kill-engine': "the coordinator's engine process killed (SIGKILL; a spare engine process waits beside it)",
  'cut-cable': "a worker's cable pulled, plugged back after the repetition: on a cluster of its own whose workers each run in a network namespace on a bridge (the coordinator's namespace joins it), the worker's port on the bridge set down",
};

/** The resumed-requests section of BENCHMARKS.md; `notes`: hand-written (bench/resume-notes.md), kept across regenerations. */
export function resumeMarkdown(p: ResumeResults, notes: string | null = null): string {
  const s2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
  const fmt = (x: Stat) => `${s2(x.median)} (${s2(x.min)}–${s2(x.max)})`;
  const kinds = (m: ResumeModelResults) => RESUME_FAULTS.filter((k) => m.runs.some((r) => r.kind === k));
  const first = p.models[0]!;
  const label = (m: ResumeModelResults) => `${m.model}, ${m.watchdogSeconds} s`;
  const lines = [
    '## Resumed requests: the pause a fault costs',
    '',
    `Three workers on this machine with one thread each, each holding layers of the model (\`--placement memory\`; any two of them hold it all), and a coordinator with \`--local-device off --parallel ${first.parallel} --ctx-size ${first.ctxSize}\` and the engine watchdog each row names (\`--watchdog-seconds\`: an engine that shows no progress for that long while it has work is killed). Each repetition sends four greedy requests of ${first.tokens} tokens at once over gRPC (streamed, \`ignore_eos\`, every prompt unique) and strikes a fault when the first of them has its ${first.faultAt}th token; every answer must come back complete (finish \`length\`, every token) and resumed. The **pause** is that stream's longest gap between two tokens, as its client sees it; the **baseline** is its median gap before the fault. The coordinator's own figures are its \`hearth_resume_pause_seconds\` histogram over the repetition (the mean of the four requests' pauses) and its event log's \`resumed N requests after …: X s pause at most\`. The faults, in an order rotated each repetition, the struck worker taken in turn:`,
    '',
    ...RESUME_FAULTS.map((k) => `- \`${k}\`: ${RESUME_FAULT_TEXT[k]}`),
    '',
    'Made by:',
    '',
    '```sh',
    ...p.models.map((m) => `${m.command}      # ${m.date}`),
    '```',
    '',
    ...p.models.map((m) => `- ${label(m)}: \`${m.file}\` (${(m.bytes / 2 ** 20).toFixed(0)} MiB), ${m.split.join(' + ')} layers on the three workers, prompts of ${m.promptTokens} tokens, ${m.reps} repetition${m.reps === 1 ? '' : 's'} of each fault.${m.skipped.map((s) => ` \`${s.kind}\` not measured: ${s.why}.`).join('')}`),
    '',
    '| model, watchdog | fault | pause, median (min–max), s | baseline between tokens, s | coordinator: mean pause / event log, s | times resumed | answers complete |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  // A repetition whose answers failed has no pause to show: it is counted in the last column and listed below.
  const complete = (m: ResumeModelResults, kind: ResumeFault) => m.runs.filter((r) => r.kind === kind && r.failures.length === 0);
  for (const m of p.models) {
    for (const kind of kinds(m)) {
      const all = m.runs.filter((r) => r.kind === kind);
      const runs = complete(m, kind);
      const pauses = runs.map(resumePause);
      const mean = stat(runs.map((r) => (r.coordinator.resumed > 0 ? r.coordinator.pauseSumSeconds / r.coordinator.resumed : NaN)));
      const logged = stat(runs.map((r) => Number(/([\d.]+) s pause/.exec(r.coordinator.event ?? '')?.[1] ?? NaN)));
      const failed = all.length - runs.length;
      const resumes = [...new Set(all.flatMap((r) => r.resumes.filter((n) => n >= 0)))].sort();
      lines.push(
        `| ${label(m)} | ${kind} | ${fmt(stat(pauses.map((x) => x.pause)))} | ${s2(stat(pauses.map((x) => x.baseline)).median)} | ${s2(mean.median)} / ${s2(logged.median)} | ${resumes.join(' or ')} | ${failed === 0 ? `${all.length} of ${all.length}` : `**${runs.length} of ${all.length}**`} |`,
      );
    }
  }
  lines.push(
    '',
    '### Where the pause goes',
    '',
    "Medians over the repetitions, seconds, each step ending at a line of the coordinator's log (their timestamps against the strike's, on the same clock): **detection** until `coordinator degraded` (the engine's exit handled), **diagnosis** until `engine lost: …` (which worker failed), **re-plan** until the last `coordinator loading` before the resume, **engine** until that load's first `loading model: N%` (an engine process ready to load: the spare, or a new one when the spare is still starting), **load** until `model loaded; serving` (on how many workers, and the weights / context phases the engine timed), **resume** until the stream's next token (the resumed requests' prompts and sent tokens computed again, and one token more). Where the coordinator loaded more than once before the resume (the loads column), the re-plan step holds the earlier loads too. The steps need not add up to the pause exactly: they are medians each, and the pause starts at the last token before the strike.",
    '',
    '| model, watchdog | fault | detection | diagnosis | re-plan | engine | load (workers; weights / context) | resume | pause | loads |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const m of p.models) {
    for (const kind of kinds(m)) {
      const runs = complete(m, kind);
      if (runs.length === 0) continue;
      const seg = runs.map((r) => resumeSegments(r.steps));
      const med = (pick: (x: ReturnType<typeof resumeSegments>) => number) => s2(stat(seg.map(pick)).median);
      const loads = runs.flatMap((r) => (r.load ? [r.load] : []));
      const devices = [...new Set(loads.map((l) => l.devices))].sort().join(' or ');
      const phases = loads.length > 0 ? `${s2(stat(loads.map((l) => l.weights)).median)} / ${s2(stat(loads.map((l) => l.context)).median)}` : 'n/a';
      lines.push(`| ${label(m)} | ${kind} | ${med((x) => x.detection)} | ${med((x) => x.diagnosis)} | ${med((x) => x.replan)} | ${med((x) => x.engine)} | ${med((x) => x.load)} (${devices || '?'}; ${phases}) | ${med((x) => x.prefill)} | ${s2(stat(runs.map((r) => resumePause(r).pause)).median)} | ${[...new Set(runs.map((r) => r.loads))].sort().join(' or ')} |`);
    }
  }
  const failed = p.models.flatMap((m) => m.runs.filter((r) => r.failures.length > 0).map((r) => ({ m, r })));
  if (failed.length > 0) {
    lines.push('', '### Failed answers', '');
    for (const { m, r } of failed) {
      // The requests of one repetition mostly fail alike: each reason once.
      const reasons = [...new Set(r.failures.map((f) => f.replace(/^(the measured stream|request \d+) /, 'an answer ')))];
      lines.push(`- ${label(m)}, \`${r.kind}\`, repetition ${r.rep + 1}${r.target ? ` (${r.target})` : ''}: ${reasons.join('; ')}`);
    }
  }
  if (notes) lines.push('', notes.trim());
  lines.push('');
  return lines.join('\n');
}

/** bench/chat.ts: the multi-turn chat alone, the same conversation on both sides, token counts per turn. */
export type ChatBenchSide = 'llama-server' | 'hearth';

/** Streamed (time to the first reply text) or not (time to the whole answer); the reading time before each later turn. */
export interface ChatBenchMode {
  stream: boolean;
  pauseMs: number;
}

export interface ChatBenchTurn {
  turn: number;
  /** Request sent → first reply text (streamed) or the whole answer (not streamed), ms. */
  ms: number;
  promptTokens: number;
  /** Prompt tokens the server took from its cache (usage.prompt_tokens_details.cached_tokens). */
  cachedTokens: number;
  /** Prompt tokens it computed: promptTokens − cachedTokens. */
  computedTokens: number;
  /** llama-server's own count of the prompt tokens it evaluated (timings.prompt_n); null from hearth. */
  serverEvaluated: number | null;
  reply: string;
}

export interface ChatBenchRun {
  side: ChatBenchSide;
  rep: number;
  mode: ChatBenchMode;
  turns: ChatBenchTurn[];
}

export interface ChatBenchResults {
  date: string;
  command: string;
  model: string;
  settings: { turns: number; firstWords: number; replyTokens: number; parallel: number; ctxSize: number; threadsPerWorker: number; split: number[]; pipelineGroups: number; hearthArgs: string[]; reps: number };
  runs: ChatBenchRun[];
}

interface ChatBenchModeFigures {
  mode: ChatBenchMode;
  first: Record<ChatBenchSide, Stat>;
  /** Each repetition's median over turns 2..n, then median (min–max) over the repetitions. */
  later: Record<ChatBenchSide, Stat>;
  /** Per turn: prompt tokens, and tokens computed (median over the repetitions, min–max). */
  prompt: Record<ChatBenchSide, Stat[]>;
  computed: Record<ChatBenchSide, Stat[]>;
}

function chatBenchFigures(p: ChatBenchResults): ChatBenchModeFigures[] {
  const modes: ChatBenchMode[] = [];
  for (const r of p.runs) if (!modes.some((m) => m.stream === r.mode.stream && m.pauseMs === r.mode.pauseMs)) modes.push(r.mode);
  return modes.map((mode) => {
    const of = (side: ChatBenchSide) => p.runs.filter((r) => r.side === side && r.mode.stream === mode.stream && r.mode.pauseMs === mode.pauseMs);
    const perTurn = (side: ChatBenchSide, pick: (t: ChatBenchTurn) => number) => Array.from({ length: p.settings.turns }, (_, i) => stat(of(side).map((r) => (r.turns[i] ? pick(r.turns[i]) : NaN))));
    const both = <T>(f: (side: ChatBenchSide) => T) => ({ 'llama-server': f('llama-server'), hearth: f('hearth') });
    return {
      mode,
      first: both((side) => stat(of(side).map((r) => r.turns[0]?.ms ?? NaN))),
      later: both((side) => stat(of(side).map((r) => stat(r.turns.slice(1).map((t) => t.ms)).median))),
      prompt: both((side) => perTurn(side, (t) => t.promptTokens)),
      computed: both((side) => perTurn(side, (t) => t.computedTokens)),
    };
  });
}

function chatModeName(m: ChatBenchMode): string {
  return `${m.stream ? 'streamed' : 'not streamed'}, ${m.pauseMs > 0 ? `${(m.pauseMs / 1000).toFixed(1)} s reading time before each later turn` : 'each later turn sent as soon as the reply ends'}`;
}

function tokensText(xs: Stat[]): string {
  return xs.map((x) => (x.min === x.max ? f0(x.median) : `${f0(x.median)} (${f0(x.min)}–${f0(x.max)})`)).join(' / ');
}

function f0(x: number): string {
  return Number.isFinite(x) ? x.toFixed(0) : '–';
}

/** Lines for the console at the end of a bench:chat run. */
export function chatTurnsSummary(p: ChatBenchResults): string[] {
  return chatBenchFigures(p).flatMap((f) => [
    `${chatModeName(f.mode)}: later turns ${f0(f.later.hearth.median)} ms (hearth) / ${f0(f.later['llama-server'].median)} ms (llama-server) = ${(f.later.hearth.median / f.later['llama-server'].median).toFixed(3)}`,
    `  tokens computed by turn: hearth ${tokensText(f.computed.hearth)}; llama-server ${tokensText(f.computed['llama-server'])}`,
  ]);
}

export function chatBenchMarkdown(results: readonly ChatBenchResults[]): string {
  const lines = [
    '## Multi-turn chat, token by token',
    '',
    "The multi-turn chat alone (`bench/chat.ts`), to compare the two prompt caches token by token: a conversation over `/v1/chat/completions`, greedy, a fixed number of tokens per reply (ignore_eos), a first user message of prose and the follow-ups of `hearth bench`'s chat; each later turn carries the previous reply back as the client received it. Both sides get the same conversation in a repetition, so their prompts are the same tokens (the replies may part at a near tie between the two programs, and then so do the later prompts). Each mode is its own conversation: streamed (time to the first reply text) or not (time to the whole answer), each later turn sent as soon as the reply ends or after a reading time. The sides alternate. Times are medians (min–max) over the repetitions of each repetition's median over the later turns; tokens computed are prompt tokens minus cached ones (llama-server's `timings.prompt_n` agrees), median (min–max) by turn.",
  ];
  for (const p of results) {
    const s = p.settings;
    lines.push(
      '',
      `Model \`${p.model}\`, split ${s.split.join(' + ')} layers over two ${s.threadsPerWorker}-thread workers, ${s.parallel} slots of ${s.ctxSize} tokens on both sides (hearth decodes in ${s.pipelineGroups} context${s.pipelineGroups === 1 ? '' : 's'})${s.hearthArgs.length > 0 ? `, hearth started with \`${s.hearthArgs.join(' ')}\`` : ''}; ${s.turns} turns, a first message of ${s.firstWords} words, ${s.replyTokens} tokens per reply; ${s.reps} repetitions.`,
      '',
      ...madeBy(p.command, 'bench/chat.ts', p.date),
      '',
      '| mode | later turns, ms: llama-server | hearth | hearth / llama-server | turn 1, ms: llama-server | hearth | prompt tokens by turn | tokens computed by turn: llama-server | hearth |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const f of chatBenchFigures(p)) {
      const prompts = f.prompt.hearth.map((x, i) => (x.median === f.prompt['llama-server'][i]!.median ? f0(x.median) : `${f0(x.median)} (llama-server ${f0(f.prompt['llama-server'][i]!.median)})`)).join(' / ');
      lines.push(
        `| ${chatModeName(f.mode)} | ${range(f.later['llama-server'])} | ${range(f.later.hearth)} | ${(f.later.hearth.median / f.later['llama-server'].median).toFixed(3)} | ${range(f.first['llama-server'])} | ${range(f.first.hearth)} | ${prompts} | ${tokensText(f.computed['llama-server'])} | ${tokensText(f.computed.hearth)} |`,
      );
    }
  }
  lines.push('');
  return lines.join('\n');
}

/** Where bench/switch.ts runs the workers: on 127.0.0.1, or each on a host of its own behind a 1 Gb/s cable. */
export const SWITCH_NETS = ['loopback', 'lan'] as const;
export type SwitchNet = (typeof SWITCH_NETS)[number];
/** cold: the workers' tensor caches hold none of the model; warm: they hold all of it. */
export type SwitchKind = 'cold' | 'warm';

/** When each step of a switch happened, ms after its request was sent; null: not in the log. */
export interface SwitchSteps {
  /** The coordinator's event `model X was asked for` (millisecond clock of its ISO time). */
  asked: number | null;
  /** The evicted model's `model draining`. */
  evicting: number | null;
  /** The evicted model's `model unloaded`. */
  evicted: number | null;
  planning: number | null;
  loading: number | null;
  /** The new engine's first `loading model: N%`. */
  loadStarted: number | null;
  /** `model loaded; serving`. */
  loaded: number | null;
  /** The first token at the client. */
  firstToken: number | null;
}

export interface SwitchCpu {
  user: number;
  sys: number;
  faults: number;
  /** Seconds the tree's threads were runnable but waited for a CPU (threads that ended within the switch not counted); absent in older runs. */
  waited?: number;
}

/** One switch: a request for the model on disk while the other of the pair holds its memory. */
export interface SwitchRun {
  rep: number;
  kind: SwitchKind;
  from: string;
  to: string;
  ttftMs: number;
  totalMs: number;
  /** The same request again, the model now loaded. */
  baselineTtftMs: number;
  steps: SwitchSteps;
  /** The load as the engine timed it, the bytes it sent to the workers, and the layers on each. */
  load: { seconds: number; connect: number; weights: number; context: number; bytesSent: number; layers: string[] } | null;
  /**
   * CPU seconds and minor page faults from the request to its first token: the coordinator's process
   * tree (the API process and its engines) and each worker's (the worker and its rpc servers).
   */
  cpu: { coordinator: SwitchCpu; workers: SwitchCpu[] };
  /** Files in each worker's tensor cache before the switch. */
  cacheFilesBefore: number[];
  /** Each worker's rpc servers' resident bytes, and its free memory as it reports it, once the switch settled. */
  heldBytes: number[];
  freeBytes: number[];
  loadAverage: number;
  failures: string[];
}

/** What bench/switch.ts measured on one pair and network (a run replaces only its own setups). */
export interface SwitchSetup {
  /** The pair: `small` or `1b` test models, seeds 1 and 2. */
  model: string;
  net: SwitchNet;
  files: string[];
  bytes: number;
  /** The pinned default model beside the pair, or null. */
  pinned: string | null;
  /** What each worker lends (--memory). */
  memoryMiB: number;
  ctxSize: number;
  parallel: number;
  tokens: number;
  reps: number;
  /** The emulated LAN's rate limit per cable (tc tbf), or null on loopback. */
  rate: string | null;
  /** What a worker's cable carried in a probe before the measurements, Gb/s (LAN only). */
  probeGbps?: number;
  date: string;
  command: string;
  promptTokens: number;
  /** The pair's first load, with nothing to evict (its caches empty). */
  firstLoad: { ttftMs: number; seconds: number; layers: string[] } | null;
  runs: SwitchRun[];
}

/** bench/switch-results.json. */
export interface SwitchResults {
  setups: SwitchSetup[];
}

/** The segments between a switch's steps, s: each ends at a step, the first starts when the request was sent. */
export function switchSegments(s: SwitchSteps): Record<'pick' | 'unload' | 'replan' | 'engine' | 'load' | 'firstToken', number> {
  const span = (from: number | null, to: number | null) => (from === null || to === null ? NaN : (to - from) / 1000);
  return {
    pick: span(0, s.evicting),
    unload: span(s.evicting, s.evicted),
    replan: span(s.evicted, s.loading),
    engine: span(s.loading, s.loadStarted),
    load: span(s.loadStarted, s.loaded),
    firstToken: span(s.loaded, s.firstToken),
  };
}

/** The switching section of BENCHMARKS.md; `notes`: hand-written (bench/switch-notes.md), kept across regenerations. */
export function switchMarkdown(p: SwitchResults, notes: string | null = null): string {
  const s2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
  const fmt = (x: Stat) => `${s2(x.median)} (${s2(x.min)}–${s2(x.max)})`;
  const label = (m: SwitchSetup) => `${m.model}, ${m.net === 'lan' ? `LAN ${m.rate ?? ''}`.trim() : 'loopback'}${m.pinned ? '' : ', no pinned model'}`;
  const first = p.setups[0]!;
  const kinds: SwitchKind[] = ['cold', 'warm'];
  const lines = [
    '## Switching models',
    '',
    `What a client waits when it asks for an on-demand model that is not loaded while another on-demand model holds the memory it needs. Two workers on this machine with one thread each and their tensor caches on, each lending (\`--memory\`) enough that one model of a pair fits beside the pinned default model (the \`tiny\` test model, loaded at start), not both; a coordinator with \`--local-device off --placement memory\` serving the three from \`models:\` in a cluster.yaml (\`ctxSize: ${first.ctxSize}\`, \`parallel: ${first.parallel}\`, the pair \`policy: on-demand\`, \`idle: 2h\`, \`reserveMiB: 0\`). A pair is two test models of one shape made with different seeds, so they share no tensor. Each repetition empties both workers' tensor caches, then switches four times: **cold** to B and cold to A (every tensor crosses the network), **warm** to B and warm to A (the caches now hold both: tensors over 10 MiB are found by hash, the rest sent). A switch is one greedy request (a ${first.promptTokens}-token prompt, the prompt cache off, ${first.tokens} tokens, gRPC, streamed) and its **time to first token** as its client sees it; the **baseline** is the same request sent again right after, the model now loaded. Every switch is checked, and a run stops at the first that misbehaves: the answer whole, the other model unloaded before the load began (and the events saying so), the pinned model never reloaded, the model loaded once, and what the workers' rpc servers hold the same after every switch.`,
    '',
    'Made by:',
    '',
    '```sh',
    // A pair's networks are measured by one command: each command once, with its first setup's date.
    ...[...new Map(p.setups.map((m) => [m.command, m.date] as const).reverse()).entries()].reverse().map(([command, date]) => `${command}      # ${date}`),
    '```',
    '',
    ...p.setups.map((m) => {
      const layers = m.runs[0]?.load?.layers.join(' + ') ?? m.firstLoad?.layers.join(' + ') ?? '?';
      const probe = m.probeGbps === undefined ? '' : `; a 64 MiB probe over it carried ${m.probeGbps.toFixed(2)} Gb/s before the measurements`;
      const where = m.net === 'lan' ? `each worker in a network namespace of its own on a bridge, its cable limited to ${m.rate} both ways (tc \`tbf\`, no added delay${probe})` : 'the workers on 127.0.0.1';
      return `- ${label(m)}: \`${m.files.join('`, `')}\` (${(m.bytes / 2 ** 20).toFixed(0)} MiB each), ${where}, ${m.memoryMiB} MiB lent per worker, layers ${layers}; ${m.reps} repetition${m.reps === 1 ? '' : 's'} (${m.runs.filter((r) => r.kind === 'cold').length} cold and ${m.runs.filter((r) => r.kind === 'warm').length} warm switches). The pair's first load, with nothing to evict: first token after ${m.firstLoad ? s2(m.firstLoad.ttftMs / 1000) : '?'} s.`;
    }),
    '',
    '| pair, network | request | time to first token, median (min–max), s | × baseline | sent to the workers, MiB | load average (1 min) |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  const ok = (m: SwitchSetup) => m.runs.filter((r) => r.failures.length === 0);
  for (const m of p.setups) {
    const runs = ok(m);
    const baseline = stat(runs.map((r) => r.baselineTtftMs / 1000));
    for (const kind of kinds) {
      const k = runs.filter((r) => r.kind === kind);
      if (k.length === 0) continue;
      const t = stat(k.map((r) => r.ttftMs / 1000));
      const sent = stat(k.map((r) => (r.load ? r.load.bytesSent / 2 ** 20 : NaN)));
      lines.push(`| ${label(m)} | ${kind} switch | ${fmt(t)} | ${(t.median / baseline.median).toFixed(1)} | ${sent.median.toFixed(0)} | ${stat(k.map((r) => r.loadAverage)).median.toFixed(1)} |`);
    }
    lines.push(`| ${label(m)} | baseline (loaded) | ${fmt(baseline)} | 1 | 0 | ${stat(runs.map((r) => r.loadAverage)).median.toFixed(1)} |`);
  }
  lines.push(
    '',
    '### Where a switch goes',
    '',
    "Medians over the switches, seconds, each step ending at a line of the coordinator's log (timed on the client's clock): **pick** until the loaded model's `model draining` (the request reaches the coordinator, the workers' memory figures are fetched, the plan says the model does not fit and the least recently used on-demand model is chosen), **unload** until its `model unloaded` (its engine drained and stopped), **re-plan** until the new model's `model loading` (the workers' figures fetched again, the plan made), **engine** until that load's first `loading model: N%` (the engine connects to the workers and llama.cpp reads the header, queries the devices and allocates the weights' buffers; a worker gives each connection an rpc server of its own, and with the pinned model's engine holding its first server, each connection starts a new one), **load** until `model loaded; serving` (the weights sent or found by hash, then the context), **first token** until the client has it (the prompt computed, one token). The engine's own timing of its load follows (connect / weights / context, where weights is everything in `llama_model_load` after the connections), then the CPU seconds (user + system) the coordinator's process tree (API process and engines) and each worker's (worker and rpc servers) used from the request to its first token, the seconds their threads were ready to run but waited for one of the machine's two cores (schedstat's run-queue time, summed over threads, so it can exceed the switch; threads that ended within the switch are not counted), and their minor page faults.",
    '',
    '| pair, network | switch | pick | unload | re-plan | engine | load | first token | total | connect / weights / context | CPU coordinator, s: user + sys, waited (faults) | CPU per worker, s: user + sys, waited (faults) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  const cpu = (u: SwitchCpu[]) => {
    const waited = stat(u.map((x) => x.waited ?? NaN)).median;
    return `${s2(stat(u.map((x) => x.user)).median)} + ${s2(stat(u.map((x) => x.sys)).median)}${Number.isFinite(waited) ? `, waited ${s2(waited)}` : ''} (${(stat(u.map((x) => x.faults)).median / 1000).toFixed(0)}k)`;
  };
  for (const m of p.setups) {
    for (const kind of kinds) {
      const k = ok(m).filter((r) => r.kind === kind);
      if (k.length === 0) continue;
      const seg = k.map((r) => switchSegments(r.steps));
      const med = (pick: (x: ReturnType<typeof switchSegments>) => number) => s2(stat(seg.map(pick)).median);
      const loads = k.flatMap((r) => (r.load ? [r.load] : []));
      const phase = (pick: (l: NonNullable<SwitchRun['load']>) => number) => s2(stat(loads.map(pick)).median);
      const workers = (m.runs[0]?.cpu.workers ?? []).map((_, i) => cpu(k.map((r) => r.cpu.workers[i]!))).join(' / ');
      lines.push(
        `| ${label(m)} | ${kind} | ${med((x) => x.pick)} | ${med((x) => x.unload)} | ${med((x) => x.replan)} | ${med((x) => x.engine)} | ${med((x) => x.load)} | ${med((x) => x.firstToken)} | ${s2(stat(k.map((r) => r.ttftMs / 1000)).median)} | ${phase((l) => l.connect)} / ${phase((l) => l.weights)} / ${phase((l) => l.context)} | ${cpu(k.map((r) => r.cpu.coordinator))} | ${workers} |`,
      );
    }
  }
  const failed = p.setups.flatMap((m) => m.runs.filter((r) => r.failures.length > 0).map((r) => ({ m, r })));
  if (failed.length > 0) {
    lines.push('', '### Switches that misbehaved', '');
    for (const { m, r } of failed) lines.push(`- ${label(m)}, ${r.kind} ${r.from} → ${r.to}, repetition ${r.rep + 1}: ${r.failures.join('; ')}`);
  }
  if (notes) lines.push('', notes.trim());
  lines.push('');
  return lines.join('\n');
}

/** bench:split's sides: hearth and llama-server, each in layer and tensor mode, over the same workers. */
export const SPLIT_SIDES = ['hearth-layer', 'hearth-tensor', 'llama-layer', 'llama-tensor'] as const;
export type SplitSide = (typeof SPLIT_SIDES)[number];

/** A link as a service's traffic crosses it (bench/link-probe.ts). */
export interface SplitLink {
  rttMs: { median: number; p10: number; p90: number };
  upMbit: number;
  downMbit: number;
}

/** One side measured once: decode speed of single requests and of `concurrency` at once. */
export interface SplitRun {
  side: SplitSide;
  rep: number;
  /** Decode tokens/s of each single request (after its first token). */
  singleTps: number[];
  /** Generated tokens/s over all requests at once, start to last token. */
  aggregateTps: number;
  /** Time to first token of the single requests, median, ms. */
  ttftMs: number;
  loadAverage: number;
  /** CPU the emulated LAN's delay relays used during the measurement, as a share of one core (all relays; null on loopback). */
  relayCpuShare?: number | null;
  /** What hearth planned (hearth sides; null for llama-server): its split mode as it logged it, per-device layers, predicted s/token. */
  plan: { split: string | null; layers: number[]; predictedSecondsPerToken: number | null } | null;
  /** Why this side could not be measured (the run has no figures then). */
  error: string | null;
}

/** One network with its workers: the settings each side ran in. */
export interface SplitSetup {
  workers: number;
  net: 'loopback' | 'lan';
  /** The round trip asked of the emulated LAN, ms (null on loopback), and the relays' delay that gave it. */
  rttMs: number | null;
  relayRttMs: number | null;
  rateMbit: number | null;
  /** Measured before the runs: this machine to each worker's host, and worker to worker. */
  links: { toWorkers: SplitLink[]; between: SplitLink[] } | null;
  /** Each worker's calibrated decode speed for the model's weight type (bytes/s; 0: not measured). */
  workerSpeeds: number[];
  runs: SplitRun[];
}

export interface SplitResults {
  date: string;
  command: string;
  quick: boolean;
  machine: { cpu: string; cores: number; memoryGiB: number; os: string; node: string };
  build: { llamaCpp: string; rpcProtocol: string };
  model: { file: string; bytes: number; weightType: string };
  settings: { reps: number; tokens: number; singles: number; concurrency: number; ctxSize: number; threadsPerWorker: number; warmUp: boolean };
  setups: SplitSetup[];
}

/** Medians of a setup's sides (NaN where a side has no figures) and the ratios between them. */
export function splitSummary(s: SplitSetup): Record<SplitSide, { single: Stat; aggregate: Stat; runs: number; error: string | null }> {
  const out = {} as Record<SplitSide, { single: Stat; aggregate: Stat; runs: number; error: string | null }>;
  for (const side of SPLIT_SIDES) {
    const runs = s.runs.filter((r) => r.side === side && r.error === null);
    const error = s.runs.find((r) => r.side === side && r.error !== null)?.error ?? null;
    out[side] = { single: stat(runs.map((r) => stat(r.singleTps).median)), aggregate: stat(runs.map((r) => r.aggregateTps)), runs: runs.length, error };
  }
  return out;
}

function splitSetupLabel(s: SplitSetup): string {
  return s.net === 'loopback' ? 'loopback' : `LAN ${s.rateMbit === null ? '' : `${s.rateMbit >= 1000 ? `${s.rateMbit / 1000} Gb/s` : `${s.rateMbit} Mb/s`}, `}RTT ${s.rttMs} ms`;
}

export function splitMarkdown(p: SplitResults, notes: string | null = null): string {
  const n2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
  const n1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
  const fmt = (x: Stat) => (Number.isFinite(x.median) ? `${n1(x.median)} (${n1(x.min)}–${n1(x.max)})` : 'n/a');
  const ratio = (a: Stat, b: Stat) => (Number.isFinite(a.median) && Number.isFinite(b.median) ? (a.median / b.median).toFixed(2) : 'n/a');
  const link = (l: SplitLink[]) =>
    l.length === 0 ? '–' : `${n2(stat(l.map((x) => x.rttMs.median)).median)} ms, ${stat(l.flatMap((x) => [x.upMbit, x.downMbit])).median.toFixed(0)} Mb/s`;
  const lines = [
    '## Tensor split',
    '',
    `Single-stream decode and ${p.settings.concurrency} requests at once, hearth with \`--split layer\` and \`--split tensor\` beside \`llama-server -sm layer\` and \`-sm tensor\` over the same workers (${p.settings.threadsPerWorker} thread each, \`ggml-rpc-server\` inside each hearth worker), in one run with the sides alternating (their order rotating), each started afresh per repetition${p.settings.warmUp ? ' and once before them, not measured, so that the workers\' tensor caches hold both splits\' tensors before any measured run' : ''}. hearth's coordinator runs with \`--local-device off --placement memory\`, so every layer is on the workers; llama-server gets hearth's layer split (\`-ts\`) in layer mode and equal shares in tensor mode. Requests are greedy completions of ${p.settings.tokens} tokens (ignore_eos), streamed over HTTP, every prompt unique and not cached; single-stream is the decode rate after the first token, the median of ${p.settings.singles} requests per repetition; aggregate is all generated tokens over the wall time of ${p.settings.concurrency} requests sent at once. Figures are medians over ${p.settings.reps} repetition${p.settings.reps === 1 ? '' : 's'} with their min–max.`,
    '',
    "Networks: **loopback** (everything on 127.0.0.1), and an **emulated LAN** (`bench/lan.ts`): each worker a host in a network namespace of its own on a bridge, its cable limited both ways by tc `tbf`, and, since this kernel has no netem, a user-space delay relay (`bench/delay-relay.ts`) in front of each host's ports, so every connection into a worker — the coordinator's, llama-server's and the workers' peer links to each other — gets the round trip. The relays' delay is trimmed at start so that a one-byte ping-pong between two processes measures the RTT asked for. The link columns are measured before the runs by `bench/link-probe.ts` through the same path: round trip (median) and bulk rate (median of both directions), coordinator to worker and worker to worker: these and each worker's calibrated speed are what `hearth plan --simulate` takes (`rttMs`, `linkGbps`, `speed`).",
    '',
    ...madeBy(p.command, 'bench/split.ts', p.date),
    '',
    `Machine: ${p.machine.cpu}, ${p.machine.cores} cores, ${p.machine.memoryGiB} GiB, ${p.machine.os}, Node ${p.machine.node}. llama.cpp ${p.build.llamaCpp}, RPC protocol ${p.build.rpcProtocol}. Model: \`${p.model.file}\` (${(p.model.bytes / 2 ** 30).toFixed(2)} GiB, ${p.model.weightType}).`,
    ...(p.quick ? ['', '**Quick run** (`--quick`: one repetition, short requests): it checks the harness; its figures are not the benchmark.'] : []),
  ];
  for (const workers of [...new Set(p.setups.map((s) => s.workers))]) {
    const setups = p.setups.filter((s) => s.workers === workers);
    const sums = setups.map((s) => ({ s, m: splitSummary(s) }));
    for (const [metric, title] of [['single', 'single-stream decode, tokens/s'], ['aggregate', `aggregate at ${p.settings.concurrency} concurrent, tokens/s`]] as const) {
      lines.push(
        '',
        `### ${workers} workers: ${title}`,
        '',
        '| network | RTT, rate: coordinator → worker | worker ↔ worker | hearth layer | hearth tensor | tensor ÷ layer | llama-server layer | llama-server tensor | tensor ÷ layer | hearth tensor ÷ llama-server tensor |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      );
      for (const { s, m } of sums) {
        const v = (side: SplitSide) => m[side][metric];
        lines.push(
          `| ${splitSetupLabel(s)} | ${s.links ? link(s.links.toWorkers) : '–'} | ${s.links ? link(s.links.between) : '–'} | ${fmt(v('hearth-layer'))} | ${fmt(v('hearth-tensor'))} | ${ratio(v('hearth-tensor'), v('hearth-layer'))} | ${fmt(v('llama-layer'))} | ${fmt(v('llama-tensor'))} | ${ratio(v('llama-tensor'), v('llama-layer'))} | ${ratio(v('hearth-tensor'), v('llama-tensor'))} |`,
        );
      }
    }
    const planned = setups.flatMap((s) => s.runs.filter((r) => r.plan?.predictedSecondsPerToken).map((r) => ({ s, r })));
    if (planned.length > 0) {
      lines.push('', `hearth's own prediction against the measured single stream (${workers} workers; the coordinator's planned seconds per token, as its status reports it):`, '');
      for (const { s, m } of sums) {
        for (const side of ['hearth-layer', 'hearth-tensor'] as const) {
          const pred = stat(s.runs.filter((r) => r.side === side && r.plan?.predictedSecondsPerToken).map((r) => 1 / r.plan!.predictedSecondsPerToken!));
          if (!Number.isFinite(pred.median)) continue;
          const split = s.runs.find((r) => r.side === side && r.plan)?.plan?.split ?? '?';
          lines.push(`- ${splitSetupLabel(s)}, ${side} (ran as ${split}): predicted ${n1(pred.median)} tokens/s, measured ${n1(m[side].single.median)} (${ratio(m[side].single, pred)} of the prediction)`);
        }
      }
    }
    const errors = sums.flatMap(({ s, m }) => SPLIT_SIDES.filter((side) => m[side].error !== null).map((side) => `- ${splitSetupLabel(s)}, ${side}${m[side].runs > 0 ? ` (failed in some repetitions, measured in ${m[side].runs})` : ''}: ${m[side].error}`));
    if (errors.length > 0) lines.push('', `Sides that could not be measured (${workers} workers):`, '', ...errors);
  }
  const relays = p.setups.filter((s) => s.runs.some((r) => typeof r.relayCpuShare === 'number'));
  if (relays.length > 0) {
    const share = (s: SplitSetup, side: SplitSide) => stat(s.runs.filter((r) => r.side === side && typeof r.relayCpuShare === 'number').map((r) => 100 * r.relayCpuShare!)).median;
    lines.push(
      '',
      `The delay relays' own CPU during the measured runs, all relays together, % of one core (median; the machine has ${p.machine.cores}): ${relays.map((s) => `${splitSetupLabel(s)}, ${s.workers} workers: ${SPLIT_SIDES.map((side) => `${side} ${Number.isFinite(share(s, side)) ? share(s, side).toFixed(0) : 'n/a'}`).join(', ')}`).join('; ')}.`,
    );
  }
  const speeds = p.setups.filter((s) => s.workerSpeeds.some((x) => x > 0));
  if (speeds.length > 0) {
    lines.push('', `Workers' calibrated speed for ${p.model.weightType} weights, GB/s: ${speeds.map((s) => `${splitSetupLabel(s)}, ${s.workers} workers: ${s.workerSpeeds.map((x) => (x / 1e9).toFixed(1)).join(' / ')}`).join('; ')}.`);
  }
  if (notes) lines.push('', notes.trim());
  lines.push('');
  return lines.join('\n');
}
