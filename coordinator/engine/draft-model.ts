// A small model with the target's vocabulary that drafts the target's next tokens.
import { performance } from 'node:perf_hooks';

import { Batch, type LlamaContext, type LlamaModel, type Sampler } from '../../native/llama.js';
import { measureDecodeSeconds } from './decode-timing.js';
import type { Drafter, DraftRequest } from './drafter.js';
import { commonPrefix } from './prefix.js';

/**
 * A draft model in its own context, one sequence per target sequence (node-llama-cpp's
 * DraftSequenceTokenPredictor). Each sequence's cells hold a
 * prefix of that sequence's tokens; a draft first catches up on what is missing (the prompt, tokens
 * the target emitted), then proposes tokens one at a time, greedily, for every drafting sequence in
 * the same batch.
 */
export class DraftModel implements Drafter {
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
  reset(seq: number): void {
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
