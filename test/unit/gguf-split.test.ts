// Split GGUF sets, without files: llama.cpp's shard names, grouping a folder's files into models, and
// the checks that a list of shard headers is one whole model.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { RawGguf } from '../../native/binding.js';
import { summarizeGguf } from '../../models/gguf-info.js';
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

const t = (name: string, bytes: number) => ({ name, type: 'f16', shape: [1], bytes, offset: 0 });

const model = {
  'general.architecture': 'llama',
  'llama.block_count': 2,
  'llama.context_length': 2048,
  'llama.embedding_length': 64,
  'llama.attention.head_count': 4,
  'llama.vocab_size': 100,
};

/** A shard as gguf-split writes it: split.* in every shard, the model's keys in the first only. */
function shard(no: number, count: number, tensorCount: number, tensors: RawGguf['tensors'], extra: RawGguf['metadata'] = {}): RawGguf {
  const meta = { ...(no === 0 ? model : {}), 'split.no': no, 'split.count': count, 'split.tensors.count': tensorCount, ...extra };
  return { path: splitPath('/m/s', no + 1, count), fileBytes: 1000 * (no + 1), version: 3, alignment: 32, dataOffset: 512, metadata: meta, tensors };
}

const whole = () => [
  shard(0, 3, 5, [t('token_embd.weight', 100), t('blk.0.attn_q.weight', 10)]),
  shard(1, 3, 5, [t('blk.1.attn_q.weight', 20), t('output_norm.weight', 5)]),
  shard(2, 3, 5, [t('output.weight', 100)]),
];

const refused = (pattern: RegExp) => (e: unknown) => e instanceof HearthError && e.code === ErrorCode.InvalidArgument && pattern.test(e.message);

describe('summarizeGguf over a shard set (pure)', () => {
  test('is the whole model: every shard\'s tensors, the first shard\'s metadata, each shard listed', () => {
    const f = summarizeGguf(whole());
    assert.equal(f.path, '/m/s-00001-of-00003.gguf');
    assert.deepEqual(f.layerBytes, [10, 20]);
    assert.equal(f.inputBytes, 100);
    assert.equal(f.outputBytes, 105);
    assert.equal(f.outputTied, false, 'output.weight is in the last shard');
    assert.equal(f.totalTensorBytes, 235);
    assert.equal(f.fileBytes, 6000);
    assert.deepEqual(f.shards.map((s) => [s.path, s.bytes, s.tensorCount]), [
      ['/m/s-00001-of-00003.gguf', 1000, 2],
      ['/m/s-00002-of-00003.gguf', 2000, 2],
      ['/m/s-00003-of-00003.gguf', 3000, 1],
    ]);
  });

  test('a single file lists itself as its only shard', () => {
    const f = summarizeGguf({ ...shard(0, 1, 1, [t('blk.0.attn_q.weight', 10)]), path: '/m/one.gguf' });
    assert.deepEqual(f.shards, [{ path: '/m/one.gguf', bytes: 1000, tensorCount: 1 }]);
  });

  test('refuses a set with a shard short', () => {
    assert.throws(() => summarizeGguf(whole().slice(0, 2)), refused(/split into 3 file\(s\), but 2 were given/));
  });

  test('refuses a shard of a set split another way (split.count disagrees)', () => {
    const s = whole();
    s[1] = { ...shard(1, 4, 5, s[1]!.tensors), path: s[1]!.path };
    assert.throws(() => summarizeGguf(s), refused(/s-00002-of-00003\.gguf is not one of the 3 shards .*says 4 shard\(s\), not 3, so it is from another model/));
  });

  test('refuses a shard of a model with another tensor count', () => {
    const s = whole();
    s[2] = shard(2, 3, 9, s[2]!.tensors);
    assert.throws(() => summarizeGguf(s), refused(/s-00003-of-00003\.gguf is not one of the 3 shards .*counts 9 tensors in the model, shard 1's 5/));
  });

  test('refuses a set whose tensors do not add up to split.tensors.count', () => {
    const s = whole();
    s[2] = shard(2, 3, 5, [t('output.weight', 100), t('rope_freqs.weight', 1)]);
    assert.throws(() => summarizeGguf(s), refused(/hold 6 tensors, but their headers say the model has 5/));
  });

  test('refuses a tensor in two shards', () => {
    const s = whole();
    s[2] = shard(2, 3, 5, [t('blk.1.attn_q.weight', 20)]);
    assert.throws(() => summarizeGguf(s), refused(/tensor 'blk\.1\.attn_q\.weight' is in both \/m\/s-00002-of-00003\.gguf and \/m\/s-00003-of-00003\.gguf/));
  });

  test('refuses shards out of order (a renamed shard)', () => {
    const s = whole();
    [s[1], s[2]] = [{ ...s[2]!, path: s[1]!.path }, { ...s[1]!, path: s[2]!.path }];
    assert.throws(() => summarizeGguf(s), refused(/s-00002-of-00003\.gguf should be shard 2 of 3, but its header says shard 3/));
  });
});
