// The model library: a model reference in, local files out. A hub model is looked for in hearth's
// library and in the Hugging Face caches first (no network), else its files are fetched into the
// library in Hugging Face's layout; a URL is fetched under urls/. The rest of hearth sees only a path
// (shard 1 of a split set).
import { readdir, rm, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';

import { ErrorCode, HearthError, isHearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { downloadFile, type ProgressSink } from './download.js';
import { HfCacheDir, type SnapshotFile } from './hf-cache.js';
import { availableTags, ggufNameInfo, isModelGguf, missingShards, pickModelFile, shardSet } from './hub-files.js';
import { HttpStatusError, isNetworkError } from './http.js';
import { HubClient, USER_AGENT, type HubFile } from './hub.js';
import type { LibrarySettings } from './library-settings.js';
import { formatModelRef, HUB_PREFIX, type ModelRef } from './model-ref.js';
import { splitPath } from './split.js';

/** Where the files came from: named by hand, already in the library, found in a Hugging Face cache, or fetched now. */
export type ModelOrigin = 'file' | 'library' | 'hf-cache' | 'downloaded';

export interface ResolvedModel {
  readonly ref: ModelRef;
  /** The file to load: shard 1 of a split set. */
  readonly path: string;
  /** Every shard, in order. */
  readonly files: readonly string[];
  readonly origin: ModelOrigin;
}

/** A model in the library or a Hugging Face cache, for `hearth model list`. */
export interface LibraryEntry {
  /** What to pass to --model to use it. */
  readonly ref: string;
  readonly path: string;
  readonly files: readonly string[];
  readonly bytes: number;
  /** The quantisation tag its name carries ("" when none). */
  readonly tag: string;
  readonly origin: 'library' | 'hf-cache';
  /** The directory it lives under (the library, or a Hugging Face cache). */
  readonly root: string;
}

export interface LibraryOptions {
  readonly log: Logger;
  readonly progress?: ProgressSink;
  /** Passed to each download (tests make them short). */
  readonly retryDelayMs?: number;
  readonly idleMs?: number;
}

const URLS = 'urls';

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isFile() ?? false;
}

async function totalBytes(paths: readonly string[]): Promise<number> {
  let n = 0;
  for (const p of paths) n += (await stat(p).catch(() => null))?.size ?? 0;
  return n;
}

/** The URLs of every shard a URL's file name says it belongs to (llama.cpp's common_download_get_all_parts). */
export function urlShards(url: string): string[] {
  const u = new URL(url);
  const info = ggufNameInfo(u.pathname);
  if (info === null || info.count <= 1) return [url];
  return Array.from({ length: info.count }, (_, i) => {
    const part = new URL(u.href);
    part.pathname = splitPath(info.prefix, i + 1, info.count);
    return part.href;
  });
}

export class ModelLibrary {
  readonly #hub: HubClient;
  readonly #own: HfCacheDir;

  constructor(
    readonly settings: LibrarySettings,
    readonly options: LibraryOptions,
  ) {
    this.#hub = new HubClient(settings);
    this.#own = new HfCacheDir(settings.dir);
  }

  /**
   * The local files of a reference. Hub models and URLs already on disk are used without the network;
   * `refresh` (`hearth model pull`) asks the hub for its newest commit first, and falls back to what is
   * on disk when the hub cannot be reached.
   */
  async resolve(ref: ModelRef, options: { signal?: AbortSignal; refresh?: boolean } = {}): Promise<ResolvedModel> {
    switch (ref.kind) {
      case 'file':
        return { ref, path: resolve(ref.path), files: [resolve(ref.path)], origin: 'file' };
      case 'hub':
        return this.#resolveHub(ref, options);
      case 'url':
        return this.#resolveUrl(ref, options);
    }
  }

  async #resolveHub(ref: ModelRef & { kind: 'hub' }, options: { signal?: AbortSignal; refresh?: boolean }): Promise<ResolvedModel> {
    const name = formatModelRef(ref);
    const local = options.refresh && !this.settings.offline ? null : await this.#findLocal(ref);
    if (local) return local;
    if (this.settings.offline) {
      throw new HearthError(ErrorCode.NotFound, `${name} is not in the library (${this.settings.dir}) or the Hugging Face cache, and HF_HUB_OFFLINE keeps hearth off the network`);
    }
    let files: HubFile[];
    let revision;
    try {
      revision = await this.#hub.revision(ref.repo, options.signal);
      files = await this.#hub.files(ref.repo, revision.commit, options.signal);
    } catch (e) {
      const fallback = isHearthError(e, ErrorCode.Unavailable) ? await this.#findLocal(ref) : null;
      if (fallback) {
        this.options.log.warn({ model: name, err: (e as Error).message }, 'the hub cannot be reached: using the copy on disk');
        return fallback;
      }
      throw e;
    }
    const set = this.#pick(ref, files);
    const onDisk = await this.#findAt(ref, revision.commit, set);
    if (onDisk) return onDisk;
    const paths: string[] = [];
    try {
      for (const file of set) paths.push(await this.#fetchHubFile(ref.repo, revision.commit, file, options.signal));
    } catch (e) {
      await this.#own.pruneIfEmpty(ref.repo);
      throw e;
    }
    // The ref last: a snapshot becomes the library's copy only once all of its files are there.
    await this.#own.writeRef(ref.repo, revision.branch, revision.commit);
    this.options.log.info({ model: name, commit: revision.commit, files: paths.length, dir: this.settings.dir }, 'model in the library');
    return { ref, path: paths[0]!, files: paths, origin: 'downloaded' };
  }

  /** The hub's newest files for the tag, when the library or a Hugging Face cache has all of them at that commit already. */
  async #findAt(ref: ModelRef & { kind: 'hub' }, commit: string, set: readonly HubFile[]): Promise<ResolvedModel | null> {
    for (const [root, origin] of this.#roots()) {
      const dir = new HfCacheDir(root).snapshotDir(ref.repo, commit);
      const paths = set.map((f) => join(dir, f.path));
      if ((await Promise.all(paths.map(isFile))).every(Boolean)) return { ref, path: paths[0]!, files: paths, origin };
    }
    return null;
  }

  /** The shard set the tag names in a commit's listing; a clear error when there is none, or a shard is missing. */
  #pick(ref: ModelRef & { kind: 'hub' }, files: readonly HubFile[]): HubFile[] {
    const primary = pickModelFile(files, ref.tag);
    if (!primary) {
      const tags = availableTags(files);
      const offer = tags.length > 0 ? `it has: ${tags.join(', ')} (for example hf:${ref.repo}:${tags[0]})` : 'it has no GGUF model file at all';
      throw new HearthError(ErrorCode.NotFound, `${ref.repo} has no GGUF file for ${ref.tag === null ? 'the default quantisations (Q4_K_M, Q8_0)' : `quantisation '${ref.tag}'`}; ${offer}`);
    }
    const set = shardSet(files, primary);
    const count = ggufNameInfo(primary.path)!.count;
    const missing = missingShards(set.map((f) => f.path), count);
    if (missing.length > 0) {
      throw new HearthError(ErrorCode.InvalidModel, `${ref.repo}: ${primary.path} is shard 1 of ${count}, but the repository lacks shard(s) ${missing.join(', ')}`);
    }
    return set;
  }

  /** One file of a commit into the library (its blob, then the snapshot's link to it): its snapshot path. */
  async #fetchHubFile(repo: string, commit: string, file: HubFile, signal?: AbortSignal): Promise<string> {
    const snapshot = join(this.#own.snapshotDir(repo, commit), file.path);
    if (await isFile(snapshot)) return snapshot; // a shard of a set an interrupted pull began
    const oid = file.sha256 ?? file.gitOid;
    const dest = oid === null ? snapshot : this.#own.blobPath(repo, oid);
    try {
      await downloadFile({
        url: this.#hub.fileUrl(repo, commit, file.path),
        token: this.settings.token,
        dest,
        temp: `${dest}.incomplete`,
        label: file.path,
        expected: { size: file.size, sha256: file.sha256, gitOid: file.gitOid },
        gguf: file.path.endsWith('.gguf'),
        userAgent: USER_AGENT,
        ...this.#downloadOptions(file.path, signal),
      });
    } catch (e) {
      throw this.#hub.describe(e, repo, `${repo}/${file.path}`);
    }
    // A blob an older snapshot already has is not fetched again (downloadFile finds it in place).
    return oid === null ? snapshot : this.#own.linkSnapshot(repo, commit, file.path, oid);
  }

  #downloadOptions(label: string, signal?: AbortSignal) {
    return {
      ...(signal ? { signal } : {}),
      ...(this.options.progress ? { progress: this.options.progress } : {}),
      ...(this.options.retryDelayMs !== undefined ? { retryDelayMs: this.options.retryDelayMs } : {}),
      ...(this.options.idleMs !== undefined ? { idleMs: this.options.idleMs } : {}),
      onWait: () => this.options.log.info({ file: label }, 'another process is downloading this file: waiting for it'),
    };
  }

  /**
   * The tag's complete shard set in the library, else in a Hugging Face cache: at the commit the refs
   * name, else in an older snapshot (a tag pulled before the repository moved on).
   */
  async #findLocal(ref: ModelRef & { kind: 'hub' }): Promise<ResolvedModel | null> {
    for (const [root, origin] of this.#roots()) {
      const cache = new HfCacheDir(root);
      for (const commit of await cache.commits(ref.repo)) {
        const set = await completeSet(await cache.snapshotFiles(ref.repo, commit), ref.tag);
        if (!set) continue;
        this.options.log.debug({ model: formatModelRef(ref), root, commit }, 'model found on disk');
        return { ref, path: set[0]!, files: set, origin };
      }
    }
    return null;
  }

  #roots(): [string, 'library' | 'hf-cache'][] {
    return [[this.settings.dir, 'library'], ...this.settings.hfCaches.map((d): [string, 'hf-cache'] => [d, 'hf-cache'])];
  }

  /** Where a URL's file is kept: urls/SCHEME/HOST/PATH, so that the URL can be read back from the path. */
  #urlPath(url: string): string {
    const u = new URL(url);
    let segments: string[];
    try {
      segments = u.pathname.split('/').filter((p) => p !== '').map(decodeURIComponent);
    } catch {
      segments = [];
    }
    const parts = [u.protocol.replace(':', ''), u.host, ...segments];
    if (segments.length === 0 || parts.some((p) => p === '.' || p === '..' || p.includes('/') || p.includes(sep) || p.includes('\0'))) {
      throw new HearthError(ErrorCode.InvalidArgument, `${url}: its path cannot be a file name in the library`);
    }
    return join(this.settings.dir, URLS, ...parts);
  }

  async #resolveUrl(ref: ModelRef & { kind: 'url' }, options: { signal?: AbortSignal; refresh?: boolean }): Promise<ResolvedModel> {
    const parts = urlShards(ref.url);
    const dests = parts.map((u) => this.#urlPath(u));
    const present = await Promise.all(dests.map(isFile));
    if (present.every(Boolean)) return { ref, path: dests[0]!, files: dests, origin: 'library' };
    if (this.settings.offline) throw new HearthError(ErrorCode.NotFound, `${ref.url} is not in the library (${this.settings.dir}), and HF_HUB_OFFLINE keeps hearth off the network`);
    const endpoint = new URL(this.settings.endpoint).origin;
    for (const [i, url] of parts.entries()) {
      if (present[i]) continue;
      const dest = dests[i]!;
      const label = dest.slice(dest.lastIndexOf(sep) + 1);
      try {
        await downloadFile({
          url,
          // A token belongs to the hub: it goes with a URL on the hub's own origin only.
          token: new URL(url).origin === endpoint ? this.settings.token : null,
          dest,
          temp: `${dest}.incomplete`,
          label,
          expected: { size: null, sha256: null, gitOid: null },
          gguf: true,
          userAgent: USER_AGENT,
          ...this.#downloadOptions(label, options.signal),
        });
      } catch (e) {
        throw urlFailure(e, url);
      }
    }
    this.options.log.info({ model: ref.url, files: dests.length, dir: this.settings.dir }, 'model in the library');
    return { ref, path: dests[0]!, files: dests, origin: 'downloaded' };
  }

  /** Every complete model in the library and the Hugging Face caches, hub models first. */
  async list(): Promise<LibraryEntry[]> {
    const out: LibraryEntry[] = [];
    for (const [root, origin] of this.#roots()) {
      const cache = new HfCacheDir(root);
      for (const repo of await cache.repos()) {
        // One entry per tag: the commit the refs name first, a tag only an older snapshot has after it.
        const seen = new Set<string>();
        for (const commit of await cache.commits(repo)) {
          const entries = await entriesOf(await cache.snapshotFiles(repo, commit), origin, root, (_, tag) => `${HUB_PREFIX}${repo}${tag ? `:${tag}` : ''}`);
          for (const e of entries.filter((x) => !seen.has(x.ref))) {
            seen.add(e.ref);
            out.push(e);
          }
        }
      }
    }
    const urlRoot = join(this.settings.dir, URLS);
    const urlFiles = (await readdir(urlRoot, { recursive: true, withFileTypes: true }).catch(() => []))
      .filter((e) => e.isFile() && e.name.endsWith('.gguf'))
      .map((e) => {
        const localPath = join(e.parentPath, e.name);
        return { path: relative(urlRoot, localPath).split(sep).join('/'), localPath };
      })
      .sort((a, b) => (a.path < b.path ? -1 : 1));
    out.push(...(await entriesOf(urlFiles, 'library', this.settings.dir, urlOfLibraryPath)));
    return out;
  }

  /**
   * Removes a model from hearth's library: a hub model's files for that tag (the blobs no other file
   * uses go too), the whole repository without a tag, or a URL's files. Models in a Hugging Face cache
   * are not hearth's to remove. Returns the paths removed.
   */
  async remove(ref: ModelRef): Promise<string[]> {
    const name = formatModelRef(ref);
    if (ref.kind === 'file') {
      throw new HearthError(ErrorCode.InvalidArgument, `${name}: hearth model rm takes hf:OWNER/REPO[:QUANT] or a URL; a file you named yourself is yours to delete`);
    }
    if (ref.kind === 'url') {
      const removed: string[] = [];
      for (const dest of urlShards(ref.url).map((u) => this.#urlPath(u))) {
        for (const p of [dest, `${dest}.incomplete`]) {
          if (await stat(p).catch(() => null)) {
            await rm(p, { force: true });
            removed.push(p);
          }
        }
      }
      if (removed.length === 0) throw new HearthError(ErrorCode.NotFound, `${name} is not in the library (${this.settings.dir})`);
      return removed;
    }
    const removed = await this.#removeHub(ref);
    if (removed.length > 0) return removed;
    for (const root of this.settings.hfCaches) {
      const cache = new HfCacheDir(root);
      const commit = await cache.cachedCommit(ref.repo);
      if (commit !== null && (ref.tag === null || pickModelFile(await cache.snapshotFiles(ref.repo, commit), ref.tag))) {
        throw new HearthError(
          ErrorCode.FailedPrecondition,
          `${name} is in the Hugging Face cache (${cache.repoDir(ref.repo)}), which hearth reads but does not manage; remove it with \`hf cache delete\` (or rm -r that folder)`,
        );
      }
    }
    throw new HearthError(ErrorCode.NotFound, `${name} is not in the library (${this.settings.dir})`);
  }

  async #removeHub(ref: ModelRef & { kind: 'hub' }): Promise<string[]> {
    const repoDir = this.#own.repoDir(ref.repo);
    if (!(await stat(repoDir).catch(() => null))) return [];
    if (ref.tag === null) {
      await rm(repoDir, { recursive: true, force: true });
      return [repoDir];
    }
    const entries: SnapshotFile[] = [];
    const snapshots = await readdir(join(repoDir, 'snapshots')).catch(() => [] as string[]);
    for (const commit of snapshots) {
      const files = await this.#own.snapshotFiles(ref.repo, commit);
      const primary = pickModelFile(files, ref.tag);
      if (primary) entries.push(...shardSet(files, primary));
    }
    return entries.length === 0 ? [] : this.#own.removeEntries(ref.repo, entries);
  }
}

/** The local paths of `primary`'s shard set when every shard is there (links that lead to a file); else null. */
async function completeShards(files: readonly SnapshotFile[], primary: SnapshotFile): Promise<string[] | null> {
  const set = shardSet(files, primary);
  if (missingShards(set.map((f) => f.path), ggufNameInfo(primary.path)!.count).length > 0) return null;
  const paths = set.map((f) => f.localPath);
  return (await Promise.all(paths.map(isFile))).every(Boolean) ? paths : null;
}

/** The complete shard set `tag` picks among a snapshot's files, or null. */
async function completeSet(files: readonly SnapshotFile[], tag: string | null): Promise<string[] | null> {
  const primary = pickModelFile(files, tag);
  return primary ? completeShards(files, primary) : null;
}

/** One entry per complete model (a first shard and the rest of its set) among a snapshot's files. */
async function entriesOf(files: readonly SnapshotFile[], origin: 'library' | 'hf-cache', root: string, refOf: (path: string, tag: string) => string): Promise<LibraryEntry[]> {
  const out: LibraryEntry[] = [];
  for (const f of files) {
    const info = ggufNameInfo(f.path);
    if (!info || info.index !== 1 || !isModelGguf(f.path)) continue;
    const paths = await completeShards(files, f);
    if (!paths) continue;
    out.push({ ref: refOf(f.path, info.tag), path: paths[0]!, files: paths, bytes: await totalBytes(paths), tag: info.tag, origin, root });
  }
  return out;
}

/** urls/https/host/a/b.gguf → https://host/a/b.gguf */
function urlOfLibraryPath(path: string): string {
  const [scheme, host, ...rest] = path.split('/');
  return `${scheme}://${host}/${rest.map(encodeURIComponent).join('/')}`;
}

function urlFailure(e: unknown, url: string): HearthError {
  if (e instanceof HearthError) return e;
  if (e instanceof HttpStatusError) {
    const auth = e.status === 401 || e.status === 403;
    const hint = auth ? ': the server wants credentials (for a gated Hugging Face model, set HF_TOKEN and name it hf:OWNER/REPO:QUANT)' : e.status === 404 ? ': no such file there' : '';
    return new HearthError(e.status === 404 ? ErrorCode.NotFound : auth ? ErrorCode.Unauthenticated : ErrorCode.Unavailable, `${url}: HTTP ${e.status}${hint}`, { cause: e });
  }
  const why = isNetworkError(e) && e instanceof Error && e.cause ? messageOf(e.cause) : messageOf(e);
  return new HearthError(ErrorCode.Unavailable, `cannot download ${url}: ${why}`, { cause: e });
}
