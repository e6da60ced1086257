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
import type { PeerAddress } from './engine/protocol.js';
import type { Plan, PlanResult } from './planner/types.js';
import type { WorkerRegistry } from './registry.js';

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

/** How a plan splits the model over its devices; a plan without the field (made before tensor splits existed) splits by layers. */
export function splitOf(plan: Plan): 'layer' | 'tensor' {
  return (plan as Plan & { split?: unknown }).split === 'tensor' ? 'tensor' : 'layer';
}

/** What peerAddresses needs to know of the workers behind a plan's endpoints. */
export interface PeerDirectory {
  /** The rpc address a worker announces (in discovery or the static list) behind a plan endpoint, or null. */
  announced(endpoint: string): string | null;
  /** Asks the worker behind plan endpoint `from` where its rpc server dials `remote` (OpenPeerLink). */
  openPeerLink(from: string, remote: string): Promise<string>;
}

/** The directory of the registry's workers: a plan endpoint is a worker's rpc endpoint (its relay in a closed cluster). */
export function registryPeers(registry: Pick<WorkerRegistry, 'byEndpoint' | 'openPeerLink'>, links: Pick<WorkerLinks, 'remoteOf'>): PeerDirectory {
  return {
    announced: (endpoint) => registry.byEndpoint(endpoint)?.rpcRemote ?? links.remoteOf(endpoint),
    openPeerLink: async (from, remote) => {
      const worker = registry.byEndpoint(from);
      if (!worker) throw new HearthError(ErrorCode.Unavailable, `no admitted worker serves ${links.remoteOf(from)}`);
      return registry.openPeerLink(worker.control, remote);
    },
  };
}

/**
 * For a tensor split over `endpoints` (a plan's rpcEndpoints; a worker with several devices is one
 * server), where each server reaches each other one for the direct all-reduce. Open cluster: the
 * other worker's announced rpc address, never a coordinator-local one. Closed: a relay on the dialling
 * worker (OpenPeerLink) to the other's announced address, since llama.cpp's server cannot speak TLS. A
 * pair that cannot be had is left out, with why: its reduction then goes the generic way.
 */
export async function peerAddresses(
  endpoints: readonly string[],
  secure: boolean,
  peers: PeerDirectory,
): Promise<{ addresses: PeerAddress[]; failures: { from: string; to: string; reason: string }[] }> {
  const servers = [...new Set(endpoints)];
  const pairs = servers.flatMap((from) => servers.filter((to) => to !== from).map((to) => ({ from, to })));
  const results = await Promise.all(
    pairs.map(async ({ from, to }) => {
      const remote = peers.announced(to);
      if (!remote) return { from, to, reason: `no worker announces the rpc server behind ${to}` };
      if (!secure) return { from, to, address: remote };
      try {
        return { from, to, address: await peers.openPeerLink(from, remote) };
      } catch (e) {
        return { from, to, reason: messageOf(e) };
      }
    }),
  );
  return {
    addresses: results.filter((r): r is PeerAddress => 'address' in r),
    failures: results.filter((r): r is { from: string; to: string; reason: string } => 'reason' in r),
  };
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
