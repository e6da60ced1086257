// A real `hearth coordinator` process for tests, on a free 127.0.0.1 port, always stopped afterwards.
import type { ChildProcess } from 'node:child_process';

import { CoordinatorClient } from '../../coordinator/client.js';
import type { WireStatus } from '../../coordinator/wire.js';
import { freePort } from './rpc-server.js';
import { runCli, waitFor } from './worker.js';

export interface CoordinatorHandle {
  process: ChildProcess;
  address: string;
  /** http://127.0.0.1:PORT */
  http: string;
  client: CoordinatorClient;
  logs: () => string;
  exited: Promise<number | null>;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  /** Waits until the status satisfies `ok` (default: serving). */
  waitStatus: (ok?: (s: WireStatus) => boolean, timeoutMs?: number) => Promise<WireStatus>;
}

/**
 * `token` reaches the coordinator as HEARTH_TOKEN; `apiKey` is what the handle's client sends; `env` is
 * added to its environment; `hearth` and `cwd` as runCli takes them.
 */
export async function startCoordinator(
  /** null: no --model (the extra arguments name it, or cluster.yaml does). */
  model: string | null,
  workers: string[],
  extra: string[] = [],
  options: { waitServing?: boolean; token?: string; apiKey?: string; env?: NodeJS.ProcessEnv; hearth?: string[]; cwd?: string } = {},
): Promise<CoordinatorHandle> {
  const port = await freePort();
  const httpPort = await freePort();
  const args = ['coordinator', ...(model === null ? [] : ['--model', model]), '--no-mdns', '--local-device', 'off', '--grpc-port', String(port), '--http-port', String(httpPort), '--ctx-size', '512', '--parallel', '4', '--threads', '1',
    ...workers.flatMap((w) => ['--worker', w]),
    // Most tests are about a model split across their workers, which equal workers under the speed
    // objective would not do; the tests of placement itself pass --placement.
    ...(extra.includes('--placement') ? [] : ['--placement', 'memory']),
    ...extra];
  const child = runCli(args, { env: { ...options.env, ...(options.token ? { HEARTH_TOKEN: options.token } : {}) }, hearth: options.hearth, cwd: options.cwd });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const address = `127.0.0.1:${port}`;
  const client = new CoordinatorClient(address, { apiKey: options.apiKey ?? null });
  const handle: CoordinatorHandle = {
    process: child,
    address,
    http: `http://127.0.0.1:${httpPort}`,
    client,
    logs: () => out,
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      client.close();
      return code;
    },
    waitStatus: (ok = (s) => s.state === 'serving', timeoutMs = 30_000) =>
      waitFor('the coordinator status', async () => {
        if (child.exitCode !== null) throw new Error(`coordinator exited with ${child.exitCode}:\n${out}`);
        const s = await client.getStatus(1000);
        return ok(s) ? s : null;
      }, timeoutMs).catch((e: Error) => {
        throw new Error(`${e.message}\n--- coordinator log ---\n${out.split('\n').slice(-40).join('\n')}`);
      }),
  };
  if (options.waitServing ?? true) {
    try {
      await handle.waitStatus();
    } catch (e) {
      await handle.stop('SIGKILL');
      throw e;
    }
  }
  return handle;
}
