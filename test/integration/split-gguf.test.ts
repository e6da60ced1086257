// Split GGUF models as they are published: shards written by llama.cpp's own llama-gguf-split from a
// test model are one model to hearth, whichever shard is named. The same facts and plan as the unsplit
// file, the same greedy text over two real workers, a worker seeding its cache from its own copy of the
// shards, and clear refusals of sets that are not one whole model.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { formatBytes } from '../../cli/format.js';
import { ErrorCode, HearthError } from '../../common/errors.js';
import { plan } from '../../coordinator/planner/planner.js';
import { readSimulation } from '../../coordinator/planner/simulation.js';
import { modelContentId } from '../../models/content-id.js';
import { readModelFacts, type ModelFacts } from '../../models/gguf-info.js';
import { readGguf } from '../../native/llama.js';
import { childCommand } from '../helpers/child-command.js';
import { startCoordinator } from '../helpers/coordinator.js';
import { GREEDY, referenceTokens } from '../helpers/generate.js';
import { splitTestModel, testModel } from '../helpers/models.js';
import { CLI, startWorker, waitFor } from '../helpers/worker.js';

const hearth = (...args: string[]) => spawnSync(...childCommand(process.execPath, ['--import', 'tsx', CLI, ...args]), { encoding: 'utf8', timeout: 60_000 });
const PROMPT = 'The quick brown fox jumps over the lazy dog because';
/** A path or figure as a regular expression that matches it literally. */
const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The facts that describe the model itself, not where its bytes lie. */
function modelPart(f: ModelFacts): Omit<ModelFacts, 'path' | 'fileBytes' | 'shards'> {
  const { path: _path, fileBytes: _bytes, shards: _shards, ...rest } = f;
  return rest;
}

describe('split GGUF models', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-split-'));
  let whole: string;
  let shards: string[];

  before(async () => {
    whole = await testModel('tiny');
    // The embedding, the blocks, the output head: three shards.
    shards = await splitTestModel('tiny', '17M');
    assert.equal(shards.length, 3, `llama-gguf-split made ${shards.map((s) => basename(s)).join(', ')}`);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  test('any shard gives the unsplit file\'s facts (tensors, bytes, layers), with every shard listed', async () => {
    const unsplit = await readModelFacts(whole);
    for (const shard of shards) {
      const f = await readModelFacts(shard);
      assert.deepEqual(modelPart(f), modelPart(unsplit), `read from ${basename(shard)}`);
      assert.equal(f.path, shards[0], 'llama.cpp loads shard 1');
      assert.deepEqual(f.shards.map((s) => [s.path, s.bytes]), shards.map((s) => [s, statSync(s).size]));
      assert.equal(f.fileBytes, shards.reduce((a, s) => a + statSync(s).size, 0));
    }
    const f = await readModelFacts(shards[1]!);
    assert.equal(f.shards.reduce((a, s) => a + s.tensorCount, 0), Object.values(unsplit.tensorTypes).reduce((a, n) => a + n, 0));
    assert.ok(f.shards.every((s) => s.tensorCount > 0));
  });

  test('hearth model info shows the whole model and each shard, as text and as JSON', async () => {
    const unsplit = await readModelFacts(whole);
    const text = hearth('model', 'info', shards[1]!);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`total tensors\\s+${literal(formatBytes(unsplit.totalTensorBytes))}`));
    assert.match(text.stdout, /files \(3 shards\)/);
    for (const [i, s] of shards.entries()) {
      assert.match(text.stdout, new RegExp(`${i + 1}\\s+${literal(s)}\\s+\\d+\\s+${literal(formatBytes(statSync(s).size))}`));
    }
    const json = hearth('model', 'info', '--json', shards[2]!);
    assert.equal(json.status, 0, json.stderr);
    const f = JSON.parse(json.stdout) as ModelFacts;
    assert.deepEqual(f.layerBytes, unsplit.layerBytes);
    assert.equal(f.totalTensorBytes, unsplit.totalTensorBytes);
    assert.deepEqual(f.shards.map((s) => s.path), shards);
  });

  test('the planner gives the split model the unsplit model\'s plan', async () => {
    // Devices too small for the model alone, so the plan splits it: a simulation names the model by
    // its file, as `hearth plan --simulate` reads it.
    const simulation = (name: string, model: string) => {
      const devices = ['a', 'b', 'c'].map((n) => `  - { name: ${n}, memory: 120MiB, speed: 10GB/s }`);
      writeFileSync(join(dir, name), ['ctxSize: 512', 'reserveMiB: 0', 'placement: memory', `model: ${model}`, 'devices:', ...devices].join('\n'));
      return readSimulation(join(dir, name), readModelFacts);
    };
    const unsplit = plan(await simulation('whole.yaml', whole));
    assert.ok(unsplit.fits && unsplit.devices.length >= 2, JSON.stringify(unsplit));
    assert.deepEqual(plan(await simulation('split.yaml', shards[2]!)), unsplit);
  });

  test('over two real workers, the split model gives the unsplit model\'s greedy text', async () => {
    const reference = (await referenceTokens(whole, [PROMPT], 16))[0]!;
    const workers = [await startWorker(['--name', 'split-a']), await startWorker(['--name', 'split-b'])];
    try {
      // Named by its last shard: the coordinator hands llama.cpp shard 1.
      const c = await startCoordinator(shards[2]!, workers.map((w) => w.control));
      try {
        const s = await c.waitStatus();
        assert.equal(s.model, shards[0]);
        assert.equal(new Set(s.plan.devices.map((d) => d.owner)).size, 2, 'both workers hold layers');
        assert.deepEqual((await c.client.generate(PROMPT, { maxTokens: 16, sampling: GREEDY })).tokens, reference);
      } finally {
        await c.stop();
      }
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
  });

  test('a worker with the shards on its disk seeds its cache from them: the load sends under 20 % of the model', async () => {
    const wide = await splitTestModel('wide', '100M');
    assert.ok(wide.length >= 2, `${wide.length} shards`);
    // Copies under another name: the content id, not the name, says they are the same model.
    const models = join(dir, 'models');
    mkdirSync(models);
    const copies = wide.map((s) => join(models, basename(s).replace(/^.*(-\d{5}-of-\d{5}\.gguf)$/, 'my-wide$1')));
    wide.forEach((s, i) => copyFileSync(s, copies[i]!));
    const size = wide.reduce((a, s) => a + statSync(s).size, 0);
    const seeded = await startWorker(['--name', 'seeded', '--models', models]);
    try {
      const ready = await waitFor('the split model to be seeded', async () => {
        const m = (await seeded.client.getInfo()).models[0];
        if (m?.state === 'failed') throw new Error(`seeding failed: ${m.error}`);
        return m?.state === 'ready' ? m : null;
      }, 60_000);
      assert.equal(ready.file, basename(copies[0]!));
      assert.equal(Number(ready.bytes), size);
      assert.equal(ready.content_id, modelContentId(wide));
      // The tensors the cache takes (over ggml-rpc's 10 MiB), from every shard; the embedding stays on
      // the coordinator, as the output head is in another shard than the embedding, not tied to it.
      const cached = (await Promise.all(wide.map((s) => readGguf(s)))).flatMap((g) => g.tensors).filter((t) => t.bytes > 10 * 1024 * 1024 && t.name !== 'token_embd.weight');
      assert.match(seeded.logs(), new RegExp(`"tensors":${cached.length},.*model seeded`));
      const c = await startCoordinator(wide[1]!, [seeded.control]);
      try {
        const s = await c.waitStatus();
        const sent = Object.values(s.load.bytes_sent).reduce((a, b) => a + Number(b), 0);
        assert.ok(sent > 0, 'the load counted its bytes');
        assert.ok(sent < 0.2 * size, `sent ${sent} bytes of a ${size}-byte model (${((100 * sent) / size).toFixed(1)} %)`);
        assert.equal(s.workers[0]!.model_local, 'ready');
      } finally {
        await c.stop();
      }
    } finally {
      await seeded.stop();
    }
  });

  describe('sets that are not one whole model are refused, naming the file', () => {
    /** A folder holding links to some of the shards, and files written in place of others. */
    function set(name: string, keep: number[], replace: Record<number, (at: string) => void> = {}): string[] {
      const d = join(dir, name);
      mkdirSync(d);
      const paths = shards.map((s) => join(d, basename(s)));
      for (const i of keep) symlinkSync(shards[i]!, paths[i]!);
      for (const [i, write] of Object.entries(replace)) write(paths[Number(i)]!);
      return paths;
    }
    const refused = (pattern: RegExp) => (e: unknown) => e instanceof HearthError && e.code === ErrorCode.InvalidArgument && pattern.test(e.message);

    test('a missing shard', async () => {
      const p = set('missing', [0, 1]);
      await assert.rejects(readModelFacts(p[0]!), refused(new RegExp(`split into 3 files and shard 3 \\(${literal(p[2]!)}\\) is missing: put every shard`)));
    });

    test('a gap: the middle shard missing (the CLI exits with 2)', async () => {
      const p = set('gap', [0, 2]);
      await assert.rejects(readModelFacts(p[2]!), refused(new RegExp(`shard 2 \\(${literal(p[1]!)}\\) is missing \\(a gap in the set\\)`)));
      const r = hearth('model', 'info', p[0]!);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /hearth: error: the model .*-00001-of-00003\.gguf is split into 3 files and shard 2 .* is missing \(a gap in the set\)/);
    });

    test('a shard from another model', async () => {
      const other = await splitTestModel('small', '40M');
      assert.equal(other.length, 3, 'the other model is split into as many shards');
      const p = set('foreign', [0, 2], { 1: (at) => symlinkSync(other[1]!, at) });
      await assert.rejects(readModelFacts(p[0]!), refused(new RegExp(`${literal(p[1]!)} is not one of the 3 shards of ${literal(p[0]!)}: its header counts \\d+ tensors in the model, shard 1's \\d+, so it is from another model`)));
    });

    test('a truncated shard', async () => {
      const p = set('truncated', [0, 2], { 1: (at) => writeFileSync(at, readFileSync(shards[1]!).subarray(0, statSync(shards[1]!).size / 2)) });
      await assert.rejects(readModelFacts(p[0]!), refused(new RegExp(`GGUF file is truncated: tensor '.*' ends past the end of ${literal(p[1]!)}; the file is incomplete .*: fetch or copy it again`)));
    });

    test('a shard that is not a GGUF file', async () => {
      const p = set('junk', [0, 2], { 1: (at) => writeFileSync(at, '<html>not a model</html>\n') });
      await assert.rejects(readModelFacts(p[0]!), refused(new RegExp(`not a valid GGUF file .*: ${literal(p[1]!)}; hearth reads models in llama.cpp's GGUF format`)));
    });
  });
});
