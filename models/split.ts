// Split GGUF names, as llama.cpp writes and reads them (llama_split_path, llama_split_prefix):
// PREFIX-00001-of-00003.gguf, PREFIX-00002-of-00003.gguf, ... The shards of a set are found by name
// alone, as llama.cpp's loader finds them from shard 1, so this module is pure and reads no file.

export interface SplitName {
  /** The path without `-0000k-of-0000n.gguf`. */
  prefix: string;
  /** 1-based, as in the name (the GGUF's `split.no` is 0-based). */
  no: number;
  count: number;
}

const SHARD_NAME = /^(.+)-(\d{5,})-of-(\d{5,})\.gguf$/;

/** The path of shard `no` (1-based) of `count`: llama_split_path's `%s-%05d-of-%05d.gguf`. */
export function splitPath(prefix: string, no: number, count: number): string {
  return `${prefix}-${String(no).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`;
}

/** What a shard's name says, or null when the path is not named as a shard. */
export function parseSplitName(path: string): SplitName | null {
  const m = SHARD_NAME.exec(path);
  if (!m) return null;
  const name = { prefix: m[1]!, no: Number(m[2]), count: Number(m[3]) };
  // Only the exact spelling llama.cpp would write back (no extra leading zeros, shard within the count).
  if (name.no < 1 || name.no > name.count || splitPath(name.prefix, name.no, name.count) !== path) return null;
  return name;
}

/** Every shard's path of the set `path` belongs to, shard 1 first; null when it is not named as a shard. */
export function splitSetPaths(path: string): string[] | null {
  const name = parseSplitName(path);
  return name && Array.from({ length: name.count }, (_, i) => splitPath(name.prefix, i + 1, name.count));
}

/**
 * The file llama.cpp must be given for the model at `path`: shard 1 of its set (llama_model_load_from_file
 * refuses any other shard, and finds the rest from shard 1), or `path` itself when it is not a shard.
 */
export function firstShardPath(path: string): string {
  return splitSetPaths(path)?.[0] ?? path;
}

/** A model found among files by name: one file, or a split set's shards in order with those absent. */
export interface ModelFiles {
  files: string[];
  missing: string[];
}

/**
 * Groups files into models, in the order of each model's first file: a file not named as a shard is a
 * model of its own, shards join their set (shard 1 first) and the set lists its absent shards.
 */
export function groupModelFiles(files: readonly string[]): ModelFiles[] {
  const present = new Set(files);
  const models = new Map<string, ModelFiles>();
  for (const file of files) {
    const set = splitSetPaths(file);
    const key = set?.[0] ?? file;
    if (models.has(key)) continue;
    models.set(key, set ? { files: set.filter((p) => present.has(p)), missing: set.filter((p) => !present.has(p)) } : { files: [file], missing: [] });
  }
  return [...models.values()];
}
