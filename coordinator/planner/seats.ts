// The candidates as placement sees them: what memory each may use, and how fast the time model takes it to be.
import { sum } from './sum.js';
import type { CandidateDevice, PlanInput } from './types.js';

/** Speeds this close (10 %) count as equal when ordering devices, so measurement noise does not reorder a plan. */
const SPEED_TIER = 1.1;

/** A device still in the running. */
export interface Seat {
  device: CandidateDevice;
  usable: number;
  /** Bytes per second the time model uses: the measured speed, or a stand-in when unknown. */
  speed: number;
  /** Position among the candidates, for stable tie-breaks. */
  index: number;
}

/** Every candidate with its usable memory and the speed the time model uses. */
export function seatsOf(input: PlanInput): Seat[] {
  const known = input.devices.map((d) => d.bytesPerSecond).filter((v): v is number => typeof v === 'number' && v > 0);
  // A device nobody measured is taken to be typical of the ones that were (all equal when none was).
  const stand = known.length > 0 ? [...known].sort((a, b) => a - b)[Math.floor(known.length / 2)]! : 1;
  return input.devices.map((device, index) => ({
    device,
    usable: usableOf(device, input),
    speed: device.bytesPerSecond && device.bytesPerSecond > 0 ? device.bytesPerSecond : stand,
    index,
  }));
}

/** Free memory minus the reserve; the local device also keeps the input embedding. */
function usableOf(device: CandidateDevice, input: PlanInput): number {
  const hostShare = device.kind === 'local' ? input.model.inputBytes : 0;
  return device.freeBytes - input.reserveBytes - hostShare;
}

/** Speeds in tiers 10 % apart, so that two equal machines measured a little differently keep their order. */
export function tierOf(seat: Seat): number {
  return Math.round(Math.log(seat.speed) / Math.log(SPEED_TIER));
}

/** Positions, fastest tier first; within a tier, candidate order. */
export function byFastest(seats: Seat[]): number[] {
  return seats.map((_, i) => i).sort((a, b) => tierOf(seats[b]!) - tierOf(seats[a]!) || seats[a]!.index - seats[b]!.index);
}

/** Bytes that do not fit, summed over the seats, for these loads (loadsOf). */
export function overflowOf(loads: number[], seats: Seat[]): number {
  return sum(loads.map((load, i) => Math.max(0, load - seats[i]!.usable)));
}
