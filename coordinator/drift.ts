// When measured speeds move far from the ones the running plan was made with (a machine got busy, or
// freed up), the plan may no longer be the quickest: the coordinator re-plans at its next idle moment.
import type { CandidateDevice } from './planner/types.js';

/** How far a device's speed may move, as a fraction of what the plan used, before the plan is made again. */
export const SPEED_DRIFT = 0.3;

export interface SpeedDrift {
  key: string;
  owner: string;
  deviceName: string;
  before: number;
  now: number;
}

/** The device whose speed moved the most beyond `threshold` since `before` was taken, or null. */
export function speedDrift(before: ReadonlyMap<string, number | null>, now: readonly CandidateDevice[], threshold = SPEED_DRIFT): SpeedDrift | null {
  let worst: (SpeedDrift & { change: number }) | null = null;
  for (const d of now) {
    const then = before.get(d.key);
    const current = d.bytesPerSecond;
    if (!then || !current) continue;
    const change = Math.abs(current / then - 1);
    if (change >= threshold && (!worst || change > worst.change)) {
      worst = { key: d.key, owner: d.owner, deviceName: d.deviceName, before: then, now: current, change };
    }
  }
  if (!worst) return null;
  const { change: _, ...drift } = worst;
  return drift;
}

export function describeDrift(d: SpeedDrift): string {
  const pct = Math.round((d.now / d.before - 1) * 100);
  return `the measured speed of ${d.owner}/${d.deviceName} moved from ${(d.before / 1e9).toFixed(1)} to ${(d.now / 1e9).toFixed(1)} GB/s (${pct > 0 ? '+' : ''}${pct} %)`;
}
