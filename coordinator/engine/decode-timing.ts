// What a decode costs on this engine, timed at load: the draft tuner's first prices.
import { performance } from 'node:perf_hooks';

import { Batch, type LlamaContext } from '../../native/llama.js';

/** A token id every vocabulary has, for timing decodes. */
const CALIBRATION_TOKEN = 1;

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
