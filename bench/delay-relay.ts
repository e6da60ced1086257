// A TCP relay that adds a fixed one-way delay to every byte in each direction: a round trip through it
// takes the chosen RTT more than without it. This kernel has no netem, so the benchmarks' emulated LAN
// (bench/lan.ts) puts one of these in front of each host's ports.
//
//   node --import tsx bench/delay-relay.ts --listen HOST:PORT --target HOST:PORT [--listen ... --target ...]
//                                          --rtt-ms 2 [--exit-with-stdin]
//
// Each chunk read is stamped with its arrival time and written out one delay later, in order; nothing
// waits for the chunk before it to be delivered, so the delay costs latency, not bandwidth (what is in
// flight is rate × delay, as on a real link). Backpressure is the outgoing socket's: while its buffer is
// full, the incoming side is not read. The end of a stream (FIN) is delayed like data; a reset or an
// error closes both sides at once.
//
// Node's timers count whole milliseconds, too coarse for a 0.25 ms one-way delay, so a thread of its own
// sleeps until each release time (Atomics.wait takes fractional milliseconds), spins the last few
// hundredths of a millisecond and wakes the event loop with a message, whose own latency is learnt and
// subtracted. On this machine's VM that costs about 0.1 ms of CPU per delayed chunk (the wake-ups
// between threads), against 0.035 ms for a plain forwarder's chunk.
//
// Unlike a real link, the relay ends TCP on each side: a connection's handshake costs no round trip, and
// a sender's congestion window grows against the relay (at once), not across the delay. For ggml-rpc's
// long-lived connections and request/response traffic that difference is nil.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

/** Milliseconds on the monotonic clock, the same in every thread. */
function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Chunks due within this of a wake-up go out with it, ms. */
const BATCH_MS = 0.02;
/** The most the event loop's message latency is taken to be (how early the thread posts), ms. */
const MAX_LEAD_MS = 0.15;

// The timer thread (CommonJS, evaluated). state[0]: the arming generation, bumped by the main thread
// each time it sets times[0] (the release time, 0 for none); times[1]: how early to post (the message's
// latency). It posts each generation at most once, then sleeps until the next. Atomics.wait oversleeps
// (timer slack, the VM's wake-up): the thread learns by how much, sleeps that much less plus a margin,
// and spins the rest, so the spin stays short (a few hundredths of a ms) yet covers a late wake-up.
const TIMER_THREAD = `
const { workerData, parentPort } = require('node:worker_threads');
const state = new Int32Array(workerData, 0, 2);
const times = new Float64Array(workerData, 8, 2);
const now = () => Number(process.hrtime.bigint()) / 1e6;
let oversleep = 0.1;
for (;;) {
  const gen = Atomics.load(state, 0);
  if (!(times[0] > 0)) { Atomics.wait(state, 0, gen); continue; }
  const at = times[0] - times[1];
  const wakeAt = at - oversleep - 0.02;
  const sleep = wakeAt - now();
  if (sleep > 0) {
    if (Atomics.wait(state, 0, gen, sleep) !== 'timed-out') continue;
    oversleep += 0.1 * (Math.min(0.3, Math.max(0, now() - wakeAt)) - oversleep);
  }
  while (now() < at && Atomics.load(state, 0) === gen) {}
  if (Atomics.load(state, 0) !== gen) continue;
  parentPort.postMessage(gen);
  while (Atomics.load(state, 0) === gen) Atomics.wait(state, 0, gen);
}
`;

/** Something with chunks waiting for a time: released when the clock calls. */
interface Releasable {
  /** Writes out what is due by `now`; returns the next due time, or null when nothing waits. */
  release(now: number): number | null;
}

/** One wake-up source for every delayed stream of a process. */
export class DelayClock {
  readonly #worker: Worker;
  readonly #state: Int32Array;
  readonly #times: Float64Array;
  readonly #waiting = new Set<Releasable>();
  #armedAt: number | null = null;
  /** Message latency, learnt (ms): how much earlier than the release time the thread posts. */
  #lead = 0.03;
  #closed = false;

  constructor() {
    const shared = new SharedArrayBuffer(24);
    this.#state = new Int32Array(shared, 0, 2);
    this.#times = new Float64Array(shared, 8, 2);
    this.#times[1] = this.#lead;
    this.#worker = new Worker(TIMER_THREAD, { eval: true, workerData: shared });
    this.#worker.unref();
    this.#worker.on('message', (gen: number) => this.#fired(gen));
  }

  /** `item` has a chunk due at `due`. */
  wake(item: Releasable, due: number): void {
    this.#waiting.add(item);
    this.#arm(due);
  }

  #arm(due: number): void {
    if (this.#closed || (this.#armedAt !== null && this.#armedAt <= due)) return;
    this.#armedAt = due;
    this.#times[0] = due;
    Atomics.add(this.#state, 0, 1);
    Atomics.notify(this.#state, 0);
  }

  #fired(gen: number): void {
    const now = nowMs();
    const current = gen === Atomics.load(this.#state, 0);
    if (current && this.#armedAt !== null) {
      // Late by this much against the release time: post that much earlier next time (bounded, smoothed).
      const late = now - this.#armedAt;
      this.#lead = Math.min(MAX_LEAD_MS, Math.max(0, this.#lead + 0.2 * late));
      this.#times[1] = this.#lead;
      this.#armedAt = null;
      this.#times[0] = 0;
    }
    let next = Infinity;
    for (const item of this.#waiting) {
      const due = item.release(now + BATCH_MS);
      if (due === null) this.#waiting.delete(item);
      else next = Math.min(next, due);
    }
    if (Number.isFinite(next)) this.#arm(next);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#waiting.clear();
    await this.#worker.terminate();
  }
}

/** Bytes from one socket to another, each chunk `delayMs` after it arrived. */
class DelayedStream implements Releasable {
  /** Chunks in arrival order; null: the end of the stream. */
  readonly #queue: { due: number; chunk: Buffer | null }[] = [];
  #head = 0;
  readonly #from: Socket;
  readonly #to: Socket;
  readonly #delayMs: number;
  readonly #clock: DelayClock;

  constructor(from: Socket, to: Socket, delayMs: number, clock: DelayClock) {
    this.#from = from;
    this.#to = to;
    this.#delayMs = delayMs;
    this.#clock = clock;
    from.on('data', (chunk: Buffer) => this.#push(chunk));
    from.once('end', () => this.#push(null));
    to.on('drain', () => from.resume());
  }

  #push(chunk: Buffer | null): void {
    const due = nowMs() + this.#delayMs;
    this.#queue.push({ due, chunk });
    this.#clock.wake(this, due);
  }

  release(now: number): number | null {
    if (this.#to.destroyed) return null;
    this.#to.cork();
    let full = false;
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.due <= now) {
      const { chunk } = this.#queue[this.#head++]!;
      if (chunk === null) this.#to.end();
      else if (!this.#to.write(chunk)) full = true;
    }
    this.#to.uncork();
    if (full) this.#from.pause();
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    return this.#head < this.#queue.length ? this.#queue[this.#head]!.due : null;
  }
}

export interface Address {
  host: string;
  port: number;
}

/** "host:port" → its parts. */
export function parseAddress(text: string, what: string): Address {
  const i = text.lastIndexOf(':');
  const port = Number(text.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${what}: '${text}' is not HOST:PORT`);
  return { host: text.slice(0, i), port };
}

/** One listening address forwarded to one target, every byte delayed by `rttMs / 2` each way. */
export class DelayRelay {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #clock: DelayClock | null;
  readonly #ownClock: boolean;

  private constructor(server: Server, clock: DelayClock | null, ownClock: boolean) {
    this.#server = server;
    this.#clock = clock;
    this.#ownClock = ownClock;
  }

  /** The port it listens on (the one asked for, or the one the system gave for port 0). */
  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  /**
   * Listens on `listen` and forwards each connection to `target`. `clock`: shared with other relays of
   * this process (one timer thread for all); one of its own otherwise. RTT 0: a plain forwarder.
   */
  static async start(o: { listen: Address; target: Address; rttMs: number; clock?: DelayClock }): Promise<DelayRelay> {
    const oneWay = o.rttMs / 2;
    const clock = oneWay > 0 ? (o.clock ?? new DelayClock()) : null;
    let relay: DelayRelay | null = null;
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client) => relay!.#join(client, o.target, oneWay));
    relay = new DelayRelay(server, clock, clock !== null && o.clock === undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: o.listen.host, port: o.listen.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return relay;
  }

  #join(client: Socket, target: Address, oneWay: number): void {
    const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    for (const s of [client, upstream]) {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
    }
    const fail = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', fail);
    upstream.on('error', fail);
    if (this.#clock) {
      new DelayedStream(client, upstream, oneWay, this.#clock);
      new DelayedStream(upstream, client, oneWay, this.#clock);
    } else {
      client.pipe(upstream);
      upstream.pipe(client);
    }
    client.resume();
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
    if (this.#ownClock) await this.#clock!.close();
  }
}

/** The command line: one relay per --listen/--target pair, one clock for all; prints a line once listening. */
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', multiple: true, default: [] },
      target: { type: 'string', multiple: true, default: [] },
      'rtt-ms': { type: 'string' },
      'exit-with-stdin': { type: 'boolean', default: false },
    },
  });
  const rttMs = Number(values['rtt-ms']);
  if (values['rtt-ms'] === undefined || !Number.isFinite(rttMs) || rttMs < 0) throw new Error('give --rtt-ms, a round trip in milliseconds (0 or more)');
  if (values.listen.length === 0 || values.listen.length !== values.target.length) throw new Error('give --listen HOST:PORT and --target HOST:PORT, as many of one as of the other');
  const clock = rttMs > 0 ? new DelayClock() : undefined;
  const relays: DelayRelay[] = [];
  for (const [i, listen] of values.listen.entries()) {
    relays.push(await DelayRelay.start({ listen: parseAddress(listen, '--listen'), target: parseAddress(values.target[i]!, '--target'), rttMs, ...(clock ? { clock } : {}) }));
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await Promise.all(relays.map((r) => r.close()));
    await clock?.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  // Started by another process (a benchmark, through `ip netns exec`): gone when it is.
  if (values['exit-with-stdin']) process.stdin.once('end', () => void stop()).once('close', () => void stop()).resume();
  process.stdout.write(`${JSON.stringify({ relaying: values.listen.map((l, i) => ({ listen: l, target: values.target[i], port: relays[i]!.port })), rttMs })}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main().catch((e: unknown) => {
    process.stderr.write(`delay-relay: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
