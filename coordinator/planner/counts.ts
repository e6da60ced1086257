// How many layer slots each device takes, in device order. A start (largest remainder in proportion to
// capacity, or fastest first under the speed objective), then a repair loop for the cases where slot
// sizes differ (the output head, the local device's first slot) and a count overflows, then, for speed,
// single slots moved to faster devices while that lowers the time per token.
import { computeOf, loadsOf, type Layout } from './layout.js';
import { byFastest, overflowOf, tierOf, type Seat } from './seats.js';
import { sum } from './sum.js';
import { timeOf } from './time-model.js';

export function initialCounts(capacities: number[], slotCount: number): number[] {
  const weights = capacities.map((c) => Math.max(c, 0));
  const total = sum(weights);
  // Degenerate models (zero-byte slots) leave nothing to be proportional to: share evenly.
  const quotas = weights.map((w) => (total > 0 ? (w / total) * slotCount : slotCount / weights.length));
  const counts = quotas.map(Math.floor);
  const byRemainder = quotas.map((q, i) => ({ i, r: q - Math.floor(q) })).sort((a, b) => b.r - a.r || a.i - b.i);
  let left = slotCount - sum(counts);
  for (const { i } of byRemainder) {
    if (left <= 0) break;
    counts[i]! += 1;
    left -= 1;
  }
  return giveEveryoneOne(counts);
}

/** Every device that takes part gets a slot, taken from the device with the most (the earliest on a tie). */
function giveEveryoneOne(counts: number[]): number[] {
  for (let i = 0; i < counts.length; i++) {
    if (counts[i]! > 0) continue;
    const donor = counts.reduce((best, c, j) => (c > counts[best]! ? j : best), 0);
    counts[donor]! -= 1;
    counts[i] = 1;
  }
  return counts;
}

/** Everyone one slot, then the fastest take as many more as their memory holds (by the average block). */
export function fastestFirstCounts(seats: Seat[], layout: Layout): number[] {
  const slotCount = layout.slots.length;
  const counts = seats.map(() => 1);
  let left = slotCount - seats.length;
  const blocks = layout.slots.slice(0, -1);
  const average = blocks.length > 0 ? sum(blocks) / blocks.length : 0;
  const output = layout.slots[slotCount - 1]!;
  for (const i of byFastest(seats)) {
    if (left <= 0) break;
    const own = i === seats.length - 1 ? output : average;
    const room = seats[i]!.usable - computeOf(layout, i, seats.length) - own;
    const more = average > 0 ? Math.max(0, Math.floor(room / average)) : left;
    const take = Math.min(more, left);
    counts[i]! += take;
    left -= take;
  }
  // What nobody has room for goes to the fastest; the repair loop then finds it a home or refuses.
  if (left > 0) counts[byFastest(seats)[0]!]! += left;
  return counts;
}

export type Repair = { ok: true; counts: number[] } | { ok: false; overflow: number };

/**
 * Moves one slot at a time from an overflowing device to the one with the most slack that can still
 * take it. Moving a slot shifts the ranges in between, so a move only counts if it lowers the total
 * overflow; that also guarantees the loop ends.
 */
export function repair(start: number[], seats: Seat[], layout: Layout, fastestFirst = false): Repair {
  let counts = start;
  const maxMoves = layout.slots.length * seats.length;
  for (let moves = 0; moves <= maxMoves; moves++) {
    const loads = loadsOf(counts, layout);
    const overflow = overflowOf(loads, seats);
    if (overflow === 0) return { ok: true, counts };
    const next = bestMove(counts, loads, overflow, seats, layout, fastestFirst);
    if (!next) return { ok: false, overflow };
    counts = next;
  }
  return { ok: false, overflow: overflowOf(loadsOf(counts, layout), seats) };
}

function byDescending(values: number[]): number[] {
  return values.map((_, i) => i).sort((a, b) => values[b]! - values[a]! || a - b);
}

/** Receivers are tried by slack, or fastest first under the speed objective. */
function bestMove(counts: number[], loads: number[], overflow: number, seats: Seat[], layout: Layout, fastestFirst: boolean): number[] | null {
  const over = loads.map((load, i) => load - seats[i]!.usable);
  const slack = over.map((o) => -o);
  const donors = byDescending(over).filter((i) => over[i]! > 0 && counts[i]! > 1);
  const receivers = fastestFirst ? byFastest(seats) : byDescending(slack);
  for (const donor of donors) {
    for (const receiver of receivers) {
      if (receiver === donor) continue;
      const trial = [...counts];
      trial[donor]! -= 1;
      trial[receiver]! += 1;
      const trialLoads = loadsOf(trial, layout);
      const fitsReceiver = trialLoads[receiver]! <= seats[receiver]!.usable;
      if (fitsReceiver && overflowOf(trialLoads, seats) < overflow) return trial;
    }
  }
  return null;
}

/** Moves single slots from slower to faster devices (a tier apart) while that fits and lowers the time per token. */
export function quicken(start: number[], seats: Seat[], layout: Layout): number[] {
  let counts = start;
  let time = timeOf(counts, seats, layout);
  const order = byFastest(seats);
  for (let moves = 0; moves < layout.slots.length * seats.length; moves++) {
    let next: { counts: number[]; time: number } | null = null;
    for (let a = order.length - 1; a >= 0 && !next; a--) {
      const donor = order[a]!;
      if (counts[donor]! <= 1) continue;
      for (let b = 0; b < a && !next; b++) {
        const receiver = order[b]!;
        if (tierOf(seats[receiver]!) <= tierOf(seats[donor]!)) continue;
        const trial = [...counts];
        trial[donor]! -= 1;
        trial[receiver]! += 1;
        if (overflowOf(loadsOf(trial, layout), seats) > 0) continue;
        const t = timeOf(trial, seats, layout);
        if (t < time - 1e-12) next = { counts: trial, time: t };
      }
    }
    if (!next) break;
    counts = next.counts;
    time = next.time;
  }
  return counts;
}
