// The CLI as a user runs it: a real process, its exit code and its words.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { childCommand } from '../helpers/child-command.js';

const cli = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));
// spawnSync blocks this process, so its signal handlers wait for the child: the timeouts bound that,
// and childCommand takes the child down if this process is killed outright.
const hearth = (...args: string[]) => spawnSync(...childCommand(process.execPath, ['--import', 'tsx', cli, ...args]), { encoding: 'utf8', timeout: 60_000 });

describe('hearth CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-cli-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('model create-test writes a model and model info reads it', () => {
    const out = join(dir, 'tiny.gguf');
    const created = hearth('model', 'create-test', '--out', out, '--seed', '3');
    assert.equal(created.status, 0, created.stderr);
    assert.match(created.stdout, /4 layers/);
    assert.ok(statSync(out).size > 30_000_000);
    const info = hearth('model', 'info', out);
    assert.equal(info.status, 0, info.stderr);
    assert.match(info.stdout, /architecture\s+llama/);
    assert.match(info.stdout, /vocabulary\s+32000/);
  });

  test('bad input gets a clear error and a non-zero exit', async () => {
    const out0 = join(dir, 'tiny.gguf');
    const preset = hearth('model', 'create-test', '--out', join(dir, 'x.gguf'), '--preset', 'huge');
    assert.equal(preset.status, 2);
    assert.match(preset.stderr, /--preset: 'huge' is not one of tiny, small, /);
    const seed = hearth('model', 'create-test', '--out', join(dir, 'x.gguf'), '--seed', 'abc');
    assert.equal(seed.status, 2);
    assert.match(seed.stderr, /--seed: 'abc' is not a whole number/);
    const missing = hearth('model', 'info', join(dir, 'missing.gguf'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /model file not found/);
    const noModel = hearth('coordinator', '--model', join(dir, 'missing.gguf'), '--no-mdns', '--grpc-port', '0', '--http-port', '0');
    assert.equal(noModel.status, 1, 'a failed start exits instead of hanging');
    assert.match(noModel.stderr, /model file not found: .*missing\.gguf/);
    const { createServer } = await import('node:net');
    const blocker = createServer();
    const taken = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as { port: number }).port)));
    const busy = spawnSync(...childCommand(process.execPath, ['--import', 'tsx', cli, 'coordinator', '--model', out0, '--no-mdns', '--grpc-port', '0', '--http-port', String(taken)]), { encoding: 'utf8', timeout: 60_000 });
    blocker.close();
    assert.equal(busy.status, 1, 'a taken HTTP port is an error, not a hang');
    assert.match(busy.stderr, /cannot listen for HTTP on 127\.0\.0\.1:\d+.*--http-port/);
    const badYaml = hearth('coordinator', '--config', join(dir, 'nope.yaml'));
    assert.equal(badYaml.status, 2);
    assert.match(badYaml.stderr, /cannot read config file .*nope\.yaml/);
    const unknown = hearth('frobnicate');
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /unknown command/);
  });

  test('demo --once answers a question through a two-worker cluster and leaves nothing running', async () => {
    const { freePort } = await import('../helpers/rpc-server.js');
    const port = await freePort();
    const r = spawnSync(...childCommand(process.execPath, ['--import', 'tsx', cli, 'demo', '--once', '--http-port', String(port), '--max-tokens', '12']), { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /worker 1 ready/);
    assert.match(r.stderr, /worker 2 ready/);
    assert.match(r.stderr, /loaded hearth-test-tiny-f16-seed1/);
    assert.match(r.stderr, /12 tokens in [\d.]+ s through the HTTP API/);
    assert.match(r.stdout, /> What is a hearth/);
    assert.match(r.stdout, /demo-worker-1\s+127\.0\.0\.1:\d+/);
    assert.match(r.stdout, /demo-worker-2\s+127\.0\.0\.1:\d+/);
    const left = spawnSync('pgrep', ['-f', 'demo-worker-'], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', 'no demo worker left running');
  });

  test('info names the llama.cpp release and RPC protocol', () => {
    const r = hearth('info');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /llama\.cpp v0\.5\.0 .*RPC protocol 7\.1\.0/);
    assert.match(r.stdout, /CPU\s+CPU\s+cpu/);
  });
});
