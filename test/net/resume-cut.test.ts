// A pulled network cable mid-answer: three workers on hosts of their own (network namespaces on a
// bridge) in a closed cluster, the coordinator and its clients in this process's namespace, which joins
// the bridge. The cut worker's packets vanish (no reset, no error): the engine hangs on it until the
// watchdog stops it, the re-plan puts its layers on the two left, and every request in flight goes on
// to its complete answer.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { newToken } from '../../link/token.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { netnsUnavailable, TestNetwork } from '../helpers/netns.js';
import { references, underFault, type References } from '../helpers/resume.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const unavailable = netnsUnavailable();

describe('requests resumed after a worker\'s cable is pulled', { skip: unavailable ?? false }, () => {
  let net: TestNetwork;
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;
  let refs: References;

  before(async () => {
    net = TestNetwork.create(['cut-a', 'cut-b', 'cut-c'], { joinHere: true });
    const model = await testModel('tiny');
    // On a network, a closed cluster: the links that the cut severs are the secure ones.
    const token = newToken();
    for (const h of net.hosts) workers.push(await startWorker(['--name', h.name], { netns: h.netns, host: h.address, token }));
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--watchdog-seconds', '4', '--parallel', '6'], { token });
    const serving = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3);
    assert.ok(serving.plan.devices.every((d) => d.layers >= 1), 'every worker carries layers');
    refs = await references(model, coord);
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop('SIGKILL')));
    net?.destroy();
  });

  test('the cable of a worker in the plan is pulled mid-answer', { timeout: 120_000 }, async (t) => {
    const pause = await underFault(coord, refs, 'cut cable', () => net.cut('cut-b'));
    t.diagnostic(`longest pause ${pause} ms (the watchdog is 4 s)`);
    const status = await coord.client.getStatus();
    assert.ok(!status.plan.devices.some((d) => d.owner === 'cut-b'), 'the cut worker is out of the plan');
    net.restore('cut-b');
    await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3, 60_000);
  });
});
