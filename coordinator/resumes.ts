// Requests carried over an engine loss, seen: each resume's pause (from the client's last token, or
// from the loss for a request that had sent nothing, to its first token after) goes to the metrics, and
// once every request the loss caught has gone on or ended, one event says how many went on and how
// long they paused: `resumed 3 requests after worker beta was lost: 1.8 s pause`.
import type { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';

import type { CoordinatorEvents } from './snapshot.js';

/** One engine loss and the requests it caught. */
interface Loss {
  what: string;
  /** Requests waiting to go on. */
  waiting: number;
  pauses: number[];
  failed: number;
}

/** A request's part in a loss: `resumed` when its first token after it arrives, `failed` when it ends without one. */
export interface ResumeTicket {
  resumed(): void;
  failed(): void;
}

export class ResumeLog {
  readonly #emitter: EventEmitter<CoordinatorEvents>;
  readonly #note: (message: string) => void;
  /** Keyed by the loss's own object (one per engine exit), so that requests of one loss are counted together. */
  readonly #losses = new Map<object, Loss>();

  constructor(emitter: EventEmitter<CoordinatorEvents>, note: (message: string) => void) {
    this.#emitter = emitter;
    this.#note = note;
  }

  /** A request caught by `loss` (described as `what`) waits to go on; its pause counts from `since` (ms, performance.now()). */
  caught(loss: object, what: string, since: number): ResumeTicket {
    let l = this.#losses.get(loss);
    if (!l) {
      l = { what, waiting: 0, pauses: [], failed: 0 };
      this.#losses.set(loss, l);
    }
    const entry = l;
    entry.waiting++;
    let settled = false;
    const settle = (pause: number | null) => {
      if (settled) return;
      settled = true;
      entry.waiting--;
      if (pause === null) entry.failed++;
      else {
        entry.pauses.push(pause);
        this.#emitter.emit('request-resumed', pause);
      }
      if (entry.waiting === 0) this.#report(loss, entry);
    };
    return { resumed: () => settle((performance.now() - since) / 1000), failed: () => settle(null) };
  }

  #report(key: object, l: Loss): void {
    this.#losses.delete(key);
    if (l.pauses.length === 0) return;
    const longest = Math.max(...l.pauses);
    const n = l.pauses.length;
    const failed = l.failed > 0 ? ` (${l.failed} could not be resumed)` : '';
    this.#note(`resumed ${n} request${n === 1 ? '' : 's'} after ${l.what}: ${longest.toFixed(1)} s pause${n > 1 ? ' at most' : ''}${failed}`);
  }
}
