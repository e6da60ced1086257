// Self-healing generation: a request in flight when its engine is lost goes on after the re-plan, and
// its client gets the same complete answer an undisturbed run gives. Three workers carry layers; each
// fault strikes while four requests are mid-way (test/helpers/resume.ts says what each must get). The
// cut network cable is in test/net/resume-cut.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ChurnWorker } from '../helpers/churn.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { processTree } from '../helpers/process-tree.js';
import { references, underFault, type References } from '../helpers/resume.js';

describe('requests resumed after their engine is lost (three workers in the plan)', () => {
  const workers: ChurnWorker[] = [];
  let coord: CoordinatorHandle;
  let refs: References;

  before(async () => {
    const model = await testModel('tiny');
    for (const name of ['resume-a', 'resume-b', 'resume-c']) workers.push(await ChurnWorker.start(name));
    coord = await startCoordinator(model, workers.map((w) => w.handle.control), ['--watchdog-seconds', '6', '--parallel', '6']);
    const serving = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3);
    assert.ok(serving.plan.devices.every((d) => d.layers >= 1), 'every worker carries layers');
    refs = await references(model, coord);
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  /** Back to three workers in the plan before the next fault. */
  async function allServing(): Promise<void> {
    await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3 && s.in_flight === 0, 60_000);
  }

  test('an rpc server killed mid-answer: the worker restarts it, the requests go on', { timeout: 120_000 }, async (t) => {
    t.diagnostic(`longest pause ${await underFault(coord, refs, 'kill-rpc-server', () => workers[0]!.fault('kill-rpc-server'))} ms`);
    await allServing();
  });

  test('a whole worker killed mid-answer: the two left serve the rest of the answers', { timeout: 120_000 }, async (t) => {
    t.diagnostic(`longest pause ${await underFault(coord, refs, 'kill-worker', () => void workers[1]!.handle.stop('SIGKILL'))} ms`);
    await workers[1]!.restart();
    await allServing();
  });

  test('the engine process itself killed mid-answer', { timeout: 120_000 }, async (t) => {
    const pause = await underFault(coord, refs, 'kill-engine', () => {
      // The engine serving is the older of the two: a spare engine process waits beside it for the next load.
      const [engine] = processTree(coord.process.pid!).filter((p) => /engine-main/.test(p.command) && p.ppid === coord.process.pid).sort((a, b) => a.started - b.started);
      assert.ok(engine, 'the engine process is found');
      process.kill(engine.pid, 'SIGKILL');
    });
    t.diagnostic(`longest pause ${pause} ms`);
    await allServing();
  });

  test('resumes are counted and their pauses measured in /metrics', async (t) => {
    const text = await (await fetch(`${coord.http}/metrics`)).text();
    for (const e of (await coord.client.getStatus()).events.filter((e) => e.kind === 'resume')) t.diagnostic(e.message);
    assert.ok(metric(text, 'hearth_requests_resumed_total') >= 3, text.split('\n').filter((l) => l.includes('resume')).join('\n'));
    assert.ok(metric(text, 'hearth_resume_pause_seconds_count') >= 3);
  });
});
