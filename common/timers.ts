// Timers owned by one object and cleared together when it stops; none keeps the process alive.
export class Timers {
  readonly #timers = new Set<NodeJS.Timeout>();
  #cleared = false;

  /** Runs `fn` once after `ms`, unless cleared first. */
  after(ms: number, fn: () => void): void {
    if (this.#cleared) return;
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.#timers.add(t);
  }

  /** Runs `fn` every `ms` until cleared. */
  every(ms: number, fn: () => void): void {
    if (this.#cleared) return;
    const t = setInterval(fn, ms);
    t.unref();
    this.#timers.add(t);
  }

  /** A promise that resolves after `ms`; it never resolves once the timers are cleared. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.after(ms, resolve));
  }

  clear(): void {
    this.#cleared = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}
