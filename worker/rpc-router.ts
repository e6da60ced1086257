// Where a connection to the worker's public rpc port goes. A coordinator's engine (its first bytes are
// HELLO) gets a server of its own, a seat (seats.ts). Another worker's rpc server, in tensor mode,
// opens a peer link to exchange partial sums with one particular server of this worker: its first
// bytes are PEER_HELLO, naming that server by its peer id (the server's own loopback listen port), and
// it is joined straight to that server, without a seat. Anything else is closed here and never reaches
// llama.cpp's server.
//
// PEER_HELLO (ggml-rpc, protocol 7.1): u8 21 | u64 LE 24 | u64 session | u32 from_rank | u32 to_rank |
// u64 target_peer_id, 33 bytes in all; then raw tensor data both ways.
import { connect, type Socket } from 'node:net';

import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { joinSockets } from '../link/pipe.js';
import { RpcCommand } from '../native/rpc-protocol.js';
import type { Seat } from './seats.js';

const PEER_HELLO_PAYLOAD = 24;
export const PEER_HELLO_SIZE = 1 + 8 + PEER_HELLO_PAYLOAD;

/** How long a connection may stay silent before its first byte: llama.cpp's client says HELLO at once. */
const FIRST_BYTE_MS = 30_000;
/** How long the rest of a PEER_HELLO may take once its first byte came. */
const PEER_HEADER_MS = 2000;
/** Refusals are logged at warn at most once per window (a scan would write a line per attempt), each at debug. */
const REFUSAL_LOG_EVERY_MS = 10_000;

export interface PeerHello {
  session: bigint;
  fromRank: number;
  toRank: number;
  targetPeerId: bigint;
}

export function encodePeerHello(h: PeerHello): Buffer {
  const out = Buffer.alloc(PEER_HELLO_SIZE);
  out.writeUInt8(RpcCommand.PeerHello, 0);
  out.writeBigUInt64LE(BigInt(PEER_HELLO_PAYLOAD), 1);
  out.writeBigUInt64LE(h.session, 9);
  out.writeUInt32LE(h.fromRank, 17);
  out.writeUInt32LE(h.toRank, 21);
  out.writeBigUInt64LE(h.targetPeerId, 25);
  return out;
}

/** The header at the start of `b` (at least PEER_HELLO_SIZE bytes), or why it is not one. */
export function decodePeerHello(b: Buffer): PeerHello | { refused: string } {
  if (b.length < PEER_HELLO_SIZE) return { refused: `a PEER_HELLO of ${b.length} bytes (${PEER_HELLO_SIZE} expected)` };
  if (b.readUInt8(0) !== RpcCommand.PeerHello) return { refused: `command ${b.readUInt8(0)} is not PEER_HELLO` };
  const size = b.readBigUInt64LE(1);
  if (size !== BigInt(PEER_HELLO_PAYLOAD)) return { refused: `a PEER_HELLO payload of ${size} bytes (${PEER_HELLO_PAYLOAD} expected)` };
  return { session: b.readBigUInt64LE(9), fromRank: b.readUInt32LE(17), toRank: b.readUInt32LE(21), targetPeerId: b.readBigUInt64LE(25) };
}

/** Where a connection goes: a seat of its own, or straight to one of this worker's servers (a peer link). */
export type RpcRoute =
  | { kind: 'seat'; endpoint: { host: string; port: number }; release(): void }
  | { kind: 'peer'; endpoint: { host: string; port: number }; release(): void; hello: PeerHello };

/** What the router needs of the seats: a seat, and the loopback ports of the servers running now. */
export interface SeatSource {
  take(): Promise<Seat>;
  serverPorts(): ReadonlySet<number>;
}

export class RpcRouter {
  readonly #seats: SeatSource;
  readonly #log: Logger;
  #refusedSinceLog = 0;
  #lastRefusalLog = 0;

  constructor(seats: SeatSource, log: Logger) {
    this.#seats = seats;
    this.#log = log;
  }

  /**
   * Reads how `socket` starts and puts those bytes back (the server it is joined to reads them
   * first), then finds where it goes. null: the connection is not for this port, or went away
   * first; the caller closes it. Works on a TLS socket as well (behind the secure gateway).
   */
  async route(socket: Socket): Promise<RpcRoute | null> {
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const head = await readAtLeast(socket, 1, FIRST_BYTE_MS, Buffer.alloc(0));
    if (head.length === 0) {
      this.#log.debug({ peer }, 'an rpc connection closed or stayed silent before its first byte');
      return null;
    }
    const command = head[0]!;
    if (command === RpcCommand.Hello) {
      socket.unshift(head);
      const seat = await this.#seats.take();
      return { kind: 'seat', endpoint: seat.endpoint, release: () => seat.release() };
    }
    if (command !== RpcCommand.PeerHello) return this.#refuse(peer, `it began with byte ${command}, neither HELLO (14) nor PEER_HELLO (21)`);
    const header = await readAtLeast(socket, PEER_HELLO_SIZE, PEER_HEADER_MS, head);
    const hello = decodePeerHello(header);
    if ('refused' in hello) return this.#refuse(peer, header.length < PEER_HELLO_SIZE ? `its PEER_HELLO stopped after ${header.length} of ${PEER_HELLO_SIZE} bytes` : hello.refused);
    const ports = this.#seats.serverPorts();
    const target = hello.targetPeerId <= 65535n ? Number(hello.targetPeerId) : -1;
    if (!ports.has(target)) {
      return this.#refuse(peer, `its PEER_HELLO names peer ${hello.targetPeerId}, which is none of this worker's rpc servers (${[...ports].join(', ') || 'none running'})`, {
        session: String(hello.session),
        fromRank: hello.fromRank,
        toRank: hello.toRank,
      });
    }
    socket.unshift(header);
    this.#log.debug({ peer, target, session: String(hello.session), fromRank: hello.fromRank, toRank: hello.toRank }, 'peer link joined to its rpc server');
    return { kind: 'peer', endpoint: { host: '127.0.0.1', port: target }, release: () => undefined, hello };
  }

  /** Joins `client` to where it goes for as long as it stays connected (the open cluster's rpc port), or closes it. */
  async join(client: Socket): Promise<void> {
    client.pause();
    let route: RpcRoute | null;
    try {
      route = await this.route(client);
    } catch (e) {
      this.#log.error({ err: messageOf(e) }, 'could not start an rpc server for a connection; closing it');
      route = null;
    }
    if (!route) {
      client.destroy();
      return;
    }
    if (client.destroyed) return route.release();
    const inner = connect(route.endpoint);
    joinSockets(client, inner, (side, error) => {
      route.release();
      if (error && side === 'inner') this.#log.warn({ target: route.endpoint.port, kind: route.kind, err: messageOf(error) }, 'the local rpc server did not take the connection');
    });
    client.resume();
  }

  #refuse(peer: string, why: string, fields: Record<string, unknown> = {}): null {
    this.#refusedSinceLog++;
    this.#log.debug({ peer, ...fields }, `closed an rpc connection: ${why}`);
    const now = Date.now();
    if (now - this.#lastRefusalLog >= REFUSAL_LOG_EVERY_MS) {
      this.#lastRefusalLog = now;
      this.#log.warn({ peer, ...fields, refusedSinceLastLine: this.#refusedSinceLog }, `closed a connection on the rpc port: ${why}`);
      this.#refusedSinceLog = 0;
    }
    return null;
  }
}

/**
 * `start` followed by what `socket` sends until there are at least `n` bytes, it ends, or `timeoutMs`
 * passes; the socket is left paused. Fewer than `n` bytes back: it ended or timed out.
 */
function readAtLeast(socket: Socket, n: number, timeoutMs: number, start: Buffer): Promise<Buffer> {
  if (start.length >= n) return Promise.resolve(start);
  return new Promise<Buffer>((resolve) => {
    const chunks = [start];
    let got = start.length;
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', done);
      socket.off('close', done);
      socket.off('error', done);
      socket.pause();
      resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= n) done();
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', onData);
    socket.once('end', done);
    socket.once('close', done);
    socket.once('error', done);
    socket.resume();
  });
}
