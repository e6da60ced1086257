// A worker on one test host is discovered over real mDNS from another, with its TXT fields; stopping
// it sends a goodbye the browser sees. Both hosts are network namespaces made here.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { netnsUnavailable, TestNetwork } from '../helpers/netns.js';
import { testModel } from '../helpers/models.js';
import { CLI } from '../helpers/worker.js';

const BROWSE = fileURLToPath(new URL('../helpers/mdns-browse.ts', import.meta.url));

interface BrowseEvent {
  event: string;
  name?: string;
  port?: number;
  addresses?: string[];
  txt?: Record<string, string>;
}

/** Collects JSON lines from a process and waits for one that matches. */
function eventStream(child: ChildProcess) {
  const events: BrowseEvent[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      events.push(JSON.parse(line) as BrowseEvent);
    } catch {
      return;
    }
    waiters.splice(0).forEach((w) => w());
  });
  return {
    events,
    async next(match: (e: BrowseEvent) => boolean, timeoutMs: number): Promise<BrowseEvent> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = events.find(match);
        if (hit) return hit;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no matching mDNS event within ${timeoutMs} ms; saw ${JSON.stringify(events)}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
  };
}

const unavailable = netnsUnavailable();

describe('mDNS discovery between two hosts', { skip: unavailable ?? false }, () => {
  let net: TestNetwork;
  let dir: string;
  const children: ChildProcess[] = [];

  before(() => {
    net = TestNetwork.create(['worker', 'coordinator']);
    dir = mkdtempSync(join(tmpdir(), 'hearth-net-'));
  });
  after(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    net?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the browser sees the worker with its TXT fields, then its goodbye', async () => {
    const browser = net.spawn('coordinator', process.execPath, ['--import', 'tsx', BROWSE]);
    children.push(browser);
    const seen = eventStream(browser);
    await seen.next((e) => e.event === 'browsing', 15_000);

    const host = net.host('worker').address;
    const worker = net.spawn('worker', process.execPath, [
      '--import', 'tsx', CLI, 'worker', '--name', 'ns-worker', '--host', host, '--rpc-port', '50052', '--control-port', '50051',
      '--threads', '1', '--state-dir', join(dir, 'state'), '--cache-dir', join(dir, 'cache'), '--insecure',
    ]);
    children.push(worker);
    let logs = '';
    worker.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const workerExit = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));

    const up = await seen.next((e) => e.event === 'up' && e.txt?.name === 'ns-worker', 20_000).catch((e: Error) => {
      throw new Error(`${e.message}\nworker log:\n${logs}`);
    });
    assert.equal(up.port, 50051, 'the service points at the control port');
    assert.ok(up.addresses?.includes(host), `addresses ${JSON.stringify(up.addresses)} include ${host}`);
    const txt = up.txt!;
    assert.match(txt.id!, /^[0-9a-f-]{36}$/);
    assert.equal(txt.cport, '50051');
    assert.equal(txt.rport, '50052');
    assert.equal(txt.proto, '7.1.0');
    assert.equal(txt.backend, 'CPU');
    assert.ok(Number(txt.mem_total) > 0 && Number(txt.mem_free) > 0 && Number(txt.mem_free) <= Number(txt.mem_total));
    assert.ok(!Object.values(txt).some((v) => String(v).includes('/')), 'no paths in TXT');

    worker.kill('SIGTERM');
    const down = await seen.next((e) => e.event === 'down' && e.name === up.name, 10_000);
    assert.equal(down.name, up.name);
    assert.equal(await workerExit, 0, logs);
  });

  test('a coordinator on the other host finds the worker over mDNS, counts it once beside its static entry, and serves', async () => {
    const host = net.host('worker').address;
    const worker = net.spawn('worker', process.execPath, [
      '--import', 'tsx', CLI, 'worker', '--name', 'ns-worker', '--host', host, '--rpc-port', '50052', '--control-port', '50051',
      '--threads', '1', '--state-dir', join(dir, 'state2'), '--cache-dir', join(dir, 'cache2'), '--insecure',
    ]);
    children.push(worker);
    const model = await testModel('tiny');
    // Listed by hand under its address, and advertised over mDNS: one worker, not two.
    const coordinator = net.spawn('coordinator', process.execPath, [
      '--import', 'tsx', CLI, 'coordinator', '--model', model, '--worker', `${host}:50051`, '--local-device', 'off', '--host', '127.0.0.1',
      '--grpc-port', '50050', '--http-port', '8080', '--ctx-size', '512', '--parallel', '2', '--threads', '1',
    ]);
    children.push(coordinator);
    let logs = '';
    coordinator.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const inCoordinatorHost = async (code: string): Promise<string> => {
      const child = net.spawn('coordinator', process.execPath, ['-e', code]);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await new Promise((r) => child.once('exit', r));
      return out;
    };
    const status = async () =>
      JSON.parse(
        (await inCoordinatorHost("fetch('http://127.0.0.1:8080/health').then(r => r.text()).then(t => process.stdout.write(t)).catch(() => process.stdout.write('{}'))")) || '{}',
      ) as { status?: string };
    const deadline = Date.now() + 30_000;
    while ((await status()).status !== 'ok') {
      if (Date.now() > deadline) throw new Error(`the coordinator did not start serving:\n${logs.split('\n').slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.match(logs, /worker found over mDNS/);
    const answer = JSON.parse(
      await inCoordinatorHost(
        "fetch('http://127.0.0.1:8080/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Over the network', max_tokens: 6, temperature: 0 }) }).then(r => r.text()).then(t => process.stdout.write(t))",
      ),
    ) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    assert.ok(answer.usage.completion_tokens > 0);
    const metrics = await inCoordinatorHost("fetch('http://127.0.0.1:8080/metrics').then(r => r.text()).then(t => process.stdout.write(t))");
    const up = metrics.split('\n').filter((l) => l.startsWith('hearth_worker_up{'));
    assert.equal(up.length, 1, `one worker, not one per source: ${up.join(' | ')}`);
    assert.match(up[0]!, /worker="ns-worker".* 1$/);
    coordinator.kill('SIGTERM');
    worker.kill('SIGTERM');
    await Promise.all([coordinator, worker].map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  });
});
