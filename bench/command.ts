// `hearth bench`: hearth against llama.cpp's own llama-server on the same workers. The benchmark sits
// above the CLI (it runs hearth's own commands), so bin/hearth.js adds this command to the CLI's.
import type { Command } from 'commander';
import { resolve } from 'node:path';

import { parseInteger } from '../cli/options.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { configureLogger } from '../common/logger.js';
import { runBenchmark, writeReport } from './run.js';

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description("measure hearth against llama.cpp's llama-server --rpc on two local workers; writes BENCHMARKS.md")
    .option('--model <file>', 'GGUF to measure (default: the 1b test model in Q8_0, created if missing)')
    .option('--threads <n>', 'threads per worker (and for the one-process reference)', '1')
    .option('--concurrency <list>', 'concurrency levels for aggregate generation', '1,2,4,8')
    .option('--reps <n>', 'repetitions of each side', '4')
    .option('--tokens <n>', 'tokens generated per request', '32')
    .option('--prompt-words <n>', 'words in the long prompt (447 words are about 512 tokens of the llama SPM vocabulary)', '447')
    .option('--ctx-size <n>', 'context per request (the multi-turn chat needs 4096; it is skipped below that)', '4096')
    .option('--chat-pause <ms>', "reading time between the chat's turns, the same on every side", '0')
    .option('--no-local', 'skip the one-process reference')
    .option('--no-serial', 'skip hearth with --pipeline off (one context) beside hearth pipelined')
    .option('--no-secure', 'skip hearth over secure links (a cluster token) beside hearth open')
    .option('--out <file>', 'the JSON of all figures', 'bench/results.json')
    .option('--markdown <file>', 'the report', 'BENCHMARKS.md')
    .option('--chart <file>', 'the SVG chart', 'bench/aggregate.svg')
    .option('--report-only', 'only regenerate the report and chart from the JSON of an earlier run')
    .action(async (o: { model?: string; threads: string; concurrency: string; reps: string; tokens: string; promptWords: string; ctxSize: string; chatPause: string; local: boolean; serial: boolean; secure: boolean; out: string; markdown: string; chart: string; reportOnly?: boolean }) => {
      if (o.reportOnly) {
        writeReport(resolve(o.out), resolve(o.markdown), resolve(o.chart));
        return;
      }
      const concurrency = o.concurrency.split(',').map((x) => parseInteger(x, '--concurrency', { min: 1, max: 64 }));
      if (concurrency.length === 0) throw new HearthError(ErrorCode.InvalidArgument, '--concurrency: give at least one level');
      configureLogger({ level: 'warn' });
      const argv = process.argv.slice(process.argv.indexOf('bench'));
      await runBenchmark(
        {
          model: o.model ?? null,
          threads: parseInteger(o.threads, '--threads', { min: 1, max: 256 }),
          concurrency: [...new Set(concurrency)].sort((a, b) => a - b),
          reps: parseInteger(o.reps, '--reps', { min: 1, max: 100 }),
          genTokens: parseInteger(o.tokens, '--tokens', { min: 2, max: 4096 }),
          promptWords: parseInteger(o.promptWords, '--prompt-words', { min: 1, max: 100_000 }),
          ctxSize: parseInteger(o.ctxSize, '--ctx-size', { min: 256, max: 1 << 20 }),
          chatPauseMs: parseInteger(o.chatPause, '--chat-pause', { min: 0, max: 600_000 }),
          local: o.local,
          secure: o.secure,
          serial: o.serial,
          outJson: resolve(o.out),
          outMarkdown: resolve(o.markdown),
          outChart: resolve(o.chart),
          command: `npx hearth ${argv.join(' ')}`,
        },
        (line) => process.stderr.write(`[bench] ${line}\n`),
      );
    });
}
