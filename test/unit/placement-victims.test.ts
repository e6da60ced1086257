// Which models make room for another: only on-demand ones, least recently used first, only as many as
// it takes, never one with requests waiting; and nothing when even that would not do.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chooseVictims, makeRoomFor, type PlacedModel } from '../../coordinator/placement.js';
import type { PlanResult } from '../../coordinator/planner/types.js';

/** A model on one device of 10 units: it fits when its need is at most what is free (10 less the others' holdings, plus what the choice frees). */
function models(specs: { id: string; policy: 'pinned' | 'on-demand'; need: number; loaded: boolean; used: number; waiting?: number }[]): PlacedModel[] {
  const all: PlacedModel[] = specs.map((s) => ({
    id: s.id,
    spec: { policy: s.policy },
    lastUsedAt: s.used,
    waiting: s.waiting ?? 0,
    runningPlan: s.loaded ? {} : null,
    heldBytes: () => new Map([['d', s.need]]),
    planNow(extra = new Map<string, number>()): PlanResult {
      const held = all.filter((m) => m !== this && m.runningPlan !== null).reduce((a, m) => a + m.heldBytes().get('d')!, 0);
      const free = 10 - held + (extra.get('d') ?? 0);
      return (s.need <= free ? { fits: true } : { fits: false, reason: `needs ${s.need}, ${free} free` }) as PlanResult;
    },
    evict: async () => undefined,
  }));
  return all;
}

test('the least recently used on-demand models go, only as many as it takes', () => {
  const all = models([
    { id: 'pinned', policy: 'pinned', need: 4, loaded: true, used: 0 },
    { id: 'old', policy: 'on-demand', need: 2, loaded: true, used: 1 },
    { id: 'recent', policy: 'on-demand', need: 3, loaded: true, used: 5 },
    { id: 'new', policy: 'on-demand', need: 3, loaded: false, used: 9 },
  ]);
  const c = chooseVictims(all[3]!, all);
  assert.equal(c.kind, 'evict');
  assert.deepEqual(c.kind === 'evict' && c.victims.map((v) => v.id), ['old']);
  const big = models([
    { id: 'pinned', policy: 'pinned', need: 4, loaded: true, used: 0 },
    { id: 'old', policy: 'on-demand', need: 2, loaded: true, used: 1 },
    { id: 'recent', policy: 'on-demand', need: 3, loaded: true, used: 5 },
    { id: 'new', policy: 'on-demand', need: 6, loaded: false, used: 9 },
  ]);
  const c2 = chooseVictims(big[3]!, big);
  assert.deepEqual(c2.kind === 'evict' && c2.victims.map((v) => v.id), ['old', 'recent']);
});

test('a pinned model, or one with requests waiting, is never chosen; a model that fits takes nothing', async () => {
  const all = models([
    { id: 'pinned', policy: 'pinned', need: 6, loaded: true, used: 0 },
    { id: 'busy', policy: 'on-demand', need: 3, loaded: true, used: 1, waiting: 2 },
    { id: 'new', policy: 'on-demand', need: 5, loaded: false, used: 9 },
  ]);
  const c = chooseVictims(all[2]!, all);
  assert.equal(c.kind, 'no-room');
  assert.deepEqual(c.kind === 'no-room' && [c.pinned, c.evictable], [['pinned', 'busy'].slice(0, 1), []]);
  const notes: string[] = [];
  assert.equal(await makeRoomFor(all[2]!, all, (_k, m) => notes.push(m)), false);
  assert.match(notes[0]!, /model new does not fit, even with every on-demand model unloaded; memory is held by pinned pinned \(never unloaded\)/);
  const fits = models([{ id: 'a', policy: 'pinned', need: 2, loaded: true, used: 0 }, { id: 'b', policy: 'on-demand', need: 2, loaded: false, used: 0 }]);
  assert.equal(chooseVictims(fits[1]!, fits).kind, 'fits');
});
