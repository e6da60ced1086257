// The rpc server's tensor cache: llama.cpp writes each large tensor it receives to <dir>/rpc/<hash>,
// and loads it from there when a coordinator sends the same hash again.
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';

export interface CacheUsage {
  bytes: number;
  files: number;
}

/** Creates the cache directory up front, so a bad path fails at start-up with its name. */
export function prepareCacheDir(dir: string): void {
  try {
    mkdirSync(join(dir, 'rpc'), { recursive: true });
  } catch (e) {
    throw new HearthError(ErrorCode.InvalidArgument, `cache-dir: cannot create ${dir}: ${messageOf(e)}`);
  }
}

export function cacheUsage(dir: string): CacheUsage {
  let bytes = 0;
  let files = 0;
  let entries: string[];
  try {
    entries = readdirSync(join(dir, 'rpc'));
  } catch {
    return { bytes: 0, files: 0 };
  }
  for (const name of entries) {
    try {
      const st = statSync(join(dir, 'rpc', name));
      if (st.isFile()) {
        bytes += st.size;
        files++;
      }
    } catch {
      // removed while we looked
    }
  }
  return { bytes, files };
}
