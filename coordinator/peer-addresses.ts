// Tensor split: where each worker's rpc server reaches each other one, for the partial sums the
// servers all-reduce among themselves (hearth's patch to ggml-rpc; the engine passes these to the
// addon's rpcPeerAddress before the model loads).
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { PeerAddress } from './engine/protocol.js';
import type { WorkerLinks } from './links.js';
import type { WorkerRegistry } from './registry.js';

/** An address that refuses every connection at once: a pair of servers that have no way to each other. */
export const UNREACHABLE = '127.0.0.1:0';

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
 * pair that cannot be had gets an address that refuses at once (UNREACHABLE), with why: the servers'
 * own reduction is then not set up, and llama.cpp takes the generic path through the coordinator
 * (slower, still right) rather than a coordinator-local address that happens to work on one host.
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
    addresses: results.map((r): PeerAddress => ({ from: r.from, to: r.to, address: r.address ?? UNREACHABLE })),
    failures: results.flatMap((r) => (r.reason === undefined ? [] : [{ from: r.from, to: r.to, reason: r.reason }])),
  };
}
