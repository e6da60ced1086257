// Placement on a given list of devices, in the order llama.cpp will get them: which of them take part,
// how many slots each takes, and for speed, which MoE experts move to a slower device of a worker.
import { buildPlan } from './build-plan.js';
import { fastestFirstCounts, initialCounts, quicken, repair } from './counts.js';
import { spillExperts } from './experts.js';
import { computeOf, neededFor, type Layout } from './layout.js';
import type { Seat } from './seats.js';
import { selectSeats } from './select-seats.js';
import { sum } from './sum.js';
import type { ExcludedDevice, Plan, PlanInput } from './types.js';

export type Outcome = { fits: true; plan: Plan } | Shortfall;

export interface Shortfall {
  fits: false;
  neededBytes: number;
  availableBytes: number;
  shortfallBytes: number;
  /** Enough memory in total, but no split into whole slots fits. */
  granular: boolean;
  excluded: ExcludedDevice[];
}

/** Places on these devices in this order (after dropping the ones that cannot take part). */
export function placeOn(candidates: Seat[], layout: Layout, input: PlanInput): Outcome {
  const { seats, excluded } = selectSeats(candidates, layout, input);
  // With no device at all, count the compute buffer of the one device that would have to be added.
  const neededBytes = neededFor(layout, Math.max(seats.length, 1));
  const availableBytes = sum(seats.map((s) => Math.max(0, s.usable)));
  if (seats.length === 0 || neededBytes > availableBytes) {
    return { fits: false, neededBytes, availableBytes, shortfallBytes: neededBytes - availableBytes, granular: false, excluded };
  }
  const speed = input.objective === 'speed';
  const start = speed ? fastestFirstCounts(seats, layout) : initialCounts(seats.map((s, i) => s.usable - computeOf(layout, i, seats.length)), layout.slots.length);
  const repaired = repair(start, seats, layout, speed);
  if (!repaired.ok) {
    return { fits: false, neededBytes, availableBytes, shortfallBytes: repaired.overflow, granular: true, excluded };
  }
  const counts = speed ? quicken(repaired.counts, seats, layout) : repaired.counts;
  const spill = speed ? spillExperts(counts, seats, layout) : null;
  return { fits: true, plan: buildPlan(input, layout, seats, spill?.counts ?? counts, excluded, spill?.moves) };
}
