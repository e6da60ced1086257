// A worker leaving the cluster on purpose (SIGTERM, SIGINT, a Drain call). Stopping at once would look
// like a crash to the coordinator using it: the engine dies mid-request, the worker is marked suspect,
// and a quick restart counts as a flap. So the worker first says it is draining (Health, GetInfo), and
// waits until that coordinator has re-planned without it and calls Release, bounded by a timeout.
//
// It waits only while a coordinator counts on it: one that admitted it sends a watch (a promise to
// call again within N ms, and to release it) with every heartbeat. A worker nobody watches, or whose
// coordinator went silent, leaves at once.
import type { DrainOutcome } from '../link/worker-wire.js';

/** Whether a coordinator counts on this worker now. Pure: the caller passes the clock. */
export class CoordinatorWatch {
  #until = 0;

  /** A coordinator's heartbeat promised another call within `watchMs` (0: no promise). */
  note(watchMs: number, now: number): void {
    if (watchMs > 0) this.#until = Math.max(this.#until, now + watchMs);
  }

  /** A coordinator released the worker: it counts on it no more. */
  clear(): void {
    this.#until = 0;
  }

  watched(now: number): boolean {
    return now < this.#until;
  }
}

export interface DrainEnd {
  outcome: DrainOutcome;
  message: string;
}

/** How often a draining worker looks whether its coordinator still watches it. */
const WATCH_LOOK_MS = 200;

/** One drain, from its start until it ends: released, no longer watched, or timed out. */
export class Drain {
  readonly reason: string;
  readonly startedAt: number;
  readonly timeoutMs: number;
  /** Whether a coordinator counted on the worker when the drain began. */
  readonly watched: boolean;
  readonly ended: Promise<DrainEnd>;
  #end!: (end: DrainEnd) => void;
  #timers: NodeJS.Timeout[] = [];

  constructor(reason: string, timeoutMs: number, watch: CoordinatorWatch) {
    this.reason = reason;
    this.startedAt = Date.now();
    this.timeoutMs = timeoutMs;
    this.watched = watch.watched(this.startedAt);
    this.ended = new Promise<DrainEnd>((resolve) => (this.#end = resolve));
    if (!this.watched) {
      this.#finish({ outcome: 'unwatched', message: 'no coordinator uses this worker' });
      return;
    }
    this.#timers.push(
      setTimeout(() => this.#finish({ outcome: 'timed-out', message: `no release within ${timeoutMs / 1000} s (--drain-timeout); leaving anyway` }), timeoutMs),
      setInterval(() => {
        if (!watch.watched(Date.now())) this.#finish({ outcome: 'unwatched', message: 'its coordinator went silent before releasing it; leaving anyway' });
      }, WATCH_LOOK_MS),
    );
  }

  /** The coordinator re-planned without this worker. */
  release(why: string): void {
    const seconds = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    this.#finish({ outcome: 'released', message: `released by the coordinator after ${seconds} s${why ? ` (${why})` : ''}` });
  }

  #finish(end: DrainEnd): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
    this.#end(end);
  }
}
