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
//
// The steps, one file each: validate.ts (malformed input throws), layout.ts (bytes of slots and buffers),
// seats.ts and select-seats.ts (the candidates, and which take part), counts.ts (layers per device),
// time-model.ts, speed-search.ts (which devices the speed objective uses), experts.ts (MoE experts on a
// slower device of the same worker), build-plan.ts, place-on.ts and place.ts (the steps together), and
// refusal.ts (what is missing and what would fix it).
//
// Tensor mode (split.ts) is planned by tensor-plan.ts on tensor-split.ts's memory and the time model's
// tensorSeconds; under 'auto' both modes are planned, and the tensor split is taken when it is
// predicted clearly faster from measured speeds (or only it fits).
import { pipelineGroups, stageCount } from './pipeline.js';
import { groupsBound, place } from './place.js';
import { refuse } from './refusal.js';
import { seatsOf } from './seats.js';
import { planTensor, type TensorOutcome } from './tensor-plan.js';
import { timeOfPlan } from './time-model.js';
import type { Plan, PlanInput, PlanResult, Refusal, SplitChoice, SplitOption, SplitSetting } from './types.js';
import { validate } from './validate.js';

export { cacheTypeBytes, isCacheType, kvBytesPerToken, kvBytesPerTokenPerLayer, kvLayerBytes, paddedContext } from './kv.js';
export { computeBufferBytes, logitsBufferBytes } from './layout.js';
export { DEFAULT_HOP_SECONDS } from './time-model.js';

export function plan(input: PlanInput): PlanResult {
  validate(input);
  const setting = input.split ?? 'layer';
  const layer = setting === 'tensor' ? null : planLayers(input);
  const tensor = setting === 'layer' ? null : planTensor(input, seatsOf(input));
  return choose(setting, input, layer, tensor);
}

/** The layer split: whole layers per device. */
function planLayers(input: PlanInput): PlanResult {
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

/**
 * How much faster the tensor split must be predicted for auto to leave whole layers: predictions are
 * good to tens of percent, and whole layers are the mode that needs nothing of the network between workers.
 */
const AUTO_MARGIN = 0.05;

/** Layer mode's time with stand-in speeds where a device was not measured, so that the modes compare. */
function layerTime(input: PlanInput, p: Plan): number {
  return timeOfPlan(p, seatsOf(input));
}

function ms(seconds: number): string {
  return `${(seconds * 1000).toFixed(1)} ms`;
}

/** The plan of the setting's mode, or under 'auto' of the faster mode that fits, with both modes' figures. */
function choose(setting: SplitSetting, input: PlanInput, layer: PlanResult | null, tensor: TensorOutcome | null): PlanResult {
  const layerOption: SplitOption = !layer
    ? { mode: 'layer', secondsPerToken: null, refusal: 'not planned (--split tensor)', parts: null }
    : layer.fits
      ? { mode: 'layer', secondsPerToken: layerTime(input, layer), refusal: null, parts: null }
      : { mode: 'layer', secondsPerToken: null, refusal: layer.reason, parts: null };
  const tensorOption: SplitOption = !tensor
    ? { mode: 'tensor', secondsPerToken: null, refusal: 'not planned (--split layer)', parts: null }
    : tensor.fits
      ? { mode: 'tensor', secondsPerToken: tensor.time, refusal: null, parts: partsOf(tensor.plan) }
      : { mode: 'tensor', secondsPerToken: null, refusal: tensor.reason, parts: null };
  const choice = (reason: string): SplitChoice => ({ setting, layer: layerOption, tensor: tensorOption, reason });
  const withChoice = (p: Plan, reason: string): Plan => ({ ...p, splitChoice: choice(reason) });
  if (setting === 'layer') return layer!.fits ? withChoice(layer!, 'layer split asked for') : layer!;
  if (setting === 'tensor') return tensor!.fits ? withChoice(tensor!.plan, 'tensor split asked for') : tensorRefusal(tensor!, choice('tensor split asked for'));
  // auto
  if (tensor!.fits && !layer!.fits) return withChoice(tensor!.plan, `auto: only the tensor split fits (layers: ${layer!.reason})`);
  if (!layer!.fits) return { ...layer!, splitChoice: choice(`auto: neither split fits (tensor: ${tensorOption.refusal})`) };
  if (!tensor!.fits) return withChoice(layer!, `auto: whole layers, because ${tensorOption.refusal}`);
  // Stand-in speeds rank layer plans well enough, but the tensor split's gain is compute against
  // network time: without measured speeds there is nothing to weigh, so whole layers stay.
  if (layer!.predictedSecondsPerToken === null || tensor!.plan.predictedSecondsPerToken === null) {
    return withChoice(layer!, 'auto: whole layers, because a device has no measured speed to weigh the tensor split\'s gain against its network time');
  }
  if (tensorOption.secondsPerToken! < (1 - AUTO_MARGIN) * layerOption.secondsPerToken!) {
    return withChoice(tensor!.plan, `auto: tensor split predicts ${ms(tensorOption.secondsPerToken!)} per token against ${ms(layerOption.secondsPerToken!)} with whole layers`);
  }
  const close = tensorOption.secondsPerToken! < layerOption.secondsPerToken! ? ` (less than ${AUTO_MARGIN * 100} % apart: whole layers stay)` : '';
  return withChoice(layer!, `auto: whole layers predict ${ms(layerOption.secondsPerToken!)} per token against ${ms(tensorOption.secondsPerToken!)} with the tensor split${close}`);
}

function partsOf(p: Plan): SplitOption['parts'] {
  const t = p.tensor!;
  return { devices: p.devices.length, computeSeconds: t.computeSeconds, reduceSeconds: t.reduceSeconds, reductions: t.reductions, steps: t.steps, coordinatorSeconds: t.coordinatorSeconds };
}

function tensorRefusal(t: Extract<TensorOutcome, { fits: false }>, splitChoice: SplitChoice): Refusal {
  const suggestions = ['Give --split layer (or auto): whole layers per device, one device after another.'];
  return {
    fits: false,
    shortfallBytes: t.shortfallBytes,
    reason: t.reason,
    suggestions: t.shortfallBytes > 0 ? [...suggestions, 'Add a worker, or lend more memory on the ones in the split.'] : suggestions,
    excluded: t.excluded,
    neededBytes: t.neededBytes,
    availableBytes: t.availableBytes,
    splitChoice,
  };
}
