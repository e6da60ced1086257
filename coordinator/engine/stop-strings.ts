// Stop strings over streamed text: text is released only once it can no longer be the start of a
// stop string, so a stop string is never emitted, even when it spans tokens.

export interface StopScan {
  /** Text safe to emit now. */
  emit: string;
  /** True when a stop string was found; `emit` then ends right before it. */
  stopped: boolean;
}

export class StopStringFilter {
  readonly #stops: string[];
  #held = '';

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Feeds newly generated text. */
  push(text: string): StopScan {
    const buffer = this.#held + text;
    let first = -1;
    for (const s of this.#stops) {
      const at = buffer.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.#held = '';
      return { emit: buffer.slice(0, first), stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let hold = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, buffer.length); n > hold; n--) {
        if (buffer.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    this.#held = buffer.slice(buffer.length - hold);
    return { emit: buffer.slice(0, buffer.length - hold), stopped: false };
  }

  /** The text held back, released at the end of generation. */
  flush(): string {
    const rest = this.#held;
    this.#held = '';
    return rest;
  }
}
