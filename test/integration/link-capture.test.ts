// What an eavesdropper on the link sees while a model loads: the packets to the worker's public rpc
// port, captured with tcpdump. In an open cluster the weights are there in clear (the control that
// shows the method works); in a closed one, no 64-byte run of any tensor the worker receives appears.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { newToken } from '../../link/token.js';
import { readGguf } from '../../native/llama.js';
import { spawnChild } from '../helpers/children.js';
import { startCoordinator } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { prng } from '../helpers/rpc-fuzz.js';
import { startWorker, waitFor } from '../helpers/worker.js';

function captureUnavailable(): string | null {
  if (process.platform !== 'linux') return 'packet capture needs Linux';
  if (process.getuid?.() !== 0) return 'packet capture needs root';
  try {
    execFileSync('tcpdump', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'tcpdump is not installed (.ci/run installs it)';
  }
  return null;
}

/** 64-byte windows of the tensors the worker receives (every tensor but the input embedding). */
async function tensorWindows(modelPath: string, count: number): Promise<Buffer[]> {
  const raw = await readGguf(modelPath);
  const sent = raw.tensors.filter((t) => !t.name.startsWith('token_embd'));
  const total = sent.reduce((s, t) => s + t.bytes, 0);
  const rand = prng(42);
  const file = await open(modelPath, 'r');
  const out: Buffer[] = [];
  try {
    while (out.length < count) {
      let pick = rand() * total;
      const t = sent.find((x) => (pick -= x.bytes) < 0) ?? sent[sent.length - 1]!;
      if (t.bytes < 64) continue;
      const at = Math.floor((rand() * (t.bytes - 64)) / 64) * 64;
      const window = Buffer.alloc(64);
      await file.read(window, 0, 64, raw.dataOffset + t.offset + at);
      // Constant runs (a norm of ones) could turn up anywhere; only varied bytes identify a tensor.
      if (new Set(window).size >= 24) out.push(window);
    }
  } finally {
    await file.close();
  }
  return out;
}

describe('weights on the wire', { skip: captureUnavailable() ?? false }, () => {
  let model: string;
  let windows: Buffer[];
  let dir: string;

  before(async () => {
    model = await testModel('tiny');
    windows = await tensorWindows(model, 200);
    dir = mkdtempSync(join(tmpdir(), 'hearth-capture-'));
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Loads the model onto one fresh worker while tcpdump records its rpc port; returns the capture. */
  async function captureLoad(token: string | null, name: string): Promise<Buffer> {
    const worker = await startWorker(['--name', name], token ? { token } : {});
    const file = join(dir, `${name}.pcap`);
    const dump = spawnChild('tcpdump', ['-i', 'lo', '-B', '262144', '-s', '0', '-w', file, `tcp port ${worker.rpcPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    dump.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const dumped = new Promise((r) => dump.once('exit', r));
    try {
      await waitFor('tcpdump to listen', async () => /listening on/.test(err), 10_000);
      const coord = await startCoordinator(model, [worker.control], [], token ? { token } : {});
      try {
        const out = await coord.client.generate('Rain fell on the old stone bridge', { maxTokens: 8, sampling: { temperature: 0, greedy: true } });
        assert.equal(out.tokens.length, 8);
      } finally {
        await coord.stop();
      }
    } finally {
      await worker.stop();
      // Let tcpdump drain its buffer before it stops, and check that it kept every packet it was given.
      await new Promise((r) => setTimeout(r, 1500));
      dump.kill('SIGINT');
      await dumped;
      assert.match(err, /\n0 packets dropped by kernel/, `tcpdump lost packets: ${err}`);
    }
    return readFileSync(file);
  }

  test('open: the capture holds the weights in clear; closed: not one 64-byte run of them', async () => {
    const clear = await captureLoad(null, 'open');
    const foundClear = windows.filter((w) => clear.includes(w)).length;
    assert.ok(clear.length > 10_000_000, `the open capture has ${clear.length} bytes`);
    assert.ok(foundClear >= windows.length * 0.9, `only ${foundClear} of ${windows.length} windows in the open capture: the method would miss leaks`);

    const secret = await captureLoad(newToken(), 'closed');
    assert.ok(secret.length > 10_000_000, `the closed capture has ${secret.length} bytes: the load went through this port`);
    const leaked = windows.filter((w) => secret.includes(w)).length;
    assert.equal(leaked, 0, `${leaked} of ${windows.length} tensor windows crossed the link in clear`);
  });
});
