// A closed cluster across test hosts (network namespaces on a bridge): the coordinator finds workers
// over real mDNS, admits the one of its own cluster and ignores another cluster's, serves through the
// secure links, and takes its worker back within seconds after a pulled cable is plugged back in.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { newToken } from '../../link/token.js';
import { netnsUnavailable, TestNetwork } from '../helpers/netns.js';
import { testModel } from '../helpers/models.js';
import { CLI } from '../helpers/worker.js';

const unavailable = netnsUnavailable();

describe('a closed cluster across hosts', { skip: unavailable ?? false }, () => {
  let net: TestNetwork;
  let dir: string;
  const children: ChildProcess[] = [];

  before(() => {
    net = TestNetwork.create(['worker', 'coordinator', 'stranger']);
    dir = mkdtempSync(join(tmpdir(), 'hearth-closed-'));
  });
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    net?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  function spawnLogged(host: string, args: string[]): { child: ChildProcess; logs: () => string } {
    const child = net.spawn(host, process.execPath, ['--import', 'tsx', CLI, ...args]);
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    return { child, logs: () => out };
  }

  /** Runs `code` with node inside the coordinator's host and returns what it printed. */
  async function inCoordinatorHost(code: string): Promise<string> {
    const child = net.spawn('coordinator', process.execPath, ['-e', code]);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => child.once('exit', r));
    return out;
  }

  const health = async (): Promise<number> =>
    Number(await inCoordinatorHost("fetch('http://127.0.0.1:8080/health').then(r => process.stdout.write(String(r.status))).catch(() => process.stdout.write('0'))"));

  async function status(): Promise<{ state: string; workers: { name: string; state: string; link: string }[]; cluster_id: string }> {
    const child = net.spawn('coordinator', process.execPath, ['--import', 'tsx', CLI, 'status', '--coordinator', '127.0.0.1:50050', '--json']);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => child.once('exit', r));
    return JSON.parse(out || '{"state":"unreachable","workers":[],"cluster_id":""}');
  }

  async function until(what: string, ok: () => Promise<boolean>, timeoutMs: number, logs: () => string): Promise<number> {
    const started = Date.now();
    while (!(await ok())) {
      if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}\n${logs().split('\n').slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    return Date.now() - started;
  }

  test('mDNS: the worker of this cluster is admitted, one of another cluster is not; a pulled cable is recovered within 10 s', async () => {
    const ours = join(dir, 'ours.token');
    const theirs = join(dir, 'theirs.token');
    writeFileSync(ours, newToken(), { mode: 0o600 });
    writeFileSync(theirs, newToken(), { mode: 0o600 });
    const workerArgs = (name: string, host: string, token: string) => [
      'worker', '--name', name, '--host', host, '--rpc-port', '50052', '--control-port', '50051', '--threads', '1',
      '--state-dir', join(dir, `state-${name}`), '--cache-dir', join(dir, `cache-${name}`), '--token-file', token,
    ];
    const worker = spawnLogged('worker', workerArgs('ns-worker', net.host('worker').address, ours));
    const stranger = spawnLogged('stranger', workerArgs('stranger', net.host('stranger').address, theirs));
    const model = await testModel('tiny');
    const coord = spawnLogged('coordinator', [
      'coordinator', '--model', model, '--local-device', 'off', '--host', '127.0.0.1', '--grpc-port', '50050', '--http-port', '8080',
      '--ctx-size', '512', '--parallel', '2', '--threads', '1', '--token-file', ours,
    ]);
    const logs = () => `--- coordinator ---\n${coord.logs()}\n--- worker ---\n${worker.logs().split('\n').slice(-15).join('\n')}`;

    await until('the closed cluster to serve', async () => (await health()) === 200, 45_000, logs);
    await until('the stranger advert to be seen and ignored', async () => /ignoring a worker of another cluster/.test(coord.logs()), 20_000, logs);
    const s = await status();
    assert.match(s.cluster_id, /^[0-9a-f]{16}$/);
    assert.deepEqual(s.workers.map((w) => [w.name, w.state, w.link]), [['ns-worker', 'admitted', 'tls-psk']]);
    assert.match(coord.logs(), /worker found over mDNS/);
    assert.ok(!/stranger/.test(JSON.stringify(s.workers)), 'the other cluster was never probed');
    assert.equal(stranger.child.exitCode, null);

    const complete = async () =>
      JSON.parse(
        await inCoordinatorHost(
          "fetch('http://127.0.0.1:8080/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Over the network', max_tokens: 6, temperature: 0 }) }).then(r => r.text()).then(t => process.stdout.write(t))",
        ),
      ) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    const first = await complete();
    assert.equal(first.usage.completion_tokens, 6);

    // Pull the worker's cable: its packets vanish, nobody gets a reset.
    net.cut('worker');
    const noticed = await until('the coordinator to notice the silent worker', async () => (await health()) === 503, 30_000, logs);
    // Keep it unplugged a while longer, as a person would.
    await new Promise((r) => setTimeout(r, 10_000));
    net.restore('worker');
    const back = await until('the worker to be back in the plan', async () => (await health()) === 200, 30_000, logs);
    assert.ok(back < 10_000, `serving again ${back} ms after the cable came back (noticed the cut after ${noticed} ms)`);
    const again = await complete();
    assert.deepEqual(again.choices, first.choices, 'the same greedy answer after the recovery');
    const after = await status();
    assert.deepEqual(after.workers.map((w) => [w.name, w.state]), [['ns-worker', 'admitted']]);
    process.stdout.write(`# pulled cable: noticed after ${noticed} ms; back in the plan ${back} ms after the link returned\n`);

    for (const c of [coord.child, worker.child, stranger.child]) c.kill('SIGTERM');
    await Promise.all([coord.child, worker.child, stranger.child].map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  });
});
