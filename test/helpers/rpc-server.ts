// Real ggml-rpc-server processes on 127.0.0.1 for tests, on free ports.
import { connect, type Socket } from 'node:net';

import { freePortOn } from '../../common/ports.js';
import { encodeHello, HELLO_RESPONSE_SIZE } from '../../native/rpc-protocol.js';
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

/** A client that said HELLO and got its answer: the rpc server it reached serves it until it closes. */
export async function heldClient(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      got += d.length;
      // The reply to HELLO: an 8-byte size, then the version.
      if (got >= 8 + HELLO_RESPONSE_SIZE) resolve();
    });
    socket.write(encodeHello());
  });
  return socket;
}
