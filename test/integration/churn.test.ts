// Worker churn as a home cluster lives it (issue 24's chaos test): three workers that all carry layers,
// four clients sending streamed and plain requests without pause, and a fault every few seconds of every
// kind (an rpc server killed, a worker killed and started again, a worker frozen for 10 s, a worker
// stopped and started again, the engine process killed). The remaining workers can always hold the
// model, so no request may fail: each one caught by a fault is resumed, and every answer is complete.
// The coordinator must stay up, no request may hang, and every worker must be back in the plan soon
// after the last fault.
//
// HEARTH_CHURN_FAULTS=30 runs a longer churn by hand; the tally is printed either way.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { newToken } from '../../link/token.js';
import { ChurnWorker, FAULT_KINDS, startLoad } from '../helpers/churn.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { processTree } from '../helpers/process-tree.js';

// 7: the two opening faults, then every kind once (the suite's time is shared; 12 or 30 by hand).
const FAULTS = Number(process.env.HEARTH_CHURN_FAULTS ?? 7);
const KINDS = [...FAULT_KINDS, 'kill-engine'] as const;
/** Every worker is back in the plan this long after the last fault. */
const RECOVERY_MS = 30_000;

for (const secure of [false, true]) {
  describe(`churn with three workers in the plan (${secure ? 'cluster token' : 'open'})`, () => {
    const workers: ChurnWorker[] = [];
    let coord: CoordinatorHandle | null = null;

    after(async () => {
      await coord?.stop();
      await Promise.all(workers.map((w) => w.stop()));
    });

    test(`${FAULTS} faults under a steady load: the coordinator serves on, no request fails or hangs, every answer is complete`, { timeout: 60_000 + FAULTS * 12_000 }, async () => {
      const token = secure ? newToken() : undefined;
      const model = await testModel('tiny');
      for (const name of ['churn-a', 'churn-b', 'churn-c']) workers.push(await ChurnWorker.start(name, token));
      coord = await startCoordinator(model, workers.map((w) => w.handle.control), ['--watchdog-seconds', '6'], token ? { token } : {});
      const serving = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3);
      assert.ok(serving.plan.devices.every((d) => d.layers >= 1), 'every worker carries layers');

      const load = startLoad(coord.http, { clients: 4, maxTokens: 16, hangMs: 60_000 });
      let coordinatorExit: number | null | undefined;
      void coord.exited.then((code) => (coordinatorExit = code));
      const faults: string[] = [];
      // First the race that once ended the coordinator: a worker rejoins, so the engine drains for a
      // re-plan, while the engine hangs on a frozen worker until the watchdog stops it mid-drain.
      const [a, b] = workers as [ChurnWorker, ChurnWorker];
      await a.handle.stop('SIGKILL');
      faults.push(`${a.name}: kill-worker`);
      await coord.waitStatus((s) => s.state === 'serving' && !s.plan.devices.some((d) => d.owner === a.name));
      await b.fault('freeze-worker');
      faults.push(`${b.name}: freeze-worker`);
      await a.restart();
      for (let k = faults.length; k < FAULTS; k++) {
        await new Promise((r) => setTimeout(r, 5000 + (k % 3) * 1000));
        assert.equal(coordinatorExit, undefined, `the coordinator exited during the churn:\n${coord.logs().split('\n').slice(-40).join('\n')}`);
        const kind = KINDS[k % KINDS.length]!;
        if (kind === 'kill-engine') {
          // The older engine child is the one serving; the other is the spare that waits for the next load.
          const [engine] = processTree(coord.process.pid!).filter((p) => /engine-main/.test(p.command) && p.ppid === coord!.process.pid).sort((x, y) => x.started - y.started);
          if (engine) process.kill(engine.pid, 'SIGKILL');
          faults.push(`coordinator: kill-engine${engine ? '' : ' (no engine at that moment)'}`);
          continue;
        }
        const worker = workers[k % workers.length]!;
        await worker.fault(kind);
        faults.push(`${worker.name}: ${kind}`);
      }
      await Promise.all(workers.map((w) => w.thawed()));
      const lastFault = Date.now();
      const names = workers.map((w) => w.name).sort();
      await coord.waitStatus((s) => s.state === 'serving' && s.plan.fits && names.every((n) => s.plan.devices.some((d) => d.owner === n)), RECOVERY_MS);
      const recoveredMs = Date.now() - lastFault;
      // A few more requests on the recovered cluster, then the tally.
      await new Promise((r) => setTimeout(r, 2000));
      const tally = await load.stop();
      const status = await coord.client.getStatus();
      console.log(JSON.stringify({
        secure, faults, ok: tally.ok, resumed: tally.resumed, incomplete: tally.incomplete, clearErrors: Object.fromEntries(tally.clearErrors), unclear: tally.unclear, hung: tally.hung, recoveredMs,
        loads: status.load.loads, flapHolds: status.events.filter((e) => /held out of plans/.test(e.message)).map((e) => e.message),
      }, null, 1));

      assert.equal(coordinatorExit, undefined, 'the coordinator is alive');
      assert.equal(tally.hung, 0, 'no request hung');
      assert.deepEqual(Object.fromEntries(tally.clearErrors), {}, 'no request failed');
      assert.deepEqual(tally.unclear, [], 'no request failed without a clear error either');
      assert.deepEqual(tally.incomplete, [], 'every answer is complete');
      assert.ok(tally.resumed > 0, 'requests caught by the faults were resumed');
      assert.ok(tally.ok >= FAULTS, `requests kept being served (${tally.ok} ok)`);
      assert.equal(faults.length, FAULTS);
    });
  });
}
