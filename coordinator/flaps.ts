// Workers that flap: one that is lost again within seconds of each admission would otherwise make the
// coordinator re-plan and reload on every round. Such a worker is held out of plans for a back-off
// that doubles with each flap (bounded, so a worker that settles is back soon), and forgiven once it
// stays up. Pure: the caller passes the clock.

/** A loss this soon after the worker's admission counts as a flap. */
export const FLAP_WINDOW_MS = 10_000;
const FIRST_HOLD_MS = 2000;
const MAX_HOLD_MS = 60_000;

export interface Hold {
  flaps: number;
  untilMs: number;
  holdMs: number;
}

export class FlapGuard {
  readonly #admittedAt = new Map<string, number>();
  readonly #flaps = new Map<string, number>();
  readonly #holds = new Map<string, number>();

  admitted(worker: string, now: number): void {
    this.#admittedAt.set(worker, now);
  }

  /** Notes that `worker` was lost; returns the hold it gets when that was a flap, else null. */
  lost(worker: string, now: number): Hold | null {
    const since = this.#admittedAt.get(worker);
    this.#admittedAt.delete(worker);
    if (since === undefined) return null;
    if (now - since > FLAP_WINDOW_MS) {
      this.#flaps.delete(worker);
      return null;
    }
    const flaps = (this.#flaps.get(worker) ?? 0) + 1;
    this.#flaps.set(worker, flaps);
    const holdMs = Math.min(MAX_HOLD_MS, FIRST_HOLD_MS * 2 ** (flaps - 1));
    const untilMs = now + holdMs;
    this.#holds.set(worker, untilMs);
    return { flaps, untilMs, holdMs };
  }

  /** Until when `worker` stays out of plans, or 0 when it may be planned with. */
  heldUntil(worker: string, now: number): number {
    const until = this.#holds.get(worker) ?? 0;
    if (until <= now) {
      this.#holds.delete(worker);
      return 0;
    }
    return until;
  }
}
