// Workers that advertise _hearth._tcp on the local network.
import { Bonjour, type Service } from 'bonjour-service';
import { isIP } from 'node:net';

import type { Logger } from '../../common/logger.js';
import { messageOf } from '../../common/errors.js';
import { MDNS_SERVICE_TYPE } from '../../link/worker-wire.js';
import type { Discovery, DiscoveryListener } from './discovery.js';

/** The control address of an advertised worker: its IPv4 address (or where the answer came from) and port. */
export function controlAddress(service: Pick<Service, 'addresses' | 'referer' | 'port'>): string | null {
  const v4 = (service.addresses ?? []).find((a) => isIP(a) === 4) ?? (service.referer && isIP(service.referer.address) === 4 ? service.referer.address : undefined);
  return v4 ? `${v4}:${service.port}` : null;
}

/**
 * Whether an advert belongs to this coordinator's cluster: a closed cluster takes only adverts with its
 * cluster id, an open coordinator only open workers. Anyone can forge an advert; this only spares
 * probes of workers that could never be admitted (a forged one fails the handshake anyway).
 */
export function sameCluster(txt: Record<string, unknown> | undefined, clusterId: string | null): boolean {
  const cid = typeof txt?.cid === 'string' && txt.cid !== '' ? txt.cid : null;
  return cid === clusterId;
}

export class MdnsDiscovery implements Discovery {
  readonly #log: Logger;
  readonly #clusterId: string | null;
  #bonjour: Bonjour | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(log: Logger, clusterId: string | null) {
    this.#log = log;
    this.#clusterId = clusterId;
  }

  start(listener: DiscoveryListener): void {
    this.#bonjour = new Bonjour({}, (e: Error) => this.#log.warn({ err: messageOf(e) }, 'mDNS error'));
    const browser = this.#bonjour.find({ type: MDNS_SERVICE_TYPE });
    const seen = new Map<string, string>();
    const ignored = new Set<string>();
    browser.on('up', (s: Service) => {
      const control = controlAddress(s);
      if (!control) return;
      if (!sameCluster(s.txt as Record<string, unknown> | undefined, this.#clusterId)) {
        if (!ignored.has(s.fqdn)) {
          ignored.add(s.fqdn);
          const theirs = (s.txt as Record<string, string> | undefined)?.cid;
          this.#log.info(
            { control, name: s.name, cluster: theirs ?? null },
            theirs ? (this.#clusterId ? 'ignoring a worker of another cluster' : 'ignoring a worker of a closed cluster (this coordinator has no token)') : 'ignoring an open worker (this cluster is closed: workers need its token)',
          );
        }
        return;
      }
      seen.set(s.fqdn, control);
      this.#log.info({ control, name: s.name, txt: s.txt }, 'worker found over mDNS');
      listener.found(control, 'mdns');
    });
    browser.on('down', (s: Service) => {
      const control = seen.get(s.fqdn) ?? controlAddress(s);
      if (control) listener.gone(control, 'mdns');
    });
    // Ask again now and then: answers to the first query can be lost.
    this.#timer = setInterval(() => browser.update(), 5000);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    const b = this.#bonjour;
    this.#bonjour = null;
    if (b) await new Promise<void>((resolve) => b.destroy(() => resolve()));
  }
}
