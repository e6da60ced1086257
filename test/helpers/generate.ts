// Greedy generation straight on the binding: the reference the distributed paths are compared with.
import { Batch, LlamaModel, type LlamaContext } from '../../native/llama.js';

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
  const model = await LlamaModel.load(modelPath, { devices: [], nGpuLayers: 0 });
  const ctx = await model.createContext({ nCtx: 512, nThreads: 1 });
  try {
    const out = [];
    for (const p of prompts) out.push((await greedy(model, ctx, p, n)).tokens);
    return out;
  } finally {
    ctx.dispose();
    model.dispose();
  }
}
