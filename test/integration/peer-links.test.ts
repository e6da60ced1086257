// Peer links between workers (tensor mode's direct reduction): a connection to a worker's rpc port that
// starts with PEER_HELLO goes straight to the rpc server it names (by its loopback port), without a
// seat, open and behind the secure gateway; anything else that is not HELLO is closed; and with a
// token, OpenPeerLink gives a worker's rpc server a loopback relay to another worker's rpc port.
// Checked with real workers, raw TCP clients and the kernel's socket table (a server busy with its
// client leaves a new connection's bytes in its receive queue: there they can be counted).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { pino } from 'pino';
import { SecureGateway } from '../../link/gateway.js';
import { SecureRelay } from '../../link/relay.js';
import { ClusterSecret, newToken } from '../../link/token.js';
import { encodeHello, HELLO_RESPONSE_SIZE, parseVersion } from '../../native/rpc-protocol.js';
import { probeRpcServer } from '../../native/rpc-probe.js';
import { PeerLinks } from '../../worker/peer-links.js';
import { encodePeerHello, PEER_HELLO_SIZE } from '../../worker/rpc-router.js';
import { readyHealth, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

interface TcpSocket {
  localPort: number;
  remotePort: number;
  /** 'LISTEN', 'ESTABLISHED' or another state's hex code. */
  state: string;
  /** Bytes received and not read by the process yet. */
  rxQueue: number;
  inode: number;
}

/** This machine's IPv4 TCP sockets, from /proc/net/tcp. */
function tcpSockets(): TcpSocket[] {
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l.trim())
    .map((l) => {
      const f = l.trim().split(/\s+/);
      const port = (addr: string) => parseInt(addr.split(':')[1]!, 16);
      const st = f[3]!;
      return {
        localPort: port(f[1]!),
        remotePort: port(f[2]!),
        state: st === '0A' ? 'LISTEN' : st === '01' ? 'ESTABLISHED' : st,
        rxQueue: parseInt(f[4]!.split(':')[1]!, 16),
        inode: Number(f[9]),
      };
    });
}

/** The TCP ports process `pid` listens on. */
function listenPorts(pid: number): number[] {
  const inodes = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return tcpSockets()
    .filter((s) => s.state === 'LISTEN' && inodes.has(s.inode))
    .map((s) => s.localPort);
}

/** The loopback ports the worker's rpc servers (its child processes) listen on. */
function serverPorts(worker: WorkerHandle): number[] {
  const children = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === worker.process.pid;
      } catch {
        return false;
      }
    });
  return children.flatMap((pid) => {
    try {
      return listenPorts(Number(pid));
    } catch {
      return [];
    }
  });
}

/** The worker's primary rpc server's loopback port: its peer id. */
async function primaryPort(worker: WorkerHandle): Promise<number> {
  const pid = (await readyHealth(worker.client)).rpc_server_pid;
  const ports = listenPorts(pid);
  assert.equal(ports.length, 1, `the rpc server listens on one port: ${ports.join(', ')}`);
  return ports[0]!;
}

/** A client that said HELLO and got its answer: the server it reached serves it until it closes. */
async function heldClient(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 8 + HELLO_RESPONSE_SIZE) resolve();
    });
    socket.write(encodeHello());
  });
  return socket;
}

/** A raw connection that sends `bytes`; `closed` resolves when the far side closes it. */
async function rawClient(port: number, bytes: Buffer): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(bytes);
  return { socket, closed };
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return r;
}

/**
 * Waits until a connection to `port` holds `bytes` unread bytes: the busy server that listens there
 * accepted none of them yet, so they came over a connection of its own (its client holds it).
 */
async function bytesWaitingAt(port: number, bytes: number): Promise<void> {
  await waitFor(`${bytes} bytes waiting at port ${port}`, async () => tcpSockets().some((s) => s.state === 'ESTABLISHED' && s.localPort === port && s.rxQueue === bytes), 5000, 50);
}

/** A PEER_HELLO and some tensor data after it. */
function peerOpening(target: number): Buffer {
  return Buffer.concat([encodePeerHello({ session: 0x1234_5678_9abcn, fromRank: 1, toRank: 0, targetPeerId: BigInt(target) }), Buffer.from('partial sums')]);
}

/**
 * How many of a peer link's opening bytes wait unread at its server. A server that speaks PEER_HELLO
 * itself (protocol 7.1 and later) reads the header at once, while it serves its client, and keeps the
 * connection for the COMM_INIT that expects it: the data after the header waits. An older one reads
 * nothing while it serves its client: everything waits.
 */
async function waitingBytes(worker: WorkerHandle, opening: Buffer): Promise<number> {
  const v = parseVersion((await worker.client.getInfo()).build.rpc_protocol);
  const readsPeers = v !== null && (v.major > 7 || (v.major === 7 && v.minor >= 1));
  return readsPeers ? opening.length - PEER_HELLO_SIZE : opening.length;
}

/** The checks every rpc port must pass: `port` is the public port, or a local relay that leads to one. */
async function checkRouting(worker: WorkerHandle, port: number): Promise<void> {
  const target = await primaryPort(worker);
  const started = () => worker.logs().match(/another engine connected: started an rpc server/g)?.length ?? 0;
  const before = started();
  const first = await heldClient(port);
  try {
    const opening = peerOpening(target);
    const peer = await rawClient(port, opening);
    try {
      await bytesWaitingAt(target, await waitingBytes(worker, opening));
      assert.ok(!(await settlesWithin(peer.closed, 300)), 'the peer link stays open');
      assert.equal(started(), before, 'no rpc server was started for the peer link: it took no seat');
    } finally {
      peer.socket.destroy();
    }

    const unknown = await rawClient(port, encodePeerHello({ session: 1n, fromRank: 1, toRank: 0, targetPeerId: BigInt(worker.rpcPort) }));
    assert.ok(await settlesWithin(unknown.closed, 3000), 'a PEER_HELLO naming no rpc server of the worker is closed');
    const huge = await rawClient(port, encodePeerHello({ session: 1n, fromRank: 1, toRank: 0, targetPeerId: 2n ** 40n + BigInt(target) }));
    assert.ok(await settlesWithin(huge.closed, 3000), 'a peer id beyond the port range is closed');
    const garbage = await rawClient(port, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    assert.ok(await settlesWithin(garbage.closed, 3000), 'neither HELLO nor PEER_HELLO: closed');
    const short = await rawClient(port, peerOpening(target).subarray(0, 10));
    assert.ok(!(await settlesWithin(short.closed, 500)), 'a PEER_HELLO is given a moment to arrive whole');
    assert.ok(await settlesWithin(short.closed, 4000), 'a PEER_HELLO that stops halfway is closed');
    const badSize = Buffer.from(peerOpening(target));
    badSize.writeBigUInt64LE(25n, 1);
    const wrong = await rawClient(port, badSize);
    assert.ok(await settlesWithin(wrong.closed, 3000), 'a PEER_HELLO whose payload is not 24 bytes is closed');
    assert.equal(started(), before, 'none of them took a seat');

    // A second engine gets a server of its own: a peer link may name that one too.
    const second = await heldClient(port);
    try {
      const extra = await waitFor('the second server', async () => serverPorts(worker).find((p) => p !== target), 5000, 50);
      const toExtra = peerOpening(extra);
      const peer = await rawClient(port, toExtra);
      try {
        await bytesWaitingAt(extra, await waitingBytes(worker, toExtra));
        assert.ok(!(await settlesWithin(peer.closed, 300)), 'the peer link stays open');
      } finally {
        peer.socket.destroy();
      }
    } finally {
      second.destroy();
    }
  } finally {
    first.destroy();
  }
  // An engine is served as before: a HELLO gets a server.
  const probe = await probeRpcServer(`127.0.0.1:${port}`, { timeoutMs: 8000 });
  assert.ok(probe.devices.length >= 1);
}

describe('peer links into an open worker', () => {
  let worker: WorkerHandle;
  before(async () => {
    worker = await startWorker(['--name', 'peer-open', '--log-level', 'debug']);
  });
  after(async () => {
    await worker?.stop();
  });

  test("a PEER_HELLO reaches the rpc server it names without a seat, while another client holds that server; anything else is closed", async () => {
    await checkRouting(worker, worker.rpcPort);
    assert.match(worker.logs(), /none of this worker's rpc servers/);
    assert.match(worker.logs(), /neither HELLO \(14\) nor PEER_HELLO \(21\)/);
  });

  test('OpenPeerLink on an open worker: the rpc server dials the other worker where it is', async () => {
    assert.deepEqual(await worker.client.openPeerLink('10.1.2.3:50052'), { address: '10.1.2.3:50052' });
    await assert.rejects(worker.client.openPeerLink('no port'), (e) => e instanceof HearthError && e.code === ErrorCode.InvalidArgument);
  });
});

describe('peer links between closed workers', () => {
  const token = newToken();
  const secret = ClusterSecret.fromToken(token, 'flag');
  let a: WorkerHandle;
  let b: WorkerHandle;
  before(async () => {
    [a, b] = await Promise.all([startWorker(['--name', 'peer-a'], { token }), startWorker(['--name', 'peer-b', '--log-level', 'debug'], { token })]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test('behind the secure gateway, a PEER_HELLO reaches the rpc server it names; anything else is closed', async () => {
    const relay = await SecureRelay.open({ secret, kind: 'rpc', remote: `127.0.0.1:${b.rpcPort}` });
    try {
      await checkRouting(b, Number(relay.endpoint.split(':')[1]));
    } finally {
      await relay.close();
    }
  });

  test("OpenPeerLink: a loopback relay on worker A to worker B's rpc port, reused, that carries a PEER_HELLO to B's server", async () => {
    const { address } = await a.client.openPeerLink(`127.0.0.1:${b.rpcPort}`);
    assert.match(address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(address, `127.0.0.1:${b.rpcPort}`);
    assert.deepEqual(await a.client.openPeerLink(`127.0.0.1:${b.rpcPort}`), { address }, 'the relay is reused');
    assert.ok(listenPorts(a.process.pid!).includes(Number(address.split(':')[1])), 'worker A listens there');
    assert.match(a.logs(), /peer link ready/);

    const port = Number(address.split(':')[1]);
    const target = await primaryPort(b);
    const first = await heldClient(port);
    try {
      const opening = peerOpening(target);
      const peer = await rawClient(port, opening);
      try {
        await bytesWaitingAt(target, await waitingBytes(b, opening));
        assert.ok(!(await settlesWithin(peer.closed, 300)), 'the peer link stays open');
      } finally {
        peer.socket.destroy();
      }
    } finally {
      first.destroy();
    }
    assert.ok((await probeRpcServer(address, { timeoutMs: 8000 })).devices.length >= 1, 'an ordinary rpc client is carried to B too');
  });

  test('OpenPeerLink to an address that does not answer, or to an open worker, fails and says why', async () => {
    const nobody = createServer();
    await new Promise<void>((resolve) => nobody.listen(0, '127.0.0.1', () => resolve()));
    const free = (nobody.address() as { port: number }).port;
    await new Promise<void>((resolve) => nobody.close(() => resolve()));
    await assert.rejects(a.client.openPeerLink(`127.0.0.1:${free}`), (e) => e instanceof HearthError && e.code === ErrorCode.Unavailable && /connection refused/.test(e.message));

    const open = await startWorker(['--name', 'peer-open-target']);
    try {
      await assert.rejects(a.client.openPeerLink(`127.0.0.1:${open.rpcPort}`), (e) => e instanceof HearthError && /does not speak hearth's secure link/.test(e.message));
    } finally {
      await open.stop();
    }
  });
});

describe('the peer links a worker holds', () => {
  const secret = ClusterSecret.fromToken(newToken(), 'flag');
  const log = pino({ level: 'silent' });
  let echo: Server;
  let gateway: SecureGateway;
  let remote: string;
  before(async () => {
    echo = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', () => resolve()));
    gateway = new SecureGateway({ secret, kind: 'rpc', target: { host: '127.0.0.1', port: (echo.address() as { port: number }).port }, log });
    remote = `127.0.0.1:${await gateway.listen('127.0.0.1', 0)}`;
  });
  after(async () => {
    await gateway?.close();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  test('a relay lives while it carries a connection or an engine is on the worker, and closes when unused for the idle time', async () => {
    let engines = 1;
    const links = new PeerLinks({ secret, enginesConnected: () => engines, log, idleMs: 400, sweepMs: 50 });
    try {
      const address = await links.open(remote);
      assert.equal(await links.open(remote), address);
      assert.equal(links.size, 1);
      await new Promise((r) => setTimeout(r, 800));
      assert.equal(links.size, 1, 'kept while an engine is connected to the worker (a load may take long)');

      engines = 0;
      const c = connect(Number(address.split(':')[1]), '127.0.0.1');
      await new Promise<void>((resolve) => c.once('connect', () => resolve()));
      c.write('x');
      await new Promise<void>((resolve) => c.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 800));
      assert.equal(links.size, 1, 'kept while it carries a connection');
      c.destroy();

      await waitFor('the unused relay closed', async () => links.size === 0, 3000, 50);
      await assert.rejects(new Promise<void>((resolve, reject) => {
        const s = connect(Number(address.split(':')[1]), '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      }), /ECONNREFUSED/);
      const again = await links.open(remote);
      assert.match(again, /^127\.0\.0\.1:\d+$/, 'asked again, it opens anew');
    } finally {
      await links.close();
    }
    assert.equal(links.size, 0);
  });
});
