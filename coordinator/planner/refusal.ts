// The refusal: what is missing and what would fix it. Each way out is checked by placing again, so a
// suggested number is one that works, not just a lower bound.
import { kvLayerBytes } from './kv.js';
import { computeBufferBytes, logitsBufferBytes } from './layout.js';
import { stageCount } from './pipeline.js';
import type { Shortfall } from './place-on.js';
import { groupsBound, place } from './place.js';
import { sum } from './sum.js';
import type { CandidateDevice, PlanContext, PlanInput, Refusal } from './types.js';
import { GiB, gib } from './units.js';

/** Suggested worker sizes are rounded up to this step, so they read as numbers a person would type. */
const SUGGESTION_STEP = GiB / 10;
/** Bits per weight, by general.file_type, for the types a Q4_K_M quantization would shrink a lot. */
const SHRINKABLE_FILE_TYPES: ReadonlyMap<number, { name: string; bitsPerWeight: number }> = new Map([
  [0, { name: 'F32', bitsPerWeight: 32 }],
  [1, { name: 'F16', bitsPerWeight: 16 }],
  [7, { name: 'Q8_0', bitsPerWeight: 8.5 }],
]);
const Q4_K_M_BITS_PER_WEIGHT = 4.8;

export function refuse(input: PlanInput, outcome: Shortfall): Refusal {
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
