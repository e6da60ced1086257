// Workers that advertise _hearth._tcp on the local network.
import { Bonjour, type Service } from 'bonjour-service';
import { isIP } from 'node:net';

import type { Logger } from '../../common/logger.js';
import { messageOf } from '../../common/errors.js';
import { MDNS_SERVICE_TYPE } from '../../worker/mdns.js';
import type { Discovery, DiscoveryListener } from './discovery.js';

/** The control address of an advertised worker: its IPv4 address (or where the answer came from) and port. */
export function controlAddress(service: Pick<Service, 'addresses' | 'referer' | 'port'>): string | null {
  const v4 = (service.addresses ?? []).find((a) => isIP(a) === 4) ?? (service.referer && isIP(service.referer.address) === 4 ? service.referer.address : undefined);
  return v4 ? `${v4}:${service.port}` : null;
}

export class MdnsDiscovery implements Discovery {
  readonly #log: Logger;
  #bonjour: Bonjour | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(log: Logger) {
    this.#log = log;
  }

  start(listener: DiscoveryListener): void {
    this.#bonjour = new Bonjour({}, (e: Error) => this.#log.warn({ err: messageOf(e) }, 'mDNS error'));
    const browser = this.#bonjour.find({ type: MDNS_SERVICE_TYPE });
    const seen = new Map<string, string>();
    browser.on('up', (s: Service) => {
      const control = controlAddress(s);
      if (!control) return;
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
