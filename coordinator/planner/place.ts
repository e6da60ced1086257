// Placement without suggestions: the refusal calls it again to try each way out.
import { layoutOf } from './layout.js';
import { pipelineGroups, stageCount } from './pipeline.js';
import { placeOn, type Outcome } from './place-on.js';
import { seatsOf } from './seats.js';
import { placeBySpeed } from './speed-search.js';
import type { PlanInput } from './types.js';

/** Places the model for `groups` contexts (by default the most these candidates allow). */
export function place(input: PlanInput, groups = groupsBound(input)): Outcome {
  const layout = layoutOf(input.model, input.context, groups);
  const all = seatsOf(input);
  if (input.objective === 'speed' && all.length > 1) {
    const fast = placeBySpeed(input, layout, all);
    if (fast) return fast;
  }
  return placeOn(all, layout, input);
}

/** The most contexts a placement on these candidates could use. */
export function groupsBound(input: PlanInput): number {
  return pipelineGroups(input.context.pipeline ?? 'off', stageCount(input.devices), input.context.parallel);
}
