// Split GGUF names, without files: llama.cpp's shard names and grouping a folder's files into models.
// (gguf-info.test.ts checks that shard headers make one whole model.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { firstShardPath, groupModelFiles, parseSplitName, splitPath, splitSetPaths } from '../../models/split.js';

describe('shard names (llama_split_path, llama_split_prefix)', () => {
  test('are PREFIX-%05d-of-%05d.gguf, shard numbers from 1', () => {
    assert.equal(splitPath('/m/llama', 2, 4), '/m/llama-00002-of-00004.gguf');
    assert.equal(splitPath('/m/big', 3, 123456), '/m/big-00003-of-123456.gguf');
    assert.deepEqual(parseSplitName('/m/llama-00002-of-00004.gguf'), { prefix: '/m/llama', no: 2, count: 4 });
    assert.deepEqual(parseSplitName('/m/big-00003-of-123456.gguf'), { prefix: '/m/big', no: 3, count: 123456 });
  });

  test('only the spelling llama.cpp writes is a shard', () => {
    for (const p of ['/m/llama.gguf', '/m/llama-2-of-4.gguf', '/m/llama-000002-of-00004.gguf', '/m/llama-00005-of-00004.gguf', '/m/llama-00000-of-00004.gguf', '/m/llama-00001-of-00002.GGUF', '-00001-of-00002.gguf']) {
      assert.equal(parseSplitName(p), null, p);
    }
  });

  test('any shard names its whole set, and llama.cpp is given shard 1', () => {
    const set = ['/m/q-00001-of-00003.gguf', '/m/q-00002-of-00003.gguf', '/m/q-00003-of-00003.gguf'];
    for (const p of set) {
      assert.deepEqual(splitSetPaths(p), set);
      assert.equal(firstShardPath(p), set[0]);
    }
    assert.equal(splitSetPaths('/m/one.gguf'), null);
    assert.equal(firstShardPath('/m/one.gguf'), '/m/one.gguf');
  });

  test("a folder's files group into models, in order, with a set's absent shards listed", () => {
    const files = ['/d/a.gguf', '/d/b-00001-of-00002.gguf', '/d/b-00002-of-00002.gguf', '/d/c-00001-of-00003.gguf', '/d/c-00003-of-00003.gguf', '/d/z.gguf'];
    assert.deepEqual(groupModelFiles(files), [
      { files: ['/d/a.gguf'], missing: [] },
      { files: ['/d/b-00001-of-00002.gguf', '/d/b-00002-of-00002.gguf'], missing: [] },
      { files: ['/d/c-00001-of-00003.gguf', '/d/c-00003-of-00003.gguf'], missing: ['/d/c-00002-of-00003.gguf'] },
      { files: ['/d/z.gguf'], missing: [] },
    ]);
  });
});
