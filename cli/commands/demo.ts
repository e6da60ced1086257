// `hearth demo`: a local cluster on a generated model, answering a real query. Two ggml-rpc-server
// workers on 127.0.0.1 (listed statically, nothing goes onto the network), the tiny test model split
// across them, one chat request streamed to the terminal, and the plan that served it.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

import { Batch, connectRpcServers, LlamaModel } from '../../native/llama.js';
import { readModelFacts } from '../../models/gguf-info.js';
import { createTestModel } from '../../models/test-models.js';
import { RpcServerProcess } from '../../worker/rpc-server-process.js';
import { formatBytes, table } from '../format.js';
import { parseInteger } from '../options.js';
import { freePortOn } from '../../common/ports.js';

const DEFAULT_QUESTION = 'What is a hearth, and why do people gather around it?';

/** Integer layer counts, as even as possible, earlier devices taking the remainder. */
function evenSplit(slots: number, devices: number): number[] {
  return Array.from({ length: devices }, (_, i) => Math.floor(slots / devices) + (i < slots % devices ? 1 : 0));
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start two local workers, split a generated model across them, and answer a question')
    .option('--model <file>', 'GGUF to serve (default: the tiny test model, created if missing)')
    .option('--prompt <text>', 'the question to ask', DEFAULT_QUESTION)
    .option('--max-tokens <n>', 'tokens to generate', '48')
    .option('--threads <n>', 'threads per worker', '1')
    .action(async (opts: { model?: string; prompt: string; maxTokens: string; threads: string }) => {
      const maxTokens = parseInteger(opts.maxTokens, '--max-tokens', { min: 1, max: 4096 });
      const threads = parseInteger(opts.threads, '--threads', { min: 1, max: 256 });
      const err = (s: string) => process.stderr.write(s);

      const modelPath = opts.model ? resolve(opts.model) : join(homedir(), '.cache', 'hearth', 'models', 'tiny-f16-seed1.gguf');
      if (!opts.model && !existsSync(modelPath)) {
        err(`creating the tiny test model at ${modelPath} ...\n`);
        await createTestModel({ out: modelPath, preset: 'tiny', quant: 'f16', seed: 1 });
      }
      const facts = await readModelFacts(modelPath);

      const servers: RpcServerProcess[] = [];
      let model: LlamaModel | null = null;
      const stopAll = async () => {
        model?.dispose();
        model = null;
        await Promise.all(servers.map((s) => s.stop()));
      };
      const onSignal = () => {
        void stopAll().then(() => process.exit(130));
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        for (let i = 0; i < 2; i++) {
          const port = await freePortOn('127.0.0.1');
          servers.push(await RpcServerProcess.start({ host: '127.0.0.1', port, threads, cacheDir: null, devices: null }));
          err(`worker ${i + 1}: ggml-rpc-server on ${servers[i]!.endpoint}\n`);
        }
        const devices = await connectRpcServers(servers.map((s) => s.endpoint));
        const split = evenSplit(facts.layerCount + 1, devices.length);
        let shown = -1;
        model = await LlamaModel.load(modelPath, {
          devices: devices.map((d) => d.name),
          tensorSplit: split,
          nGpuLayers: -1,
          onProgress: (p) => {
            const pct = Math.floor(p * 100);
            if (pct >= shown + 10 || p === 1) {
              shown = pct;
              err(`\rloading ${facts.name ?? modelPath}: ${String(pct).padStart(3)}%`);
            }
          },
        });
        err('\n');
        const ctx = await model.createContext({ nCtx: 1024, nSeqMax: 1, nThreads: threads });
        const sampler = model.createSampler({ temperature: 0.7, topK: 40, topP: 0.95, minP: 0.05, seed: 42, greedy: false });
        try {
          const prompt = model.applyChatTemplate([{ role: 'user', content: opts.prompt }]);
          const tokens = model.tokenize(prompt, { addSpecial: true, parseSpecial: true });
          process.stdout.write(`\n> ${opts.prompt}\n\n`);
          const decoder = new TextDecoder('utf-8');
          let batch = new Batch();
          batch.sample(batch.addSequence(tokens, 0, 0, true), sampler);
          let generated = 0;
          const started = Date.now();
          for (; generated < maxTokens; generated++) {
            const tok = (await ctx.decode(batch))[0]!;
            if (model.isEndOfGeneration(tok)) break;
            process.stdout.write(decoder.decode(model.tokenToPiece(tok), { stream: true }));
            batch = new Batch();
            batch.sample(batch.add(tok, tokens.length + generated, 0, true), sampler);
          }
          process.stdout.write(decoder.decode() + '\n\n');
          const seconds = (Date.now() - started) / 1000;
          err(`(${generated} tokens in ${seconds.toFixed(2)} s; the model has random weights, so the words are gibberish, but every one was computed across both workers)\n\n`);

          const layers = model.layersByDevice();
          const memory = ctx.memoryBreakdown();
          const rows = [['device', 'endpoint', 'layers', 'weights', 'kv cache']];
          for (const d of devices) {
            const m = memory.find((e) => e.device === d.name);
            rows.push([d.name, d.endpoint, String(layers.get(d.name) ?? 0), formatBytes(m?.modelBytes ?? 0), formatBytes(m?.contextBytes ?? 0)]);
          }
          rows.push(['host', '(this process)', '-', formatBytes(facts.inputBytes), '-']);
          process.stdout.write(`plan for ${facts.name ?? modelPath} (${facts.layerCount} blocks + output head):\n${table(rows)}\n`);
        } finally {
          sampler.dispose();
          ctx.dispose();
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        await stopAll();
      }
    });
}
