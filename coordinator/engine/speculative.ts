// Drafting for speculative decoding. A sequence's next few tokens are guessed cheaply (by a small draft
// model with the same vocabulary, or by looking the last tokens up earlier in the prompt and reply) and
// the target verifies the guess in one batch (Batch.verify): it samples each drafted position with the
// request's own sampler and keeps the draft up to the first token it would not have chosen. Every
// emitted token is the target's own choice, so the output is the target's (token for token when
// greedy), only sooner.
import { performance } from 'node:perf_hooks';

import { Batch, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import { commonPrefix } from './prefix.js';

/** How speculation runs; absent from an engine that does not speculate. */
export interface SpeculationSettings {
  /** The draft model's GGUF, or null (n-gram lookup only). */
  draftModel: string | null;
  /** The worker (by name) whose first device runs the draft; null: the coordinator's own CPU. */
  draftWorker: string | null;
  /** Set per load: that worker's RPC endpoint as the engine reaches it; null: the CPU. */
  draftEndpoint?: string | null;
  /** Length of the n-gram looked up in the sequence's own tokens; 0: no lookup. */
  ngram: number;
  /** Most tokens drafted per step. */
  draftMax: number;
  /** A shorter draft is not verified (the step decodes one token as usual). */
  draftMin: number;
  /** The draft model stops drafting when its top token's probability falls below this. */
  pMin: number;
  /** Speculation steps aside while more sequences than this generate (the batch is compute-bound then). */
  maxSequences: number;
  /** Draft as many tokens per step as pays on this cluster (DraftTuner), up to draftMax; false: always draftMax. */
  tune: boolean;
}

/**
 * What a sequence needs drafted: all its tokens so far (the last one not yet decoded), a budget, and
 * the probability below which the draft model stops.
 */
export interface DraftRequest {
  seq: number;
  tokens: ArrayLike<number>;
  max: number;
  pMin: number;
}

/**
 * Prompt lookup: finds the most recent earlier occurrence of the last `n` tokens and proposes the
 * tokens that followed it (up to `max`). llama.cpp's ngram-simple does the same.
 */
export function ngramDraft(tokens: ArrayLike<number>, n: number, max: number): number[] {
  const len = tokens.length;
  if (n < 1 || max < 1 || len <= n) return [];
  const keyStart = len - n;
  for (let start = keyStart - 1; start >= 0; start--) {
    let j = 0;
    while (j < n && tokens[start + j] === tokens[keyStart + j]) j++;
    if (j < n) continue;
    const out: number[] = [];
    for (let k = start + n; k < len && out.length < max; k++) out.push(tokens[k]!);
    return out;
  }
  return [];
}

/**
 * A draft model in its own context, one sequence per target sequence. Each sequence's cells hold a
 * prefix of that sequence's tokens; a draft first catches up on what is missing (the prompt, tokens
 * the target emitted), then proposes tokens one at a time, greedily, for every drafting sequence in
 * the same batch.
 */
export class DraftModel {
  readonly model: LlamaModel;
  readonly #ctx: LlamaContext;
  readonly #samplers: Sampler[];
  /** The tokens each sequence's cells hold, positions 0..n-1. */
  readonly #held: number[][];
  /** Seconds per drafting step (one token for each drafting sequence), as recently measured. */
  #stepSeconds = 0;

  constructor(model: LlamaModel, ctx: LlamaContext) {
    this.model = model;
    this.#ctx = ctx;
    // Greedy, with the chosen token's log-probability (for pMin).
    this.#samplers = Array.from({ length: ctx.info.nSeqMax }, () => model.createSampler({ greedy: true, nProbs: 0 }));
    this.#held = Array.from({ length: ctx.info.nSeqMax }, () => []);
  }

  get stepSeconds(): number {
    return this.#stepSeconds;
  }

  /** Times a few one-token steps (on sequence 0, empty at load) for the tuner's first choices. */
  async calibrate(): Promise<void> {
    const [[, seconds]] = (await measureDecodeSeconds(this.#ctx, 0, [1])) as [[number, number]];
    this.#stepSeconds = seconds;
    this.#held[0]!.length = 0;
  }

  /** Drafts for each request; a sequence's draft stops early below its pMin. */
  async draft(requests: readonly DraftRequest[]): Promise<Map<number, number[]>> {
    const out = new Map<number, number[]>();
    const live = [...requests].filter((r) => r.max > 0 && r.tokens.length > 0).sort((a, b) => a.seq - b.seq);
    // Catch up: each sequence keeps its longest valid prefix and decodes the rest, its last token last.
    const feed = new Map<number, number>();
    for (const r of live) {
      const held = this.#held[r.seq]!;
      let keep = Math.min(commonPrefix(held, r.tokens), r.tokens.length - 1);
      if (keep < held.length && !(this.#ctx.removeSequence(r.seq, keep, -1) && this.#ctx.holdsPrefixFor(r.seq, keep))) {
        this.#ctx.removeSequence(r.seq);
        keep = 0;
      }
      held.length = keep;
      feed.set(r.seq, keep);
      out.set(r.seq, []);
    }
    const nBatch = this.#ctx.info.nBatch;
    let active = live;
    // The catch-up in batches of at most nBatch tokens, a sequence's last token in the final one.
    while (active.some((r) => feed.get(r.seq)! < r.tokens.length)) {
      const batch = new Batch();
      const sampled: DraftRequest[] = [];
      let room = nBatch;
      for (const r of active) {
        const from = feed.get(r.seq)!;
        const take = Math.min(r.tokens.length - from, room);
        if (take <= 0) continue;
        const chunk = Array.from({ length: take }, (_, i) => r.tokens[from + i]!);
        const last = batch.addSequence(chunk, from, r.seq, false);
        this.#held[r.seq]!.push(...chunk);
        feed.set(r.seq, from + take);
        room -= take;
        if (from + take === r.tokens.length) {
          batch.sample(last, this.#samplers[r.seq]!);
          sampled.push(r);
        }
      }
      const tokens = await this.#ctx.decode(batch);
      sampled.forEach((r, i) => this.#take(out.get(r.seq)!, tokens[i]!, i, r.pMin));
    }
    // Then one token per step for each sequence still drafting.
    for (;;) {
      active = active.filter((r) => {
        const d = out.get(r.seq)!;
        return d.length > 0 && d.length < r.max && d[d.length - 1] !== STOP;
      });
      if (active.length === 0) break;
      const batch = new Batch();
      for (const r of active) {
        const d = out.get(r.seq)!;
        const held = this.#held[r.seq]!;
        batch.sample(batch.add(d[d.length - 1]!, held.length, r.seq, true), this.#samplers[r.seq]!);
        held.push(d[d.length - 1]!);
      }
      const started = performance.now();
      const tokens = await this.#ctx.decode(batch);
      this.#stepSeconds = 0.8 * this.#stepSeconds + 0.2 * ((performance.now() - started) / 1000);
      active.forEach((r, i) => this.#take(out.get(r.seq)!, tokens[i]!, i, r.pMin));
    }
    // A draft never grows past its max (the loop above stops there); only the STOP mark goes.
    for (const d of out.values()) if (d[d.length - 1] === STOP) d.pop();
    return out;
  }

  /** Drops what a sequence's cells hold; its next draft catches up from the start. */
  forget(seq: number): void {
    this.#held[seq]!.length = 0;
    try {
      this.#ctx.removeSequence(seq);
    } catch {
      // the context is busy or gone: the next catch-up's own removal covers it
    }
  }

  /** Appends a drafted token, or the STOP mark when the draft is no longer sure enough. */
  #take(draft: number[], token: number, sample: number, pMin: number): void {
    if (pMin > 0) {
      const p = Math.exp(this.#ctx.logprobs(sample)?.logprob ?? 0);
      if (p < pMin) {
        draft.push(STOP);
        return;
      }
    }
    draft.push(this.model.isEndOfGeneration(token) ? STOP : token);
  }

  /** Its context for the draft's tokens (for memory figures). */
  get context(): LlamaContext {
    return this.#ctx;
  }

  /** Frees the context and samplers; the model may serve other contexts and is the owner's to free. */
  dispose(): void {
    for (const s of this.#samplers) s.dispose();
    this.#ctx.dispose();
  }
}

/** Marks a draft that ended (not a token id). */
const STOP = -1;

/**
 * How long a decode of n rows (all with logits, as a verification has) takes on this engine, for each n
 * in `rows`: the median of a few timed decodes, after one to warm up. Run at load, on sequence `seq`
 * (empty then), whose cells are freed again.
 */
export async function measureDecodeSeconds(ctx: LlamaContext, seq: number, rows: readonly number[], reps = 3): Promise<[number, number][]> {
  const timed = async (n: number) => {
    const batch = new Batch();
    for (let i = 0; i < n; i++) batch.add(CALIBRATION_TOKEN, i, seq, true);
    const started = performance.now();
    await ctx.decode(batch);
    ctx.removeSequence(seq);
    return (performance.now() - started) / 1000;
  };
  await timed(1);
  const out: [number, number][] = [];
  for (const n of rows) {
    const times: number[] = [];
    for (let r = 0; r < reps; r++) times.push(await timed(n));
    out.push([n, times.sort((a, b) => a - b)[Math.floor(reps / 2)]!]);
  }
  return out;
}

/** The row counts to time at load: every one up to a draft and a little, then a few more sparsely. */
export function calibrationRows(draftMax: number, maxSequences: number): number[] {
  const most = Math.min(maxSequences * (draftMax + 1), 64);
  const dense = Math.min(most, draftMax + 2, 12);
  const rows = Array.from({ length: dense }, (_, i) => i + 1);
  for (const n of [16, 24, 32, 48, 64]) if (n > dense && n <= most) rows.push(n);
  if (rows[rows.length - 1]! < most) rows.push(most);
  return rows;
}

/** A token id every vocabulary has, for timing decodes. */
const CALIBRATION_TOKEN = 1;

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
