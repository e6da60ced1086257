// bench/delay-relay.ts, the emulated LAN's added round trip: a ping-pong through it takes the RTT asked
// for (as a process of its own, as the benchmarks run it), bytes keep their order and their end, a reset
// closes the other side, and a bulk transfer is not held to a chunk per delay.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { DelayRelay } from '../../bench/delay-relay.js';
import { spawnChild } from '../helpers/children.js';

const RELAY = fileURLToPath(new URL('../../bench/delay-relay.ts', import.meta.url));

async function listening(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return (server.address() as { port: number }).port;
}

async function connected(port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  return s;
}

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)]!;
}

/** Round trips of one byte, ms. */
async function pingPong(s: Socket, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await new Promise((resolve) => {
      s.once('data', resolve);
      s.write('p');
    });
    times.push(performance.now() - t);
  }
  return times;
}

describe('delay relay', () => {
  const servers: Server[] = [];
  const relays: DelayRelay[] = [];
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(relays.map((r) => r.close()));
    for (const s of servers) s.close();
  });

  async function echoServer(): Promise<number> {
    const server = createServer({ noDelay: true }, (s) => s.pipe(s));
    servers.push(server);
    return listening(server);
  }

  test('as a process of its own, a round trip through it takes the RTT asked for', async (t) => {
    const echo = await echoServer();
    for (const rttMs of [0.5, 4]) {
      const child = spawnChild(process.execPath, ['--import', 'tsx', RELAY, '--listen', '127.0.0.1:0', '--target', `127.0.0.1:${echo}`, '--rtt-ms', String(rttMs), '--exit-with-stdin'], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(child);
      const line = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
      const { relaying } = JSON.parse(line) as { relaying: { port: number }[] };
      const s = await connected(relaying[0]!.port);
      await pingPong(s, 10);
      const rtt = median(await pingPong(s, 60));
      t.diagnostic(`RTT ${rttMs} ms: median round trip ${rtt.toFixed(3)} ms`);
      // Never early (a chunk goes out at most 0.02 ms before its time); late by the processes' own turns.
      assert.ok(rtt >= rttMs - 0.05 && rtt <= rttMs + 1, `median round trip ${rtt.toFixed(3)} ms for an RTT of ${rttMs} ms`);
      s.destroy();
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin!.end();
      await exited;
    }
  });

  test('bytes arrive in order, and the end after them, one delay later', async () => {
    const echo = await echoServer();
    const relay = await DelayRelay.start({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port: echo }, rttMs: 6 });
    relays.push(relay);
    const s = await connected(relay.port);
    const sent: Buffer[] = [];
    let n = 0;
    for (let i = 0; i < 2000; i++) {
      const chunk = Buffer.alloc(1 + ((i * 7919) % 3000));
      for (let j = 0; j < chunk.length; j++) chunk[j] = n++ & 0xff;
      sent.push(chunk);
      s.write(chunk);
    }
    const received: Buffer[] = [];
    s.on('data', (d: Buffer) => received.push(d));
    const ended = performance.now();
    s.end();
    await new Promise((resolve) => s.once('end', resolve));
    const afterEnd = performance.now() - ended;
    assert.ok(Buffer.concat(received).equals(Buffer.concat(sent)), 'the echoed bytes differ from the sent ones');
    assert.ok(afterEnd >= 6 - 0.05, `the end came back ${afterEnd.toFixed(2)} ms after it was sent, under one round trip`);
  });

  test('a reset on one side closes the other', async () => {
    let accepted: Socket | null = null;
    const server = createServer((s) => (accepted = s));
    servers.push(server);
    const relay = await DelayRelay.start({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port: await listening(server) }, rttMs: 2 });
    relays.push(relay);
    const s = await connected(relay.port);
    s.write('hello');
    const deadline = Date.now() + 2000;
    while (!accepted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(accepted, 'the relay did not connect to the target');
    const closed = new Promise((resolve) => accepted!.on('error', () => undefined).once('close', resolve));
    s.resetAndDestroy();
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the target side stayed open after a reset')), 1000))]);
  });

  test('a bulk transfer is not held to a chunk per delay', async () => {
    const bytes = 64 * 2 ** 20;
    let got = 0;
    let done: () => void;
    const all = new Promise<void>((resolve) => (done = resolve));
    const sink = createServer((s) =>
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= bytes) done();
      }),
    );
    servers.push(sink);
    // 10 ms each way: one 64 KiB read per delay would be 6.5 MB/s.
    const relay = await DelayRelay.start({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port: await listening(sink) }, rttMs: 20 });
    relays.push(relay);
    const s = await connected(relay.port);
    const started = performance.now();
    const block = Buffer.alloc(2 ** 20);
    for (let sent = 0; sent < bytes; sent += block.length) {
      if (!s.write(block)) await new Promise((resolve) => s.once('drain', resolve));
    }
    await all;
    const mbps = bytes / 1e6 / ((performance.now() - started) / 1000);
    s.destroy();
    assert.ok(mbps > 25, `${mbps.toFixed(1)} MB/s through a relay with 10 ms each way`);
  });
});
