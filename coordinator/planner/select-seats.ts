// Which devices take part. Dropping one device changes the others' positions (and so who must hold the
// output head), so devices are dropped one at a time and the rest checked again.
import { computeOf, type Layout } from './layout.js';
import type { Seat } from './seats.js';
import type { ExcludedDevice, PlanInput } from './types.js';
import { gib } from './units.js';

export function selectSeats(all: Seat[], layout: Layout, input: PlanInput): { seats: Seat[]; excluded: ExcludedDevice[] } {
  let seats = all;
  const excluded: ExcludedDevice[] = [];
  for (;;) {
    const drop = surplusSeat(seats, layout) ?? tooSmallSeat(seats, layout, input);
    if (!drop) return { seats, excluded };
    const { device } = drop.seat;
    excluded.push({ key: device.key, owner: device.owner, deviceName: device.deviceName, reason: drop.reason });
    seats = seats.filter((s) => s !== drop.seat);
  }
}

/** Why a device cannot take part: what it has left after the reserve (and the input embedding) against what it would need. */
export function tooSmallReason(seat: Seat, need: number, what: string, input: PlanInput): string {
  const { model, reserveBytes } = input;
  const kept =
    seat.device.kind === 'local' && model.inputBytes > 0
      ? `the ${gib(reserveBytes)} reserve and the ${gib(model.inputBytes)} input embedding`
      : `the ${gib(reserveBytes)} reserve`;
  if (seat.usable <= 0) return `${gib(seat.device.freeBytes)} free is not more than ${kept}`;
  return `${gib(seat.usable)} usable after ${kept}, ${what} needs ${gib(need)} with its compute buffer`;
}

interface Drop {
  seat: Seat;
  reason: string;
}

/** The smaller of two seats; on a tie the later one, so earlier devices keep their place. */
function smaller(a: Seat, b: Seat): Seat {
  return b.usable <= a.usable ? b : a;
}

/** Every device that takes part needs a slot: with more devices than slots, the smallest sit out. */
function surplusSeat(seats: Seat[], layout: Layout): Drop | null {
  const slotCount = layout.slots.length;
  if (seats.length <= slotCount) return null;
  const seat = seats.reduce(smaller);
  return { seat, reason: `the model has only ${slotCount} layer slots and devices with more memory take them all` };
}

/**
 * The smallest slot the device at `position` could hold alone: the first device always starts at slot 0
 * and the last always ends with the output head; one in between could get any slot that leaves one for
 * each device around it.
 */
function smallestSlot(slots: number[], position: number, seatCount: number): { bytes: number; what: string } {
  const last = slots.length - 1;
  if (position === seatCount - 1) return { bytes: slots[last]!, what: 'the output head' };
  if (position === 0) return { bytes: slots[0]!, what: 'a layer' };
  const window = slots.slice(position, last - (seatCount - 1 - position) + 1);
  return { bytes: Math.min(...window), what: 'a layer' };
}

/** A device that cannot hold even its smallest possible slot. A lone device is never dropped: the refusal explains it. */
function tooSmallSeat(seats: Seat[], layout: Layout, input: PlanInput): Drop | null {
  if (seats.length < 2) return null;
  let worst: { seat: Seat; need: number; what: string } | null = null;
  for (const [i, seat] of seats.entries()) {
    const slot = smallestSlot(layout.slots, i, seats.length);
    const need = slot.bytes + computeOf(layout, i, seats.length);
    if (seat.usable >= need) continue;
    if (!worst || smaller(worst.seat, seat) === seat) worst = { seat, need, what: slot.what };
  }
  if (!worst) return null;
  const { seat, need, what } = worst;
  return { seat, reason: tooSmallReason(seat, need, what, input) };
}
