// What the coordinator shows people besides its state: a log of events (workers, states, loads) and
// the serving figures of the last minutes, sampled from its token events.
import type { EventEmitter } from 'node:events';

import type { WorkerRecord } from './registry.js';
import type { CoordinatorEvent, CoordinatorEvents, ServingSample } from './snapshot.js';

/** Events kept for the dashboard and `hearth status`. */
const MAX_EVENTS = 200;
/** Serving figures: one sample this often, for the last five minutes. */
export const HISTORY_EVERY_MS = 2000;
const HISTORY_SAMPLES = (5 * 60 * 1000) / HISTORY_EVERY_MS;

/** The latest events, oldest first; each is also emitted as `event`. */
export class EventLog {
  readonly #events: CoordinatorEvent[] = [];
  readonly #emitter: EventEmitter<CoordinatorEvents>;
  readonly #workerStates = new Map<string, string>();

  constructor(emitter: EventEmitter<CoordinatorEvents>) {
    this.#emitter = emitter;
  }

  add(kind: CoordinatorEvent['kind'], message: string): void {
    const event = { time: new Date().toISOString(), kind, message };
    this.#events.push(event);
    if (this.#events.length > MAX_EVENTS) this.#events.splice(0, this.#events.length - MAX_EVENTS);
    this.#emitter.emit('event', event);
  }

  list(): CoordinatorEvent[] {
    return this.#events.map((e) => ({ ...e }));
  }

  /** An event for each worker whose state changed since the last look (admitted, lost, refused and why). */
  workers(records: readonly WorkerRecord[], where: (w: WorkerRecord) => string): void {
    for (const w of records) {
      const before = this.#workerStates.get(w.control);
      if (before === w.state) continue;
      this.#workerStates.set(w.control, w.state);
      if (w.state === 'probing' && before === undefined) continue;
      // The coordinator says these in its own words (why it leaves, what it does about it, the release).
      if (w.state === 'leaving' || w.state === 'left') continue;
      this.add('worker', `worker ${w.name} (${where(w)}) ${w.state}${w.reason && w.state !== 'admitted' ? `: ${w.reason}` : ''}`);
    }
  }
}

/** Generated tokens/s, mean time to first token and the queue, one sample every HISTORY_EVERY_MS. */
export class ServingHistory {
  readonly #samples: ServingSample[] = [];
  readonly #queue: () => { inFlight: number; waiting: number };
  #sampledAt = Date.now();
  #tokens = 0;
  #ttfts: number[] = [];
  #timer: NodeJS.Timeout | null = null;

  constructor(emitter: EventEmitter<CoordinatorEvents>, queue: () => { inFlight: number; waiting: number }) {
    this.#queue = queue;
    emitter.on('token', () => this.#tokens++);
    emitter.on('first-token', (seconds) => this.#ttfts.push(seconds * 1000));
  }

  start(): void {
    this.#timer ??= setInterval(() => this.#sample(), HISTORY_EVERY_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  list(): ServingSample[] {
    return this.#samples.map((s) => ({ ...s }));
  }

  #sample(): void {
    const now = Date.now();
    const seconds = (now - this.#sampledAt) / 1000;
    this.#samples.push({
      t: now,
      tokensPerSecond: seconds > 0 ? this.#tokens / seconds : 0,
      ttftMs: this.#ttfts.length > 0 ? this.#ttfts.reduce((a, b) => a + b, 0) / this.#ttfts.length : 0,
      ...this.#queue(),
    });
    if (this.#samples.length > HISTORY_SAMPLES) this.#samples.splice(0, this.#samples.length - HISTORY_SAMPLES);
    this.#sampledAt = now;
    this.#tokens = 0;
    this.#ttfts = [];
  }
}
