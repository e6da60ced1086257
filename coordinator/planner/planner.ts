// The placement planner: which device takes which layer slots of a model, or why the model does not fit.
// Pure: no I/O and no clock, so the same input always gives the same plan and `hearth plan` can show it
// without loading anything. The llama.cpp facts it encodes are in shared/ARCHITECTURE.md
// ("Placement facts"):
// - there are n_layer + 1 slots: the blocks, then the output head; each device takes a contiguous range,
//   in device order, so the last device that takes part holds the output head;
// - a block's KV cache lives with the block; the input embedding stays in the coordinator's host memory;
// - the local CPU, when it takes part, takes the first slots (llama.cpp keeps non-offloaded layers there),
//   and the RPC devices get the rest through n_gpu_layers and an integer tensor_split.
// Two objectives (PlacementObjective): 'memory' shares layers in proportion to free memory; 'speed'
// minimises the predicted time per token of a single stream (time-model.ts).
// The bytes of slots and buffers are in layout.ts, the candidates as placement sees them in seats.ts.
import { ErrorCode, HearthError } from '../../common/errors.js';
import { isCacheType, kvBytesPerToken, kvLayerBytes } from './kv.js';
import { blocksOf, computeBufferBytes, computeOf, layoutOf, loadsOf, logitsBufferBytes, neededFor, type ExpertMove, type Layout } from './layout.js';
import { pipelineGroups, stageCount } from './pipeline.js';
import { byFastest, overflowOf, seatsOf, tierOf, type Seat } from './seats.js';
import { sum } from './sum.js';
import { hopOf, secondsOf, timeOf, timeOfPlan, workOf, type DeviceWork } from './time-model.js';
import type { CandidateDevice, ExcludedDevice, ModelFacts, Plan, PlanContext, PlannedDevice, PlanInput, PlanResult, Refusal } from './types.js';
import { GiB, gbPerSecond, gib } from './units.js';

export { cacheTypeBytes, isCacheType, kvBytesPerToken, kvBytesPerTokenPerLayer, kvLayerBytes, paddedContext } from './kv.js';
export { computeBufferBytes, logitsBufferBytes } from './layout.js';
export { DEFAULT_HOP_SECONDS } from './time-model.js';


export function plan(input: PlanInput): PlanResult {
  validate(input);
  // Planned for the most contexts the candidates allow; when the placement uses fewer stages, it is
  // planned again for the contexts it will really have (fewer compute buffers always fit).
  let groups = groupsBound(input);
  let outcome = place(input, groups);
  while (outcome.fits) {
    const fewer = pipelineGroups(input.context.pipeline ?? 'off', stageCount(outcome.plan.devices), input.context.parallel);
    if (fewer >= groups) break;
    const again = place(input, fewer);
    if (!again.fits) break;
    groups = fewer;
    outcome = again;
  }
  return outcome.fits ? outcome.plan : refuse(input, outcome);
}

// ---------------------------------------------------------------------------------------------------
// The planner's input checks. Only malformed input throws; a model that does not fit is a Refusal value.

function validate(input: PlanInput): void {
  validateModel(input.model);
  validateContext(input.context);
  requireBytes(input.reserveBytes, 'reserveBytes');
  validateDevices(input.devices);
}

function invalid(message: string): never {
  throw new HearthError(ErrorCode.InvalidArgument, `cannot plan: ${message}`);
}

function requireWhole(value: number, field: string, min: number): void {
  if (!Number.isInteger(value) || value < min) invalid(`${field} must be a whole number >= ${min}, got ${value}`);
}

function requireBytes(value: number, field: string): void {
  if (!Number.isFinite(value) || value < 0) invalid(`${field} must be a byte count >= 0, got ${value}`);
}

function validateModel(model: ModelFacts): void {
  requireWhole(model.layerCount, `model.layerCount (${model.path})`, 1);
  if (model.layerBytes.length !== model.layerCount) {
    invalid(`model.layerBytes has ${model.layerBytes.length} entries but model.layerCount is ${model.layerCount} (${model.path})`);
  }
  model.layerBytes.forEach((b, i) => requireBytes(b, `model.layerBytes[${i}]`));
  requireBytes(model.inputBytes, 'model.inputBytes');
  requireBytes(model.outputBytes, 'model.outputBytes');
  const sizes = ['embeddingLength', 'headCount', 'headCountKv', 'headDimK', 'headDimV', 'vocabSize'] as const;
  for (const key of sizes) requireBytes(model[key], `model.${key}`);
  if (model.feedForwardLength !== null) requireBytes(model.feedForwardLength, 'model.feedForwardLength');
  if (model.experts) validateExperts(model, model.experts);
}

function validateExperts(model: ModelFacts, experts: NonNullable<ModelFacts['experts']>): void {
  const { count, used, layerBytes } = experts;
  requireWhole(count, 'model.experts.count', 1);
  requireWhole(used, 'model.experts.used', 1);
  if (used > count) invalid(`model.experts.used (${used}) is more than model.experts.count (${count})`);
  if (layerBytes.length !== model.layerCount) invalid(`model.experts.layerBytes has ${layerBytes.length} entries for ${model.layerCount} layers`);
  layerBytes.forEach((b, i) => {
    requireBytes(b, `model.experts.layerBytes[${i}]`);
    if (b > model.layerBytes[i]!) invalid(`model.experts.layerBytes[${i}] (${b}) is more than the whole block (${model.layerBytes[i]})`);
  });
}

function validateContext(context: PlanContext): void {
  requireWhole(context.ctxSize, 'context.ctxSize', 1);
  requireWhole(context.parallel, 'context.parallel', 1);
  requireWhole(context.nUbatch, 'context.nUbatch', 1);
  if (!isCacheType(context.typeK)) invalid(`context.typeK: unknown cache type '${String(context.typeK)}'`);
  if (!isCacheType(context.typeV)) invalid(`context.typeV: unknown cache type '${String(context.typeV)}'`);
}

function validateDevices(devices: CandidateDevice[]): void {
  const keys = new Set<string>();
  devices.forEach((d, i) => {
    const field = `devices[${i}] (${d.key})`;
    if (keys.has(d.key)) invalid(`${field}: key '${d.key}' appears twice`);
    keys.add(d.key);
    requireBytes(d.freeBytes, `${field}.freeBytes`);
    if (d.kind === 'local' && i > 0) {
      invalid(`${field} is the local device and must come first, because llama.cpp keeps the first layers on the host CPU`);
    }
    if (d.kind === 'rpc' && !d.endpoint) invalid(`${field}.endpoint is missing; an RPC device needs its worker's host:port`);
  });
}

// ---------------------------------------------------------------------------------------------------
// Placement without suggestions: the refusal calls it again to try each way out.

/** Places the model for `groups` contexts (by default the most these candidates allow). */
function place(input: PlanInput, groups = groupsBound(input)): Outcome {
  const layout = layoutOf(input.model, input.context, groups);
  const all = seatsOf(input);
  if (input.objective === 'speed' && all.length > 1) {
    const fast = placeBySpeed(input, layout, all);
    if (fast) return fast;
  }
  return placeOn(all, layout, input);
}

/** The most contexts a placement on these candidates could use. */
function groupsBound(input: PlanInput): number {
  return pipelineGroups(input.context.pipeline ?? 'off', stageCount(input.devices), input.context.parallel);
}

// ---------------------------------------------------------------------------------------------------
// Placement on a given list of devices, in the order llama.cpp will get them: which of them take part,
// how many slots each takes, and for speed, which MoE experts move to a slower device of a worker.

type Outcome = { fits: true; plan: Plan } | Shortfall;

interface Shortfall {
  fits: false;
  neededBytes: number;
  availableBytes: number;
  shortfallBytes: number;
  /** Enough memory in total, but no split into whole slots fits. */
  granular: boolean;
  excluded: ExcludedDevice[];
}

/** Places on these devices in this order (after dropping the ones that cannot take part). */
function placeOn(candidates: Seat[], layout: Layout, input: PlanInput): Outcome {
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

// ---------------------------------------------------------------------------------------------------
// The speed objective's choice of devices. Time per token is linear in the bytes each device holds, so
// the fastest devices should hold as much as fits: the planner takes the k fastest devices for the
// smallest k that holds the model, fills the fastest first, and then drops any device whose hop costs
// more than its layers save. llama.cpp order puts the local device first; the RPC devices follow
// slowest first, so that the fastest one holds the output head (the largest single matrix of most models).

/** The quickest plan on the fewest fast devices that hold the model, or null when none does. */
function placeBySpeed(input: PlanInput, layout: Layout, all: Seat[]): Outcome | null {
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

// ---------------------------------------------------------------------------------------------------
// How many layer slots each device takes, in device order. A start (largest remainder in proportion to
// capacity, or fastest first under the speed objective), then a repair loop for the cases where slot
// sizes differ (the output head, the local device's first slot) and a count overflows, then, for speed,
// single slots moved to faster devices while that lowers the time per token.

function initialCounts(capacities: number[], slotCount: number): number[] {
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
function fastestFirstCounts(seats: Seat[], layout: Layout): number[] {
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

type Repair = { ok: true; counts: number[] } | { ok: false; overflow: number };

/**
 * Moves one slot at a time from an overflowing device to the one with the most slack that can still
 * take it. Moving a slot shifts the ranges in between, so a move only counts if it lowers the total
 * overflow; that also guarantees the loop ends.
 */
function repair(start: number[], seats: Seat[], layout: Layout, fastestFirst = false): Repair {
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
function quicken(start: number[], seats: Seat[], layout: Layout): number[] {
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

// ---------------------------------------------------------------------------------------------------
// MoE experts on a second device of the same worker (a worker serving CUDA0,CPU). A block's sparse
// expert tensors are most of its bytes, but a token reads only `used / count` of them: per byte of a
// fast device's memory, a block's dense part (attention, norms, router, shared experts) saves more time
// than its experts. So the fast device takes the dense parts of blocks whose experts stay on the slower
// device of the same machine (llama.cpp's tensor overrides put them there, and the activations cross
// inside the worker, not the network). llama-server's fit (common/fit.cpp) does the same towards the
// host CPU of one machine. A spilled block costs the worker a round trip per token (see time-model.ts),
// so blocks are spilled only while the predicted time per token drops, and within every device's memory.

/** Counts after the spill, and whose experts went where. */
interface Spill {
  counts: number[];
  moves: ExpertMove[];
}

/** Where the search stands: per seat, the seat of the same worker that holds the experts of its first `spilled[i]` blocks, or -1. */
interface SpillState {
  counts: number[];
  partner: number[];
  spilled: number[];
}

function spillExperts(start: number[], seats: Seat[], layout: Layout): Spill | null {
  if (!layout.experts.some((e) => e > 0)) return null;
  const partner = seats.map((_, i) => partnerOf(seats, i));
  if (partner.every((p) => p < 0)) return null;
  let state: SpillState = { counts: [...start], partner, spilled: seats.map(() => 0) };
  let time = timeOf(state.counts, seats, layout, movesOf(state, layout));
  // One pair at a time, until no pair improves (a worker's devices rarely pair with another's).
  for (let round = 0; round < seats.length; round++) {
    let improved = false;
    for (const [i, p] of partner.entries()) {
      if (p < 0) continue;
      const best = bestSpill(state, i, p, seats, layout);
      if (best && best.time < time - 1e-12) {
        state = best.state;
        time = best.time;
        improved = true;
      }
    }
    if (!improved) break;
  }
  return state.spilled.some((n) => n > 0) ? { counts: state.counts, moves: movesOf(state, layout) } : null;
}

/**
 * The quickest split of the blocks of fast seat i and its partner p: every count of blocks on i, each
 * with the fewest spilled blocks that fit (one more spilled block only adds time: its experts are read
 * on the slower device, and it costs a round trip). A step-by-step search stops short here: making
 * room for more dense parts first means spilling experts, which alone costs time.
 */
function bestSpill(state: SpillState, i: number, p: number, seats: Seat[], layout: Layout): { state: SpillState; time: number } | null {
  const pair = state.counts[i]! + state.counts[p]!;
  let best: { state: SpillState; time: number } | null = null;
  for (let onFast = 1; onFast <= pair; onFast++) {
    const counts = [...state.counts];
    counts[i] = onFast;
    counts[p] = pair - onFast;
    const blocks = blocksOf(counts, i, layout).length;
    for (let k = 0; k <= blocks; k++) {
      const trial: SpillState = { counts, partner: state.partner, spilled: state.spilled.map((n, j) => (j === i ? k : n)) };
      if (!validSpill(trial, layout)) continue;
      const moves = movesOf(trial, layout);
      if (overflowOf(loadsOf(counts, layout, moves), seats) > 0) continue;
      const t = timeOf(counts, seats, layout, moves);
      if (!best || t < best.time - 1e-12) best = { state: trial, time: t };
      break;
    }
  }
  return best;
}

/** The slowest other device of the same worker, a speed tier or more below this one (the roomiest on a tie); -1 when there is none. */
function partnerOf(seats: Seat[], i: number): number {
  const me = seats[i]!;
  if (me.device.kind !== 'rpc') return -1;
  let best = -1;
  for (const [j, other] of seats.entries()) {
    if (j === i || other.device.endpoint !== me.device.endpoint || tierOf(other) >= tierOf(me)) continue;
    const current = best < 0 ? null : seats[best]!;
    if (!current || tierOf(other) < tierOf(current) || (tierOf(other) === tierOf(current) && other.usable > current.usable)) best = j;
  }
  return best;
}

/** The blocks each seat spills, as moves to its partner. */
function movesOf(s: SpillState, layout: Layout): ExpertMove[] {
  return s.partner.flatMap((to, from) => {
    const blocks = to < 0 ? [] : blocksOf(s.counts, from, layout).slice(0, s.spilled[from]!);
    return blocks.length > 0 ? [{ from, to, blocks }] : [];
  });
}

/**
 * Counts stay whole and positive, except that a partner may give away all its blocks and keep only
 * experts (not the last device: it holds the output head); a seat spills no more blocks than it has.
 */
function validSpill(s: SpillState, layout: Layout): boolean {
  const last = s.counts.length - 1;
  const holdsExperts = new Set(s.partner.filter((p, i) => p >= 0 && s.spilled[i]! > 0));
  return s.counts.every((c, i) => {
    if (c < 0 || s.spilled[i]! < 0) return false;
    if (c === 0 && (i === last || !holdsExperts.has(i))) return false;
    return s.spilled[i]! <= blocksOf(s.counts, i, layout).length;
  });
}

// ---------------------------------------------------------------------------------------------------
// Which devices take part. Dropping one device changes the others' positions (and so who must hold the
// output head), so devices are dropped one at a time and the rest checked again.

function selectSeats(all: Seat[], layout: Layout, input: PlanInput): { seats: Seat[]; excluded: ExcludedDevice[] } {
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
function tooSmallReason(seat: Seat, need: number, what: string, input: PlanInput): string {
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

// ---------------------------------------------------------------------------------------------------
// The plan: from seats and layer counts to what each device holds, what llama.cpp is given, and the
// predicted time per token (null unless every device that takes part was measured).

function buildPlan(input: PlanInput, layout: Layout, seats: Seat[], counts: number[], excluded: ExcludedDevice[], moves: readonly ExpertMove[] = []): Plan {
  const work = workOf(counts, layout, moves);
  let first = 0;
  const devices = seats.map((seat, i) => {
    const planned = plannedDevice(input.model, layout, seat, first, work[i]!);
    first += counts[i]!;
    return planned;
  });
  for (const { from, to, blocks } of moves) {
    const moved = sum(blocks.map((b) => layout.experts[b]!));
    devices[from] = withExperts(devices[from]!, -moved, []);
    devices[to] = withExperts(devices[to]!, moved, blocks);
  }
  const measured = devices.every((d) => d.secondsPerToken !== null);
  const rpc = devices.filter((d) => d.kind === 'rpc');
  const expertOverrides = devices.flatMap((d) => (d.expertLayers.length > 0 ? [{ layers: d.expertLayers, device: rpc.indexOf(d) }] : []));
  const hostBytes = input.model.inputBytes;
  return {
    fits: true,
    devices,
    excluded,
    rpcEndpoints: rpc.map((d) => d.endpoint ?? ''),
    rpcDevices: rpc.map((d) => seats.find((s) => s.device.key === d.key)!.device.serverIndex ?? 0),
    tensorSplit: rpc.map((d) => d.layers),
    expertOverrides,
    nGpuLayers: sum(rpc.map((d) => d.layers)),
    hostBytes,
    kvBytesPerToken: kvBytesPerToken(input.model, input.context.typeK, input.context.typeV),
    // Everything the cluster holds for this model, the coordinator's input embedding included.
    totalBytes: sum(devices.map((d) => d.totalBytes)) + hostBytes,
    context: { ...input.context },
    objective: input.objective ?? 'memory',
    predictedSecondsPerToken: measured ? sum(devices.map((d) => d.secondsPerToken!)) : null,
    groups: layout.groups,
  };
}

/** The device holding `work.layers` slots from `firstLayer`, before any experts move. */
function plannedDevice(model: ModelFacts, layout: Layout, seat: Seat, firstLayer: number, work: DeviceWork): PlannedDevice {
  const end = firstLayer + work.layers;
  const blocks = Math.max(0, Math.min(end, model.layerCount) - firstLayer);
  const holdsOutput = end > model.layerCount;
  const weightBytes = sum(model.layerBytes.slice(firstLayer, firstLayer + blocks)) + (holdsOutput ? model.outputBytes : 0);
  const kvBytes = sum(layout.kv.slice(firstLayer, firstLayer + blocks));
  const computeBytes = layout.computeBase + (holdsOutput ? layout.logits : 0);
  const { key, kind, owner, deviceName, endpoint, freeBytes } = seat.device;
  const bytesPerSecond = seat.device.bytesPerSecond && seat.device.bytesPerSecond > 0 ? seat.device.bytesPerSecond : null;
  const hopSeconds = hopOf(seat.device);
  return {
    key,
    kind,
    owner,
    deviceName,
    endpoint,
    firstLayer,
    layers: work.layers,
    holdsOutput,
    weightBytes,
    readBytes: work.readBytes,
    expertLayers: [],
    kvBytes,
    computeBytes,
    totalBytes: weightBytes + kvBytes + computeBytes,
    freeBytes,
    usableBytes: seat.usable,
    bytesPerSecond,
    secondsPerToken: bytesPerSecond === null ? null : secondsOf(work, bytesPerSecond, hopSeconds),
    hopSeconds,
  };
}

/** A planned device that gives (negative bytes) or takes the expert tensors of some blocks. */
function withExperts(d: PlannedDevice, bytes: number, blocks: number[]): PlannedDevice {
  const weightBytes = d.weightBytes + bytes;
  const expertLayers = d.expertLayers.length > 0 ? [...d.expertLayers, ...blocks].sort((a, b) => a - b) : blocks;
  return { ...d, weightBytes, expertLayers, totalBytes: weightBytes + d.kvBytes + d.computeBytes };
}

// ---------------------------------------------------------------------------------------------------
// The refusal: what is missing and what would fix it. Each way out is checked by placing again, so a
// suggested number is one that works, not just a lower bound.

/** Suggested worker sizes are rounded up to this step, so they read as numbers a person would type. */
const SUGGESTION_STEP = GiB / 10;
/** Bits per weight, by general.file_type, for the types a Q4_K_M quantization would shrink a lot. */
const SHRINKABLE_FILE_TYPES: ReadonlyMap<number, { name: string; bitsPerWeight: number }> = new Map([
  [0, { name: 'F32', bitsPerWeight: 32 }],
  [1, { name: 'F16', bitsPerWeight: 16 }],
  [7, { name: 'Q8_0', bitsPerWeight: 8.5 }],
]);
const Q4_K_M_BITS_PER_WEIGHT = 4.8;

function refuse(input: PlanInput, outcome: Shortfall): Refusal {
  return {
    fits: false,
    shortfallBytes: outcome.shortfallBytes,
    reason: refusalReason(input, outcome),
    suggestions: [addWorker(input, outcome), pipelineOff(input), smallerContext(input), fewerSequences(input), smallerQuantization(input, outcome)].filter(
      (s): s is string => s !== null,
    ),
    excluded: outcome.excluded,
    neededBytes: outcome.neededBytes,
    availableBytes: outcome.availableBytes,
  };
}

function refusalReason(input: PlanInput, outcome: Shortfall): string {
  if (input.devices.length === 0) return 'no devices to place the model on: start a worker or enable the local device';
  const name = input.model.name ?? input.model.path;
  const needed = gib(outcome.neededBytes);
  const available = gib(outcome.availableBytes);
  const short = gib(outcome.shortfallBytes);
  if (outcome.granular) {
    return `${name} needs ${needed} and ${available} is available after reserves, but no split into whole layers fits: short by ${short}.`;
  }
  return `${name} needs ${needed} (weights, KV cache and compute buffers) but only ${available} is available after reserves: short by ${short}.`;
}

function fitsWith(input: PlanInput, change: { devices?: CandidateDevice[]; context?: Partial<PlanContext> }): boolean {
  const devices = change.devices ?? input.devices;
  return place({ ...input, devices, context: { ...input.context, ...change.context } }).fits;
}

/** The largest whole number in [lo, hi] for which `fits` holds, given that it holds for lo (fitting only gets easier downwards). */
function largestFitting(lo: number, hi: number, fits: (n: number) => boolean): number {
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The smallest whole number in (failing, fitting] for which `fits` holds (fitting only gets easier upwards). */
function smallestFitting(failing: number, fitting: number, fits: (n: number) => boolean): number {
  while (fitting - failing > 1) {
    const mid = Math.floor((failing + fitting) / 2);
    if (fits(mid)) fitting = mid;
    else failing = mid;
  }
  return fitting;
}

/** The smallest worker, in steps of 0.1 GiB, that makes the model fit when appended to the devices. */
function addWorker(input: PlanInput, outcome: Shortfall): string | null {
  const fits = (steps: number) => fitsWith(input, { devices: [...input.devices, suggestedWorker(steps * SUGGESTION_STEP)] });
  // The new device brings its own compute buffer, so the shortfall plus the reserve is only where to start.
  const start = Math.max(1, Math.ceil((outcome.shortfallBytes + input.reserveBytes) / SUGGESTION_STEP - 1e-9));
  let failing = start - 1;
  let fitting = start;
  while (!fits(fitting)) {
    if (fitting > start * 2 ** 40) return null;
    failing = fitting;
    fitting *= 2;
  }
  const steps = smallestFitting(failing, fitting, fits);
  return `Add a worker with at least ${(steps / 10).toFixed(1)} GiB free.`;
}

function suggestedWorker(freeBytes: number): CandidateDevice {
  return { key: 'suggested/new', kind: 'rpc', owner: 'new worker', deviceName: 'new', endpoint: 'new-worker:0', freeBytes, totalBytes: freeBytes };
}

function kvSavings(input: PlanInput, ctxSize: number, parallel: number): string {
  const { model, context } = input;
  const before = sum(kvLayerBytes(model, context));
  const after = sum(kvLayerBytes(model, { ...context, ctxSize, parallel }));
  return gib(before - after);
}

/** The largest context, in steps of 256 tokens, that fits; none when even 256 tokens do not. */
function smallerContext(input: PlanInput): string | null {
  const { ctxSize, parallel } = input.context;
  const maxSteps = Math.floor((ctxSize - 1) / 256);
  const fits = (steps: number) => fitsWith(input, { context: { ctxSize: steps * 256 } });
  if (maxSteps < 1 || !fits(1)) return null;
  const smaller = largestFitting(1, maxSteps, fits) * 256;
  return `Reduce --ctx-size from ${ctxSize} to ${smaller} (saves ${kvSavings(input, smaller, parallel)} of KV cache).`;
}

function fewerSequences(input: PlanInput): string | null {
  const { ctxSize, parallel } = input.context;
  const fits = (p: number) => fitsWith(input, { context: { parallel: p } });
  if (parallel < 2 || !fits(1)) return null;
  const fewer = largestFitting(1, parallel - 1, fits);
  return `Reduce --parallel from ${parallel} to ${fewer} (saves ${kvSavings(input, ctxSize, fewer)} of KV cache).`;
}

/** Pipelined decode's extra contexts each need compute buffers on every device; one context may fit. */
function pipelineOff(input: PlanInput): string | null {
  const groups = groupsBound(input);
  if (groups < 2 || !fitsWith(input, { context: { pipeline: 'off' } })) return null;
  const saved = (groups - 1) * (computeBufferBytes(input.model, input.context) * stageCount(input.devices) + logitsBufferBytes(input.model, input.context));
  return `Start with --pipeline off (one context instead of ${groups}; saves up to ${gib(saved)} of compute buffers).`;
}

/** An estimate only: Q4_K_M keeps a few tensors at higher precision, which its 4.8 bits average covers. */
function smallerQuantization(input: PlanInput, outcome: Shortfall): string | null {
  const { model } = input;
  const from = model.fileType === null ? undefined : SHRINKABLE_FILE_TYPES.get(model.fileType);
  if (!from) return null;
  const weights = sum(model.layerBytes) + model.outputBytes;
  const quantized = outcome.neededBytes - weights * (1 - Q4_K_M_BITS_PER_WEIGHT / from.bitsPerWeight);
  const verdict = quantized <= outcome.availableBytes ? 'which fits in' : 'still more than';
  return (
    `A Q4_K_M quantization of this model (about ${Q4_K_M_BITS_PER_WEIGHT} bits per weight instead of ${from.bitsPerWeight} for ${from.name}) ` +
    `would need about ${gib(quantized)}, ${verdict} the ${gib(outcome.availableBytes)} available.`
  );
}
