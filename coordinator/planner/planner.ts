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
import { pipelineGroups, stageCount } from './pipeline.js';
import { groupsBound, place } from './place.js';
import { refuse } from './refusal.js';
import type { PlanInput, PlanResult } from './types.js';
import { validate } from './validate.js';

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
