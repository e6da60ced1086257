// `hearth coordinator --model hf:OWNER/REPO:QUANT`: the model comes from a hub (a local stand-in,
// through HF_ENDPOINT) into the library, is served across two real workers, and a second start
// serves it from the library with the hub gone.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startCoordinator } from '../helpers/coordinator.js';
import { startFakeHub, type FakeHub } from '../helpers/hub-server.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

async function complete(http: string): Promise<string> {
  const res = await fetch(`${http}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'The hearth', max_tokens: 8, temperature: 0 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
  assert.equal(body.usage.completion_tokens, 8);
  return body.choices[0]!.text;
}

describe('serving a model named by its hub repository', () => {
  let hub: FakeHub;
  let dir: string;
  const workers: WorkerHandle[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hearth-hub-serve-'));
    hub = await startFakeHub();
    hub.addRepo('test/tiny', { files: [{ path: 'README.md', bytes: Buffer.from('# tiny\n'), plain: true }, { path: 'tiny-F16.gguf', bytes: readFileSync(await testModel('tiny', 'f16')) }] });
    workers.push(await startWorker(['--name', 'w-a']), await startWorker(['--name', 'w-b']));
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('hf:test/tiny:F16 is fetched, served across two workers, and served again without the hub', async () => {
    const env = { HF_ENDPOINT: hub.endpoint, HEARTH_MODELS: join(dir, 'library'), HF_HUB_CACHE: join(dir, 'hf'), HF_TOKEN: '' };
    const first = await startCoordinator('hf:test/tiny:F16', workers.map((w) => w.control), [], { env });
    let text: string;
    try {
      const status = await first.client.getStatus();
      assert.match(status.model, /library\/models--test--tiny\/snapshots\/[0-9a-f]{40}\/tiny-F16\.gguf$/);
      assert.equal(status.plan.devices.filter((d) => d.layers > 0).length, 2, 'split across both workers');
      text = await complete(first.http);
      assert.match(first.logs(), /"msg":"downloaded tiny-F16\.gguf"/);
    } finally {
      await first.stop();
    }
    await hub.close();
    // -hf, as llama-server takes it: the hub is gone, the library has the model.
    const again = await startCoordinator(null, workers.map((w) => w.control), ['-hf', 'test/tiny:f16'], { env });
    try {
      assert.equal(await complete(again.http), text, 'the same model, the same greedy text');
      assert.doesNotMatch(again.logs(), /downloaded/);
    } finally {
      await again.stop();
    }
  });
});
