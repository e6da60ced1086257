// Model references, llama.cpp's file picking, the library's settings and download progress: the pure parts.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { availableTags, ggufNameInfo, missingShards, pickModelFile, shardSet } from '../../models/hub-files.js';
import { hubEndpoint, hfHubCache, libraryDir, librarySettings } from '../../models/library-settings.js';
import { formatModelRef, parseModelRef } from '../../models/model-ref.js';
import { urlShards } from '../../models/library.js';
import { formatDuration, progressLine } from '../../cli/download-progress.js';

test('model references: a file, hf:OWNER/REPO[:QUANT], a URL; bad ones named', () => {
  assert.deepEqual(parseModelRef('./m.gguf'), { kind: 'file', path: './m.gguf' });
  assert.deepEqual(parseModelRef('hf:bartowski/Llama-3.3-70B-Instruct-GGUF:Q4_K_M'), { kind: 'hub', repo: 'bartowski/Llama-3.3-70B-Instruct-GGUF', tag: 'Q4_K_M' });
  assert.deepEqual(parseModelRef('hf:ggml-org/gemma-3-1b-it-GGUF'), { kind: 'hub', repo: 'ggml-org/gemma-3-1b-it-GGUF', tag: null });
  assert.deepEqual(parseModelRef('hf:unsloth/Qwen3-30B-A3B-GGUF:UD-Q4_K_XL'), { kind: 'hub', repo: 'unsloth/Qwen3-30B-A3B-GGUF', tag: 'UD-Q4_K_XL' });
  assert.deepEqual(parseModelRef('https://example.com/a/b.gguf?download=1'), { kind: 'url', url: 'https://example.com/a/b.gguf?download=1' });
  assert.throws(() => parseModelRef('hf:just-a-name'), /--model: 'just-a-name' is not a Hugging Face repository; expected OWNER\/REPO\[:QUANT\]/);
  assert.throws(() => parseModelRef('hf:a/b/c'), /not a Hugging Face repository/);
  assert.throws(() => parseModelRef('hf:a/b:Q4 K'), /'Q4 K' in 'a\/b:Q4 K' is not a quantisation tag/);
  assert.throws(() => parseModelRef('hf:a/-b'), /not a Hugging Face repository/);
  assert.throws(() => parseModelRef('https://example.com/', 'model'), /model: https:\/\/example\.com\/ names no file/);
  assert.equal(formatModelRef(parseModelRef('hf:a/b:q8_0')), 'hf:a/b:q8_0');
});

test("file names read as llama.cpp's get_gguf_split_info reads them", () => {
  assert.deepEqual(ggufNameInfo('Llama-3.3-70B-Instruct-Q4_K_M-00001-of-00002.gguf'), { prefix: 'Llama-3.3-70B-Instruct-Q4_K_M', tag: 'Q4_K_M', index: 1, count: 2 });
  assert.deepEqual(ggufNameInfo('dir/model.q8_0.gguf'), { prefix: 'dir/model.q8_0', tag: 'Q8_0', index: 1, count: 1 });
  assert.equal(ggufNameInfo('README.md'), null);
  assert.equal(ggufNameInfo('x.GGUF'), null);
});

test('a quant tag picks the file llama-server picks: case-insensitive, shards grouped, sidecars skipped', () => {
  const f = (path: string) => ({ path });
  const files = [
    f('README.md'),
    f('mmproj-model-f16.gguf'),
    f('Model-IQ4_XS.gguf'),
    f('Model-Q8_0.gguf'),
    f('Q4_K_M/Model-Q4_K_M-00002-of-00003.gguf'),
    f('Q4_K_M/Model-Q4_K_M-00001-of-00003.gguf'),
    f('Q4_K_M/Model-Q4_K_M-00003-of-00003.gguf'),
    f('Model-F16.gguf'),
    f('Model-Q4_K_M.imatrix.gguf'),
  ];
  // Q4_K_M by default, and the first shard of a set however the listing orders them.
  assert.equal(pickModelFile(files, null)?.path, 'Q4_K_M/Model-Q4_K_M-00001-of-00003.gguf');
  assert.equal(pickModelFile(files, 'q8_0')?.path, 'Model-Q8_0.gguf');
  assert.equal(pickModelFile(files, 'F16')?.path, 'Model-F16.gguf');
  assert.equal(pickModelFile(files, 'Q5_K_M'), null);
  assert.equal(pickModelFile(files, 'Q4_K'), null, 'a tag matches up to a . or -, not a longer tag');
  // No Q4_K_M or Q8_0: the first model file.
  assert.equal(pickModelFile([f('a-mmproj.gguf'), f('m-IQ2_M.gguf'), f('m-F16.gguf')], null)?.path, 'm-IQ2_M.gguf');
  const set = shardSet(files, pickModelFile(files, 'Q4_K_M')!);
  assert.deepEqual(set.map((x) => x.path), ['Q4_K_M/Model-Q4_K_M-00001-of-00003.gguf', 'Q4_K_M/Model-Q4_K_M-00002-of-00003.gguf', 'Q4_K_M/Model-Q4_K_M-00003-of-00003.gguf']);
  assert.deepEqual(missingShards(['a-00001-of-00003.gguf', 'a-00003-of-00003.gguf'], 3), [2]);
  assert.deepEqual(availableTags(files), ['F16', 'IQ4_XS', 'Q4_K_M', 'Q8_0']);
});

test('split URLs name all their shards', () => {
  assert.deepEqual(urlShards('https://h/x/M-Q4_K_M-00002-of-00003.gguf'), [
    'https://h/x/M-Q4_K_M-00001-of-00003.gguf',
    'https://h/x/M-Q4_K_M-00002-of-00003.gguf',
    'https://h/x/M-Q4_K_M-00003-of-00003.gguf',
  ]);
  assert.deepEqual(urlShards('https://h/x/M.gguf'), ['https://h/x/M.gguf']);
});

test('library settings come from the environment as llama.cpp and huggingface_hub read it', () => {
  const home = '/home/u';
  assert.equal(libraryDir({}, home), '/home/u/.cache/hearth/models');
  assert.equal(libraryDir({ HEARTH_CACHE_DIR: '/c' }, home), '/c/models');
  assert.equal(libraryDir({ XDG_CACHE_HOME: '/x', HEARTH_MODELS: '/m' }, home), '/m');
  assert.equal(hfHubCache({}, home), '/home/u/.cache/huggingface/hub');
  assert.equal(hfHubCache({ HF_HOME: '/hf' }, home), '/hf/hub');
  assert.equal(hfHubCache({ HF_HUB_CACHE: '/hub', HF_HOME: '/hf' }, home), '/hub');
  assert.equal(hubEndpoint({}), 'https://huggingface.co/');
  assert.equal(hubEndpoint({ HF_ENDPOINT: 'https://hf-mirror.com' }), 'https://hf-mirror.com/');
  assert.equal(hubEndpoint({ HF_ENDPOINT: 'https://a/', MODEL_ENDPOINT: 'https://b' }), 'https://b/');
  const s = librarySettings({ HF_TOKEN: ' hf_x ', LLAMA_CACHE: '/llama', HF_HUB_OFFLINE: '1' }, home);
  assert.equal(s.token, 'hf_x');
  assert.deepEqual(s.hfCaches, ['/llama', '/home/u/.cache/huggingface/hub']);
  assert.equal(s.offline, true);
  assert.equal(librarySettings({ HF_TOKEN_PATH: '/nonexistent/token' }, home).token, null);
});

test('download progress reads bytes, percent, rate over this run and ETA', () => {
  const MiB = 1024 * 1024;
  assert.equal(progressLine({ file: 'm.gguf', received: 30 * MiB, total: 100 * MiB, resumedFrom: 10 * MiB }, 2000), 'm.gguf  30.0 MiB / 100 MiB  30%  10.0 MiB/s  ETA 7s');
  assert.equal(progressLine({ file: 'm.gguf', received: 5 * MiB, total: null, resumedFrom: 0 }, 0), 'm.gguf  5.00 MiB');
  assert.equal(progressLine({ file: 'm.gguf', received: 100 * MiB, total: 100 * MiB, resumedFrom: 0 }, 4000), 'm.gguf  100 MiB / 100 MiB  100%  25.0 MiB/s');
  assert.equal(formatDuration(65), '1m05s');
  assert.equal(formatDuration(2 * 3600 + 180), '2h03m');
});
