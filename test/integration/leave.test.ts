// A worker leaving on purpose: SIGTERM, or `hearth worker drain`, makes it tell its coordinator first.
// The coordinator re-plans without it, then releases it, and only then does it exit (code 0). It is
// no crash: no suspect marking, no flap hold, and started again it is admitted and planned at once. A
// rolling restart of every worker under load fails no request. A worker nobody uses leaves at once; one
// whose coordinator never releases it leaves at its drain timeout, or when that coordinator goes silent.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { WireStatus } from '../../coordinator/wire.js';
import { newToken } from '../../link/token.js';
import { ChurnWorker, startLoad } from '../helpers/churn.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { runCli, startWorker } from '../helpers/worker.js';

/** The time of the first event matching `pattern`, or null. */
function eventTime(s: WireStatus, pattern: RegExp): number | null {
  const e = s.events.find((x) => pattern.test(x.message));
  return e ? Date.parse(e.time) : null;
}

/** The `time` of the first line of a JSON log whose message matches `pattern`, or null. */
function logTime(log: string, pattern: RegExp): number | null {
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { time: number; msg: string };
    if (pattern.test(entry.msg)) return entry.time;
  }
  return null;
}

const inPlan = (s: WireStatus, name: string) => s.plan.fits && s.plan.devices.some((d) => d.owner === name && d.layers > 0);
const allServing = (names: string[]) => (s: WireStatus) => s.state === 'serving' && names.every((n) => inPlan(s, n));

describe('a worker leaving on purpose, in a three-worker cluster', () => {
  const workers: ChurnWorker[] = [];
  const names = ['leave-a', 'leave-b', 'leave-c'];
  let coord: CoordinatorHandle;

  before(async () => {
    const model = await testModel('tiny');
    for (const name of names) workers.push(await ChurnWorker.start(name));
    coord = await startCoordinator(model, workers.map((w) => w.handle.control));
    await coord.waitStatus(allServing(names));
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  /** Checks one leave of `w` that began at `began`: the order of what happened, and that nothing took it for a crash. */
  async function checkLeave(w: ChurnWorker, began: number, how: RegExp) {
    const exit = await w.handle.exited;
    const exitedAt = Date.now();
    assert.deepEqual(exit, { code: 0, signal: null }, `the worker exits with 0:\n${w.handle.logs()}`);
    // Released once nothing ran on it: the next engine may still be loading.
    const s = await coord.waitStatus((x) => x.state === 'serving' && x.plan.fits && !inPlan(x, w.name));
    const events = s.events.map((e) => `${e.time} ${e.message}`).join('\n');
    const leaving = eventTime(s, new RegExp(`^worker ${w.name} is leaving \\(${how.source}\\): re-planning without it$`));
    const retiring = eventTime(s, new RegExp(`^draining: re-planning: worker ${w.name} is leaving`));
    const released = eventTime(s, new RegExp(`^released ${w.name} \\(`));
    const reloaded = s.events.find((e) => Date.parse(e.time) >= (leaving ?? Infinity) && /^model loaded/.test(e.message));
    assert.ok(leaving !== null && retiring !== null && released !== null && reloaded, `the leave, the re-plan and the release are events:\n${events}`);
    assert.ok(leaving <= retiring && retiring <= released, `released only once the engine that ran on it was retired:\n${events}`);
    assert.doesNotMatch(reloaded.message, new RegExp(w.name), 'the new engine runs without it');
    const releasedAtWorker = logTime(w.handle.logs(), /^released by the coordinator after/);
    const stoppedAtWorker = logTime(w.handle.logs(), /^worker stopped$/);
    assert.ok(releasedAtWorker !== null && stoppedAtWorker !== null && releasedAtWorker <= stoppedAtWorker, `the worker stops after its release:\n${w.handle.logs()}`);
    assert.ok(released <= exitedAt, 'the coordinator had released it when it exited');
    assert.equal(s.workers.find((x) => x.name === w.name)?.state, 'left');
    assert.doesNotMatch(events, /held out of plans|suspect|lost|engine lost|unreachable/, 'no crash handling');
    assert.doesNotMatch(coord.logs(), /"msg":"engine lost|worker lost/, 'no crash handling in the log');
    const timing = { leaveSeenMs: leaving - began, releasedMs: released - began, exitedMs: exitedAt - began };
    console.log(JSON.stringify({ worker: w.name, ...timing }));
    return timing;
  }

  /** Starts `w` again on its ports: it is admitted and planned with again at once (no flap hold). */
  async function checkReturn(w: ChurnWorker): Promise<number> {
    await w.restart();
    const back = Date.now();
    await coord.waitStatus(allServing(names), 15_000);
    const s = await coord.client.getStatus();
    assert.doesNotMatch(s.events.map((e) => e.message).join('\n'), /held out of plans/);
    const ms = Date.now() - back;
    console.log(JSON.stringify({ worker: w.name, backInPlanMs: ms }));
    return ms;
  }

  test('SIGTERM to a worker that carries layers: re-planned without it, released, then it exits 0; started again, it is planned at once', async () => {
    const b = workers[1]!;
    const began = Date.now();
    b.handle.process.kill('SIGTERM');
    // While it waits for its release it says so, and the coordinator shows it leaving.
    const seen = await coord.waitStatus((s) => s.workers.some((x) => x.name === b.name && (x.state === 'leaving' || x.state === 'left')), 10_000);
    assert.match(seen.workers.find((x) => x.name === b.name)!.reason, /SIGTERM|released/);
    await checkLeave(b, began, /SIGTERM/);
    await checkReturn(b);
  });

  test('`hearth worker drain` from another process does the same, and says how it ended', async () => {
    const c = workers[2]!;
    const cli = runCli(['worker', 'drain', '--control', c.handle.control]);
    let out = '';
    cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    cli.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const cliExit = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    assert.equal(cliExit, 0, out);
    assert.match(out, /is leaving \(drain requested\): its coordinator re-plans without it, then releases it \(at most 60 s\)/);
    assert.match(out, /released by the coordinator after [\d.]+ s \(the coordinator runs the model without it\); it stops/);
    // Timed from the drain's start at the worker: the CLI's own start takes seconds on a busy machine.
    await checkLeave(c, logTime(c.handle.logs(), /^leaving \(drain requested\)/)!, /drain requested/);
    await checkReturn(c);
  });

  // In-flight requests finish on the old engine while it retires (up to max(watchdog, 10 s)) and new
  // ones wait for the next: short requests need not even be resumed (the count is printed).
  test('a rolling restart of every worker under a steady load fails no request', { timeout: 180_000 }, async () => {
    const load = startLoad(coord.http, { clients: 3, maxTokens: 16, hangMs: 60_000 });
    let coordinatorExit: number | null | undefined;
    void coord.exited.then((code) => (coordinatorExit = code));
    const rounds: { worker: string; leaveMs: number; backMs: number }[] = [];
    for (const w of workers) {
      await new Promise((r) => setTimeout(r, 1500));
      const began = Date.now();
      await w.handle.stop('SIGTERM');
      const leaveMs = Date.now() - began;
      await w.restart();
      await coord.waitStatus(allServing(names), 30_000);
      rounds.push({ worker: w.name, leaveMs, backMs: Date.now() - began - leaveMs });
    }
    await new Promise((r) => setTimeout(r, 1500));
    const tally = await load.stop();
    const events = (await coord.client.getStatus()).events.filter((e) => /^resumed/.test(e.message)).map((e) => `${e.time} ${e.message}`);
    console.log(JSON.stringify({ rounds, ok: tally.ok, resumed: tally.resumed, incomplete: tally.incomplete, clearErrors: Object.fromEntries(tally.clearErrors), unclear: tally.unclear, hung: tally.hung, events }));
    assert.equal(coordinatorExit, undefined, 'the coordinator is alive');
    assert.equal(tally.hung, 0, 'no request hung');
    assert.deepEqual(tally.unclear, [], 'every failed request got a clear error');
    assert.ok(tally.ok > 0, 'requests were served');
    assert.deepEqual(Object.fromEntries(tally.clearErrors), {}, 'no request failed');
    assert.deepEqual(tally.incomplete, [], 'every answer is complete');
  });
});

describe('a worker leaving that no coordinator releases', () => {
  test('a worker that no coordinator uses exits at once', async () => {
    const w = await startWorker(['--name', 'leave-alone']);
    const began = Date.now();
    const exit = await w.stop('SIGTERM');
    const ms = Date.now() - began;
    console.log(JSON.stringify({ unusedWorkerExitMs: ms }));
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.match(w.logs(), /leaving \(SIGTERM\): no coordinator uses this worker/);
    assert.ok(ms < 3000, `it exits at once (${ms} ms)`);
  });

  test('a frozen coordinator never releases: the drain timeout ends the wait, and so does the lapse of its promise to call again', { timeout: 90_000 }, async () => {
    const model = await testModel('tiny');
    const timed = await startWorker(['--name', 'leave-timed', '--drain-timeout', '2']);
    const patient = await startWorker(['--name', 'leave-patient']);
    const coord = await startCoordinator(model, [timed.control, patient.control]);
    try {
      await coord.waitStatus(allServing(['leave-timed', 'leave-patient']));
      coord.process.kill('SIGSTOP');
      const began = Date.now();
      const [first, second] = await Promise.all([timed, patient].map(async (w) => {
        const exit = await w.stop('SIGTERM');
        return { exit, ms: Date.now() - began };
      }));
      // --drain-timeout 2: it waits 2 s (and its control service up to 2 s more for the frozen peer).
      assert.deepEqual(first!.exit, { code: 0, signal: null });
      assert.match(timed.logs(), /leaving \(SIGTERM\): waiting for the coordinator/);
      assert.match(timed.logs(), /no release within 2 s \(--drain-timeout\); leaving anyway/);
      assert.ok(first!.ms >= 1900 && first!.ms < 6000, `it waited for its timeout (${first!.ms} ms)`);
      // The default 60 s: it goes once the coordinator's last promise (workerTimeoutMs, 5 s) lapses.
      assert.deepEqual(second!.exit, { code: 0, signal: null });
      assert.match(patient.logs(), /leaving \(SIGTERM\): waiting for the coordinator/);
      assert.match(patient.logs(), /its coordinator went silent before releasing it; leaving anyway/);
      assert.ok(second!.ms < 9000, `it left once its coordinator was silent (${second!.ms} ms)`);
      console.log(JSON.stringify({ timedOutExitMs: first!.ms, coordinatorSilentExitMs: second!.ms }));
    } finally {
      await coord.stop('SIGKILL');
      await Promise.all([timed.stop('SIGKILL'), patient.stop('SIGKILL')]);
    }
  });
});

describe('a worker leaving a closed cluster', () => {
  test('`hearth worker drain --token-file` reaches it over TLS-PSK, and the release and its answer get out through its gateway', { timeout: 120_000 }, async () => {
    const token = newToken();
    const model = await testModel('tiny');
    const a = await startWorker(['--name', 'leave-secure-a'], { token });
    const b = await startWorker(['--name', 'leave-secure-b'], { token });
    const coord = await startCoordinator(model, [a.control, b.control], [], { token });
    try {
      await coord.waitStatus(allServing(['leave-secure-a', 'leave-secure-b']));
      const tokenFile = join(b.dir, 'drain.token');
      writeFileSync(tokenFile, token, { mode: 0o600 });
      const cli = runCli(['worker', 'drain', '--control', b.control, '--token-file', tokenFile, '--reason', 'kernel update']);
      let out = '';
      cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      cli.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      assert.equal(await new Promise((resolve) => cli.once('exit', resolve)), 0, out);
      assert.match(out, /is leaving \(kernel update\)/);
      assert.match(out, /released by the coordinator after [\d.]+ s/);
      assert.deepEqual(await b.exited, { code: 0, signal: null }, b.logs());
      const s = await coord.waitStatus((x) => x.state === 'serving' && inPlan(x, 'leave-secure-a') && !inPlan(x, 'leave-secure-b'));
      const events = s.events.map((e) => e.message).join('\n');
      assert.match(events, /worker leave-secure-b is leaving \(kernel update\): re-planning without it/);
      assert.match(events, /released leave-secure-b/);
      assert.doesNotMatch(events, /held out of plans|suspect|engine lost/);
    } finally {
      await coord.stop();
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
