// The benchmark: hearth's coordinator against llama.cpp's own `llama-server --rpc` on the same two
// workers with the same split, alternating so that drift hits both alike; plus hearth's cold load and
// warm reload, and the model in one process as the no-network reference.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, homedir, release, tmpdir, totalmem } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';

import { ErrorCode, HearthError } from '../common/errors.js';
import { newToken } from '../link/token.js';
import { freePortOn } from '../common/ports.js';
import { CoordinatorClient } from '../coordinator/client.js';
import { loadBinding } from '../native/binding.js';
import { createTestModel, testModelFileName } from '../models/test-models.js';
import { spawnHearth, startLocalWorker, waitHealthy, type LocalWorker } from '../cli/local-cluster.js';
import { ensureLlamaTool } from './llama-tools.js';
import { runSuite, type ChatSettings, type SuiteFigures, type SuiteSettings } from './measure.js';
import { abMarkdown, chartSvg, chatBenchMarkdown, linkMarkdown, markdown, met, placementMarkdown, resumeMarkdown, speculativeMarkdown, splitMarkdown, switchMarkdown, targets, type AbResults, type BenchResults, type ChatBenchResults, type LinkResults, type PlacementResults, type ResumeResults, type Side, type SpeculativeResults, type SplitResults, type SwitchResults } from './report.js';

const COLD_LOAD_REPS = 3;

/** The multi-turn chat: a first message of about 1,500 tokens, then three short turns. */
const CHAT: ChatSettings = { turns: 4, firstPromptWords: 1200, replyTokens: 32 };
/**
 * Context per request (hearth's --ctx-size; llama-server's -c over -np) the chat needs at least: with the
 * llama SPM vocabulary its turns' prompts are about 1,505, 1,553, 1,599 and 1,647 tokens (template and
 * replies included); 4096 leaves room for a vocabulary that takes more tokens per word.
 */
const CHAT_CONTEXT = 4096;

/** Removes the tensors a worker's rpc server cached, so the next load sends every weight again. */
function emptyTensorCache(cacheDir: string): void {
  const dir = join(cacheDir, 'rpc');
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) rmSync(join(dir, f), { force: true });
}

export interface BenchOptions {
  model: string | null;
  threads: number;
  concurrency: number[];
  reps: number;
  genTokens: number;
  promptWords: number;
  ctxSize: number;
  /** Reading time between the chat's turns, ms (the same for every side). */
  chatPauseMs: number;
  local: boolean;
  /** Also measure hearth with a cluster token (TLS 1.3 PSK links) against hearth open. */
  secure: boolean;
  /** Also measure hearth with --pipeline off (one context), to show what pipelined decode adds. */
  serial: boolean;
  outJson: string;
  outMarkdown: string;
  outChart: string;
  command: string;
}

interface Server {
  base: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

function stopper(child: ChildProcess): () => Promise<void> {
  const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
  return async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
}

/** Pipes a server's output to the log and waits for its /health; stops it when that fails. */
export async function serve(child: ChildProcess, base: string, what: string, logFile: string): Promise<Server> {
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const stop = stopper(child);
  try {
    await waitHealthy(`${base}/health`, 600_000, () => child.exitCode === null);
  } catch (e) {
    await stop();
    throw new HearthError(ErrorCode.Unavailable, `${what} did not start (see ${logFile}): ${(e as Error).message}`);
  }
  return { base, child, stop };
}

async function startLlamaServer(binary: string, args: string[], logFile: string): Promise<Server> {
  const port = await freePortOn('127.0.0.1');
  const child = spawn(binary, [...args, '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  return serve(child, `http://127.0.0.1:${port}`, 'llama-server', logFile);
}

async function startCoordinator(model: string, workers: LocalWorker[], o: BenchOptions, parallel: number, logFile: string, token: string | null = null, extra: string[] = []): Promise<Server & { grpc: string }> {
  const http = await freePortOn('127.0.0.1');
  const grpcPort = await freePortOn('127.0.0.1');
  const child = spawnHearth(
    // --placement memory: the same two-worker split llama-server is given (equal workers under the speed
    // objective would seat a model this small on one of them; bench/placement.ts measures that).
    ['coordinator', '--model', model, ...workers.flatMap((w) => ['--worker', w.control]), '--no-mdns', '--local-device', 'off', '--placement', 'memory', '--ctx-size', String(o.ctxSize),
      '--parallel', String(parallel), '--threads', String(o.threads), '--host', '127.0.0.1', '--grpc-port', String(grpcPort), '--http-port', String(http), '--log-level', 'warn', ...extra],
    ['ignore', 'pipe', 'pipe'],
    token ? { HEARTH_TOKEN: token } : {},
  );
  return { ...(await serve(child, `http://127.0.0.1:${http}`, 'the hearth coordinator', logFile)), grpc: `127.0.0.1:${grpcPort}` };
}

export async function runBenchmark(o: BenchOptions, say: (line: string) => void): Promise<BenchResults> {
  const started = Date.now();
  const chat = o.ctxSize >= CHAT_CONTEXT ? { ...CHAT, ...(o.chatPauseMs > 0 ? { pauseMs: o.chatPauseMs } : {}) } : null;
  if (!chat) say(`the multi-turn chat needs --ctx-size ${CHAT_CONTEXT} or more; skipping it`);
  const llamaServer = await ensureLlamaTool('llama-server', say);
  const model = o.model ? resolve(o.model) : join(homedir(), '.cache', 'hearth', 'models', testModelFileName('1b', 'q8_0'));
  if (!o.model && !existsSync(model)) {
    say(`creating the 1b test model (Q8_0) at ${model} ...`);
    await createTestModel({ out: model, preset: '1b', quant: 'q8_0', seed: 1 });
  }
  if (!existsSync(model)) throw new HearthError(ErrorCode.NotFound, `model file not found: ${model}`);
  const dir = mkdtempSync(join(tmpdir(), 'hearth-bench-'));
  const logFile = join(dir, 'servers.log');
  say(`servers' output goes to ${logFile}`);
  const parallel = Math.max(...o.concurrency);
  const suite: SuiteSettings = { genTokens: o.genTokens, longPromptWords: o.promptWords, concurrency: o.concurrency, chat };
  const workers: LocalWorker[] = [];
  // A worker with a token serves only over the secure link, so the secure side has a pair of its own,
  // started exactly like the open pair (same threads, same machine), idle while the others run.
  const secureWorkers: LocalWorker[] = [];
  const token = newToken();
  const runs: BenchResults['runs'] = [];
  let load: BenchResults['load'] = null;
  let secureLoad: BenchResults['secureLoad'] = null;
  let split: { endpoints: string[]; layers: number[] } | null = null;
  let groups = 0;
  let local: SuiteFigures | null = null;
  try {
    for (const name of ['bench-worker-1', 'bench-worker-2']) workers.push(await startLocalWorker({ name, threads: o.threads, dir, stdio: ['ignore', 'ignore', 'ignore'] }));
    say(`two workers up (${o.threads} thread each); their tensor caches are empty`);
    if (o.secure) {
      for (const name of ['bench-secure-1', 'bench-secure-2']) secureWorkers.push(await startLocalWorker({ name, threads: o.threads, dir, stdio: ['ignore', 'ignore', 'ignore'], token }));
      say('two more workers up with a cluster token, for hearth over the secure links');
    }

    // hearth's cold load and its warm reload onto the same workers; the split both sides then use.
    {
      const c = await startCoordinator(model, workers, o, parallel, logFile);
      const client = new CoordinatorClient(c.grpc);
      try {
        const cold = await client.getStatus();
        await client.replan({ forceReload: true });
        const warm = await client.getStatus();
        const bytes = (s: typeof cold) => Object.values(s.load.bytes_sent).reduce((sum, v) => sum + Number(v), 0);
        const phases = (s: typeof cold) => ({ connect: s.load.connect_seconds, weights: s.load.weights_seconds, context: s.load.context_seconds });
        load = { coldSeconds: cold.load.seconds, coldBytes: bytes(cold), warmSeconds: warm.load.seconds, warmBytes: bytes(warm), coldPhases: phases(cold), warmPhases: phases(warm) };
        split = { endpoints: warm.plan.devices.map((d) => d.endpoint), layers: warm.plan.devices.map((d) => d.layers) };
        groups = warm.load.groups;
        say(`hearth decodes in ${groups} context(s) (--pipeline auto)`);
        say(`hearth load: cold ${load.coldSeconds.toFixed(2)} s (${(load.coldBytes / 2 ** 20).toFixed(0)} MiB sent), warm reload ${load.warmSeconds.toFixed(2)} s (${(load.warmBytes / 2 ** 20).toFixed(0)} MiB sent); split ${split.layers.join(' + ')}`);
      } finally {
        client.close();
        await c.stop();
      }
    }

    if (o.secure) {
      // Cold loads, open and secure alternating, each onto emptied tensor caches.
      const open: { seconds: number; bytes: number }[] = [];
      const secure: { seconds: number; bytes: number }[] = [];
      for (let rep = 0; rep < COLD_LOAD_REPS; rep++) {
        for (const side of rep % 2 === 0 ? (['open', 'secure'] as const) : (['secure', 'open'] as const)) {
          const pair = side === 'open' ? workers : secureWorkers;
          for (const w of pair) emptyTensorCache(w.cacheDir);
          const c = await startCoordinator(model, pair, o, parallel, logFile, side === 'secure' ? token : null);
          const client = new CoordinatorClient(c.grpc);
          try {
            const s = await client.getStatus();
            (side === 'open' ? open : secure).push({ seconds: s.load.seconds, bytes: Object.values(s.load.bytes_sent).reduce((sum, v) => sum + Number(v), 0) });
            say(`cold load ${rep + 1}/${COLD_LOAD_REPS} ${side.padEnd(6)}: ${s.load.seconds.toFixed(2)} s`);
          } finally {
            client.close();
            await c.stop();
          }
        }
      }
      secureLoad = { openColdSeconds: open.map((x) => x.seconds), secureColdSeconds: secure.map((x) => x.seconds), openBytes: open.map((x) => x.bytes), secureBytes: secure.map((x) => x.bytes) };
    }

    const sides: Side[] = ['llama-server', 'hearth', ...(o.serial ? (['hearth-serial'] as const) : []), ...(o.secure ? (['hearth-secure'] as const) : [])];
    for (let rep = 0; rep < o.reps; rep++) {
      // Rotate the order each repetition, so drift on this shared machine hits every side alike.
      const order = sides.map((_, i) => sides[(i + rep) % sides.length]!);
      for (const side of order) {
        const server =
          side === 'hearth'
            ? await startCoordinator(model, workers, o, parallel, logFile)
            : side === 'hearth-serial'
              ? await startCoordinator(model, workers, o, parallel, logFile, null, ['--pipeline', 'off'])
              : side === 'hearth-secure'
              ? await startCoordinator(model, secureWorkers, o, parallel, logFile, token)
              : await startLlamaServer(
                  llamaServer,
                  // -c is shared by the -np slots (no unified KV cache when -np is given), so each slot gets
                  // o.ctxSize, as hearth's every sequence does. --jinja renders the GGUF's chat template, as hearth does
                  // (this release's default; named so an older build behaves alike); cache_prompt defaults to true.
                  ['-m', model, '--rpc', split!.endpoints.join(','), '-ngl', '99', '-ts', split!.layers.join(','), '-c', String(o.ctxSize * parallel), '-np', String(parallel),
                    '-t', String(o.threads), '-tb', String(o.threads), '-b', '512', '-ub', '512', '--jinja'],
                  logFile,
                );
        try {
          // The same conversation on every side of a repetition (its prose picked by the repetition).
          const figures = await runSuite(server.base, { ...suite, chat: suite.chat && { ...suite.chat, tag: 5000 + rep } });
          runs.push({ side, rep, figures });
          say(`rep ${rep + 1}/${o.reps} ${side.padEnd(13)}: gen ${figures.genTps.toFixed(2)} t/s, pp ${figures.ppTps.toFixed(1)} t/s, ttft ${figures.ttftMs.toFixed(0)} ms, aggregate ${Object.entries(figures.aggregateTps).map(([n, v]) => `${n}:${v.toFixed(2)}`).join(' ')}`);
          const chat = figures.chat;
          if (chat) {
            say(
              `rep ${rep + 1}/${o.reps} ${side.padEnd(13)}: chat ttft ${chat.ttftMs.map((x) => x.toFixed(0)).join(' / ')} ms, prompt ${chat.promptTokens.join(' / ')} tokens, ` +
                `cached ${chat.cachedTokens.map((x) => x ?? '?').join(' / ')}`,
            );
          }
        } finally {
          await server.stop();
        }
      }
    }

    if (o.local) {
      const server = await startLlamaServer(llamaServer, ['-m', model, '-ngl', '0', '-c', String(o.ctxSize), '-np', '1', '-t', String(o.threads), '-tb', String(o.threads)], logFile);
      try {
        local = await runSuite(server.base, { ...suite, concurrency: [1], chat: null });
        say(`one process, ${o.threads} thread: gen ${local.genTps.toFixed(2)} t/s, pp ${local.ppTps.toFixed(1)} t/s, ttft ${local.ttftMs.toFixed(0)} ms`);
      } finally {
        await server.stop();
      }
    }
  } finally {
    await Promise.all([...workers, ...secureWorkers].map((w) => w.stop()));
    rmSync(dir, { recursive: true, force: true });
  }

  const sys = loadBinding().systemInfo();
  const results: BenchResults = {
    date: new Date().toISOString(),
    command: o.command,
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), os: `${process.platform} ${release()}`, node: process.version },
    build: { llamaCpp: sys.llamaCppRelease, ggml: sys.ggmlVersion, rpcProtocol: sys.rpcProtocol },
    settings: {
      model: basename(model), modelBytes: statSync(model).size, threadsPerWorker: o.threads, genTokens: o.genTokens, concurrency: o.concurrency, reps: o.reps, split: split?.layers ?? [],
      ctxSize: o.ctxSize, ...(chat ? { chat } : {}), pipelineGroups: groups,
    },
    runs,
    local,
    load,
    secureLoad,
  };
  mkdirSync(dirname(o.outJson), { recursive: true });
  writeFileSync(o.outJson, JSON.stringify(results, null, 2) + '\n');
  writeReport(o.outJson, o.outMarkdown, o.outChart);
  say(`done in ${((Date.now() - started) / 60000).toFixed(1)} min; wrote ${o.outJson}, ${o.outMarkdown}, ${o.outChart}`);
  for (const t of targets(results)) say(`${met(t) ? 'met ' : 'MISS'} ${t.name}: ${t.ratio.toFixed(3)} (${t.kind === 'min' ? '>=' : '<='} ${t.bound})`);
  return results;
}

/** BENCHMARKS.md and the chart from a results JSON, with the hand-written analysis beside it. */
export function writeReport(jsonFile: string, markdownFile: string, chartFile: string): void {
  if (!existsSync(jsonFile)) throw new HearthError(ErrorCode.NotFound, `no benchmark results at ${jsonFile}; run \`hearth bench\` first`);
  const results = JSON.parse(readFileSync(jsonFile, 'utf8')) as BenchResults;
  for (const file of [markdownFile, chartFile]) mkdirSync(dirname(file), { recursive: true });
  writeFileSync(chartFile, chartSvg(results));
  const analysisFile = join(dirname(jsonFile), 'analysis.md');
  const analysis = existsSync(analysisFile) ? readFileSync(analysisFile, 'utf8') : null;
  const placementFile = join(dirname(jsonFile), 'placement-results.json');
  const placement = existsSync(placementFile) ? placementMarkdown(JSON.parse(readFileSync(placementFile, 'utf8')) as PlacementResults) : null;
  const speculativeFile = join(dirname(jsonFile), 'speculative-results.json');
  const speculative = existsSync(speculativeFile) ? speculativeMarkdown(JSON.parse(readFileSync(speculativeFile, 'utf8')) as SpeculativeResults) : null;
  const linkFile = join(dirname(jsonFile), 'link-results.json');
  const link = existsSync(linkFile) ? linkMarkdown(JSON.parse(readFileSync(linkFile, 'utf8')) as LinkResults) : null;
  const resumeFile = join(dirname(jsonFile), 'resume-results.json');
  const resumeNotesFile = join(dirname(jsonFile), 'resume-notes.md');
  const resumeNotes = existsSync(resumeNotesFile) ? readFileSync(resumeNotesFile, 'utf8') : null;
  const resume = existsSync(resumeFile) ? resumeMarkdown(JSON.parse(readFileSync(resumeFile, 'utf8')) as ResumeResults, resumeNotes) : null;
  // bench:chat's results: chat-results.json, and any chat-results-<name>.json beside it (another setup).
  const chats = readdirSync(dirname(jsonFile))
    .filter((f) => /^chat-results(-[\w.-]+)?\.json$/.test(f))
    .sort((a, b) => Number(a !== 'chat-results.json') - Number(b !== 'chat-results.json') || a.localeCompare(b))
    .map((f) => JSON.parse(readFileSync(join(dirname(jsonFile), f), 'utf8')) as ChatBenchResults);
  const chat = chats.length > 0 ? chatBenchMarkdown(chats) : null;
  const switchFile = join(dirname(jsonFile), 'switch-results.json');
  const switchNotesFile = join(dirname(jsonFile), 'switch-notes.md');
  const switchNotes = existsSync(switchNotesFile) ? readFileSync(switchNotesFile, 'utf8') : null;
  const switching = existsSync(switchFile) ? switchMarkdown(JSON.parse(readFileSync(switchFile, 'utf8')) as SwitchResults, switchNotes) : null;
  const splitFile = join(dirname(jsonFile), 'split-results.json');
  const splitNotesFile = join(dirname(jsonFile), 'split-notes.md');
  const splitNotes = existsSync(splitNotesFile) ? readFileSync(splitNotesFile, 'utf8') : null;
  const split = existsSync(splitFile) ? splitMarkdown(JSON.parse(readFileSync(splitFile, 'utf8')) as SplitResults, splitNotes) : null;
  const abFile = join(dirname(jsonFile), 'ab-results.json');
  const ab = existsSync(abFile) ? abMarkdown(JSON.parse(readFileSync(abFile, 'utf8')) as AbResults) : null;
  writeFileSync(
    markdownFile,
    markdown(results, relative(dirname(markdownFile), chartFile), analysis, chats) + [chat, placement, speculative, link, resume, switching, split, ab].map((s) => (s ? `\n${s}` : '')).join(''),
  );
}
