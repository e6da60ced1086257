// Weights from local disks: a worker started with --models DIR seeds its tensor cache from the GGUF
// files there, so the coordinator's first load of one of them sends hashes instead of weights. Real
// worker, real seeding child, real coordinator; bytes counted by the kernel's TCP counters.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { modelContentId } from '../../models/content-id.js';
import { startCoordinator } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

describe('weights from local disks', () => {
  let model: string;
  let modelsDir: string;
  let seeded: WorkerHandle;

  before(async () => {
    // A copy under another name: the content id, not the path, says it is the same model.
    model = await testModel('wide');
    modelsDir = mkdtempSync(join(tmpdir(), 'hearth-models-'));
    copyFileSync(model, join(modelsDir, 'my-model.gguf'));
    seeded = await startWorker(['--name', 'seeded', '--models', modelsDir]);
  });

  after(async () => {
    await seeded?.stop();
    rmSync(modelsDir, { recursive: true, force: true });
  });

  test('the worker indexes the model by content id and seeds its cache in the background', async () => {
    const ready = await waitFor('the model to be seeded', async () => {
      const info = await seeded.client.getInfo();
      const m = info.models[0];
      if (m?.state === 'failed') throw new Error(`seeding failed: ${m.error}`);
      return m?.state === 'ready' ? m : null;
    }, 60_000);
    assert.equal(ready.file, 'my-model.gguf');
    assert.equal(ready.content_id, modelContentId([model]));
    assert.equal(Number(ready.bytes), statSync(model).size);
    assert.match(seeded.logs(), /model seeded: loads of it send hashes instead of weights/);
  });

  test('the first load sends less than 20 % of the model, and status says the model is on the worker\'s disk', async () => {
    const c = await startCoordinator(model, [seeded.control]);
    try {
      const s = await c.waitStatus();
      const sent = Object.values(s.load.bytes_sent).reduce((a, b) => a + Number(b), 0);
      const size = statSync(model).size;
      assert.ok(sent > 0, 'the load counted its bytes');
      assert.ok(sent < 0.2 * size, `sent ${sent} bytes of a ${size}-byte model (${((100 * sent) / size).toFixed(1)} %)`);
      assert.equal(s.workers[0]!.model_local, 'ready');
    } finally {
      await c.stop();
    }
  });

  test('without --models, the same first load sends the weights (the measure can fail)', async () => {
    const cold = await startWorker(['--name', 'cold']);
    const c = await startCoordinator(model, [cold.control]);
    try {
      const s = await c.waitStatus();
      const sent = Object.values(s.load.bytes_sent).reduce((a, b) => a + Number(b), 0);
      const placed = s.plan.devices.reduce((a, d) => a + Number(d.weight_bytes), 0);
      assert.ok(sent > 0.9 * placed, `sent ${sent} of the ${placed} bytes placed on the worker`);
      assert.equal(s.workers[0]!.model_local, '');
    } finally {
      await c.stop();
      await cold.stop();
    }
  });

  test('--models needs the tensor cache, and a directory', async () => {
    const { compileWorkerConfig } = await import('../../worker/config.js');
    assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '127.0.0.1', models: modelsDir, cacheDir: null }, env: {} }), /tensor cache, which is off/);
    assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '127.0.0.1', models: join(modelsDir, basename(model)) + '.nope' }, env: {} }), /is not a directory/);
  });
});
