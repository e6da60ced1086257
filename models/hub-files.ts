// Which files of a repository a quantisation tag names, by llama.cpp's own rules (common/download.cpp:
// get_gguf_split_info, find_best_model, get_split_files), so that `hf:OWNER/REPO:QUANT` picks what
// `llama-server -hf OWNER/REPO:QUANT` picks. Pure: the file lists come from the hub or a cache directory.

/** What a GGUF's name says: `X-Q4_K_M-00002-of-00003.gguf` is shard 2 of 3 of prefix `X-Q4_K_M`, tag Q4_K_M. */
export interface GgufNameInfo {
  /** The path without `.gguf` and without the shard suffix; the tag is part of it. */
  readonly prefix: string;
  /** The quantisation tag, upper case ("" when the name has none). */
  readonly tag: string;
  readonly index: number;
  readonly count: number;
}

/** null for a path that does not end in `.gguf` (case matters, as in llama.cpp). */
export function ggufNameInfo(path: string): GgufNameInfo | null {
  if (!path.endsWith('.gguf')) return null;
  let prefix = path.slice(0, -'.gguf'.length);
  let index = 1;
  let count = 1;
  const split = /^(.+)-([0-9]{5})-of-([0-9]{5})$/i.exec(prefix);
  if (split) {
    prefix = split[1]!;
    index = Number(split[2]);
    count = Number(split[3]);
  }
  const tag = /[-.]([A-Z0-9_]+)$/i.exec(prefix)?.[1]?.toUpperCase() ?? '';
  return { prefix, tag, index, count };
}

/** Sidecars beside a model (projectors, importance matrices, speculative heads) are not models. */
export function isModelGguf(path: string): boolean {
  if (!path.endsWith('.gguf')) return false;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return !['mmproj', 'imatrix', 'mtp-', 'eagle3-', 'dflash-', 'dspark-'].some((s) => name.includes(s));
}

/** llama-server's default when no tag is given, in order; then the first model file. */
export const DEFAULT_TAGS = ['Q4_K_M', 'Q8_0'] as const;

function isFirstShard(path: string): boolean {
  const info = ggufNameInfo(path);
  return info !== null && (info.count <= 1 || info.index === 1);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The model file a tag names (shard 1 of a split set), or null: the first model GGUF, in listing
 * order, whose path contains the tag followed by `.` or `-`, case-insensitively. Without a tag,
 * Q4_K_M, then Q8_0, then any model file.
 */
export function pickModelFile<T extends { readonly path: string }>(files: readonly T[], tag: string | null): T | null {
  const models = files.filter((f) => isModelGguf(f.path) && isFirstShard(f.path));
  for (const t of tag === null ? DEFAULT_TAGS : [tag]) {
    const pattern = new RegExp(`${escapeRegExp(t)}[.-]`, 'i');
    const hit = models.find((f) => pattern.test(f.path));
    if (hit) return hit;
  }
  return tag === null ? (models[0] ?? null) : null;
}

/** Every shard of the set `primary` begins, in shard order (just `primary` when it is not split). */
export function shardSet<T extends { readonly path: string }>(files: readonly T[], primary: T): T[] {
  const info = ggufNameInfo(primary.path);
  if (info === null || info.count <= 1) return [primary];
  return files
    .filter((f) => {
      const i = ggufNameInfo(f.path);
      return i !== null && i.count === info.count && i.prefix === info.prefix;
    })
    .sort((a, b) => ggufNameInfo(a.path)!.index - ggufNameInfo(b.path)!.index);
}

/** The shard numbers (1-based) of a set of `count` that are not among `paths`. */
export function missingShards(paths: readonly string[], count: number): number[] {
  const have = new Set(paths.map((p) => ggufNameInfo(p)?.index));
  return Array.from({ length: count }, (_, i) => i + 1).filter((i) => !have.has(i));
}

/** The quantisation tags a file list offers (models only, one per split set), for "it has: …" messages. */
export function availableTags(files: readonly { readonly path: string }[]): string[] {
  const tags = files.filter((f) => isModelGguf(f.path) && isFirstShard(f.path)).map((f) => ggufNameInfo(f.path)!.tag).filter((t) => t !== '');
  return [...new Set(tags)].sort();
}
