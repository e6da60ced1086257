// Draft lengths that pay: priced at load (decode-timing.ts), refined by every step (speculator.ts).

/**
 * Chooses how many tokens to draft per step, for the most tokens per second: each drafted position's
 * chance of being accepted (measured, given the ones before it were), what a draft step costs, and what
 * a verification of n rows costs on this cluster (measured at load, refined by every step). Checking
 * more rows is not free: on CPUs a batch of 8 or more rows can take twice as long as one of 5, and
 * llama-server's fixed draft length pays that whether the draft is good or not. Drafting nothing is a
 * choice too, taken when the batch is already busy enough.
 */
export class DraftTuner {
  /** Measured seconds per decode of n rows, by n; interpolated between, extrapolated past the end. */
  readonly #verify = new Map<number, number>();
  /** Per drafted position j (0-based): how often it was reached, and accepted. */
  readonly #reached: number[] = [];
  readonly #accepted: number[] = [];
  #choices = 0;

  constructor(verifySeconds: readonly [number, number][]) {
    if (!verifySeconds.some(([n]) => n === 1)) throw new Error('DraftTuner needs at least the one-row decode time');
    for (const [n, t] of verifySeconds) this.#verify.set(n, t);
  }

  /** Verification time for n rows. */
  verifySeconds(n: number): number {
    const exact = this.#verify.get(n);
    if (exact !== undefined) return exact;
    const known = [...this.#verify.keys()].sort((a, b) => a - b);
    const below = known.filter((k) => k < n).pop() ?? known[0]!;
    const above = known.find((k) => k > n);
    const tb = this.#verify.get(below)!;
    if (above !== undefined) return tb + ((this.#verify.get(above)! - tb) * (n - below)) / (above - below);
    // Past the last measurement: as many rows again cost as much again, at worst.
    return (tb * n) / below;
  }

  /**
   * The chance that drafted position j is accepted when the ones before it were. Few observations lean on
   * a prior: the position before's figure (a draft that is on track tends to stay on it), and 0.7 for
   * the first. Without that, positions a short draft never reaches would keep a pessimistic guess, and
   * the tuner would never learn that longer drafts pay.
   */
  acceptance(j: number): number {
    const prior = j === 0 ? FIRST_PRIOR : this.acceptance(j - 1);
    return ((this.#accepted[j] ?? 0) + prior * PRIOR) / ((this.#reached[j] ?? 0) + PRIOR);
  }

  /**
   * The draft length for this step with `sequences` sequences generating, at most `max`, when a draft
   * step costs `draftStepSeconds`: the k with the most expected tokens per second; 0 when drafting would
   * not pay. Every EXPLORE_EVERY-th choice is a neighbour of the best instead (one longer, then one
   * shorter), so that the costs of lengths next to it are measured again and a noisy figure from load
   * time cannot keep the tuner away from a length for good.
   */
  choose(sequences: number, max: number, draftStepSeconds: number): number {
    const best = this.#best(sequences, max, draftStepSeconds);
    const turn = ++this.#choices % EXPLORE_EVERY;
    if (turn !== 0) return best;
    const neighbour = (this.#choices / EXPLORE_EVERY) % 2 === 1 ? best + 1 : best - 1;
    return Math.max(0, Math.min(max, neighbour));
  }

  #best(sequences: number, max: number, draftStepSeconds: number): number {
    let best = 0;
    let bestRate = sequences / this.verifySeconds(sequences);
    let expected = 1;
    let chain = 1;
    for (let k = 1; k <= max; k++) {
      chain *= this.acceptance(k - 1);
      expected += chain;
      const rate = (sequences * expected) / (k * draftStepSeconds + this.verifySeconds(sequences * (k + 1)));
      if (rate > bestRate) {
        best = k;
        bestRate = rate;
      }
    }
    return best;
  }

  /** A verified draft of `drafted` tokens, of which the first `accepted` were kept. */
  recordAcceptance(drafted: number, accepted: number): void {
    for (let j = 0; j < drafted && j <= accepted; j++) {
      this.#reached[j] = (this.#reached[j] ?? 0) + 1;
      if (j < accepted) this.#accepted[j] = (this.#accepted[j] ?? 0) + 1;
      // Recent drafts count most: the text a model writes changes, and with it how well the draft guesses.
      if (this.#reached[j]! > WINDOW) {
        this.#reached[j]! /= 2;
        this.#accepted[j] = (this.#accepted[j] ?? 0) / 2;
      }
    }
  }

  /** A step that decoded only generating rows (no prompt chunks): its time refines the cost of n rows. */
  recordVerify(rows: number, seconds: number): void {
    const t = this.#verify.get(rows);
    this.#verify.set(rows, t === undefined ? seconds : 0.8 * t + 0.2 * seconds);
  }
}

/** One choice in this many tries a neighbouring draft length. */
const EXPLORE_EVERY = 16;
/** The first drafted token's acceptance before any is seen. */
const FIRST_PRIOR = 0.7;
/** Weight of the acceptance prior, in drafts. */
const PRIOR = 4;
/** Drafts per position after which older ones count half. */
const WINDOW = 256;
