// Self-healing generation: a request in flight when its engine is lost goes on after the re-plan, and
// its client gets the same complete answer an undisturbed run gives. Three workers carry layers; each
// fault strikes while six requests are mid-way (test/helpers/resume.ts says what each must get). The
// engine speculates (n-gram lookup) whenever few enough sequences generate, so resumed requests do too.
// The cut network cable is in test/net/resume-cut.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ChurnWorker } from '../helpers/churn.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { processTree } from '../helpers/process-tree.js';
import { PROMPT, references, underFault, type References } from '../helpers/resume.js';

describe('requests resumed after their engine is lost (three workers in the plan)', () => {
  const workers: ChurnWorker[] = [];
  let coord: CoordinatorHandle;
  let refs: References;

  before(async () => {
    const model = await testModel('tiny');
    for (const name of ['resume-a', 'resume-b', 'resume-c']) workers.push(await ChurnWorker.start(name));
    coord = await startCoordinator(model, workers.map((w) => w.handle.control), ['--watchdog-seconds', '6', '--parallel', '6', '--draft-ngram', '2']);
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

  test('a client that leaves during the pause frees its slot; the others go on', { timeout: 120_000 }, async () => {
    const abort = new AbortController();
    let struck = false;
    const leaving = coord.client.generate(PROMPT, {
      maxTokens: 64,
      sampling: { temperature: 0 },
      signal: abort.signal,
      onChunk: (_t, tokens) => {
        if (struck || tokens.length === 0) return;
        struck = true;
        void workers[2]!.fault('kill-rpc-server').then(() => setTimeout(() => abort.abort(), 100));
      },
    });
    await assert.rejects(leaving, /cancel/i);
    // The slot is free again once the re-plan is in: nothing is left in flight or waiting.
    await coord.waitStatus((s) => s.state === 'serving' && s.in_flight === 0 && s.waiting === 0, 60_000);
    const text = await (await fetch(`${coord.http}/metrics`)).text();
    const ended = text.split('\n').filter((l) => l.startsWith('hearth_requests_total{'));
    assert.ok(metric(text, 'hearth_requests_total', 'outcome="error"') >= 1 || metric(text, 'hearth_requests_total', 'outcome="cancelled"') >= 1, `the request was counted as ended: ${ended.join(', ')}\n${coord.logs().split('\n').slice(-30).join('\n')}`);
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

describe('a request whose engine is lost when the workers left cannot hold the model', () => {
  let worker: ChurnWorker;
  let coord: CoordinatorHandle;

  before(async () => {
    // One worker holds every layer: once it is gone, nothing can hold the model.
    worker = await ChurnWorker.start('alone');
    coord = await startCoordinator(await testModel('tiny'), [worker.handle.control], ['--watchdog-seconds', '6']);
    await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 1);
  });

  after(async () => {
    await coord?.stop();
    await worker?.stop();
  });

  test("waits for the planner's verdict and fails with it, not with a timeout", { timeout: 120_000 }, async () => {
    let killed = 0;
    const outcome = coord.client.generate(PROMPT, {
      maxTokens: 400,
      sampling: { temperature: 0 },
      timeoutMs: 120_000,
      onChunk: () => {
        if (killed > 0) return;
        killed = Date.now();
        void worker.handle.stop('SIGKILL');
      },
    });
    await assert.rejects(outcome, (e: Error) => {
      assert.match(e.message, /generation failed: worker alone .*; it cannot be resumed: not serving: .*(does not fit|no devices to place the model on)/is);
      return true;
    });
    const waited = Date.now() - killed;
    // It waits 15 s for lost workers to come back (an rpc server restarts in a second or two), then takes the verdict.
    assert.ok(waited >= 14_000 && waited < 45_000, `the verdict came ${waited} ms after the loss`);
  });
});
