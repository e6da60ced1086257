// The flap guard: a worker lost within seconds of each admission is held out of plans, longer each
// time, and forgiven once it stays up.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { FLAP_WINDOW_MS, FlapGuard } from '../../coordinator/flaps.js';

describe('flap guard', () => {
  test('a loss long after joining is no flap; one soon after is, and the hold doubles', () => {
    const g = new FlapGuard();
    g.admitted('w:1', 0);
    assert.equal(g.lost('w:1', FLAP_WINDOW_MS + 1), null);
    assert.equal(g.heldUntil('w:1', FLAP_WINDOW_MS + 1), 0);
    let t = 100_000;
    const holds: number[] = [];
    for (let i = 0; i < 7; i++) {
      g.admitted('w:1', t);
      const hold = g.lost('w:1', t + 1000);
      assert.ok(hold);
      holds.push(hold.holdMs);
      assert.equal(g.heldUntil('w:1', t + 1000), hold.untilMs);
      assert.equal(g.heldUntil('w:1', hold.untilMs), 0, 'the hold ends');
      t = hold.untilMs + 1;
    }
    assert.deepEqual(holds, [2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
  });

  test('a worker that stays up is forgiven, and other workers are not held', () => {
    const g = new FlapGuard();
    g.admitted('w:1', 0);
    assert.ok(g.lost('w:1', 500));
    g.admitted('w:1', 10_000);
    assert.equal(g.lost('w:1', 10_000 + FLAP_WINDOW_MS + 1), null);
    g.admitted('w:1', 100_000);
    assert.equal(g.lost('w:1', 100_500)?.holdMs, 2000, 'counting starts again');
    assert.equal(g.heldUntil('w:2', 100_500), 0);
    assert.equal(g.lost('w:2', 100_500), null, 'never admitted: nothing to judge');
  });
});
