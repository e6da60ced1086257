// A closed cluster as users run it: real workers started with a cluster token, a real coordinator
// given the same token (HEARTH_TOKEN), real gRPC through the secure relays. Every promise of the
// secure mode is checked against the real processes, and the token is looked for where it must not be.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { LinkError, SecureRelay } from '../../link/relay.js';
import { afterPskHandshake, clientTlsOptions } from '../../link/tls.js';
import { ClusterSecret, newToken } from '../../link/token.js';
import type { CoordinatorClient, GenerateOutcome } from '../../coordinator/client.js';
import { encodeHello } from '../../native/rpc-protocol.js';
import { probeRpcServer } from '../../native/rpc-probe.js';
import { WorkerClient } from '../../link/worker-client.js';
import { spawnChild } from '../helpers/children.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, referenceRuns, type GreedyRun, GREEDY } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { CLI, readyHealth, runCli, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const PROMPTS = ['The quick brown fox jumps over the lazy dog because', 'Once upon a time in a distant land', 'Rain fell on the old stone bridge'];

/** Everything a raw TCP peer gets back from `port` within `ms` after sending `bytes`. */
async function rawExchange(port: number, bytes: Buffer, ms = 1500): Promise<Buffer> {
  const socket = new Socket();
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.connect(port, '127.0.0.1', () => resolve()));
  socket.write(bytes);
  await new Promise((r) => setTimeout(r, ms));
  socket.destroy();
  return Buffer.concat(got);
}

/** Local listening addresses of process `pid`, from `ss`. */
function listeningAddresses(pid: number): string[] {
  const out = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.trim().split(/\s+/)[3]!);
}

/**
 * A long generation; at its fifth chunk a second request is sent and the rpc server `victimPid` is
 * killed in the same moment: the second reaches the engine in its last moments, or waits in the queue.
 */
function killWhileAnotherArrives(client: CoordinatorClient, victimPid: number, latePrompt: string) {
  let chunks = 0;
  let late!: Promise<GenerateOutcome>;
  const long = client.generate(PROMPTS[0]!, {
    maxTokens: 480,
    sampling: GREEDY,
    onChunk: () => {
      if (++chunks === 5) {
        late = client.generate(latePrompt, { maxTokens: 24, sampling: GREEDY, timeoutMs: 60_000 });
        process.kill(victimPid, 'SIGKILL');
      }
    },
  });
  /** The second request, once the first has ended (it is sent during the first). */
  const second = async (): Promise<GenerateOutcome> => {
    await long.catch(() => undefined);
    assert.ok(late, 'the second request was sent');
    return late;
  };
  return { long, second };
}

function assertNoToken(text: string, token: string, where: string): void {
  assert.ok(!text.includes(token), `the token appears in ${where}`);
  assert.ok(!text.includes(token.slice('hearth1_'.length)), `the token's body appears in ${where}`);
}

describe('a closed cluster', () => {
  const token = newToken();
  let model: string;
  let refs: GreedyRun[];
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  before(async () => {
    model = await testModel('tiny');
    refs = await referenceRuns(model, PROMPTS, 24);
    // One worker on every interface (protected mode lets it, since it has the token), one on loopback.
    workers.push(await startWorker(['--name', 'w-a'], { token, host: '0.0.0.0' }), await startWorker(['--name', 'w-b'], { token }));
    coord = await startCoordinator(model, workers.map((w) => w.control), [], { token });
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('a peer without the token gets no HELLO reply, no gRPC answer and no device list', async () => {
    const a = workers[0]!;
    await assert.rejects(probeRpcServer(`127.0.0.1:${a.rpcPort}`, { timeoutMs: 2000 }), (e) => e instanceof HearthError && e.code === ErrorCode.Unavailable);
    const reply = await rawExchange(a.rpcPort, Buffer.concat([encodeHello(), Buffer.from([15, 0, 0, 0, 0, 0, 0, 0, 0])]));
    // A HELLO reply is u64 size 28, then the version; a TLS server answers plain bytes with at most an alert.
    assert.ok(!(reply.length >= 8 && reply.readBigUInt64LE(0) === 28n), `got a HELLO reply: ${reply.toString('hex')}`);
    assert.ok(reply.length === 0 || reply[0] === 0x15, `expected nothing or a TLS alert, got ${reply.toString('hex')}`);

    const plain = new WorkerClient(a.control);
    try {
      await assert.rejects(plain.getInfo({ timeoutMs: 2000 }), (e) => e instanceof HearthError && e.code === ErrorCode.Unavailable);
    } finally {
      plain.close();
    }
    for (const kind of ['control', 'rpc'] as const) {
      const port = kind === 'rpc' ? a.rpcPort : a.controlPort;
      const stranger = await SecureRelay.open({ secret: ClusterSecret.fromToken(newToken(), 'flag'), kind, remote: `127.0.0.1:${port}` });
      try {
        await assert.rejects(stranger.check(), (e) => e instanceof LinkError && e.kind === 'token' && /token mismatch/.test(e.message));
      } finally {
        await stranger.close();
      }
    }
    const info = await a.client.getInfo();
    assert.equal(info.link.secure, true);
    assert.ok(info.link.token_mismatches >= 2, `the worker counted the strangers: ${JSON.stringify(info.link)}`);
  });

  test('the link is TLS 1.3 with an ephemeral X25519 exchange (forward secrecy) and no certificate', async () => {
    const a = workers[0]!;
    const socket = tlsConnect({ host: '127.0.0.1', port: a.controlPort, ...clientTlsOptions(ClusterSecret.fromToken(token, 'flag'), 'control') });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
      assert.equal(socket.getProtocol(), 'TLSv1.3');
      assert.equal(socket.alpnProtocol, 'hearth-control/1');
      assert.match(socket.getCipher().name, /^TLS_(AES_128_GCM|CHACHA20_POLY1305|AES_256_GCM)_SHA(256|384)$/);
      assert.deepEqual(socket.getEphemeralKeyInfo(), { type: 'ECDH', name: 'X25519', size: 253 });
      assert.deepEqual(socket.getPeerCertificate(), {});
      assert.equal(afterPskHandshake(socket, 'control'), null);
    } finally {
      socket.end();
    }
  });

  test("ggml-rpc-server listens on 127.0.0.1 only; the public ports are the worker's gateways", async () => {
    const a = workers[0]!;
    const health = await readyHealth(a.client);
    const rpcListens = listeningAddresses(health.rpc_server_pid);
    assert.ok(rpcListens.length >= 1, 'ss shows the rpc server listening');
    for (const addr of rpcListens) {
      assert.match(addr, /^127\.0\.0\.1:\d+$/);
      assert.notEqual(addr, `127.0.0.1:${a.rpcPort}`);
    }
    const workerListens = listeningAddresses(a.process.pid!);
    assert.ok(workerListens.includes(`0.0.0.0:${a.rpcPort}`), workerListens.join(' '));
    assert.ok(workerListens.includes(`0.0.0.0:${a.controlPort}`), workerListens.join(' '));
  });

  test('the split model gives the single-process greedy tokens over the secure links', async () => {
    const status = await coord.client.getStatus();
    assert.equal(status.plan.devices.length, 2);
    assert.match(status.cluster_id, /^[0-9a-f]{16}$/);
    assert.equal(status.cluster_id, ClusterSecret.fromToken(token, 'flag').clusterId);
    for (const w of status.workers) {
      assert.equal(w.state, 'admitted');
      assert.equal(w.link, 'tls-psk');
    }
    // The relays counted what the load sent, keyed by each worker's own address.
    const sent = status.load.bytes_sent;
    for (const w of workers) assert.ok(Number(sent[`127.0.0.1:${w.rpcPort}`] ?? 0) > 1_000_000, JSON.stringify(sent));
    const outs = await Promise.all(PROMPTS.map((p) => coord.client.generate(p, { maxTokens: 24, sampling: GREEDY })));
    outs.forEach((o, i) => assertGreedyMatches(o.tokens, refs[i]!, `prompt ${i}`));
  });

  test('a worker with another token is refused, and hearth status says why', async () => {
    const stranger = await startWorker(['--name', 'w-other'], { token: newToken() });
    const other = await startCoordinator(model, [stranger.control], [], { token, waitServing: false });
    try {
      const s = await other.waitStatus((x) => x.workers.some((w) => w.state === 'refused'), 15_000);
      assert.match(s.workers[0]!.reason, /^token mismatch/);
      const cli = runCli(['status', '--coordinator', other.address]);
      let out = '';
      cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await new Promise((r) => cli.once('exit', r));
      assert.match(out, /refused\s.*token mismatch/);
      await waitFor('the worker to log the refusal', async () => /token mismatch/.test(stranger.logs()));
    } finally {
      await other.stop();
      await stranger.stop();
    }
  });

  test('a closed coordinator refuses an open worker, saying it does not speak the secure link', async () => {
    const open = await startWorker(['--name', 'w-open']);
    const other = await startCoordinator(model, [open.control], [], { token, waitServing: false });
    try {
      const s = await other.waitStatus((x) => x.workers.some((w) => w.state === 'refused'), 15_000);
      assert.match(s.workers[0]!.reason, /does not speak hearth's secure link/);
    } finally {
      await other.stop();
      await open.stop();
    }
  });

  test('hearth plan reaches a closed worker with the token and shows its own address', async () => {
    const fresh = await startWorker(['--name', 'w-plan'], { token });
    try {
      const cli = runCli(['plan', '--model', model, '--worker', fresh.control, '--no-mdns', '--local-device', 'off', '--ctx-size', '512', '--json'], { env: { HEARTH_TOKEN: token } });
      let out = '';
      cli.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise((r) => cli.once('exit', r));
      assert.equal(code, 0, out);
      const plan = JSON.parse(out) as { fits: boolean; devices: { endpoint: string; owner: string }[] };
      assert.equal(plan.fits, true);
      assert.deepEqual(plan.devices.map((d) => [d.owner, d.endpoint]), [['w-plan', `127.0.0.1:${fresh.rpcPort}`]]);
    } finally {
      await fresh.stop();
    }
  });

  test('an open coordinator cannot use a closed worker, and says what to do', async () => {
    const open = await startCoordinator(model, [workers[1]!.control], [], { waitServing: false });
    try {
      const s = await open.waitStatus((x) => x.workers[0]?.reason.includes('same token') === true, 15_000);
      assert.notEqual(s.workers[0]!.state, 'admitted');
    } finally {
      await open.stop();
    }
  });

  test('SIGKILL of a worker rpc server mid-stream is seen at once through the relay: the stream goes on after a short pause; serving resumes', async () => {
    const victim = await readyHealth(workers[1]!.client);
    let chunks = 0;
    let killedAt = 0;
    let nextAfterKill = 0;
    const long = coord.client.generate(PROMPTS[0]!, {
      maxTokens: 480,
      sampling: GREEDY,
      onChunk: () => {
        if (killedAt > 0 && nextAfterKill === 0) nextAfterKill = Date.now();
        if (++chunks === 5) {
          killedAt = Date.now();
          process.kill(victim.rpc_server_pid, 'SIGKILL');
        }
      },
    });
    const out = await long;
    assert.equal(out.tokens.length, 480, 'the stream went on to its end');
    assert.equal(out.resumed, 1);
    const { events } = await coord.client.getStatus();
    assert.ok(events.some((e) => /^resumed 1 request after worker w-b \(127\.0\.0\.1:\d+\)/.test(e.message)), JSON.stringify(events.slice(-5)));
    const took = nextAfterKill - killedAt;
    assert.ok(took < 10_000, `the stream paused ${took} ms after the kill (the watchdog is 30 s)`);
    // Served again, at first by the other worker alone or by both; the restarted one is taken back.
    await coord.waitStatus((x) => x.state === 'serving' && x.load.loads >= 2, 60_000);
    await coord.waitStatus((x) => x.state === 'serving' && x.plan.devices.length === 2, 60_000);
    const again = await coord.client.generate(PROMPTS[1]!, { maxTokens: 24, sampling: GREEDY });
    assert.deepEqual(again.tokens, refs[1]!.tokens);
  });

  test('a request with no output yet when its worker is lost waits for the re-plan instead of failing', async () => {
    const victim = await readyHealth(workers[0]!.client);
    const { long, second } = killWhileAnotherArrives(coord.client, victim.rpc_server_pid, PROMPTS[2]!);
    assert.equal((await long).tokens.length, 480, 'the request in flight went on too');
    const out = await second();
    // Decoded beside the resumed request's prefill: the same greedy tokens, near ties aside.
    assertGreedyMatches(out.tokens, refs[2]!, 'the waiting request ran after the re-plan');
    await coord.waitStatus();
  });

  test("with one worker, a request with no output yet rides out the restart of that worker's rpc server", async () => {
    const solo = await startWorker(['--name', 'w-solo'], { token });
    const c = await startCoordinator(model, [solo.control], [], { token });
    try {
      const victim = await readyHealth(solo.client);
      const { long, second } = killWhileAnotherArrives(c.client, victim.rpc_server_pid, PROMPTS[1]!);
      // The re-plan right after the loss finds no worker; the requests wait until the worker is back.
      assert.equal((await long).tokens.length, 480, 'the request in flight went on');
      assertGreedyMatches((await second()).tokens, refs[1]!, 'the waiting request ran once the worker was back');
    } finally {
      await c.stop();
      await solo.stop();
    }
  });

  test('the token never reaches logs, process titles or status', async () => {
    const s = await coord.client.getStatus();
    assertNoToken(JSON.stringify(s), token, 'GetStatus');
    assertNoToken(coord.logs(), token, "the coordinator's output");
    for (const w of workers) {
      assertNoToken(w.logs(), token, `worker ${w.control}'s log`);
      assertNoToken(JSON.stringify(await w.client.getInfo()), token, 'GetInfo');
    }
    const titles = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assertNoToken(titles, token, 'the process list');
    // The coordinator's stdout is not a terminal here: the join command names no token.
    assert.match(coord.logs(), /To add a machine to this cluster, run on it:\n\s+npx hearth worker --token <this cluster's token>/);
  });
});

describe('joining and protected mode', () => {
  let model: string;
  let dir: string;

  before(async () => {
    model = await testModel('tiny');
    dir = mkdtempSync(join(tmpdir(), 'hearth-secure-'));
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs the CLI to its exit (or kills it after `ms`), with its output. */
  async function run(args: string[], ms = 20_000, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
    const child = runCli(args, { env: { HEARTH_TOKEN: '', ...env } });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    return { code, out };
  }

  test('hearth token prints a new token on one line', async () => {
    const { code, out } = await run(['token']);
    assert.equal(code, 0);
    assert.match(out, /^hearth1_[A-Za-z0-9_-]{43}\n$/);
  });

  test('a worker on 0.0.0.0 without a token refuses to start and says what to add', async () => {
    const { code, out } = await run(['worker', '--host', '0.0.0.0', '--rpc-port', '1', '--control-port', '2', '--no-mdns', '--state-dir', join(dir, 's')]);
    assert.notEqual(code, 0);
    assert.match(out, /refusing to serve on 0\.0\.0\.0 without a cluster token/);
    assert.match(out, /--token-file/);
    assert.match(out, /--insecure/);
  });

  test('--insecure starts the open worker with a warning', async () => {
    const w = await startWorker(['--insecure'], { host: '0.0.0.0' });
    try {
      assert.match(w.logs(), /has no authentication/);
      assert.equal((await w.client.getInfo()).link.secure, false);
    } finally {
      await w.stop();
    }
  });

  test('coordinator APIs on 0.0.0.0 need API keys; with a key, gRPC wants it too', async () => {
    const refused = await run(['coordinator', '--model', model, '--host', '0.0.0.0', '--no-mdns', '--grpc-port', '0', '--http-port', '0']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.out, /refusing to serve the APIs on 0\.0\.0\.0 without API keys/);

    const key = 'k-' + newToken().slice(8, 30);
    const coord = await startCoordinator(model, [], ['--api-key', key], { waitServing: false, apiKey: key });
    try {
      await coord.waitStatus((s) => s.state === 'degraded');
      const { CoordinatorClient } = await import('../../coordinator/client.js');
      for (const bad of [null, 'wrong-key-123']) {
        const client = new CoordinatorClient(coord.address, { apiKey: bad });
        try {
          await assert.rejects(client.getStatus(), (e) => e instanceof HearthError && e.code === ErrorCode.Unauthenticated && (bad === null ? /missing API key/ : /invalid API key/).test(e.message));
        } finally {
          client.close();
        }
      }
      assertNoToken(coord.logs(), key, "the coordinator's log");
    } finally {
      await coord.stop();
    }
  });

  test('on a terminal, the coordinator prints the exact join command, token included', async () => {
    const token = newToken();
    const tokenFile = join(dir, 'cluster.token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    // `script` gives the coordinator a terminal; it stops after the line is out.
    const command = [process.execPath, '--import', 'tsx', CLI, 'coordinator', '--model', model, '--no-mdns', '--local-device', 'off', '--grpc-port', '0', '--http-port', '0', '--token-file', tokenFile]
      .map((a) => `'${a}'`)
      .join(' ');
    const child = spawnChild('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor('the join command', async () => /npx hearth worker --token \S+/.test(out), 20_000);
      assert.ok(out.includes(`npx hearth worker --token ${token}`), out);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
