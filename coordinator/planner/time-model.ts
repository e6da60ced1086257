// The time model: how long a token takes on a placement. With layer split one device computes at a
// time, so a token's time is the sum over the devices on its path of what each reads of its weights
// over its measured speed, plus what reaching it costs (a hop per RPC device). Every step that compares
// placements, and the plan's own prediction, goes through secondsOf.
import type { ExpertMove, Layout } from './layout.js';
import type { Seat } from './seats.js';
import { sum } from './sum.js';
import type { CandidateDevice, Plan } from './types.js';

/** What reaching an RPC device costs per token when nobody measured it: a few LAN round trips. */
export const DEFAULT_HOP_SECONDS = 0.001;

/** What one device does for each token. */
export interface DeviceWork {
  /** Bytes of weights it reads (a MoE block's experts count for the share a token uses). */
  readBytes: number;
  /** Layer slots it holds. */
  layers: number;
  /** Blocks of a faster device of its worker whose experts it holds and computes. */
  expertBlocks: number;
}

/** What reaching this device adds per token (0 for the local device). */
export function hopOf(device: CandidateDevice): number {
  return device.kind === 'rpc' ? (device.hopSeconds ?? DEFAULT_HOP_SECONDS) : 0;
}

/**
 * Seconds per token on one device: what it reads over its speed; a hop when the token passes through
 * it, that is when it holds a slot (a device that only holds experts for another is reached from
 * that one); and a round trip for each block whose experts it computes for another device.
 */
export function secondsOf(work: DeviceWork, bytesPerSecond: number, hop: number): number {
  return work.readBytes / bytesPerSecond + (work.layers > 0 ? hop : 0) + work.expertBlocks * hop;
}

/** What each seat does with these counts, and with the experts of the moved blocks read on the slower device. */
export function workOf(counts: number[], layout: Layout, moves: readonly ExpertMove[] = []): DeviceWork[] {
  let first = 0;
  const work = counts.map((layers) => {
    const readBytes = sum(layout.weights.slice(first, first + layers));
    first += layers;
    return { readBytes, layers, expertBlocks: 0 };
  });
  for (const { from, to, blocks } of moves) {
    const reads = sum(blocks.map((b) => layout.expertReads[b]!));
    work[from]!.readBytes -= reads;
    work[to]!.readBytes += reads;
    work[to]!.expertBlocks += blocks.length;
  }
  return work;
}

/** Seconds per token of a placement on these seats, with their stand-in speeds where none was measured. */
export function timeOf(counts: number[], seats: Seat[], layout: Layout, moves: readonly ExpertMove[] = []): number {
  return sum(workOf(counts, layout, moves).map((work, i) => secondsOf(work, seats[i]!.speed, hopOf(seats[i]!.device))));
}

/** The same for a plan already built (its devices are some of `all`), for comparing plans. */
export function timeOfPlan(plan: Plan, all: Seat[]): number {
  return sum(
    plan.devices.map((d) => {
      const seat = all.find((s) => s.device.key === d.key)!;
      return secondsOf({ readBytes: d.readBytes, layers: d.layers, expertBlocks: d.expertLayers.length }, seat.speed, hopOf(seat.device));
    }),
  );
}
