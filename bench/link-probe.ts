// What a link carries, measured end to end as the benchmarks' traffic sees it: the round trip of a
// one-byte ping-pong, and bulk rates each way. A probe server runs where the far end is (in a host's
// namespace, behind its delay relay, or on 127.0.0.1); the client measures from wherever it runs.
// These are the figures `hearth plan --simulate` takes for a device (rttMs, linkGbps).
//
//   node --import tsx bench/link-probe.ts serve --listen HOST:PORT [--exit-with-stdin]
//   node --import tsx bench/link-probe.ts measure --target HOST:PORT [--pings 200] [--mib 32]
//
// serve prints one line once listening; measure prints the figures as JSON. The first byte of a
// connection says what it is for: 'e' echo, 's' sink (then the byte count, u64 LE; one byte back once
// all arrived), 'r' source (then the count; the server sends that many bytes).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { parseAddress, type Address } from './delay-relay.js';

export interface LinkFigures {
  /** Round trip of one byte, ms: median and the 10th and 90th percentiles of `pings`. */
  rttMs: { median: number; p10: number; p90: number };
  pings: number;
  /** Bulk rate towards the far end and back from it, Mb/s (10^6 bits per second). */
  upMbit: number;
  downMbit: number;
  bytes: number;
}

/** A probe server: echo, sink and source, as the first byte of each connection asks. */
export async function startProbeServer(listen: Address): Promise<{ server: Server; port: number }> {
  const server = createServer({ noDelay: true }, (s) => {
    s.on('error', () => undefined);
    let head = Buffer.alloc(0);
    let onData = (d: Buffer) => {
      head = Buffer.concat([head, d]);
      const mode = String.fromCharCode(head[0]!);
      if (mode === 'e') {
        onData = (more) => void s.write(more);
        onData(head.subarray(1));
        return;
      }
      if (head.length < 9) return;
      const total = Number(head.readBigUInt64LE(1));
      if (mode === 's') {
        let got = 0;
        onData = (more) => {
          got += more.length;
          if (got >= total) s.end('k');
        };
        onData(head.subarray(9));
      } else if (mode === 'r') {
        onData = () => undefined;
        void sendBytes(s, total).then(() => s.end());
      } else {
        s.destroy();
      }
    };
    s.on('data', (d: Buffer) => onData(d));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => resolve());
  });
  return { server, port: (server.address() as { port: number }).port };
}

const BLOCK = Buffer.alloc(1 << 20);

async function sendBytes(s: Socket, total: number): Promise<void> {
  for (let sent = 0; sent < total && !s.destroyed; sent += BLOCK.length) {
    const part = Math.min(BLOCK.length, total - sent);
    if (!s.write(part === BLOCK.length ? BLOCK : BLOCK.subarray(0, part))) await new Promise((resolve) => s.once('drain', resolve));
  }
}

async function open(target: Address, mode: string, count: number | null = null): Promise<Socket> {
  const s = connect({ host: target.host, port: target.port, noDelay: true });
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  const head = Buffer.alloc(count === null ? 1 : 9);
  head.write(mode);
  if (count !== null) head.writeBigUInt64LE(BigInt(count), 1);
  s.write(head);
  return s;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Ping-pong and bulk transfers each way against a probe server at `target`. */
export async function probeLink(target: Address, o: { pings?: number; bytes?: number } = {}): Promise<LinkFigures> {
  const pings = o.pings ?? 200;
  const bytes = o.bytes ?? 32 * 2 ** 20;
  const echo = await open(target, 'e');
  const times: number[] = [];
  let answered: (() => void) | null = null;
  let failed: Error | null = null;
  echo.on('data', () => answered?.());
  echo.once('error', (e) => (failed = e));
  try {
    // The first round trips warm both ends up; they are not counted.
    for (let i = 0; i < pings + 20; i++) {
      if (failed) throw failed;
      const t = performance.now();
      await new Promise<void>((resolve) => {
        answered = resolve;
        echo.write('p');
      });
      if (i >= 20) times.push(performance.now() - t);
    }
  } finally {
    echo.destroy();
  }
  times.sort((a, b) => a - b);
  const up = await timed(async () => {
    const s = await open(target, 's', bytes);
    const done = new Promise<void>((resolve, reject) => s.once('data', () => resolve()).once('error', reject));
    await sendBytes(s, bytes);
    await done;
    s.destroy();
  });
  const down = await timed(async () => {
    const s = await open(target, 'r', bytes);
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= bytes) resolve();
      });
      s.once('error', reject);
      s.once('end', () => (got >= bytes ? resolve() : reject(new Error(`the probe server sent ${got} of ${bytes} bytes`))));
    });
    s.destroy();
  });
  const mbit = (ms: number) => (bytes * 8) / 1e6 / (ms / 1000);
  return {
    rttMs: { median: percentile(times, 0.5), p10: percentile(times, 0.1), p90: percentile(times, 0.9) },
    pings,
    upMbit: mbit(up),
    downMbit: mbit(down),
    bytes,
  };
}

async function timed(f: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await f();
  return performance.now() - started;
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string' },
      target: { type: 'string' },
      pings: { type: 'string', default: '200' },
      mib: { type: 'string', default: '32' },
      'exit-with-stdin': { type: 'boolean', default: false },
    },
  });
  if (command === 'serve') {
    if (!values.listen) throw new Error('serve: give --listen HOST:PORT');
    const { server, port } = await startProbeServer(parseAddress(values.listen, '--listen'));
    const stop = () => server.close(() => process.exit(0));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    if (values['exit-with-stdin']) process.stdin.once('end', () => process.exit(0)).once('close', () => process.exit(0)).resume();
    process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
  } else if (command === 'measure') {
    if (!values.target) throw new Error('measure: give --target HOST:PORT');
    const figures = await probeLink(parseAddress(values.target, '--target'), { pings: Number(values.pings), bytes: Number(values.mib) * 2 ** 20 });
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } else {
    throw new Error('give serve or measure');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main().catch((e: unknown) => {
    process.stderr.write(`link-probe: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
