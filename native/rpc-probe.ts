// Asks a ggml RPC server for its version and devices over a socket of our own, with a deadline.
// llama.cpp's client aborts the whole process when a server cannot be reached, so every endpoint is
// probed here first. The server serves one client at a time: the probe always closes its connection
// before returning, and must not run while an engine is connected to the same server.
import { lookup } from 'node:dns/promises';
import { isIP, Socket } from 'node:net';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import {
  decodeDeviceCount,
  decodeDeviceMemory,
  decodeHello,
  encodeDeviceCount,
  encodeGetDeviceMemory,
  encodeHello,
  formatVersion,
  HELLO_RESPONSE_SIZE,
  isCompatible,
  takeResponse,
  type RpcVersion,
} from './rpc-protocol.js';

export interface RpcEndpoint {
  host: string;
  port: number;
}

export interface RpcProbeResult {
  /** The endpoint as llama.cpp must be given it: IPv4 literal and port. */
  endpoint: string;
  version: RpcVersion;
  devices: { index: number; freeBytes: number; totalBytes: number }[];
}

/** Parses `host:port`; the error names the text and what a valid endpoint looks like. */
export function parseEndpoint(text: string): RpcEndpoint {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new HearthError(ErrorCode.InvalidArgument, `'${text}' is not an RPC endpoint: expected host:port, such as 127.0.0.1:50052`);
  }
  return { host: m[1]!, port };
}

/**
 * llama.cpp resolves hosts with gethostbyname (IPv4) and keys its connections by the exact endpoint
 * string; two spellings of one server from one process deadlock. So every endpoint is reduced to one
 * spelling: an IPv4 literal.
 */
export async function normalizeEndpoint(text: string): Promise<string> {
  const { host, port } = parseEndpoint(text);
  if (isIP(host) === 4) return `${host}:${port}`;
  if (isIP(host) === 6) {
    throw new HearthError(ErrorCode.InvalidArgument, `RPC endpoint ${text}: llama.cpp's RPC client speaks IPv4 only; give an IPv4 address`);
  }
  try {
    const { address } = await lookup(host, { family: 4 });
    return `${address}:${port}`;
  } catch (e) {
    throw new HearthError(ErrorCode.Unavailable, `RPC endpoint ${text}: cannot resolve '${host}' to an IPv4 address (${messageOf(e)})`);
  }
}

/** HELLO, DEVICE_COUNT, then GET_DEVICE_MEMORY per device, within `timeoutMs` overall. */
export async function probeRpcServer(
  endpointText: string,
  options: { timeoutMs?: number; signal?: AbortSignal; clientVersion?: RpcVersion } = {},
): Promise<RpcProbeResult> {
  const endpoint = await normalizeEndpoint(endpointText);
  const { host, port } = parseEndpoint(endpoint);
  const timeoutMs = options.timeoutMs ?? 3000;
  const socket = new Socket();
  let buffered: Buffer = Buffer.alloc(0);
  let waiter: (() => void) | null = null;
  let failure: Error | null = null;

  const fail = (e: Error) => {
    failure ??= e;
    waiter?.();
  };
  const timer = setTimeout(
    () => fail(new HearthError(ErrorCode.Unavailable, `RPC server ${endpoint} did not answer within ${timeoutMs} ms (is it busy serving another client, or stopped?)`)),
    timeoutMs,
  );
  const onAbort = () => fail(new HearthError(ErrorCode.Cancelled, `probe of ${endpoint} cancelled`));
  options.signal?.addEventListener('abort', onAbort, { once: true });
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    waiter?.();
  });
  socket.on('error', (e: NodeJS.ErrnoException) => {
    const why = e.code === 'ECONNREFUSED' ? 'connection refused: no RPC server listens there' : e.message;
    fail(new HearthError(ErrorCode.Unavailable, `RPC server ${endpoint} is unreachable (${why})`));
  });
  socket.on('close', () => fail(new HearthError(ErrorCode.Unavailable, `RPC server ${endpoint} closed the connection during the probe`)));

  const next = async (size: number): Promise<Buffer> => {
    for (;;) {
      if (failure) throw failure;
      let taken;
      try {
        taken = takeResponse(buffered, size);
      } catch (e) {
        throw new HearthError(ErrorCode.Unavailable, `RPC server ${endpoint}: ${messageOf(e)}`);
      }
      if (taken) {
        buffered = taken.rest;
        return taken.payload;
      }
      await new Promise<void>((resolve) => (waiter = resolve));
      waiter = null;
    }
  };

  try {
    if (options.signal?.aborted) onAbort();
    socket.connect({ host, port });
    socket.setNoDelay(true);
    socket.write(encodeHello());
    const version = decodeHello(await next(HELLO_RESPONSE_SIZE));
    if (options.clientVersion && !isCompatible(options.clientVersion, version)) {
      throw new HearthError(
        ErrorCode.FailedPrecondition,
        `RPC server ${endpoint} speaks RPC protocol ${formatVersion(version)}, this build speaks ${formatVersion(options.clientVersion)}; run the same hearth build on every machine`,
      );
    }
    socket.write(encodeDeviceCount());
    const count = decodeDeviceCount(await next(4));
    const devices = [];
    for (let index = 0; index < count; index++) {
      socket.write(encodeGetDeviceMemory(index));
      devices.push({ index, ...decodeDeviceMemory(await next(16)) });
    }
    return { endpoint, version, devices };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
    socket.removeAllListeners('close');
    socket.destroy();
  }
}
