// Tensor mode's placement: which workers' devices take part and what share of every layer each holds.
// Under the speed objective the shares even out the devices' compute time (a faster device takes more)
// within each one's memory, on the k fastest capable devices for the k that predicts the least time
// (more devices compute less each, but every reduction takes more steps); then a device is left out
// while that saves time. Under the memory objective every capable device takes a share in proportion to
// its memory. The shares are checked with llama.cpp's own rounding (tensor-split.ts).
import { kvBytesPerToken } from './kv.js';
import { pipelineGroups } from './pipeline.js';
import { byFastest, type Seat } from './seats.js';
import { architectureRefusal, tensorDeviceRefusal } from './split.js';
import { sum } from './sum.js';
import { dividedBytes, fixedBytes, readSplit, tensorLoads, tensorShape, type TensorLoad, type TensorShape } from './tensor-split.js';
import { hopOf, tensorSeconds, type TensorTime } from './time-model.js';
import type { ExcludedDevice, Plan, PlannedDevice, PlanInput } from './types.js';
import { gib } from './units.js';

/** Shares are given to llama.cpp rounded to this, so that plans read plainly and compare stably. */
const SHARE_STEP = 1e-4;
/** Rounds of lowering an overflowing device's share after llama.cpp's rounding. */
const FIT_ROUNDS = 12;

export type TensorOutcome =
  | { fits: true; plan: Plan; time: number }
  | { fits: false; reason: string; neededBytes: number; availableBytes: number; shortfallBytes: number; excluded: ExcludedDevice[] };

/** One tried set of devices with its shares and loads. */
interface Trial {
  seats: Seat[];
  shares: number[];
  shape: TensorShape;
  loads: TensorLoad[];
  time: TensorTime;
}

function excludedOf(seat: Seat, reason: string): ExcludedDevice {
  const { key, owner, deviceName } = seat.device;
  return { key, owner, deviceName, reason };
}

/** The tensor-mode plan for these candidates, or why there is none. Its splitChoice is the caller's to fill in. */
export function planTensor(input: PlanInput, all: Seat[]): TensorOutcome {
  const refusal = (reason: string, excluded: ExcludedDevice[] = []): TensorOutcome => ({ fits: false, reason, neededBytes: 0, availableBytes: 0, shortfallBytes: 0, excluded });
  const arch = architectureRefusal(input.model);
  if (arch) return refusal(arch);
  const excluded: ExcludedDevice[] = [];
  const capable: Seat[] = [];
  for (const seat of all) {
    const why = tensorDeviceRefusal(seat.device, input.rpcProtocol ?? null);
    if (why) excluded.push(excludedOf(seat, why));
    else capable.push(seat);
  }
  if (capable.length < 2) {
    const reasons = excluded.filter((e) => !e.key.startsWith('local/')).map((e) => e.reason);
    return refusal(
      `tensor mode needs two or more workers' devices that can take part, and ${capable.length === 0 ? 'none' : 'only one'} can${reasons.length > 0 ? ` (${reasons.join('; ')})` : ''}`,
      excluded,
    );
  }
  const groups = pipelineGroups(input.context.pipeline ?? 'off', 1, input.context.parallel);
  const most = mostDevices(input, capable.length, groups);
  if (most < 2) {
    const a = tensorShape(input.model, input.context, groups, 2).attention[0]!;
    return refusal(
      `${input.model.name ?? input.model.path}'s attention cannot be split over two devices: llama.cpp cuts it in units of ${a.gKv / a.headDim} KV head(s) ` +
        `(the query heads of a KV group times the head size, rounded to the quant block) and it has ${a.neKv / a.headDim}`,
      excluded,
    );
  }
  // Every device holds the whole norms and compute buffers whatever its share: one without room for them is out.
  const fixed = fixedBytes(tensorShape(input.model, input.context, groups, most));
  for (const seat of capable.filter((s) => s.usable <= fixed)) {
    excluded.push(excludedOf(seat, `${gib(Math.max(0, seat.usable))} usable after the ${gib(input.reserveBytes)} reserve; in tensor mode every device holds ${gib(fixed)} whatever its share (the norms${input.model.outputTied ? ', the tied output head' : ''} and a whole compute buffer)`));
  }
  const roomy = capable.filter((s) => s.usable > fixed);
  if (roomy.length < 2) return refusal(`tensor mode needs two or more workers' devices with room for what each holds whole (${gib(fixed)}); ${roomy.length === 0 ? 'none has' : 'only one has'}`, excluded);
  const speed = input.objective === 'speed';
  const ordered = speed ? byFastest(roomy).map((i) => roomy[i]!) : [...roomy].sort((a, b) => b.usable - a.usable || a.index - b.index);
  const tooMany = ordered.slice(most);
  for (const seat of tooMany) excluded.push(excludedOf(seat, `the model's attention splits into whole KV heads for at most ${most} devices, and devices ${speed ? 'faster' : 'with more memory'} take them`));
  const usable = ordered.slice(0, most);
  const best = speed ? quickest(usable, input, groups) : place(inOrder(usable), input, groups, 'memory');
  if (!best) return shortfall(input, usable, groups, excluded);
  const left = usable.filter((s) => !best.seats.includes(s)).map((s) => excludedOf(s, notNeededReason(speed)));
  return { fits: true, plan: buildTensorPlan(input, best, [...excluded, ...left], groups), time: best.time.total };
}

/** The most devices the attention can be cut for, of `capable`: llama.cpp's granularity grows with the device count. */
function mostDevices(input: PlanInput, capable: number, groups: number): number {
  for (let n = capable; n >= 2; n--) {
    const a = tensorShape(input.model, input.context, groups, n).attention[0]!;
    if (Math.floor(a.neQ / a.gQ) >= n) return n;
  }
  return 0;
}

/** Candidate order: llama.cpp gets the devices as the candidates list them. */
function inOrder(seats: Seat[]): Seat[] {
  return [...seats].sort((a, b) => a.index - b.index);
}

/** The k fastest for the best k, then devices left out while that saves time. */
function quickest(ordered: Seat[], input: PlanInput, groups: number): Trial | null {
  let best: Trial | null = null;
  for (let k = 2; k <= ordered.length; k++) {
    const trial = place(inOrder(ordered.slice(0, k)), input, groups, 'speed');
    if (trial && (!best || trial.time.total < best.time.total - 1e-12)) best = trial;
  }
  for (let round = 0; best && round < ordered.length; round++) {
    let better: Trial | null = null;
    for (const leaving of best.seats) {
      if (best.seats.length <= 2) break;
      const trial = place(best.seats.filter((s) => s !== leaving), input, groups, 'speed');
      if (trial && trial.time.total < (better ?? best).time.total - 1e-12) better = trial;
    }
    if (!better) break;
    best = better;
  }
  return best;
}

/**
 * Shares on exactly these devices that fit after llama.cpp's rounding, or null. Besides the shares the
 * objective asks for, the same rounded to whole attention units is tried (with few KV heads, rounding
 * down leaves a device fewer heads than its share and another the rest), and the quicker taken.
 */
function place(seats: Seat[], input: PlanInput, groups: number, objective: 'speed' | 'memory'): Trial | null {
  const shape = tensorShape(input.model, input.context, groups, seats.length);
  const divided = dividedBytes(shape);
  const fixed = fixedBytes(shape);
  const caps = seats.map((s) => (divided > 0 ? (s.usable - fixed) / divided : 1));
  for (let round = 0; round < FIT_ROUNDS; round++) {
    const raw = objective === 'speed' ? speedShares(seats, caps, shape) : memoryShares(caps);
    if (!raw) return null;
    const shares = rounded(raw);
    const trial = trialOf(seats, shares, shape, input);
    if (trial.over.every((o) => o <= 0)) {
      const whole = trialOf(seats, wholeUnits(raw, shape), shape, input);
      return whole.over.every((o) => o <= 0) && whole.trial.time.total < trial.trial.time.total - 1e-12 ? whole.trial : trial.trial;
    }
    // Rounding gave a device more than its share allowed: lower its cap by what it is over, twice as
    // much each round (the rounding moves in whole heads and blocks, so a little less may change nothing).
    trial.over.forEach((o, i) => {
      if (o > 0) caps[i] = Math.min(caps[i]!, shares[i]! - (o / Math.max(divided, 1)) * 2 ** round - SHARE_STEP);
    });
  }
  return null;
}

/** These shares' loads, time, and how far each device is over its memory. */
function trialOf(seats: Seat[], shares: number[], shape: TensorShape, input: PlanInput): { trial: Trial; over: number[] } {
  const loads = tensorLoads(shape, shares);
  const over = loads.map((l, i) => l.weightBytes + l.kvBytes + l.computeBytes - seats[i]!.usable);
  const time = tensorSeconds(loads.map((l) => l.readBytes), seats.map((s) => s.speed), seats.map((s) => s.device), input.model);
  return { trial: { seats, shares, shape, loads, time }, over };
}

/** The shares moved to whole attention units of the first layer (largest remainder, one unit each at least). */
function wholeUnits(shares: number[], shape: TensorShape): number[] {
  const a = shape.attention[0]!;
  const units = Math.floor(a.neQ / a.gQ);
  if (units < shares.length) return rounded(shares);
  const quotas = shares.map((s) => s * units);
  const counts = quotas.map((q) => Math.max(1, Math.floor(q)));
  const order = quotas.map((q, i) => ({ i, r: q - Math.floor(q) })).sort((x, y) => y.r - x.r || x.i - y.i);
  for (let k = 0; sum(counts) < units; k++) counts[order[k % order.length]!.i]! += 1;
  while (sum(counts) > units) {
    const most = counts.indexOf(Math.max(...counts));
    counts[most]! -= 1;
  }
  return rounded(counts.map((c) => c / units));
}

/**
 * Shares that give every device the same compute time (its fixed reads plus its share of the divided
 * reads, over its speed), with a device at its memory cap held there and the rest shared again; null
 * when the caps do not add up to the whole model, or a device is too slow to take any share.
 */
function speedShares(seats: Seat[], caps: number[], shape: TensorShape): number[] | null {
  const { fixed, divided } = readSplit(shape);
  const shares = new Array<number>(seats.length).fill(0);
  const free = new Set(seats.map((_, i) => i));
  let held = 0;
  for (;;) {
    if (free.size === 0) return held >= 1 - 1e-9 ? shares : null;
    const speeds = sum([...free].map((i) => seats[i]!.speed));
    const t = (divided * (1 - held) + free.size * fixed) / speeds;
    let capped = false;
    for (const i of free) {
      const p = divided > 0 ? (t * seats[i]!.speed - fixed) / divided : (1 - held) / free.size;
      if (p <= 0) return null;
      shares[i] = p;
      if (p > caps[i]!) {
        if (caps[i]! <= 0) return null;
        shares[i] = caps[i]!;
        held += caps[i]!;
        free.delete(i);
        capped = true;
      }
    }
    if (!capped) return shares;
  }
}

/** Shares in proportion to what each device has left after what every device holds; null when that is not enough. */
function memoryShares(caps: number[]): number[] | null {
  const room = caps.map((c) => Math.max(0, c));
  const total = sum(room);
  if (total < 1 || room.some((r) => r <= 0)) return null;
  return room.map((r) => r / total);
}

/** Shares on a grid of SHARE_STEP, each at least one step, summing to 1. */
function rounded(shares: number[]): number[] {
  const total = sum(shares);
  const out = shares.map((s) => Math.max(SHARE_STEP, Math.round(s / total / SHARE_STEP) * SHARE_STEP));
  const largest = out.indexOf(Math.max(...out));
  out[largest] = out[largest]! + (1 - sum(out));
  return out.map((s) => Number(s.toFixed(4)));
}

function notNeededReason(speed: boolean): string {
  return speed
    ? 'not needed: the tensor split is quicker without it (what its share would save is less than what another worker adds: its graph every token, steps of every reduction)'
    : 'not needed';
}

/** Why no shares fit: the memory every device needs against what they have. */
function shortfall(input: PlanInput, seats: Seat[], groups: number, excluded: ExcludedDevice[]): TensorOutcome {
  const shape = tensorShape(input.model, input.context, groups, seats.length);
  const neededBytes = dividedBytes(shape) + seats.length * fixedBytes(shape);
  const availableBytes = sum(seats.map((s) => Math.max(0, s.usable)));
  const shortfallBytes = Math.max(0, neededBytes - availableBytes);
  const name = input.model.name ?? input.model.path;
  const reason =
    shortfallBytes > 0
      ? `${name} needs ${gib(neededBytes)} in tensor mode over ${seats.length} devices (every device holds the norms${shape.outputTied ? ', the tied output head' : ''} and a whole compute buffer) but ${gib(availableBytes)} is available after reserves: short by ${gib(shortfallBytes)}`
      : `${name} needs ${gib(neededBytes)} in tensor mode and ${gib(availableBytes)} is available, but no shares fit each device's memory once rounded to whole heads and blocks`;
  return { fits: false, reason, neededBytes, availableBytes, shortfallBytes: Math.max(shortfallBytes, 1), excluded };
}

function buildTensorPlan(input: PlanInput, t: Trial, excluded: ExcludedDevice[], groups: number): Plan {
  const slots = input.model.layerCount + 1;
  const devices: PlannedDevice[] = t.seats.map((seat, i) => {
    const load = t.loads[i]!;
    const { key, kind, owner, deviceName, endpoint, freeBytes } = seat.device;
    const bytesPerSecond = seat.device.bytesPerSecond && seat.device.bytesPerSecond > 0 ? seat.device.bytesPerSecond : null;
    return {
      key, kind, owner, deviceName, endpoint,
      firstLayer: 0,
      layers: slots,
      holdsOutput: true,
      weightBytes: load.weightBytes,
      readBytes: load.readBytes,
      expertLayers: [],
      kvBytes: load.kvBytes,
      computeBytes: load.computeBytes,
      totalBytes: load.weightBytes + load.kvBytes + load.computeBytes,
      freeBytes,
      usableBytes: seat.usable,
      bytesPerSecond,
      secondsPerToken: bytesPerSecond === null ? null : load.readBytes / bytesPerSecond,
      hopSeconds: hopOf(seat.device),
      share: t.shares[i]!,
    };
  });
  const measured = devices.every((d) => d.secondsPerToken !== null);
  const hostBytes = input.model.inputBytes;
  return {
    fits: true,
    split: 'tensor',
    splitChoice: { setting: 'tensor', layer: { mode: 'layer', secondsPerToken: null, refusal: null, parts: null }, tensor: { mode: 'tensor', secondsPerToken: t.time.total, refusal: null, parts: null }, reason: '' },
    tensor: {
      reductions: t.time.reductions,
      steps: t.time.steps,
      reduceSeconds: t.time.reduceSeconds,
      computeSeconds: t.time.computeSeconds,
      coordinatorSeconds: t.time.coordinatorSeconds,
      reduceBufferBytes: t.shape.reduceBufferBytes,
      notes: notesOf(t),
    },
    devices,
    excluded,
    rpcEndpoints: devices.map((d) => d.endpoint ?? ''),
    rpcDevices: t.seats.map((s) => s.device.serverIndex ?? 0),
    tensorSplit: [...t.shares],
    expertOverrides: [],
    nGpuLayers: slots,
    hostBytes,
    kvBytesPerToken: kvBytesPerToken(input.model, input.context.typeK, input.context.typeV),
    totalBytes: sum(devices.map((d) => d.totalBytes)) + hostBytes,
    context: { ...input.context },
    objective: input.objective ?? 'memory',
    predictedSecondsPerToken: measured ? t.time.total : null,
    groups,
  };
}

/**
 * What llama.cpp's rounding to whole KV heads does to the shares, when it matters: a device whose heads
 * per layer differ from its share of them (they take turns from layer to layer, or one takes the rest).
 */
function notesOf(t: Trial): string[] {
  const a = t.shape.attention[0]!;
  const heads = a.neKv / a.headDim;
  const unit = a.gKv / a.headDim;
  const uneven = t.seats.some((_, i) => t.loads[i]!.kvHeads.some((h) => Math.abs(h - t.shares[i]! * heads) > 1e-6));
  if (!uneven) return [];
  const per = t.seats.map((s, i) => {
    const hs = t.loads[i]!.kvHeads;
    const lo = Math.min(...hs);
    const hi = Math.max(...hs);
    const avg = sum(hs) / hs.length;
    return `${s.device.owner} ${lo === hi ? lo : `${lo}-${hi}`} (share ${(t.shares[i]! * heads).toFixed(2)}, ${avg.toFixed(2)} on average)`;
  });
  return [
    `llama.cpp splits attention by whole KV heads (${heads} per layer, in units of ${unit}): KV heads per layer ${per.join(', ')}; ` +
      'the rounding takes turns from layer to layer, and each device holds and reads what it gets',
  ];
}
