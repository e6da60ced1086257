// How the coordinator reaches its workers. Open: straight to the addresses they give. Closed (a
// cluster token): every control and rpc address goes through a local relay that carries it over
// TLS 1.3 PSK, so gRPC clients, probes and llama.cpp's RPC client dial 127.0.0.1 and never learn of
// the token. One relay per remote address, kept for the coordinator's life, so a worker's local
// endpoint is stable across re-plans.
import { EventEmitter } from 'node:events';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { SecureRelay } from '../link/relay.js';
import type { LinkKind } from '../link/tls.js';
import type { ClusterSecret } from '../link/token.js';
import type { PlanResult } from './planner/types.js';

export interface LinkEvents {
  /** A live connection to `endpoint` (a dial endpoint) broke on the worker's side. */
  broken: [endpoint: string, reason: string];
}

export interface WorkerLinks extends EventEmitter<LinkEvents> {
  readonly secure: boolean;
  /** The public cluster id, or null for an open coordinator. */
  readonly clusterId: string | null;
  /**
   * Where to dial a worker's `remote` address (host:port) for this kind of link. In a closed cluster
   * this proves the key with one handshake first: a LinkError says why it failed (token mismatch,
   * not a secure worker, unreachable).
   */
  dial(kind: LinkKind, remote: string): Promise<string>;
  /** The remote address behind a dial endpoint (itself when open). */
  remoteOf(endpoint: string): string;
  /** Plaintext bytes sent so far through the link of a dial endpoint, or null when not counted here. */
  bytesSent(endpoint: string): number | null;
  close(): Promise<void>;
}

/** A plan for people to read: each device's worker by its own address, not the local relay an engine dials. */
export function remotePlan<P extends PlanResult>(plan: P, links: Pick<WorkerLinks, 'remoteOf'>): P {
  if (!plan.fits) return plan;
  const remote = (e: string) => links.remoteOf(e);
  return { ...plan, rpcEndpoints: plan.rpcEndpoints.map(remote), devices: plan.devices.map((d) => ({ ...d, endpoint: d.endpoint && remote(d.endpoint) })) };
}

/** Open links without a cluster secret, authenticated relays with one. */
export function linksFor(secret: ClusterSecret | null, log: Logger): WorkerLinks {
  return secret ? new SecureLinks(secret, log.child({ part: 'link' })) : new OpenLinks();
}

export class OpenLinks extends EventEmitter<LinkEvents> implements WorkerLinks {
  readonly secure = false;
  readonly clusterId = null;

  async dial(_kind: LinkKind, remote: string): Promise<string> {
    return remote;
  }

  remoteOf(endpoint: string): string {
    return endpoint;
  }

  bytesSent(): null {
    return null;
  }

  async close(): Promise<void> {}
}

export class SecureLinks extends EventEmitter<LinkEvents> implements WorkerLinks {
  readonly secure = true;
  readonly #secret: ClusterSecret;
  readonly #log: Logger;
  readonly #relays = new Map<string, Promise<SecureRelay>>();
  readonly #byEndpoint = new Map<string, SecureRelay>();

  constructor(secret: ClusterSecret, log: Logger) {
    super();
    this.#secret = secret;
    this.#log = log;
  }

  get clusterId(): string {
    return this.#secret.clusterId;
  }

  async dial(kind: LinkKind, remote: string): Promise<string> {
    const relay = await this.#relay(kind, remote);
    await relay.check();
    return relay.endpoint;
  }

  remoteOf(endpoint: string): string {
    return this.#byEndpoint.get(endpoint)?.remote ?? endpoint;
  }

  bytesSent(endpoint: string): number | null {
    return this.#byEndpoint.get(endpoint)?.bytesSent ?? null;
  }

  async close(): Promise<void> {
    const relays = await Promise.allSettled(this.#relays.values());
    this.#relays.clear();
    this.#byEndpoint.clear();
    await Promise.all(relays.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)));
  }

  #relay(kind: LinkKind, remote: string): Promise<SecureRelay> {
    const key = `${kind} ${remote}`;
    let relay = this.#relays.get(key);
    if (!relay) {
      relay = SecureRelay.open({ secret: this.#secret, kind, remote }).then((r) => {
        this.#byEndpoint.set(r.endpoint, r);
        r.on('broken', (reason) => this.emit('broken', r.endpoint, reason));
        this.#log.debug({ kind, remote, local: r.endpoint }, 'secure relay ready');
        return r;
      });
      relay.catch(() => this.#relays.delete(key));
      this.#relays.set(key, relay);
    }
    return relay;
  }
}
