// Peer links in a closed cluster. In tensor mode this worker's rpc server exchanges partial sums
// directly with the other workers' servers; llama.cpp's server speaks plain TCP, and a closed worker's
// public rpc port takes only TLS-PSK. So a coordinator asks this worker to open a peer link to another
// worker's rpc endpoint: a listener on 127.0.0.1 here (a SecureRelay, as the coordinator's own links)
// that carries each connection over TLS to that worker's gateway, where its PEER_HELLO is routed to
// the right server (rpc-router.ts). The server here is given the relay's address to dial.
//
// Relays are keyed by the remote endpoint and reused. One is closed when it has carried no connection,
// been asked for, or had an engine on this worker (an rpc server of this worker with a client) for
// PEER_IDLE_MS: a peer link is only ever dialled by a server that serves an engine, which holds its
// connection for the whole load (however long the weights take to arrive), so a relay outlives the
// engines that may use it by that long, and no longer.
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { parseEndpoint } from '../native/rpc-probe.js';
import { SecureRelay } from '../link/relay.js';
import type { ClusterSecret } from '../link/token.js';

/** How long an unused relay stays open after its last use, its last ask, and the last engine on this worker. */
export const PEER_IDLE_MS = 60_000;
/** How often relays are looked at. */
const SWEEP_MS = 5000;
/** More relays than this means something asks for addresses no cluster has: refuse instead of growing. */
const MAX_PEER_LINKS = 64;

interface PeerLink {
  relay: SecureRelay;
  lastUsed: number;
}

export interface PeerLinkOptions {
  /** The cluster's secret, or null for an open worker (no relay: a peer is dialled where it is). */
  secret: ClusterSecret | null;
  /** Connections of engines to this worker's rpc servers now (SeatPool.inUse). */
  enginesConnected: () => number;
  log: Logger;
  idleMs?: number;
  sweepMs?: number;
}

export class PeerLinks {
  readonly #secret: ClusterSecret | null;
  readonly #enginesConnected: () => number;
  readonly #log: Logger;
  readonly #idleMs: number;
  readonly #links = new Map<string, Promise<PeerLink>>();
  readonly #timer: NodeJS.Timeout | null = null;
  #lastEngine = Date.now();
  #closed = false;

  constructor(o: PeerLinkOptions) {
    this.#secret = o.secret;
    this.#enginesConnected = o.enginesConnected;
    this.#log = o.log;
    this.#idleMs = o.idleMs ?? PEER_IDLE_MS;
    if (this.#secret) {
      this.#timer = setInterval(() => void this.#sweep(), o.sweepMs ?? SWEEP_MS);
      this.#timer.unref();
    }
  }

  /** Relays open now. */
  get size(): number {
    return this.#links.size;
  }

  /**
   * Where this worker's rpc server dials to reach the rpc endpoint `remote` (another worker's public
   * host:port): the endpoint itself in an open cluster; in a closed one, a relay here, opened (proving
   * the key with one handshake) or reused. A LinkError says why the remote cannot be reached.
   */
  async open(remote: string): Promise<string> {
    const { host, port } = parseEndpoint(remote);
    const key = `${host}:${port}`;
    if (!this.#secret) return key;
    if (this.#closed) throw new HearthError(ErrorCode.Unavailable, 'the worker is stopping');
    let link = this.#links.get(key);
    if (!link) {
      if (this.#links.size >= MAX_PEER_LINKS) {
        throw new HearthError(ErrorCode.ResourceExhausted, `this worker already holds ${this.#links.size} peer links; refusing one to ${key} (they close after ${this.#idleMs / 1000} s unused)`);
      }
      link = this.#openRelay(key);
      this.#links.set(key, link);
      link.catch(() => this.#links.delete(key));
    }
    const l = await link;
    l.lastUsed = Date.now();
    return l.relay.endpoint;
  }

  /** Closes every relay. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    const links = await Promise.allSettled(this.#links.values());
    this.#links.clear();
    await Promise.all(links.map((l) => (l.status === 'fulfilled' ? l.value.relay.close() : undefined)));
  }

  async #openRelay(remote: string): Promise<PeerLink> {
    const relay = await SecureRelay.open({ secret: this.#secret!, kind: 'rpc', remote });
    try {
      await relay.check();
    } catch (e) {
      await relay.close();
      this.#log.warn({ remote, err: messageOf(e) }, `cannot open a peer link to ${remote}`);
      throw e;
    }
    relay.on('broken', (reason) => this.#log.debug({ remote, reason }, 'a peer link connection ended on the far side'));
    if (this.#closed) {
      await relay.close();
      throw new HearthError(ErrorCode.Unavailable, 'the worker is stopping');
    }
    this.#log.info({ remote, local: relay.endpoint }, 'peer link ready');
    return { relay, lastUsed: Date.now() };
  }

  async #sweep(): Promise<void> {
    const now = Date.now();
    if (this.#enginesConnected() > 0) this.#lastEngine = now;
    for (const [key, pending] of this.#links) {
      const link = await pending.catch(() => null);
      if (!link || this.#links.get(key) !== pending) continue;
      if (link.relay.connections > 0) link.lastUsed = now;
      const idle = now - Math.max(link.lastUsed, this.#lastEngine);
      if (idle < this.#idleMs) continue;
      this.#links.delete(key);
      await link.relay.close();
      this.#log.info({ remote: key, local: link.relay.endpoint, idleMs: idle }, 'closed an unused peer link');
    }
  }
}
