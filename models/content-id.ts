// A model's content id: the same file contents give the same id wherever the file lies or is named, so
// a coordinator can tell which workers hold its model on their own disks. It hashes the size and the
// first and last 4 MiB (the header, the tensor index and both ends of the weights): cheap for a 40 GB
// file, and different for models that differ only in their weights. It names a model for people and
// for status; the tensor cache itself is keyed by each tensor's full hash, so a collision could never
// load wrong weights. A split model's id covers every shard, in order.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

const EDGE = 4 * 1024 * 1024;

/** The id of the model stored in `files`: one file, or a split set's shards with shard 1 first. */
export function modelContentId(files: readonly string[]): string {
  if (files.length === 1) return fileContentId(files[0]!);
  const hash = createHash('sha256').update(`gguf-split:${files.length}:`);
  for (const f of files) hash.update(fileContentId(f));
  return hash.digest('hex').slice(0, 16);
}

function fileContentId(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const hash = createHash('sha256').update(`gguf:${size}:`);
    const buf = Buffer.alloc(Math.min(EDGE, size));
    hash.update(buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)));
    if (size > EDGE) hash.update(buf.subarray(0, readSync(fd, buf, 0, buf.length, Math.max(EDGE, size - EDGE))));
    return hash.digest('hex').slice(0, 16);
  } finally {
    closeSync(fd);
  }
}
