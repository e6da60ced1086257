// Speculative decoding, single request (issue 12): hearth's coordinator without speculation, with the
// draft model and with n-gram lookup, against llama.cpp's `llama-server --rpc` the same three ways, on
// the same two 1-thread workers with the same split. One request at a time, greedy, a fixed number of
// tokens (ignore_eos); generation speed is first token → last. Every repetition starts each side afresh
// in a rotated order, so drift of this shared machine hits every side alike.
//
//   npm run bench:speculative -- [--reps 3] [--tokens 128] [--draft-max 8] [--ngram 3]
//
// Writes bench/speculative-results.json and regenerates BENCHMARKS.md (its speculative section).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';

import { spawnHearth, startLocalWorker, type LocalWorker } from '../cli/local-cluster.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import { createTestModel, testModelFileName, type TestModelPreset } from '../models/test-models.js';
import { ensureLlamaTool } from './llama-tools.js';
import { streamEvents, uniqueProse, type StreamEvent } from './measure.js';
import { speculativeSummary, stat, type SpeculativePrompt, type SpeculativeResults, type SpeculativeRun, type SpeculativeSide } from './report.js';
import { serve, writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    draft: { type: 'string' },
    reps: { type: 'string', default: '3' },
    tokens: { type: 'string', default: '128' },
    'draft-max': { type: 'string', default: '8' },
    ngram: { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench/speculative-results.json' },
  },
});

/** Context per request on every side; the repeat prompt (~420 tokens) and the longest reply fit. */
const CTX_SIZE = 2048;
/** Words of the passage the repeat prompt asks to be repeated. */
const PASSAGE_WORDS = 300;
/** Timed requests per prompt each time a side starts: their median is the start's figure. */
const REQUESTS_PER_START = 3;

interface Settings {
  target: string;
  draft: string;
  tokens: number;
  draftMax: number;
  ngram: number;
}

/** The prompts each kind of side is measured on: plain sides on both, for the ratios against them. */
const PROMPTS_OF: Record<SpeculativeSide, SpeculativePrompt[]> = {
  hearth: ['prose', 'repeat'],
  'hearth-draft': ['prose'],
  'hearth-ngram': ['repeat'],
  'llama-server': ['prose', 'repeat'],
  'llama-server-draft': ['prose'],
  'llama-server-ngram': ['repeat'],
};
const SIDES = Object.keys(PROMPTS_OF) as SpeculativeSide[];

/** The prompt of a kind for a repetition: the same on every side within the repetition. */
function promptFor(kind: SpeculativePrompt, rep: number): string {
  if (kind === 'prose') return uniqueProse(1000 + rep, 40);
  const passage = uniqueProse(2000 + rep, PASSAGE_WORDS);
  return `${passage}\n\nRepeat the passage above word for word:\n${passage.split(' ').slice(0, 6).join(' ')}`;
}

interface Generation {
  text: string;
  tokensPerSecond: number;
  promptTokens: number;
  completionTokens: number;
  /** Drafted and accepted tokens as the server reported them; null when it reported none. */
  drafted: number | null;
  accepted: number | null;
}

/**
 * One streamed greedy completion of a fixed length, timed from the first text to the last (as
 * bench/measure.ts's streamCompletion), with its text and the speculation counts of either server.
 */
async function generate(base: string, prompt: string, maxTokens: number): Promise<Generation> {
  const body = { prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, cache_prompt: false, stream: true, stream_options: { include_usage: true } };
  let text = '';
  let first = 0;
  let last = 0;
  let chunks = 0;
  let usage: StreamEvent['usage'] | null = null;
  let timings: StreamEvent['timings'] | null = null;
  for await (const { data, at } of streamEvents(`${base}/v1/completions`, body)) {
    if (data.usage) usage = data.usage;
    if (data.timings) timings = data.timings;
    const t = data.choices?.[0]?.text;
    if (t) {
      if (first === 0) first = at;
      last = at;
      chunks++;
      text += t;
    }
  }
  const completionTokens = usage?.completion_tokens || chunks;
  const details = usage?.completion_tokens_details;
  // llama-server leaves draft_n out of its timings when nothing was drafted.
  const drafted = details ? details.accepted_prediction_tokens + details.rejected_prediction_tokens : timings ? (timings.draft_n ?? 0) : null;
  const accepted = details ? details.accepted_prediction_tokens : timings ? (timings.draft_n_accepted ?? 0) : null;
  return { text, tokensPerSecond: (completionTokens - 1) / ((last - first) / 1000), promptTokens: usage?.prompt_tokens ?? 0, completionTokens, drafted, accepted };
}

interface Server {
  base: string;
  /** hearth's account of its speculation (its status); null for llama-server. */
  speculation: string | null;
  stop(): Promise<void>;
}

/** The flags that make a side speculate, in each program's terms. */
function speculationFlags(side: SpeculativeSide, s: Settings): string[] {
  switch (side) {
    case 'hearth-draft':
      return ['--draft-model', s.draft, '--draft-max', String(s.draftMax)];
    case 'hearth-ngram':
      return ['--draft-ngram', String(s.ngram), '--draft-max', String(s.draftMax)];
    case 'llama-server-draft':
      // This release infers no speculation type from a plain draft GGUF, so it is named. -devd none keeps
      // the draft on llama-server's own CPU, as hearth runs it on the coordinator's.
      return ['--model-draft', s.draft, '-devd', 'none', '--spec-type', 'draft-simple', '--spec-draft-n-max', String(s.draftMax)];
    case 'llama-server-ngram':
      return ['--spec-type', 'ngram-simple', '--spec-ngram-simple-size-n', String(s.ngram), '--spec-ngram-simple-size-m', String(s.draftMax)];
    default:
      return [];
  }
}

async function startHearth(side: SpeculativeSide, s: Settings, workers: LocalWorker[], logFile: string): Promise<Server & { split: { endpoints: string[]; layers: number[] } }> {
  const http = await freePortOn('127.0.0.1');
  const grpc = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    // --placement memory: the two-worker split llama-server is given (equal workers under the speed
    // objective would seat a model this small on one of them).
    ['coordinator', '--model', s.target, ...workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory',
      '--ctx-size', String(CTX_SIZE), '--parallel', '1', '--threads', '1', '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http), '--log-level', 'warn',
      ...speculationFlags(side, s)],
    ['ignore', 'pipe', 'pipe'],
  );
  const { stop } = await serve(child, `http://127.0.0.1:${http}`, `the hearth coordinator (${side})`, logFile);
  const client = new CoordinatorClient(`127.0.0.1:${grpc}`);
  try {
    const status = await client.getStatus();
    return {
      base: `http://127.0.0.1:${http}`,
      speculation: status.speculation,
      split: { endpoints: status.plan.devices.map((d) => d.endpoint), layers: status.plan.devices.map((d) => d.layers) },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    client.close();
  }
}

async function startLlamaServer(binary: string, side: SpeculativeSide, s: Settings, split: { endpoints: string[]; layers: number[] }, logFile: string): Promise<Server> {
  const port = await freePortOn('127.0.0.1');
  const args = ['-m', s.target, '--rpc', split.endpoints.join(','), '-ngl', '99', '-ts', split.layers.join(','), '-c', String(CTX_SIZE), '-np', '1',
    '-t', '1', '-tb', '1', '-b', '512', '-ub', '512', ...speculationFlags(side, s), '--host', '127.0.0.1', '--port', String(port)];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const { stop } = await serve(child, `http://127.0.0.1:${port}`, `llama-server (${side})`, logFile);
  return { base: `http://127.0.0.1:${port}`, speculation: null, stop };
}

async function modelFile(given: string | undefined, preset: TestModelPreset, say: (line: string) => void): Promise<string> {
  if (given) {
    if (!existsSync(given)) throw new HearthError(ErrorCode.NotFound, `model file not found: ${given}`);
    return given;
  }
  // The pair shares its embeddings, first block and output head only when made with the same seed.
  const file = join(homedir(), '.cache', 'hearth', 'models', testModelFileName(preset, 'f16', 1));
  if (!existsSync(file)) {
    say(`creating the ${preset} test model (F16, seed 1) at ${file} ...`);
    await createTestModel({ out: file, preset, quant: 'f16', seed: 1 });
  }
  return file;
}

async function main(): Promise<void> {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  const reps = parseInteger(values.reps!, '--reps', { min: 1, max: 100 });
  const settings: Settings = {
    target: await modelFile(values.target, 'target', say),
    draft: await modelFile(values.draft, 'draft', say),
    tokens: parseInteger(values.tokens!, '--tokens', { min: 2, max: 1024 }),
    draftMax: parseInteger(values['draft-max']!, '--draft-max', { min: 1, max: 64 }),
    ngram: parseInteger(values.ngram!, '--ngram', { min: 1, max: 64 }),
  };
  const llamaServer = await ensureLlamaTool('llama-server', say);
  const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-speculative-'));
  const logFile = join(dir, 'servers.log');
  const workers: LocalWorker[] = [];
  const runs: SpeculativeRun[] = [];
  /** Each run's text, to check that speculation changed no greedy token. */
  const texts = new Map<string, string>();
  const speculation: Record<string, string> = {};
  const promptTokens: Partial<Record<SpeculativePrompt, number>> = {};
  const started = Date.now();
  try {
    for (const name of ['spec-worker-1', 'spec-worker-2']) workers.push(await startLocalWorker({ name, threads: 1, dir, stdio: ['ignore', 'ignore', 'ignore'] }));
    // A first load fills the workers' tensor caches and gives the split llama-server is then given.
    const first = await startHearth('hearth', settings, workers, logFile);
    const split = first.split;
    await first.stop();
    say(`two 1-thread workers up; split ${split.layers.join(' + ')} layers; servers' output goes to ${logFile}`);

    for (let rep = 0; rep < reps; rep++) {
      const order = SIDES.map((_, i) => SIDES[(i + rep) % SIDES.length]!);
      for (const side of order) {
        const server = side.startsWith('hearth') ? await startHearth(side, settings, workers, logFile) : await startLlamaServer(llamaServer, side, settings, split, logFile);
        if (server.speculation !== null) speculation[side] ??= server.speculation;
        try {
          // The first request after a load allocates graphs (and warms the draft).
          await generate(server.base, uniqueProse(9000 + rep, 8), 4);
          for (const prompt of PROMPTS_OF[side]) {
            const gs: Generation[] = [];
            for (let i = 0; i < REQUESTS_PER_START; i++) gs.push(await generate(server.base, promptFor(prompt, rep), settings.tokens));
            for (const g of gs) {
              if (g.completionTokens !== settings.tokens) throw new HearthError(ErrorCode.Internal, `${side} generated ${g.completionTokens} tokens, not ${settings.tokens}`);
            }
            // Greedy: the same prompt gives the same text each time, speculation or not.
            if (gs.some((g) => g.text !== gs[0]!.text)) say(`rep ${rep + 1}/${reps} ${side} ${prompt}: WARNING the same greedy request gave different texts`);
            promptTokens[prompt] ??= gs[0]!.promptTokens;
            texts.set(`${side}/${prompt}/${rep}`, gs[0]!.text);
            const sum = (pick: (g: Generation) => number | null) => (gs.every((g) => pick(g) === null) ? null : gs.reduce((n, g) => n + (pick(g) ?? 0), 0));
            const run: SpeculativeRun = {
              side, prompt, rep,
              tokensPerSecond: stat(gs.map((g) => g.tokensPerSecond)).median,
              requests: gs.map((g) => g.tokensPerSecond),
              drafted: sum((g) => g.drafted),
              accepted: sum((g) => g.accepted),
              sameTextAsPlain: null,
            };
            runs.push(run);
            const acceptance = run.drafted !== null ? `, accepted ${run.accepted}/${run.drafted} (${run.drafted ? ((100 * run.accepted!) / run.drafted).toFixed(0) : '-'} %)` : '';
            say(`rep ${rep + 1}/${reps} ${side.padEnd(18)} ${prompt.padEnd(6)}: ${run.tokensPerSecond.toFixed(2)} tok/s (${run.requests.map((x) => x.toFixed(1)).join(', ')})${acceptance}`);
          }
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    rmSync(dir, { recursive: true, force: true });
  }

  // Greedy speculation keeps the target's own tokens: each speculative text against its program's plain one.
  for (const run of runs) {
    if (run.side === 'hearth' || run.side === 'llama-server') continue;
    const plain = run.side.startsWith('hearth') ? 'hearth' : 'llama-server';
    run.sameTextAsPlain = texts.get(`${run.side}/${run.prompt}/${run.rep}`) === texts.get(`${plain}/${run.prompt}/${run.rep}`);
  }
  const result: SpeculativeResults = {
    date: new Date().toISOString(),
    command: `npm run bench:speculative -- --reps ${reps} --tokens ${settings.tokens} --draft-max ${settings.draftMax} --ngram ${settings.ngram}`,
    target: basename(settings.target),
    targetBytes: statSync(settings.target).size,
    draft: basename(settings.draft),
    draftBytes: statSync(settings.draft).size,
    tokens: settings.tokens,
    reps,
    draftMax: settings.draftMax,
    ngram: settings.ngram,
    ctxSize: CTX_SIZE,
    passageWords: PASSAGE_WORDS,
    requestsPerStart: REQUESTS_PER_START,
    promptTokens: { prose: promptTokens.prose ?? 0, repeat: promptTokens.repeat ?? 0 },
    speculation,
    runs,
  };
  writeFileSync(values.out!, JSON.stringify(result, null, 2) + '\n');
  if (existsSync('bench/results.json')) writeReport('bench/results.json', 'BENCHMARKS.md', 'bench/aggregate.svg');
  process.stdout.write(JSON.stringify(speculativeSummary(result), null, 2) + '\n');
  say(`done in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${values.out}`);
}

await main().catch((e: unknown) => {
  process.stderr.write(`bench:speculative: ${messageOf(e)}\n`);
  process.exitCode = 1;
});
