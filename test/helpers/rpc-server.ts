// Real ggml-rpc-server processes on 127.0.0.1 for tests, on free ports.
import { freePortOn } from '../../common/ports.js';
import { RpcServerProcess } from '../../worker/rpc-server-process.js';

export interface RpcServerHandle {
  endpoint: string;
  port: number;
  server: RpcServerProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** A port that was free a moment ago on 127.0.0.1. */
export const freePort = () => freePortOn('127.0.0.1');

/** `devices`: the ggml devices to serve, in order (`-d`); a name may repeat, so one CPU server can act as a two-device machine. */
export async function startRpcServer(options: { threads?: number; cacheDir?: string; devices?: string[] } = {}): Promise<RpcServerHandle> {
  const port = await freePort();
  const lines: string[] = [];
  const server = await RpcServerProcess.start(
    { host: '127.0.0.1', port, threads: options.threads ?? 1, cacheDir: options.cacheDir ?? null, devices: options.devices ?? null },
    { onLine: (_stream, line) => lines.push(line) },
  );
  return {
    endpoint: server.endpoint,
    port,
    server,
    output: () => lines.join('\n'),
    stop: async () => {
      await server.stop(500);
    },
  };
}
