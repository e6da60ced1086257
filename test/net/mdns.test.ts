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
      '--threads', '1', '--state-dir', join(dir, 'state'), '--cache-dir', join(dir, 'cache'),
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
    assert.equal(txt.proto, '7.0.0');
    assert.equal(txt.backend, 'CPU');
    assert.ok(Number(txt.mem_total) > 0 && Number(txt.mem_free) > 0 && Number(txt.mem_free) <= Number(txt.mem_total));
    assert.ok(!Object.values(txt).some((v) => String(v).includes('/')), 'no paths in TXT');

    worker.kill('SIGTERM');
    const down = await seen.next((e) => e.event === 'down' && e.name === up.name, 10_000);
    assert.equal(down.name, up.name);
    assert.equal(await workerExit, 0, logs);
  });
});
