// The worker's mDNS advertisement: _hearth._tcp on the control port, with a TXT record a coordinator
// can plan from before it calls GetInfo. No secrets and no file paths go into TXT.
import { Bonjour, type Service } from 'bonjour-service';

import type { Logger } from '../common/logger.js';
import { messageOf } from '../common/errors.js';
import { MDNS_SERVICE_TYPE } from '../link/worker-wire.js';

export interface AdvertFacts {
  workerId: string;
  name: string;
  controlPort: number;
  rpcPort: number;
  rpcProtocol: string;
  backend: string;
  memTotalBytes: number;
  memFreeBytes: number;
  /** The public cluster id of a closed cluster, or null for an open worker. */
  clusterId: string | null;
}

/** The TXT record. Keys are short; values are strings. */
export function advertTxt(f: AdvertFacts): Record<string, string> {
  return {
    txtvers: '1',
    id: f.workerId,
    name: f.name,
    cport: String(f.controlPort),
    rport: String(f.rpcPort),
    proto: f.rpcProtocol,
    backend: f.backend,
    mem_total: String(f.memTotalBytes),
    mem_free: String(f.memFreeBytes),
    // Only the public id: a coordinator of another cluster can tell at once that this is not its worker.
    ...(f.clusterId ? { cid: f.clusterId } : {}),
  };
}

/** Whether free memory moved enough to tell the network: 5% of total or 256 MiB, whichever is more. */
export function materialChange(previousFree: number, currentFree: number, total: number): boolean {
  return Math.abs(currentFree - previousFree) >= Math.max(0.05 * total, 256 * 1024 * 1024);
}

export class MdnsAdvertiser {
  readonly #log: Logger;
  readonly #bonjour: Bonjour;
  #service: Service | null = null;
  #facts: AdvertFacts;

  constructor(facts: AdvertFacts, log: Logger, options: { interface?: string } = {}) {
    this.#log = log;
    this.#facts = facts;
    this.#bonjour = new Bonjour(options.interface ? { interface: options.interface } as never : {}, (e: Error) => {
      log.error({ err: messageOf(e) }, 'mDNS error');
    });
  }

  get facts(): AdvertFacts {
    return this.#facts;
  }

  start(): void {
    this.#service = this.#bonjour.publish({
      // Instance names must be unique on the network: the worker id keeps two workers named alike apart.
      name: `${this.#facts.name}-${this.#facts.workerId.slice(0, 8)}`,
      type: MDNS_SERVICE_TYPE,
      port: this.#facts.controlPort,
      txt: advertTxt(this.#facts),
      disableIPv6: true,
    });
    this.#log.info({ type: `_${MDNS_SERVICE_TYPE}._tcp`, txt: advertTxt(this.#facts) }, 'advertising over mDNS');
  }

  /**
   * Publishes new facts. bonjour-service cannot change a published TXT record in place, so the
   * service is withdrawn (a goodbye) and published again; browsers see it leave and return.
   */
  update(facts: AdvertFacts): void {
    this.#facts = facts;
    if (!this.#service) return;
    const old = this.#service;
    this.#service = null;
    old.stop?.(() => {
      if (this.#stopped) return;
      this.start();
    });
  }

  #stopped = false;

  /** Sends the goodbye (TTL 0) and closes the socket. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await new Promise<void>((resolve) => this.#bonjour.unpublishAll(() => resolve()));
    await new Promise<void>((resolve) => this.#bonjour.destroy(() => resolve()));
  }
}
