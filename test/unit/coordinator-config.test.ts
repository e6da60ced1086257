// cluster.yaml: the example documents every key and compiles; errors name the key.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { clusterFileSchema, compileCoordinatorConfig } from '../../coordinator/config.js';

const example = fileURLToPath(new URL('../../cluster.example.yaml', import.meta.url));

test('cluster.example.yaml documents every key and compiles', () => {
  const text = readFileSync(example, 'utf8');
  for (const key of Object.keys(clusterFileSchema.shape)) assert.match(text, new RegExp(`^#? ?${key}:`, 'm'), `${key} is documented`);
  const c = compileCoordinatorConfig({ file: example, flags: {} });
  assert.deepEqual(c.workers, ['192.168.1.20:50051', '192.168.1.21:50051']);
  assert.equal(c.model, join(fileURLToPath(new URL('../../', import.meta.url)), 'models', 'my-model.gguf'), 'relative to the file');
  assert.equal(c.watchdogMs, 30_000);
  assert.ok(Object.isFrozen(c));
});

test('flags win, and bad values are errors naming the key', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-cluster-'));
  try {
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, 'model: m.gguf\nparallel: 2\n');
    const c = compileCoordinatorConfig({ file, flags: { parallel: 8, model: '/abs/x.gguf' } });
    assert.equal(c.parallel, 8);
    assert.equal(c.model, '/abs/x.gguf');
    const bad = (yaml: string, pattern: RegExp) => {
      writeFileSync(file, yaml);
      assert.throws(() => compileCoordinatorConfig({ file, flags: {} }), pattern);
    };
    bad('workers: ["nohost"]\n', /workers\.0: must be host:port/);
    bad('workers: ["a:70000"]\n', /workers\.0: port 70000/);
    bad('ctxSize: 100\n', /ctxSize: must be at least 256 tokens/);
    bad('parallel: "four"\n', /parallel: .*number/);
    bad('pipeline: two\n', /pipeline: must be auto .*off, or a number of contexts from 1 to 64/);
    bad('pipeline: 0\n', /pipeline: must be auto/);
    bad('modle: x.gguf\n', /modle/);
    bad('host: example.com\n', /host: 'example.com' is not an IP address/);
    bad('draftModel: d.gguf\ndraftMin: 9\ndraftMax: 4\n', /draftMin: 9 is more than draftMax 4/);
    bad('draftWorker: pc\n', /draftWorker: 'pc' names where the draft model runs, but no draftModel is given/);
    bad('draftPMin: 1.5\n', /draftPMin: must be a probability from 0 to 1/);
    bad('draftMax: 0\n', /draftMax: must be at least 1 token/);
    writeFileSync(file, 'model: m.gguf\ndraftModel: small/d.gguf\ndraftNgram: 3\n');
    const spec = compileCoordinatorConfig({ file, flags: {} }).speculation;
    assert.deepEqual(spec, { draftModel: join(dir, 'small', 'd.gguf'), draftWorker: null, ngram: 3, draftMax: 8, draftMin: 0, pMin: 0, maxSequences: 2, tune: true }, 'a draft path is relative to the file');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('any shard of a split model names it, and llama.cpp is given shard 1 (model and draft, flag and file)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-cluster-'));
  try {
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, 'model: big/m-00003-of-00004.gguf\ndraftModel: d-00002-of-00002.gguf\n');
    const c = compileCoordinatorConfig({ file, flags: {} });
    assert.equal(c.model, join(dir, 'big', 'm-00001-of-00004.gguf'));
    assert.equal(c.speculation?.draftModel, join(dir, 'd-00001-of-00002.gguf'));
    assert.equal(compileCoordinatorConfig({ file: null, flags: { model: '/abs/m-00002-of-00002.gguf' } }).model, '/abs/m-00001-of-00002.gguf');
    assert.equal(compileCoordinatorConfig({ file: null, flags: { model: '/abs/m-2-of-2.gguf' } }).model, '/abs/m-2-of-2.gguf', 'not named as a shard: the file itself');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pipeline: auto by default, off, or a count (1 is off); the flag wins', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-cluster-'));
  try {
    const file = join(dir, 'cluster.yaml');
    const compile = (yaml: string, flags = {}) => {
      writeFileSync(file, yaml);
      return compileCoordinatorConfig({ file, flags }).pipeline;
    };
    assert.equal(compile('parallel: 8\n'), 'auto');
    assert.equal(compile('pipeline: off\n'), 'off');
    assert.equal(compile('pipeline: 3\n'), 3);
    assert.equal(compile('pipeline: 1\n'), 'off');
    assert.equal(compile('pipeline: off\n', { pipeline: 2 }), 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a model named by hub or URL is kept as a reference for the CLI to resolve; a file is a path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-cluster-'));
  try {
    const hub = compileCoordinatorConfig({ file: null, flags: { model: 'hf:bartowski/Llama-3.3-70B-Instruct-GGUF:Q4_K_M' } });
    assert.equal(hub.model, null);
    assert.deepEqual(hub.modelRef, { kind: 'hub', repo: 'bartowski/Llama-3.3-70B-Instruct-GGUF', tag: 'Q4_K_M' });
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, 'model: https://example.com/m/model-Q8_0.gguf\n');
    assert.deepEqual(compileCoordinatorConfig({ file, flags: {} }).modelRef, { kind: 'url', url: 'https://example.com/m/model-Q8_0.gguf' });
    writeFileSync(file, 'model: m.gguf\n');
    const local = compileCoordinatorConfig({ file, flags: {} });
    assert.equal(local.model, join(dir, 'm.gguf'));
    assert.equal(local.modelRef, null);
    writeFileSync(file, 'model: hf:nope\n');
    assert.throws(() => compileCoordinatorConfig({ file, flags: {} }), /model: 'nope' is not a Hugging Face repository/);
    assert.throws(() => compileCoordinatorConfig({ file: null, flags: { draftModel: 'hf:a/b' } }), /--draft-model: 'hf:a\/b' must be a file: fetch it first with `hearth model pull hf:a\/b`/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('models: a list with ids, aliases, policies and settings of their own; names given twice are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-models-'));
  try {
    const file = join(dir, 'cluster.yaml');
    writeFileSync(join(dir, 'tpl.jinja'), '{{ messages[0].content }}');
    writeFileSync(
      file,
      [
        'ctxSize: 2048',
        'models:',
        '  - big-00001-of-00003.gguf',
        '  - { model: "hf:Qwen/Qwen3-8B-GGUF:Q4_K_M", aliases: [chat], ctxSize: 8192, parallel: 2 }',
        '  - { model: e.gguf, id: embed, policy: pinned, idle: 90s, chatTemplate: tpl.jinja }',
        '  - { model: c.gguf, id: coder, idle: 2h, draftNgram: 4 }',
        '',
      ].join('\n'),
    );
    const c = compileCoordinatorConfig({ file, flags: {} });
    assert.deepEqual(c.models.map((m) => [m.id, m.policy]), [['big', 'pinned'], ['Qwen/Qwen3-8B-GGUF:Q4_K_M', 'on-demand'], ['embed', 'pinned'], ['coder', 'on-demand']]);
    assert.equal(c.models[0]!.model, join(dir, 'big-00001-of-00003.gguf'), 'relative to the file, shard 1');
    assert.equal(c.model, c.models[0]!.model, 'the top-level model is the first');
    assert.deepEqual(c.models[1]!.modelRef, { kind: 'hub', repo: 'Qwen/Qwen3-8B-GGUF', tag: 'Q4_K_M' });
    assert.deepEqual([c.models[1]!.ctxSize, c.models[1]!.parallel, c.models[0]!.ctxSize, c.models[0]!.parallel], [8192, 2, 2048, 4]);
    assert.deepEqual(c.models[1]!.aliases, ['chat']);
    assert.deepEqual([c.models[2]!.idleMs, c.models[3]!.idleMs, c.models[1]!.idleMs], [90_000, 7_200_000, 600_000]);
    assert.equal(c.models[2]!.chatTemplate, '{{ messages[0].content }}');
    assert.equal(c.models[3]!.speculation?.ngram, 4);
    // The command line's models replace the file's.
    const cli = compileCoordinatorConfig({ file, flags: { modelList: ['/m/a.gguf', '/m/b.gguf'] } });
    assert.deepEqual(cli.models.map((m) => [m.id, m.policy, m.model]), [['a', 'pinned', '/m/a.gguf'], ['b', 'on-demand', '/m/b.gguf']]);
    const bad = (yaml: string, pattern: RegExp) => {
      writeFileSync(file, yaml);
      assert.throws(() => compileCoordinatorConfig({ file, flags: {} }), pattern);
    };
    bad('models:\n  - a.gguf\n  - x/a.gguf\n', /models\.1: the model name 'a' is already taken by models\.0/);
    bad('models:\n  - { model: a.gguf, aliases: [b] }\n  - b.gguf\n', /models\.1: the model name 'b' is already taken by models\.0/);
    bad('model: a.gguf\nmodels: [b.gguf]\n', /give model: \(one model\) or models: \(a list\), not both/);
    bad('models: []\n', /models: must list at least one model/);
    bad('models:\n  - { model: a.gguf, policy: sometimes }\n', /models\.0\.policy/);
    bad('models:\n  - { model: a.gguf, idle: soon }\n', /models\.0\.idle: must be a duration/);
    bad('models:\n  - { model: a.gguf, id: "has space" }\n', /models\.0\.id: must be a name without spaces/);
    bad('models:\n  - { model: a.gguf, chatTemplate: missing.jinja }\n', /models\.0\.chatTemplate: cannot read the template file/);
    assert.throws(() => compileCoordinatorConfig({ file: null, flags: { modelList: ['a.gguf', 'dir/a.gguf'] } }), /--model: the model name 'a' is already taken by --model/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
