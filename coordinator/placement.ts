// Several models in one cluster's memory: when a model does not fit beside the loaded ones, which of
// them to unload. Only on-demand models go, least recently used first, and only as many as it takes;
// a model with requests waiting for it is not taken (it would be loaded again at once), and a pinned
// model never is. The choice is made on plans (what the model's plan would be with a victim's memory
// free), so a victim is only unloaded when that makes the model fit.
import type { CoordinatorEvent } from './snapshot.js';
import type { PlanResult } from './planner/types.js';

/** What the choice needs of a model. */
export interface PlacedModel {
  readonly id: string;
  readonly spec: { readonly policy: 'pinned' | 'on-demand' };
  readonly lastUsedAt: number | null;
  readonly waiting: number;
  readonly runningPlan: unknown;
  planNow(extraFree?: Map<string, number>): PlanResult;
  heldBytes(): Map<string, number>;
  evict(why: string): Promise<void>;
}

/** The decision: unload these (in order) and the model fits; or it fits as it is; or not even then. */
export type RoomChoice = { kind: 'fits' } | { kind: 'evict'; victims: PlacedModel[] } | { kind: 'no-room'; reason: string; pinned: string[]; evictable: string[] };

/** Chooses which loaded models `model` needs unloaded to fit (pure: it only plans). */
export function chooseVictims(model: PlacedModel, all: readonly PlacedModel[]): RoomChoice {
  const alone = model.planNow();
  if (alone.fits) return { kind: 'fits' };
  const loaded = all.filter((m) => m !== model && m.runningPlan !== null);
  const evictable = loaded
    .filter((m) => m.spec.policy === 'on-demand' && m.waiting === 0)
    .sort((a, b) => (a.lastUsedAt ?? 0) - (b.lastUsedAt ?? 0));
  const extra = new Map<string, number>();
  const victims: PlacedModel[] = [];
  for (const v of evictable) {
    victims.push(v);
    for (const [key, bytes] of v.heldBytes()) extra.set(key, (extra.get(key) ?? 0) + bytes);
    if (model.planNow(extra).fits) return { kind: 'evict', victims };
  }
  return {
    kind: 'no-room',
    reason: alone.fits ? '' : alone.reason,
    pinned: loaded.filter((m) => m.spec.policy === 'pinned').map((m) => m.id),
    evictable: evictable.map((m) => m.id),
  };
}

/**
 * Makes room for `model` as chooseVictims says, and says so in the events. Resolves true when models
 * were unloaded (the workers' memory figures are then stale).
 */
export async function makeRoomFor(model: PlacedModel, all: readonly PlacedModel[], note: (kind: CoordinatorEvent['kind'], message: string) => void): Promise<boolean> {
  const choice = chooseVictims(model, all);
  if (choice.kind === 'fits') return false;
  if (choice.kind === 'no-room') {
    if (choice.pinned.length > 0 || choice.evictable.length > 0) {
      const held = [
        ...(choice.pinned.length > 0 ? [`pinned ${choice.pinned.join(', ')} (never unloaded)`] : []),
        ...(choice.evictable.length > 0 ? [`on-demand ${choice.evictable.join(', ')}`] : []),
      ].join(' and ');
      note('load', `model ${model.id} does not fit, even with every on-demand model unloaded; memory is held by ${held}`);
    }
    return false;
  }
  const names = choice.victims.map((v) => v.id).join(', ');
  note('load', `model ${model.id} does not fit beside the loaded models: unloading ${names} (least recently used) to make room`);
  for (const v of choice.victims) await v.evict(`to make room for ${model.id}`);
  return true;
}
