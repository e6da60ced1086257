// A worker's authenticated entrance: a TLS 1.3 PSK server on a public port that, only after a
// completed handshake, joins the connection to a service bound to 127.0.0.1 (the ggml-rpc-server, or
// the gRPC control service). Nothing from an unauthenticated peer ever reaches that service.
import { connect, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { joinSockets } from './pipe.js';
import { serverTlsOptions, type LinkKind } from './tls.js';
import type { ClusterSecret } from './token.js';

export interface GatewayStats {
  /** Connections that proved the key and were joined to the service. */
  accepted: number;
  /** Connections refused: wrong or missing token, not TLS, timed out in the handshake. */
  refused: number;
  /** Of the refused: a client that offered a key or identity of another cluster. */
  tokenMismatches: number;
}

const REFUSAL_LOG_EVERY_MS = 10_000;

/**
 * When each coordinator (by address) last sent anything on its control link. A pulled cable sends no
 * reset, and llama.cpp's server serves one client at a time: an rpc link whose coordinator has gone
 * silent on the control link (heartbeats and HTTP/2 pings come every second or two) is cut, so the
 * server is free again when the coordinator comes back, instead of holding a dead connection until
 * TCP gives up on it.
 */
export class PeerActivity {
  readonly #last = new Map<string, number>();

  saw(peer: string): void {
    this.#last.set(peer, Date.now());
  }

  lastSeen(peer: string): number {
    return this.#last.get(peer) ?? 0;
  }
}

/**
 * `record`: note each peer's traffic (the control gateway). `watch`: cut a link whose peer was silent
 * there, and on the link itself, for `staleAfterMs` (the rpc gateway).
 */
export type GatewayActivity = { record: PeerActivity } | { watch: PeerActivity; staleAfterMs: number };

/**
 * Where a joined connection goes: a fixed local service, or where a router sends it after reading its
 * first bytes (worker/rpc-router.ts): a seat of its own, or, for a peer link from another worker, that
 * worker's chosen server. null: not for this port, close it.
 */
export type GatewayTarget =
  | { host: string; port: number }
  | { route(socket: Socket): Promise<{ kind: 'seat' | 'peer'; endpoint: { host: string; port: number }; release(): void } | null> };

export class SecureGateway {
  readonly kind: LinkKind;
  readonly #server: Server;
  readonly #log: Logger;
  readonly #target: GatewayTarget;
  readonly #open = new Map<Socket, { peer: string; lastData: number; watched: boolean }>();
  readonly #activity: GatewayActivity | null;
  #staleTimer: NodeJS.Timeout | null = null;
  readonly stats: GatewayStats = { accepted: 0, refused: 0, tokenMismatches: 0 };
  #refusedSinceLog = 0;
  #lastRefusalLog = 0;

  constructor(o: {
    secret: ClusterSecret;
    kind: LinkKind;
    target: GatewayTarget;
    log: Logger;
    handshakeTimeoutMs?: number;
    activity?: GatewayActivity;
  }) {
    this.kind = o.kind;
    this.#log = o.log;
    this.#target = o.target;
    this.#activity = o.activity ?? null;
    this.#server = createServer(serverTlsOptions(o.secret, o.kind, o.handshakeTimeoutMs ?? 5000), (tls) => this.#join(tls));
    this.#server.on('tlsClientError', (e: NodeJS.ErrnoException, socket: TLSSocket) => this.#refused(e, socket));
    // A raw TCP error before TLS starts (a reset during the handshake) lands here; it is a refusal too.
    this.#server.on('connection', (socket: Socket) => socket.on('error', () => undefined));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) =>
        reject(
          new HearthError(
            ErrorCode.FailedPrecondition,
            e.code === 'EADDRINUSE'
              ? `${this.kind} port ${port} on ${host} is already in use; choose another with --${this.kind}-port`
              : `cannot listen on ${host}:${port} for the secure ${this.kind} link: ${e.message}`,
          ),
        );
      this.#server.once('error', onError);
      this.#server.listen({ host, port, exclusive: true }, () => {
        this.#server.off('error', onError);
        const addr = this.#server.address();
        if (this.#activity && 'watch' in this.#activity) {
          this.#staleTimer = setInterval(() => this.#cutStale(), 1000);
          this.#staleTimer.unref();
        }
        resolve(typeof addr === 'object' && addr ? addr.port : port);
      });
    });
  }

  /**
   * Stops listening and cuts every joined connection; `graceMs`: first lets them end on their own for
   * that long (a link whose local service closed ends once its last bytes are out). Idempotent.
   */
  async close(graceMs = 0): Promise<void> {
    if (this.#staleTimer) clearInterval(this.#staleTimer);
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (graceMs > 0 && this.#open.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      // A socket leaves #open when it closes: every one here is still open.
      const ended = [...this.#open.keys()].map((s) => new Promise((resolve) => s.once('close', resolve)));
      await Promise.race([Promise.all(ended), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    for (const s of this.#open.keys()) s.destroy();
    this.#open.clear();
    await closed;
  }

  #join(tls: TLSSocket): void {
    this.stats.accepted++;
    const target = this.#target;
    if (!('route' in target)) return this.#joinTo(tls, target, () => undefined, true);
    tls.pause();
    tls.on('error', () => undefined);
    // Until it is routed, the gateway holds the connection: close() cuts it too.
    const waiting = { peer: tls.remoteAddress ?? '', lastData: Date.now(), watched: false };
    this.#open.set(tls, waiting);
    tls.once('close', () => this.#open.delete(tls));
    target.route(tls).then(
      (route) => {
        if (!route || tls.destroyed) {
          route?.release();
          tls.destroy();
          return;
        }
        // A peer link (another worker's rpc server) carries nothing between requests, and its worker
        // never speaks on this worker's control link: it is not cut as a silent coordinator's link is.
        this.#joinTo(tls, route.endpoint, () => route.release(), route.kind !== 'peer');
        tls.resume();
      },
      (e: unknown) => {
        this.#log.error({ err: messageOf(e) }, `no local ${this.kind} service for an authenticated connection; closing it`);
        tls.destroy();
      },
    );
  }

  /** `watched`: cut the link when its coordinator goes silent (see GatewayActivity). */
  #joinTo(tls: TLSSocket, target: { host: string; port: number }, ended: () => void, watched: boolean): void {
    const peer = `${tls.remoteAddress}:${tls.remotePort}`;
    const inner = connect(target);
    const entry = { peer: tls.remoteAddress ?? '', lastData: Date.now(), watched };
    this.#open.set(tls, entry);
    tls.once('close', () => this.#open.delete(tls));
    tls.setKeepAlive(true, 1000);
    tls.on('data', () => {
      entry.lastData = Date.now();
      if (this.#activity && 'record' in this.#activity) this.#activity.record.saw(entry.peer);
    });
    joinSockets(tls, inner, (side, err) => {
      ended();
      if (err && side === 'inner') this.#log.warn({ peer, err: messageOf(err) }, `the local ${this.kind} service did not take the connection`);
    });
    this.#log.debug({ peer, kind: this.kind }, 'authenticated connection joined');
  }

  #cutStale(): void {
    const a = this.#activity;
    if (!a || !('watch' in a)) return;
    const now = Date.now();
    for (const [tls, entry] of this.#open) {
      if (!entry.watched) continue;
      const heard = Math.max(entry.lastData, a.watch.lastSeen(entry.peer));
      if (now - heard < a.staleAfterMs) continue;
      this.#log.warn(
        { peer: entry.peer, silentMs: now - heard },
        `the coordinator at ${entry.peer} went silent for ${Math.round((now - heard) / 1000)} s; cutting its ${this.kind} link so the server is free when it returns`,
      );
      tls.destroy();
    }
  }

  #refused(e: NodeJS.ErrnoException, socket: TLSSocket): void {
    this.stats.refused++;
    const mismatch = /BINDER|NO_SUITABLE_SIGNATURE|PSK|HANDSHAKE_FAILURE/.test(e.code ?? '');
    if (mismatch) this.stats.tokenMismatches++;
    this.#refusedSinceLog++;
    socket.destroy();
    // A scan or a fuzzer would otherwise write one line per attempt: one line per window, with counts.
    const now = Date.now();
    if (now - this.#lastRefusalLog < REFUSAL_LOG_EVERY_MS) return;
    this.#lastRefusalLog = now;
    const why = mismatch ? 'token mismatch (another cluster, or a wrong token)' : e.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version|http request|unknown protocol/i.test(e.message) ? 'not a hearth secure link (plain traffic, no token?)' : (e.code ?? messageOf(e));
    this.#log.warn(
      { peer: socket.remoteAddress ?? null, kind: this.kind, refusedSinceLastLine: this.#refusedSinceLog, refusedTotal: this.stats.refused },
      `refused a connection on the ${this.kind} port: ${why}`,
    );
    this.#refusedSinceLog = 0;
  }
}
