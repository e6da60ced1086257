// One ggml-rpc-server child process: spawned from our build, its output line by line to a listener,
// ready once it answers a HELLO, stopped on request and never outliving this process.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

import { ErrorCode, HearthError } from '../common/errors.js';
import { requireNativeBuild } from '../native/binding.js';
import { probeRpcServer } from '../native/rpc-probe.js';
import { parseMemoryReport, type MemoryReport } from './server-devices.js';

export interface RpcServerOptions {
  /** IPv4 address to bind (llama.cpp's server takes literals only). */
  host: string;
  port: number;
  threads: number;
  /** Tensor cache directory (`-c`), or null for none. */
  cacheDir: string | null;
  /** ggml device names to serve, or null for the server's default choice. */
  devices: string[] | null;
}

export interface RpcServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class RpcServerProcess {
  readonly endpoint: string;
  readonly child: ChildProcess;
  readonly exited: Promise<RpcServerExit>;

  private constructor(endpoint: string, child: ChildProcess, exited: Promise<RpcServerExit>) {
    this.endpoint = endpoint;
    this.child = child;
    this.exited = exited;
  }

  get pid(): number | null {
    return this.child.pid ?? null;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the server and resolves once it answers a HELLO (or rejects with its output). */
  static async start(
    options: RpcServerOptions,
    hooks: { onLine?: (stream: 'stdout' | 'stderr', line: string) => void; onMemory?: (report: MemoryReport) => void; readyTimeoutMs?: number } = {},
  ): Promise<RpcServerProcess> {
    const { rpcServer } = requireNativeBuild();
    const args = ['-H', options.host, '-p', String(options.port), '-t', String(options.threads)];
    if (options.devices) args.push('-d', options.devices.join(','));
    // fd 3: the server's own memory reports for its devices (native/src/rpc-server/devices.cpp).
    const env: NodeJS.ProcessEnv = { ...process.env, HEARTH_PARENT_PID: String(process.pid), HEARTH_MEMORY_FD: '3' };
    if (options.cacheDir) {
      args.push('-c');
      env.LLAMA_CACHE = options.cacheDir;
    }
    const child = spawn(rpcServer, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env });
    const reports = child.stdio[3] as Readable | null;
    if (reports) {
      createInterface({ input: reports }).on('line', (line) => {
        const report = parseMemoryReport(line);
        if (report) hooks.onMemory?.(report);
      });
      reports.on('error', () => undefined); // the server exiting is reported through 'exit'
    }
    const tail: string[] = [];
    for (const stream of ['stdout', 'stderr'] as const) {
      createInterface({ input: child[stream]! }).on('line', (line) => {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        hooks.onLine?.(stream, line);
      });
    }
    const exited = new Promise<RpcServerExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.once('error', () => undefined); // reported through 'exit' and the readiness check
    const endpoint = `${options.host === '0.0.0.0' ? '127.0.0.1' : options.host}:${options.port}`;
    const server = new RpcServerProcess(endpoint, child, exited);

    const deadline = Date.now() + (hooks.readyTimeoutMs ?? 15_000);
    for (;;) {
      if (!server.running) {
        const exit = await exited;
        throw new HearthError(
          ErrorCode.Unavailable,
          `ggml-rpc-server on ${endpoint} exited during start-up (${exit.signal ?? `code ${exit.code}`}): ${tail.join(' | ') || 'no output'}`,
        );
      }
      try {
        await probeRpcServer(server.endpoint, { timeoutMs: 1000 });
        return server;
      } catch (e) {
        if (Date.now() > deadline) {
          await server.stop();
          throw new HearthError(ErrorCode.Unavailable, `ggml-rpc-server on ${endpoint} did not become ready: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  async stop(graceMs = 2000): Promise<RpcServerExit> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exited;
  }
}
