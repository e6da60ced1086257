// A lock file, so that two processes fetching the same file take turns instead of writing one
// temporary file together. Created exclusively; its holder touches it while it works, so a lock left by
// a process that died (same host: its pid is gone; any host: untouched for a while) is taken over.
import { hostname } from 'node:os';
import { open, readFile, stat, unlink, utimes } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import { ErrorCode, HearthError } from '../common/errors.js';

export interface LockOptions {
  signal?: AbortSignal;
  /** Called once when the lock is held by someone else and we wait for it. */
  onWait?: (holder: string) => void;
  /** A lock untouched for this long is stale (default 60 s); the holder touches it four times as often. */
  staleMs?: number;
  pollMs?: number;
}

interface Holder {
  pid: number;
  host: string;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function isStale(path: string, staleMs: number): Promise<boolean> {
  const [info, text] = await Promise.all([stat(path).catch(() => null), readFile(path, 'utf8').catch(() => null)]);
  if (info === null) return false; // gone already: the next attempt takes it
  if (Date.now() - info.mtimeMs > staleMs) return true;
  let holder: Holder | null = null;
  try {
    holder = JSON.parse(text ?? '') as Holder;
  } catch {
    return false; // being written this instant
  }
  return holder.host === hostname() && !isAlive(holder.pid);
}

/** Runs `fn` while holding the lock file `path`; the lock is released (the file removed) however `fn` ends. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const staleMs = options.staleMs ?? 60_000;
  let waited = false;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(JSON.stringify({ pid: process.pid, host: hostname() } satisfies Holder));
      } finally {
        await handle.close();
      }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new HearthError(ErrorCode.Unavailable, `cannot create the lock file ${path}: ${(e as Error).message}`, { cause: e });
      }
    }
    if (await isStale(path, staleMs)) {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (!waited) {
      waited = true;
      options.onWait?.(await readFile(path, 'utf8').catch(() => 'another process'));
    }
    await sleep(options.pollMs ?? 250, undefined, options.signal ? { signal: options.signal } : {}).catch(() => undefined);
  }
  const touch = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, staleMs / 4);
  touch.unref();
  try {
    return await fn();
  } finally {
    clearInterval(touch);
    await unlink(path).catch(() => undefined);
  }
}
