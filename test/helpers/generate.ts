// Greedy generation straight on the binding: the reference the distributed paths are compared with.
import assert from 'node:assert/strict';

import { Batch, LlamaModel, type LlamaContext } from '../../native/llama.js';

/** Greedy sampling, as the gRPC API takes it. */
export const GREEDY = { temperature: 0, greedy: true };

/** Eight short prompts for greedy runs of several requests at once. */
export const PROMPTS = [
  'The quick brown fox jumps over the lazy dog because',
  'Once upon a time in a distant land',
  'Rain fell on the old stone bridge',
  'In the beginning there was',
  'The recipe calls for two cups of',
  'Dear diary, today I',
  'The stock market opened',
  'A hearth is',
];

export interface GreedyRun {
  tokens: number[];
  /** The logits each generated token was chosen from. */
  logits: Float32Array[];
}

export async function greedy(model: LlamaModel, ctx: LlamaContext, prompt: string, n: number, seqId = 0): Promise<GreedyRun> {
  const sampler = model.createSampler();
  try {
    const promptTokens = model.tokenize(prompt);
    const batch = new Batch();
    const last = batch.addSequence(promptTokens, 0, seqId, true);
    batch.sample(last, sampler);
    let next = (await ctx.decode(batch))[0]!;
    const run: GreedyRun = { tokens: [next], logits: [ctx.logits(last)] };
    for (let i = 1; i < n; i++) {
      const step = new Batch();
      const row = step.add(next, promptTokens.length + i - 1, seqId, true);
      step.sample(row, sampler);
      next = (await ctx.decode(step))[0]!;
      run.tokens.push(next);
      run.logits.push(ctx.logits(row));
    }
    ctx.removeSequence(seqId);
    return run;
  } finally {
    sampler.dispose();
  }
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Greedy continuations of each prompt, computed in this process on the host CPU: the reference. */
export async function referenceTokens(modelPath: string, prompts: string[], n: number): Promise<number[][]> {
  return (await referenceRuns(modelPath, prompts, n)).map((r) => r.tokens);
}

/** As referenceTokens, with the logits each token was chosen from. */
export async function referenceRuns(modelPath: string, prompts: string[], n: number): Promise<GreedyRun[]> {
  const model = await LlamaModel.load(modelPath, { devices: [], nGpuLayers: 0 });
  const ctx = await model.createContext({ nCtx: 512, nThreads: 1 });
  try {
    const out = [];
    for (const p of prompts) out.push(await greedy(model, ctx, p, n));
    return out;
  } finally {
    ctx.dispose();
    model.dispose();
  }
}

/**
 * How close the two best logits must be for rounding to flip a greedy choice. llama.cpp computes a
 * micro-batch of one token by another kernel path than a larger one (measured here: logits apart by up
 * to 3.5e-4), so a request decoded among others may part from the one-request reference at a near tie.
 */
export const NEAR_TIE = 2e-3;

/** The best and second-best tokens of a logits row, and how far apart they are. */
function topTwo(logits: Float32Array): { best: number; second: number; gap: number } {
  let best = -1;
  let second = -1;
  for (let i = 0; i < logits.length; i++) {
    if (best < 0 || logits[i]! > logits[best]!) {
      second = best;
      best = i;
    } else if (second < 0 || logits[i]! > logits[second]!) {
      second = i;
    }
  }
  return { best, second, gap: logits[best]! - logits[second]! };
}

/**
 * Greedy tokens decoded in batches with other requests equal the reference's, up to a point where the
 * reference itself was at a near tie and the other run took the runner-up; after that the texts part
 * and are not compared. A wrong computation parts at a clear choice, and fails.
 */
export function assertGreedyMatches(actual: readonly number[], ref: GreedyRun, what: string): void {
  assert.equal(actual.length, ref.tokens.length, `${what}: ${actual.length} tokens, the reference has ${ref.tokens.length}`);
  const i = actual.findIndex((t, k) => t !== ref.tokens[k]);
  if (i < 0) return;
  const { second, gap } = topTwo(ref.logits[i]!);
  assert.ok(
    gap < NEAR_TIE && actual[i] === second,
    `${what}: token ${i} is ${actual[i]}, the reference chose ${ref.tokens[i]} with a margin of ${gap.toExponential(2)} over ${second} (a flip is only allowed at a near tie, < ${NEAR_TIE})`,
  );
}
