// A worker's stable id: made once, kept in the state directory, the same after every restart. Two
// workers on one machine (different control ports) have different ids.
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { WorkerId } from '../link/worker-wire.js';

export function loadOrCreateWorkerId(stateDir: string, controlPort: number): WorkerId {
  const path = join(stateDir, `worker-${controlPort}.id`);
  try {
    const existing = readFileSync(path, 'utf8').trim();
    if (/^[0-9a-f-]{36}$/.test(existing)) return existing as WorkerId;
  } catch {
    // first start
  }
  const id = randomUUID();
  try {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(`${path}.tmp`, id + '\n');
    renameSync(`${path}.tmp`, path);
  } catch (e) {
    throw new HearthError(ErrorCode.FailedPrecondition, `cannot keep the worker id in ${stateDir}: ${messageOf(e)} (choose another with --state-dir)`);
  }
  return id as WorkerId;
}
