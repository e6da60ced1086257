// The speed objective's choice of devices. Time per token is linear in the bytes each device holds, so
// the fastest devices should hold as much as fits: the planner takes the k fastest devices for the
// smallest k that holds the model, fills the fastest first, and then drops any device whose hop costs
// more than its layers save. llama.cpp order puts the local device first; the RPC devices follow
// slowest first, so that the fastest one holds the output head (the largest single matrix of most models).
import { neededFor, type Layout } from './layout.js';
import { placeOn, type Outcome } from './place-on.js';
import { tierOf, type Seat } from './seats.js';
import { tooSmallReason } from './select-seats.js';
import { sum } from './sum.js';
import { timeOfPlan } from './time-model.js';
import type { ExcludedDevice, Plan, PlanInput } from './types.js';
import { gbPerSecond } from './units.js';

/** The quickest plan on the fewest fast devices that hold the model, or null when none does. */
export function placeBySpeed(input: PlanInput, layout: Layout, all: Seat[]): Outcome | null {
  // Devices too small for any block are out whatever the objective (where each of the others sits,
  // and so whether it must hold the output head, is decided below); the rest are candidates by speed.
  const smallestBlock = Math.min(...layout.slots.slice(0, -1), layout.slots.at(-1)!);
  const usable = all.filter((s) => s.usable >= smallestBlock + layout.computeBase);
  const tooSmall = all.filter((s) => !usable.includes(s)).map((s) => ({
    key: s.device.key,
    owner: s.device.owner,
    deviceName: s.device.deviceName,
    reason: tooSmallReason(s, smallestBlock + layout.computeBase, 'a layer', input),
  }));
  const byFastest = [...usable].sort((a, b) => tierOf(b) - tierOf(a) || a.index - b.index);
  for (let k = 1; k <= byFastest.length; k++) {
    const chosen = byFastest.slice(0, k);
    // Cheap test first: these devices together must have the memory at all.
    if (sum(chosen.map((s) => Math.max(0, s.usable))) < neededFor(layout, k)) continue;
    const first = placeAll(chosen, layout, input, all);
    if (!first) continue;
    const best = withoutCostlyHops(first, input, layout, all);
    const inPlan = new Set(best.devices.map((d) => d.key));
    const out = new Set([...inPlan, ...tooSmall.map((e) => e.key)]);
    best.excluded = [...tooSmall, ...all.filter((s) => !out.has(s.device.key)).map(notNeeded)];
    return { fits: true, plan: best };
  }
  return null;
}

/**
 * The quickest plan that uses every one of these devices, or null. The fastest device should hold the
 * output head, but it may lack the room for it (the head brings the logits buffer): then each other
 * device is tried as the last one.
 */
function placeAll(chosen: Seat[], layout: Layout, input: PlanInput, all: Seat[]): Plan | null {
  const natural = speedOrder(chosen);
  const orders = [natural];
  const rpc = natural.filter((s) => s.device.kind === 'rpc');
  for (const last of [...rpc].reverse().slice(1)) orders.push([...natural.filter((s) => s !== last), last]);
  let best: { plan: Plan; time: number } | null = null;
  for (const order of orders) {
    const outcome = placeOn(order, layout, input);
    if (!outcome.fits || outcome.plan.devices.length !== chosen.length) continue;
    const time = timeOfPlan(outcome.plan, all);
    if (!best || time < best.time - 1e-12) best = { plan: outcome.plan, time };
  }
  return best?.plan ?? null;
}

/** The local device first (llama.cpp's rule), then the RPC devices slowest first, so the fastest ends with the output head. */
function speedOrder(seats: Seat[]): Seat[] {
  const local = seats.filter((s) => s.device.kind === 'local');
  const rpc = seats.filter((s) => s.device.kind === 'rpc').sort((a, b) => tierOf(a) - tierOf(b) || a.index - b.index);
  return [...local, ...rpc];
}

function notNeeded(seat: Seat): ExcludedDevice {
  const { key, owner, deviceName } = seat.device;
  const measured = seat.device.bytesPerSecond ? `at ${gbPerSecond(seat.device.bytesPerSecond)} ` : '';
  return { key, owner, deviceName, reason: `not needed: faster devices hold the whole model, and this one ${measured}would only add time` };
}

/** A device whose hop costs more than the time its layers save elsewhere is left out, if the rest still hold the model. */
function withoutCostlyHops(plan: Plan, input: PlanInput, layout: Layout, all: Seat[]): Plan {
  let best = plan;
  for (let round = 0; round < plan.devices.length; round++) {
    const time = timeOfPlan(best, all);
    let better: Plan | null = null;
    for (const leaving of best.devices) {
      const rest = all.filter((s) => best.devices.some((d) => d.key === s.device.key && d.key !== leaving.key));
      if (rest.length === 0) continue;
      const fewer = placeAll(rest, layout, input, all);
      if (!fewer) continue;
      const t = timeOfPlan(fewer, all);
      if (t < time && (!better || t < timeOfPlan(better, all))) better = fewer;
    }
    if (!better) return best;
    best = better;
  }
  return best;
}
