// A re-plan that throws must not end the coordinator: it is logged, the coordinator turns degraded
// (still serving on the engine it has), and the re-plan is tried again after a back-off. A real
// worker, a real engine process; only the planner is swapped for one that fails once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { configureLogger } from '../../common/logger.js';
import { compileCoordinatorConfig } from '../../coordinator/config.js';
import { Coordinator } from '../../coordinator/coordinator.js';
import { StaticDiscovery } from '../../coordinator/discovery/discovery.js';
import { plan } from '../../coordinator/planner/planner.js';
import type { PlanInput } from '../../coordinator/planner/types.js';
import { rpcProtocolVersion } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';
import { startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

describe('a re-plan that throws', () => {
  let worker: WorkerHandle;
  let coordinator: Coordinator;
  let failures = 0;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    worker = await startWorker(['--name', 'replan-w']);
    const config = compileCoordinatorConfig({
      file: null,
      flags: { model: await testModel('tiny'), workers: [worker.control], mdns: false, localDevice: false, placement: 'memory', ctxSize: 512, parallel: 2, threads: 1 },
    });
    const log = configureLogger({ level: 'silent' });
    const failingOnce = (input: PlanInput) => {
      if (failures > 0) {
        failures--;
        throw new Error('injected planner failure');
      }
      return plan(input);
    };
    coordinator = new Coordinator(config, log, [new StaticDiscovery(config.workers)], rpcProtocolVersion(), { plan: failingOnce });
    await coordinator.start();
  });

  after(async () => {
    process.off('unhandledRejection', onUnhandled);
    await coordinator?.stop();
    await worker?.stop();
  });

  test('leaves the coordinator degraded but serving, and is tried again until it succeeds', async () => {
    assert.equal(coordinator.state, 'serving');
    failures = 1;
    await coordinator.replan('a test asked for it'); // resolves: a failed re-plan is never a rejection
    assert.equal(coordinator.state, 'degraded');
    assert.match(coordinator.reason, /^re-plan failed: injected planner failure; trying again in 1 s$/);
    const events = coordinator.snapshot().events.map((e) => e.message);
    assert.ok(events.some((m) => /degraded: re-plan failed: injected planner failure/.test(m)), events.join('\n'));

    // The engine it had still answers while the re-plan waits for its retry.
    const out = await coordinator.generate({ prompt: { kind: 'text', text: 'The quick brown fox' }, settings: { maxTokens: 4, temperature: 0 } });
    assert.equal(out.usage.completionTokens, 4);

    await waitFor('the retried re-plan', async () => coordinator.state === 'serving', 10_000);
    const again = await coordinator.generate({ prompt: { kind: 'text', text: 'The quick brown fox' }, settings: { maxTokens: 4, temperature: 0 } });
    assert.equal(again.text, out.text);
    assert.deepEqual(unhandled, []);
  });
});
