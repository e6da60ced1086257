// Hugging Face's cache layout, the one huggingface_hub and llama.cpp's -hf (common/hf-cache.cpp) share:
//   models--OWNER--REPO/refs/main               the commit the branch pointed at
//   models--OWNER--REPO/blobs/<sha256 or oid>   the files' bytes, named by content
//   models--OWNER--REPO/snapshots/<commit>/PATH  symlinks into blobs/, with the repository's file names
// hearth's library keeps hub models in this layout too, so each can use what the other fetched.
import { constants } from 'node:fs';
import { access, lstat, mkdir, readdir, readFile, readlink, rename, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';

import { isValidRepoId } from './model-ref.js';

const COMMIT = /^[0-9a-f]{40}$/i;

export function repoFolderName(repo: string): string {
  return `models--${repo.replaceAll('/', '--')}`;
}

/** The repository a cache folder holds, or null for a folder that is not one. */
export function repoOfFolder(folder: string): string | null {
  if (!folder.startsWith('models--')) return null;
  const repo = folder.slice('models--'.length).replace('--', '/');
  return isValidRepoId(repo) ? repo : null;
}

/** A file of a snapshot: its path in the repository and where it is on disk (a symlink into blobs/, as a rule). */
export interface SnapshotFile {
  readonly path: string;
  readonly localPath: string;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

export class HfCacheDir {
  constructor(readonly root: string) {}

  repoDir(repo: string): string {
    return join(this.root, repoFolderName(repo));
  }

  blobPath(repo: string, oid: string): string {
    return join(this.repoDir(repo), 'blobs', oid);
  }

  snapshotDir(repo: string, commit: string): string {
    return join(this.repoDir(repo), 'snapshots', commit);
  }

  /** The commit refs/main names, else the first other ref's, as llama.cpp's get_cached_ref; null when none. */
  async cachedCommit(repo: string): Promise<string | null> {
    const refs = join(this.repoDir(repo), 'refs');
    let names: string[];
    try {
      names = (await readdir(refs, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort();
    } catch {
      return null;
    }
    let fallback: string | null = null;
    for (const name of names) {
      const commit = (await readFile(join(refs, name), 'utf8').catch(() => '')).split('\n')[0]!.trim();
      if (!COMMIT.test(commit)) continue;
      if (name === 'main') return commit;
      fallback ??= commit;
    }
    return fallback;
  }

  /** The commits to look in for a model: the one the refs name first, then every other snapshot, newest first. */
  async commits(repo: string): Promise<string[]> {
    const ref = await this.cachedCommit(repo);
    const dir = join(this.repoDir(repo), 'snapshots');
    const others: { commit: string; mtime: number }[] = [];
    for (const commit of await readdir(dir).catch(() => [] as string[])) {
      if (commit === ref || !COMMIT.test(commit)) continue;
      others.push({ commit, mtime: (await lstat(join(dir, commit)).catch(() => null))?.mtimeMs ?? 0 });
    }
    return [...(ref ? [ref] : []), ...others.sort((a, b) => b.mtime - a.mtime).map((o) => o.commit)];
  }

  async writeRef(repo: string, branch: string, commit: string): Promise<void> {
    const path = join(this.repoDir(repo), 'refs', branch);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(`${path}.tmp`, commit);
    await rename(`${path}.tmp`, path);
  }

  /** Every file of the snapshot of `commit`, recursively, in path order; [] when there is none. */
  async snapshotFiles(repo: string, commit: string): Promise<SnapshotFile[]> {
    const base = this.snapshotDir(repo, commit);
    let entries;
    try {
      entries = await readdir(base, { recursive: true, withFileTypes: true });
    } catch {
      return [];
    }
    return entries
      .filter((e) => e.isFile() || e.isSymbolicLink())
      .map((e) => {
        const localPath = join(e.parentPath, e.name);
        return { path: relative(base, localPath).split(sep).join('/'), localPath };
      })
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** Repositories that have at least one snapshot. */
  async repos(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const name of names.sort()) {
      const repo = repoOfFolder(name);
      if (repo && (await exists(join(this.root, name, 'snapshots')))) out.push(repo);
    }
    return out;
  }

  /**
   * Puts a downloaded blob into the snapshot under its repository path: a relative symlink, as
   * huggingface_hub and llama.cpp make it; where symlinks are refused, the blob itself moves there.
   */
  async linkSnapshot(repo: string, commit: string, path: string, oid: string): Promise<string> {
    const target = join(this.snapshotDir(repo, commit), path);
    if (await exists(target)) return target;
    await mkdir(dirname(target), { recursive: true });
    const blob = this.blobPath(repo, oid);
    try {
      await symlink(relative(dirname(target), blob), target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return target;
      await rename(blob, target);
    }
    return target;
  }

  /**
   * Removes these snapshot entries, then the blobs no remaining entry of any snapshot points at, then
   * the repository folder when no snapshot is left. Returns what was removed.
   */
  async removeEntries(repo: string, entries: readonly SnapshotFile[]): Promise<string[]> {
    const removed: string[] = [];
    const blobs = new Set<string>();
    for (const e of entries) {
      const link = await lstat(e.localPath).catch(() => null);
      if (link?.isSymbolicLink()) blobs.add(resolve(dirname(e.localPath), await readlink(e.localPath)));
      await rm(e.localPath, { force: true });
      removed.push(e.localPath);
      await removeEmptyDirs(dirname(e.localPath), join(this.repoDir(repo), 'snapshots'));
    }
    const stillUsed = new Set<string>();
    for (const commit of await readdir(join(this.repoDir(repo), 'snapshots')).catch(() => [] as string[])) {
      for (const f of await this.snapshotFiles(repo, commit)) {
        const link = await lstat(f.localPath).catch(() => null);
        if (link?.isSymbolicLink()) stillUsed.add(resolve(dirname(f.localPath), await readlink(f.localPath)));
      }
    }
    for (const blob of blobs) {
      if (stillUsed.has(blob)) continue;
      await rm(blob, { force: true });
      removed.push(blob);
    }
    if ((await readdir(join(this.repoDir(repo), 'snapshots')).catch(() => [])).length === 0) {
      await rm(this.repoDir(repo), { recursive: true, force: true });
    }
    return removed;
  }

  /** After a failed first download: the repository folder goes when nothing but empty folders is in it. */
  async pruneIfEmpty(repo: string): Promise<void> {
    const dir = this.repoDir(repo);
    const files = (await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => !e.isDirectory());
    if (files.length === 0) await rm(dir, { recursive: true, force: true });
  }
}

/** Removes `dir` and its parents while they are empty, up to (not including) `stop`. */
async function removeEmptyDirs(dir: string, stop: string): Promise<void> {
  for (let d = dir; d.startsWith(stop + sep); d = dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      return;
    }
  }
}
