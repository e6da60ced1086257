// The coordinator's end of a secure link: a listener on 127.0.0.1 that a local client (llama.cpp's RPC
// client in the engine, a gRPC client, a probe) connects to as if it were the worker, and that carries
// each connection over TLS 1.3 PSK to the worker's public port. It is also where the coordinator
// sees a link break (the worker's side closing or failing under a live connection) and where the
// bytes of a load are counted.
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';

import { ErrorCode, HearthError } from '../common/errors.js';
import { parseEndpoint } from '../native/rpc-probe.js';
import { joinSockets } from './pipe.js';
import { afterPskHandshake, clientTlsOptions, describeLinkError, type LinkKind } from './tls.js';
import type { ClusterSecret } from './token.js';

export interface RelayEvents {
  /** The worker's side of a live connection ended or failed first: the link is broken. */
  broken: [string];
}

export interface RelayOptions {
  secret: ClusterSecret;
  kind: LinkKind;
  /** The worker's public address for this link, host:port (IPv4). */
  remote: string;
  connectTimeoutMs?: number;
}

/** A failed handshake or connection, with what kind of failure it was. */
export class LinkError extends HearthError {
  readonly kind: 'token' | 'protocol' | 'network';
  constructor(kind: 'token' | 'protocol' | 'network', message: string) {
    super(kind === 'network' ? ErrorCode.Unavailable : ErrorCode.FailedPrecondition, message, { detail: kind });
    this.kind = kind;
  }
}

export class SecureRelay extends EventEmitter<RelayEvents> {
  readonly kind: LinkKind;
  readonly remote: string;
  readonly #secret: ClusterSecret;
  readonly #connectTimeoutMs: number;
  readonly #server: Server;
  readonly #live = new Set<Socket>();
  #endpoint = '';
  #closed = false;
  /** Plaintext bytes carried to the worker, over every connection so far. */
  bytesSent = 0;

  private constructor(o: RelayOptions) {
    super();
    this.kind = o.kind;
    this.remote = o.remote;
    this.#secret = o.secret;
    this.#connectTimeoutMs = o.connectTimeoutMs ?? 3000;
    this.#server = createServer({ pauseOnConnect: true }, (local) => this.#relay(local));
  }

  /** Listens on 127.0.0.1 (an ephemeral port); `endpoint` is where local clients connect. */
  static async open(o: RelayOptions): Promise<SecureRelay> {
    parseEndpoint(o.remote);
    const relay = new SecureRelay(o);
    await new Promise<void>((resolve, reject) => {
      relay.#server.once('error', reject);
      relay.#server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = relay.#server.address();
    relay.#endpoint = `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
    return relay;
  }

  /** 127.0.0.1:port of the local listener. */
  get endpoint(): string {
    return this.#endpoint;
  }

  /** Local connections carried now. */
  get connections(): number {
    return this.#live.size;
  }

  /** One handshake with the worker and nothing else: resolves when it proves the key, else a LinkError. */
  async check(timeoutMs = this.#connectTimeoutMs): Promise<void> {
    const tls = await this.#dial(timeoutMs);
    tls.on('error', () => undefined);
    // end(), not destroy(): our Finished must reach the worker, or it counts a refused handshake.
    tls.end();
    setTimeout(() => tls.destroy(), 1000).unref();
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#live) s.destroy();
    this.#live.clear();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #dial(timeoutMs: number): Promise<TLSSocket> {
    const { host, port } = parseEndpoint(this.remote);
    return new Promise<TLSSocket>((resolve, reject) => {
      const tls = tlsConnect({ host, port, ...clientTlsOptions(this.#secret, this.kind) });
      const timer = setTimeout(() => {
        const e = new Error(`no answer within ${timeoutMs} ms`) as NodeJS.ErrnoException;
        e.code = 'LINK_TIMEOUT';
        tls.destroy(e);
      }, timeoutMs);
      tls.once('secureConnect', () => {
        clearTimeout(timer);
        const wrong = afterPskHandshake(tls, this.kind);
        if (wrong) {
          tls.destroy();
          reject(new LinkError('protocol', `secure link to ${this.remote}: ${wrong}`));
          return;
        }
        tls.removeAllListeners('error');
        // A cut cable shows as silence: keepalive probes make the kernel notice an idle dead link.
        tls.setKeepAlive(true, 1000);
        resolve(tls);
      });
      tls.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const d = describeLinkError(e);
        reject(new LinkError(d.kind, `secure link to ${this.remote}: ${d.message}`));
      });
    });
  }

  #relay(local: Socket): void {
    if (this.#closed) {
      local.destroy();
      return;
    }
    this.#live.add(local);
    local.once('close', () => this.#live.delete(local));
    local.on('error', () => undefined);
    this.#dial(this.#connectTimeoutMs).then(
      (tls) => {
        if (local.destroyed || this.#closed) {
          tls.destroy();
          return;
        }
        joinSockets(
          tls,
          local,
          (first, error) => {
            if (first === 'outer' && !this.#closed) {
              this.emit('broken', error ? `the link to ${this.remote} failed (${error.message})` : `the worker at ${this.remote} closed the link`);
            }
          },
          { toOuter: (n) => (this.bytesSent += n) },
        );
        local.resume();
      },
      // The local client sees its connection close; admission classifies such failures with check().
      () => local.destroy(),
    );
  }
}
