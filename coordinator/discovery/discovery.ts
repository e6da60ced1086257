// Where workers come from. Each source reports control addresses (host:port); the registry probes
// them, merges them by worker id and decides. A source's "gone" is only a hint: liveness is decided
// by heartbeats, since mDNS goodbyes are unreliable.

export type DiscoverySource = 'static' | 'mdns';

export interface DiscoveryListener {
  found(control: string, source: DiscoverySource): void;
  gone(control: string, source: DiscoverySource): void;
}

export interface Discovery {
  start(listener: DiscoveryListener): void;
  stop(): Promise<void>;
}

/** Workers listed by hand in cluster.yaml or with --worker. */
export class StaticDiscovery implements Discovery {
  readonly #workers: readonly string[];

  constructor(workers: readonly string[]) {
    this.#workers = workers;
  }

  start(listener: DiscoveryListener): void {
    for (const w of this.#workers) listener.found(w, 'static');
  }

  async stop(): Promise<void> {}
}
