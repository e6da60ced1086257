// The multi-turn chat alone (issue 25): hearth's coordinator against llama.cpp's `llama-server --rpc` on
// the same two 1-thread workers with the same split, each later turn carrying the previous reply back.
// Both sides get the very same conversation in a repetition (the same prose, the same follow-ups), so
// their token counts compare one for one: per turn, the prompt, the tokens each server took from its
// cache and the tokens it computed (prompt minus cached; llama-server's own `timings.prompt_n` is
// printed beside it where the two differ). Each mode (streamed or not, a reading pause or none) is its own conversation;
// the sides alternate in a rotated order every repetition.
//
//   npm run bench:chat -- [--model FILE | --preset 1b --quant q8_0] [--reps 3] [--modes stream:0,plain:0,stream:3000]
//                         [--turns 4] [--first-words 1200] [--reply-tokens 32] [--parallel 8] [--llama-server FILE]
//
// Writes bench/chat-results.json (or --out; bench/chat-results-<name>.json for another setup, shown beside
// it) and regenerates BENCHMARKS.md (its chat section; figures newer than `hearth bench`'s run give the
// multi-turn chat's targets).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { spawnHearth, startLocalWorker, type LocalWorker } from '../cli/local-cluster.js';
import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import { createTestModel, isTestModelPreset, isTestModelQuant, testModelFileName } from '../models/test-models.js';
import { ensureLlamaTool } from './llama-tools.js';
import { streamEvents, uniqueProse, type ChatMessage, type StreamEvent } from './measure.js';
import { chatTurnsSummary, type ChatBenchMode, type ChatBenchResults, type ChatBenchRun, type ChatBenchSide, type ChatBenchTurn } from './report.js';
import { serve, writeReport } from './run.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    preset: { type: 'string', default: '1b' },
    quant: { type: 'string', default: 'q8_0' },
    reps: { type: 'string', default: '3' },
    modes: { type: 'string', default: 'stream:0' },
    turns: { type: 'string', default: '4' },
    'first-words': { type: 'string', default: '1200' },
    'reply-tokens': { type: 'string', default: '32' },
    parallel: { type: 'string', default: '8' },
    'ctx-size': { type: 'string', default: '4096' },
    threads: { type: 'string', default: '1' },
    'hearth-args': { type: 'string', default: '' },
    'llama-server': { type: 'string' },
    out: { type: 'string', default: 'bench/chat-results.json' },
  },
});

/** The short user messages of the turns after the first, in order (as `hearth bench`'s chat). */
const FOLLOW_UPS = ['Go on with the story.', 'What happened next?', 'And how did it end?'];
const SIDES: ChatBenchSide[] = ['llama-server', 'hearth'];

interface Server {
  base: string;
  stop(): Promise<void>;
}

interface Settings {
  model: string;
  turns: number;
  firstWords: number;
  replyTokens: number;
  parallel: number;
  ctxSize: number;
  threads: number;
  hearthArgs: string[];
}

async function startHearth(s: Settings, workers: LocalWorker[], logFile: string): Promise<Server & { split: { endpoints: string[]; layers: number[] }; groups: number }> {
  const http = await freePortOn('127.0.0.1');
  const grpc = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    // As `hearth bench` starts it: --placement memory gives the two-worker split llama-server is given.
    ['coordinator', '--model', s.model, ...workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory',
      '--ctx-size', String(s.ctxSize), '--parallel', String(s.parallel), '--threads', String(s.threads), '--host', '127.0.0.1', '--grpc-port', String(grpc), '--http-port', String(http),
      '--log-level', 'warn', ...s.hearthArgs],
    ['ignore', 'pipe', 'pipe'],
  );
  const { stop } = await serve(child, `http://127.0.0.1:${http}`, 'the hearth coordinator', logFile);
  const client = new CoordinatorClient(`127.0.0.1:${grpc}`);
  try {
    const status = await client.getStatus();
    return {
      base: `http://127.0.0.1:${http}`,
      split: { endpoints: status.plan.devices.map((d) => d.endpoint), layers: status.plan.devices.map((d) => d.layers) },
      groups: status.load.groups,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  } finally {
    client.close();
  }
}

async function startLlamaServer(binary: string, s: Settings, split: { endpoints: string[]; layers: number[] }, logFile: string): Promise<Server> {
  const port = await freePortOn('127.0.0.1');
  // As `hearth bench` starts it: -c is shared by the -np slots, so each gets ctxSize as hearth's sequences do.
  const args = ['-m', s.model, '--rpc', split.endpoints.join(','), '-ngl', '99', '-ts', split.layers.join(','), '-c', String(s.ctxSize * s.parallel), '-np', String(s.parallel),
    '-t', String(s.threads), '-tb', String(s.threads), '-b', '512', '-ub', '512', '--jinja', '--host', '127.0.0.1', '--port', String(port)];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const { stop } = await serve(child, `http://127.0.0.1:${port}`, 'llama-server', logFile);
  return { base: `http://127.0.0.1:${port}`, stop };
}

/** What both servers answer a chat request with, as far as this benchmark reads it. */
interface ChatAnswer {
  usage?: StreamEvent['usage'];
  timings?: { cache_n?: number; prompt_n?: number };
  choices?: { message?: { content?: string | null } }[];
}

/** One turn: streamed (time to the first reply text) or not (time to the whole answer). */
async function chatTurn(base: string, messages: readonly ChatMessage[], maxTokens: number, stream: boolean): Promise<Omit<ChatBenchTurn, 'turn'>> {
  const body = { messages, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
  const started = performance.now();
  let first = 0;
  let reply = '';
  let usage: StreamEvent['usage'] | undefined;
  let evaluated: number | null = null;
  if (stream) {
    for await (const { data, at } of streamEvents(`${base}/v1/chat/completions`, body)) {
      if (data.usage) usage = data.usage;
      const t = data.timings as { prompt_n?: number } | undefined;
      if (typeof t?.prompt_n === 'number') evaluated = t.prompt_n;
      const content = data.choices?.[0]?.delta?.content;
      if (typeof content === 'string' && content !== '') {
        if (first === 0) first = at;
        reply += content;
      }
    }
  } else {
    const r = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!r.ok) throw new HearthError(ErrorCode.Internal, `${base} answered ${r.status}: ${await r.text()}`);
    const answer = (await r.json()) as ChatAnswer;
    first = performance.now();
    usage = answer.usage;
    if (typeof answer.timings?.prompt_n === 'number') evaluated = answer.timings.prompt_n;
    reply = answer.choices?.[0]?.message?.content ?? '';
  }
  if (!usage) throw new HearthError(ErrorCode.Internal, `${base} reported no usage for a chat turn`);
  if (first === 0) throw new HearthError(ErrorCode.Internal, `${base} gave no reply text for a chat turn`);
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  return { ms: first - started, promptTokens: usage.prompt_tokens, cachedTokens: cached, computedTokens: usage.prompt_tokens - cached, serverEvaluated: evaluated, reply };
}

/** The conversation of a repetition and mode: the same on every side. */
function opening(rep: number, mode: number, words: number): string {
  return `${uniqueProse(7000 + rep * 16 + mode, words)}\n\nTell me a story that goes on from this.`;
}

async function converse(base: string, s: Settings, mode: ChatBenchMode, rep: number, modeIndex: number): Promise<ChatBenchTurn[]> {
  const messages: ChatMessage[] = [{ role: 'user', content: opening(rep, modeIndex, s.firstWords) }];
  const turns: ChatBenchTurn[] = [];
  for (let t = 0; t < s.turns; t++) {
    if (t > 0) {
      messages.push({ role: 'assistant', content: turns[t - 1]!.reply }, { role: 'user', content: FOLLOW_UPS[(t - 1) % FOLLOW_UPS.length]! });
      if (mode.pauseMs > 0) await new Promise((r) => setTimeout(r, mode.pauseMs));
    }
    turns.push({ turn: t + 1, ...(await chatTurn(base, messages, s.replyTokens, mode.stream)) });
  }
  return turns;
}

function parseModes(text: string): ChatBenchMode[] {
  return text.split(',').map((m) => {
    const [kind, pause = '0'] = m.split(':');
    if (kind !== 'stream' && kind !== 'plain') throw new HearthError(ErrorCode.InvalidArgument, `--modes: '${m}' is not stream:<pause ms> or plain:<pause ms>`);
    return { stream: kind === 'stream', pauseMs: parseInteger(pause, '--modes pause', { min: 0, max: 600_000 }) };
  });
}

async function modelFile(say: (line: string) => void): Promise<string> {
  if (values.model) {
    if (!existsSync(values.model)) throw new HearthError(ErrorCode.NotFound, `model file not found: ${values.model}`);
    return resolve(values.model);
  }
  const preset = values.preset!;
  const quant = values.quant!;
  if (!isTestModelPreset(preset)) throw new HearthError(ErrorCode.InvalidArgument, `--preset: '${preset}' is not a test model preset`);
  if (!isTestModelQuant(quant)) throw new HearthError(ErrorCode.InvalidArgument, `--quant: '${quant}' is not a test model quantization`);
  const file = join(homedir(), '.cache', 'hearth', 'models', testModelFileName(preset, quant, 1));
  if (!existsSync(file)) {
    say(`creating the ${preset} test model (${quant}) at ${file} ...`);
    await createTestModel({ out: file, preset, quant, seed: 1 });
  }
  return file;
}

async function main(): Promise<void> {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  const reps = parseInteger(values.reps!, '--reps', { min: 1, max: 100 });
  const modes = parseModes(values.modes!);
  const s: Settings = {
    model: await modelFile(say),
    turns: parseInteger(values.turns!, '--turns', { min: 2, max: 64 }),
    firstWords: parseInteger(values['first-words']!, '--first-words', { min: 1, max: 100_000 }),
    replyTokens: parseInteger(values['reply-tokens']!, '--reply-tokens', { min: 1, max: 4096 }),
    parallel: parseInteger(values.parallel!, '--parallel', { min: 1, max: 64 }),
    ctxSize: parseInteger(values['ctx-size']!, '--ctx-size', { min: 256, max: 1 << 20 }),
    threads: parseInteger(values.threads!, '--threads', { min: 1, max: 256 }),
    hearthArgs: values['hearth-args']!.split(' ').filter((x) => x !== ''),
  };
  const llamaServer = values['llama-server'] ?? (await ensureLlamaTool('llama-server', say));
  const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-chat-'));
  const logFile = join(dir, 'servers.log');
  const workers: LocalWorker[] = [];
  const runs: ChatBenchRun[] = [];
  const started = Date.now();
  let groups = 0;
  let split: { endpoints: string[]; layers: number[] } | null = null;
  try {
    for (const name of ['chat-worker-1', 'chat-worker-2']) workers.push(await startLocalWorker({ name, threads: s.threads, dir, stdio: ['ignore', 'ignore', 'ignore'] }));
    // A first load fills the workers' tensor caches and gives the split llama-server is then given.
    const first = await startHearth(s, workers, logFile);
    split = first.split;
    groups = first.groups;
    await first.stop();
    say(`two ${s.threads}-thread workers up; split ${split.layers.join(' + ')} layers; hearth decodes in ${groups} context(s); servers' output goes to ${logFile}`);
    for (let rep = 0; rep < reps; rep++) {
      const order = SIDES.map((_, i) => SIDES[(i + rep) % SIDES.length]!);
      for (const side of order) {
        const server = side === 'hearth' ? await startHearth(s, workers, logFile) : await startLlamaServer(llamaServer, s, split, logFile);
        try {
          // The first request after a load allocates graphs.
          await chatTurn(server.base, [{ role: 'user', content: uniqueProse(9000 + rep, 8) }], 4, false);
          for (const [m, mode] of modes.entries()) {
            const turns = await converse(server.base, s, mode, rep, m);
            runs.push({ side, rep, mode, turns });
            say(
              `rep ${rep + 1}/${reps} ${side.padEnd(12)} ${mode.stream ? 'stream' : 'plain '} pause ${mode.pauseMs} ms: ` +
                `${turns.map((t) => `${t.ms.toFixed(0)} ms ${t.promptTokens}/${t.cachedTokens}/${t.computedTokens}${t.serverEvaluated !== null && t.serverEvaluated !== t.computedTokens ? `(${t.serverEvaluated})` : ''}`).join(' | ')}`,
            );
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
  const results: ChatBenchResults = {
    date: new Date(started).toISOString(),
    command: `npm run bench:chat --${process.argv.slice(2).map((a) => ` ${a}`).join('')}`,
    model: basename(s.model),
    settings: { turns: s.turns, firstWords: s.firstWords, replyTokens: s.replyTokens, parallel: s.parallel, ctxSize: s.ctxSize, threadsPerWorker: s.threads, split: split.layers, pipelineGroups: groups, hearthArgs: s.hearthArgs, reps },
    runs,
  };
  const out = resolve(values.out!);
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  for (const line of chatTurnsSummary(results)) say(line);
  // The report shows bench/chat-results.json and any bench/chat-results-<name>.json (another setup).
  if (dirname(out) === resolve('bench') && /^chat-results(-[\w.-]+)?\.json$/.test(basename(out))) writeReport(resolve('bench/results.json'), resolve('BENCHMARKS.md'), resolve('bench/aggregate.svg'));
  say(`wrote ${out}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
