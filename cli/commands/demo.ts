// `hearth demo`: a whole cluster on this machine. Two `hearth worker` processes on 127.0.0.1 (listed
// statically; nothing goes onto the network), a coordinator in this process with its HTTP and gRPC
// APIs, the tiny test model split across the workers, one chat request streamed through the HTTP API,
// and the plan that served it. Then it keeps serving until Ctrl-C.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';

import { messageOf } from '../../common/errors.js';
import { configureLogger } from '../../common/logger.js';
import { freePortOn, portProbe } from '../../common/ports.js';
import { compileCoordinatorConfig } from '../../coordinator/config.js';
import { Coordinator } from '../../coordinator/coordinator.js';
import { StaticDiscovery } from '../../coordinator/discovery/discovery.js';
import { CoordinatorGrpcServer } from '../../coordinator/grpc-server.js';
import { HttpApi } from '../../coordinator/http/server.js';
import { CoordinatorMetrics } from '../../coordinator/metrics.js';
import { loadBinding } from '../../native/binding.js';
import { rpcProtocolVersion } from '../../native/llama.js';
import { createTestModel, testModelFileName } from '../../models/test-models.js';
import { startLocalWorker, type LocalWorker } from '../local-cluster.js';
import { parseInteger } from '../options.js';
import { httpOptions, printPlan } from './coordinator.js';

const DEFAULT_QUESTION = 'What is a hearth, and why do people gather around it?';

/** Streams one chat completion over the HTTP API, printing the text as it arrives. */
async function ask(base: string, question: string, maxTokens: number): Promise<{ tokens: number; seconds: number }> {
  const started = Date.now();
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: question }], max_tokens: maxTokens, temperature: 0.7, seed: 42, stream: true, stream_options: { include_usage: true } }),
  });
  if (!r.ok || !r.body) throw new Error(`the HTTP API answered ${r.status}: ${await r.text()}`);
  const decoder = new TextDecoder();
  let buffer = '';
  let tokens = 0;
  for await (const part of r.body) {
    buffer += decoder.decode(part as Uint8Array, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6)) as { error?: { message: string }; usage?: { completion_tokens: number }; choices: { delta: { content?: string } }[] };
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      process.stdout.write(chunk.choices[0]?.delta.content ?? '');
    }
  }
  return { tokens, seconds: (Date.now() - started) / 1000 };
}

async function pickPort(preferred: number): Promise<number> {
  return (await portProbe('127.0.0.1', preferred)) === null ? preferred : freePortOn('127.0.0.1');
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start two local workers and a coordinator, split a generated model across them, and answer a question')
    .option('--model <file>', 'GGUF to serve (default: the tiny test model, created if missing)')
    .option('--prompt <text>', 'the question to ask', DEFAULT_QUESTION)
    .option('--max-tokens <n>', 'tokens to generate', '48')
    .option('--threads <n>', 'threads per worker', '1')
    .option('--http-port <port>', 'HTTP API port (another free one if taken)', '8080')
    .option('--once', 'stop after answering instead of serving until Ctrl-C')
    .action(async (opts: { model?: string; prompt: string; maxTokens: string; threads: string; httpPort: string; once?: boolean }) => {
      const maxTokens = parseInteger(opts.maxTokens, '--max-tokens', { min: 1, max: 1024 });
      const threads = parseInteger(opts.threads, '--threads', { min: 1, max: 256 });
      const say = (s: string) => process.stderr.write(s);
      const dir = join(homedir(), '.cache', 'hearth', 'demo');
      const modelPath = opts.model ? resolve(opts.model) : join(homedir(), '.cache', 'hearth', 'models', testModelFileName('tiny'));
      if (!opts.model && !existsSync(modelPath)) {
        say(`creating the tiny test model at ${modelPath} ...\n`);
        await createTestModel({ out: modelPath, preset: 'tiny', quant: 'f16', seed: 1 });
      }

      const workers: LocalWorker[] = [];
      let coordinator: Coordinator | null = null;
      let servers: { close(): Promise<void> }[] = [];
      let stopping: Promise<void> | null = null;
      const stopAll = () =>
        (stopping ??= (async () => {
          await coordinator?.stop(2000);
          await Promise.all(servers.map((s) => s.close()));
          await Promise.all(workers.map((w) => w.stop()));
        })());
      const onSignal = () => {
        say('\nstopping the demo cluster ...\n');
        void stopAll().then(() => process.exit(0));
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        for (let i = 1; i <= 2; i++) {
          workers.push(await startLocalWorker({ name: `demo-worker-${i}`, threads, dir }));
          say(`worker ${i} ready (control ${workers[i - 1]!.control})\n`);
        }
        const httpPort = await pickPort(parseInteger(opts.httpPort, '--http-port', { min: 1, max: 65535 }));
        const config = compileCoordinatorConfig({
          file: null,
          // The demo shows a model split across machines: with equal workers, the default speed
          // objective would seat a model this small on one of them (and say so in `hearth plan`).
          flags: { model: modelPath, workers: workers.map((w) => w.control), mdns: false, localDevice: false, placement: 'memory', host: '127.0.0.1', grpcPort: 0, httpPort, ctxSize: 1024, parallel: 2, threads },
        });
        const log = configureLogger({ level: 'warn', name: 'hearth-demo' }).child({ component: 'coordinator' });
        coordinator = new Coordinator(config, log, [new StaticDiscovery(config.workers)], rpcProtocolVersion());
        const metrics = new CoordinatorMetrics(coordinator);
        const grpcServer = new CoordinatorGrpcServer(coordinator, loadBinding().systemInfo());
        const http = new HttpApi(coordinator, metrics, httpOptions(config), log);
        servers = [grpcServer, http];
        const grpcPort = await grpcServer.listen(config.host, config.grpcPort);
        const boundHttp = await http.listen(config.host, config.httpPort);
        const c = coordinator;
        let shown = -1;
        const progress = setInterval(() => {
          const pct = Math.round(c.loadRecord.progress * 100);
          if (c.state === 'loading' && pct !== shown) {
            shown = pct;
            say(`\rloading ${c.model?.name ?? 'model'} across the workers: ${String(pct).padStart(3)}%`);
          }
        }, 100);
        try {
          await coordinator.start();
        } finally {
          clearInterval(progress);
        }
        if (coordinator.state !== 'serving') throw new Error(`the cluster is not serving: ${coordinator.reason}`);
        say(`\rloaded ${coordinator.model?.name} in ${coordinator.loadRecord.seconds.toFixed(2)} s              \n`);

        const base = `http://127.0.0.1:${boundHttp}`;
        process.stdout.write(`\n> ${opts.prompt}\n\n`);
        const answer = await ask(base, opts.prompt, maxTokens);
        process.stdout.write('\n\n');
        say(`(${answer.tokens} tokens in ${answer.seconds.toFixed(2)} s through the HTTP API; the model's weights are random, so the words are gibberish, but every one was computed across both workers)\n\n`);
        const plan = coordinator.currentPlan;
        if (plan) {
          process.stdout.write(`plan (${coordinator.model?.layerCount} blocks + output head):\n`);
          printPlan(plan);
        }
        if (opts.once) return;
        process.stdout.write(
          `\nhearth is serving an OpenAI-compatible API at ${base}/v1 (gRPC at 127.0.0.1:${grpcPort}). Try:\n` +
            `  curl ${base}/v1/chat/completions -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":16}'\n` +
            `  npx hearth status --coordinator 127.0.0.1:${grpcPort}\n` +
            'Press Ctrl-C to stop everything.\n',
        );
        await new Promise(() => undefined); // until a signal
      } catch (e) {
        say(`\ndemo failed: ${messageOf(e)}\n`);
        process.exitCode = 1;
      } finally {
        if (opts.once || process.exitCode) {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          await stopAll();
        }
      }
    });
}
