// The emulated LAN every network figure can use: hosts in network namespaces on a bridge (netns.ts), each
// host's cable limited by tc's tbf, and a chosen round trip added by a delay relay (delay-relay.ts) in
// front of each host's public ports, since this kernel has no netem. This process's namespace joins the
// bridge (the subnet's .1): a coordinator, llama-server and the clients run here as usual and reach the
// hosts' addresses.
//
// A host's services bind its own address (as on a real machine, so a worker reports that address for
// its rpc port); an iptables REDIRECT sends every connection that comes in on its cable to one of those
// ports to the relay instead, which forwards it to the service with the delay. So every connection INTO
// a host gets the round trip: the coordinator's, llama-server's, and one worker's to another (the tensor
// split's peer links); a host's connections to itself do not.
//
//   const lan = await emulatedLan({ hosts: ['a', 'b'], rttMs: 2, rateMbit: 1000 });
//   const w = await lan.startWorker('a', { threads: 1, dir });   // w.control: "10.235.0.2:50051"
//   const links = await lan.measureLinks();                       // RTT and Mb/s as the services see them
//   await lan.destroy();
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { spawnHearth, type LocalWorker } from '../cli/local-cluster.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { WorkerClient } from '../link/worker-client.js';
import type { LinkFigures } from './link-probe.js';
import { HostNetwork, type NetHost } from './netns.js';

const RELAY = fileURLToPath(new URL('./delay-relay.ts', import.meta.url));
const PROBE = fileURLToPath(new URL('./link-probe.ts', import.meta.url));
/** The repository root: `--import tsx` is resolved from there. */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A worker host's ports, as on a real machine (each host has a namespace of its own). */
export const LAN_PORTS = { control: 50051, rpc: 50052, probe: 50099 } as const;
/** /proc's clock ticks per second (sysconf CLK_TCK; 100 on Linux everywhere in practice). */
const TICKS = 100;
/** Where a host's relay listens for a public port's connections: the port plus this. */
const RELAY_OFFSET = 10_000;

export interface LanOptions {
  hosts: string[];
  /**
   * Round trip of every connection into a host, ms, as a ping-pong between two processes measures it;
   * 0: no relays (the bridge's own, about 0.07 ms). The relays' delay is trimmed once at start so that
   * the measured round trip, wake-ups and the relay's own hop included, comes out at this.
   */
  rttMs: number;
  /** Each host's cable, both ways, Mb/s; null: not limited. */
  rateMbit: number | null;
  /** Three octets; another network of this machine (the tests', another bench's) takes another. */
  subnet?: string;
  /** A prefix of the namespaces' names. */
  tag?: string;
}

/** Links as measured through the LAN: this process to each host, and host to host. */
export interface LanLinks {
  toHosts: { host: string; figures: LinkFigures }[];
  between: { from: string; to: string; figures: LinkFigures }[];
}

/** A node process with tsx, started from the repository root (so `--import tsx` resolves). */
function nodeArgs(script: string, args: string[]): string[] {
  return [process.execPath, '--import', 'tsx', script, ...args];
}

/** Waits for a child's first line of stdout (its "listening" line) and parses it. */
async function firstLine<T>(child: ChildProcess, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    lines.once('line', (line) => {
      child.off('exit', onExit);
      resolve(JSON.parse(line) as T);
    });
    const onExit = (code: number | null) => reject(new HearthError(ErrorCode.Unavailable, `${what} exited (${code}) before it was ready: ${err.trim()}`));
    child.once('exit', onExit);
  });
}

export class EmulatedLan {
  readonly network: HostNetwork;
  readonly rttMs: number;
  readonly rateMbit: number | null;
  /** The round trip each relay adds (rttMs, less what the path itself takes). */
  #relayRttMs: number;
  /** Relays, probe servers and workers started in the hosts, stopped by destroy(). */
  readonly #children: ChildProcess[] = [];
  readonly #relays = new Map<string, ChildProcess>();
  #destroyed = false;

  private constructor(network: HostNetwork, o: LanOptions) {
    this.network = network;
    this.rttMs = o.rttMs;
    this.rateMbit = o.rateMbit;
    this.#relayRttMs = o.rttMs;
  }

  /** The delay the relays add per round trip now, ms. */
  get relayRttMs(): number {
    return this.#relayRttMs;
  }

  /** Builds the hosts and their cables; each host then has a delay relay and a probe server behind it. */
  static async create(o: LanOptions): Promise<EmulatedLan> {
    const network = HostNetwork.create(o.hosts, { joinHere: true, subnet: o.subnet ?? '10.235.0', tag: o.tag ?? 'lan' });
    const lan = new EmulatedLan(network, o);
    try {
      for (const h of network.hosts) {
        if (o.rateMbit !== null) network.limit(h.name, `${o.rateMbit}mbit`);
        if (o.rttMs > 0) for (const port of Object.values(LAN_PORTS)) network.redirect(h.name, port, port + RELAY_OFFSET);
        await lan.#startRelay(h);
        lan.#spawn(h, nodeArgs(PROBE, ['serve', '--listen', `${h.address}:${LAN_PORTS.probe}`, '--exit-with-stdin']), ['pipe', 'pipe', 'pipe']);
        await firstLine(lan.#children.at(-1)!, `the probe server on ${h.name}`);
      }
      if (o.rttMs > 0) await lan.#trim();
    } catch (e) {
      await lan.destroy();
      throw e;
    }
    return lan;
  }

  get hosts(): readonly NetHost[] {
    return this.network.hosts;
  }

  host(name: string): NetHost {
    return this.network.host(name);
  }

  /** A process in a host's namespace (`ip netns exec` execs it, so the child is that process). */
  #spawn(h: NetHost, argv: string[], stdio: StdioOptions): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', h.netns, ...argv], { stdio, cwd: ROOT });
    this.#children.push(child);
    return child;
  }

  /**
   * The host's relay in front of its LAN ports: connections coming in on its cable to one of them are
   * redirected (set up in create) to the relay at port + RELAY_OFFSET, which forwards them to the port
   * with the delay. Without an RTT there is none.
   */
  async #startRelay(h: NetHost): Promise<void> {
    if (this.rttMs <= 0) return;
    const pairs = Object.values(LAN_PORTS).flatMap((p) => ['--listen', `${h.address}:${p + RELAY_OFFSET}`, '--target', `${h.address}:${p}`]);
    const relay = this.#spawn(h, nodeArgs(RELAY, [...pairs, '--rtt-ms', this.#relayRttMs.toFixed(3), '--exit-with-stdin']), ['pipe', 'pipe', 'pipe']);
    this.#relays.set(h.name, relay);
    await firstLine(relay, `the delay relay on ${h.name}`);
  }

  /**
   * A relay's hop and the processes' wake-ups add to its delay (0.1 to 0.4 ms on this machine's VM, more
   * after longer sleeps): measure the round trip to the first host and correct the relays' delay by the
   * difference, up to three times, until it is within 5 % (before anything connects through them).
   */
  async #trim(): Promise<void> {
    const { probeLink } = await import('./link-probe.js');
    const h = this.hosts[0]!;
    for (let round = 0; round < 3; round++) {
      const measured = (await probeLink({ host: h.address, port: LAN_PORTS.probe }, { pings: 300, bytes: 2 ** 20 })).rttMs.median;
      if (Math.abs(measured - this.rttMs) <= 0.05 * this.rttMs) return;
      this.#relayRttMs = Math.max(0, this.#relayRttMs - (measured - this.rttMs));
      for (const host of this.hosts) {
        const old = this.#relays.get(host.name)!;
        await stopChild(old);
        this.#children.splice(this.#children.indexOf(old), 1);
        await this.#startRelay(host);
      }
    }
  }

  /**
   * A hearth worker on `host`, bound to its address on the LAN ports (open: --insecure, no token),
   * reached through the relay like everything else. `args`: more worker flags (e.g. --memory).
   */
  async startWorker(host: string, o: { threads: number; dir: string; args?: string[]; stdio?: StdioOptions }): Promise<LocalWorker> {
    const h = this.host(host);
    const cacheDir = join(o.dir, `cache-${host}`);
    const child = spawnHearth(
      ['worker', '--name', host, '--host', h.address, '--rpc-port', String(LAN_PORTS.rpc), '--control-port', String(LAN_PORTS.control), '--threads', String(o.threads),
        '--insecure', '--no-mdns', '--state-dir', join(o.dir, `state-${host}`), '--cache-dir', cacheDir, '--log-level', 'warn', ...(o.args ?? [])],
      o.stdio ?? ['ignore', 'ignore', 'inherit'],
      {},
      h.netns,
    );
    this.#children.push(child);
    const control = `${h.address}:${LAN_PORTS.control}`;
    return readyWorker({ name: host, cacheDir, child, control, ports: { rpc: LAN_PORTS.rpc, control: LAN_PORTS.control } });
  }

  /**
   * The links as a service's traffic sees them, relay and cable included: from this process to each
   * host, and from each host to every later one (run in the first host's namespace).
   */
  async measureLinks(o: { pings?: number; mib?: number } = {}): Promise<LanLinks> {
    const { probeLink } = await import('./link-probe.js');
    const toHosts = [];
    for (const h of this.hosts) {
      toHosts.push({ host: h.name, figures: await probeLink({ host: h.address, port: LAN_PORTS.probe }, { pings: o.pings ?? 200, bytes: (o.mib ?? 32) * 2 ** 20 }) });
    }
    const between = [];
    for (const [i, from] of this.hosts.entries()) {
      for (const to of this.hosts.slice(i + 1)) {
        const child = this.#spawn(from, nodeArgs(PROBE, ['measure', '--target', `${to.address}:${LAN_PORTS.probe}`, '--pings', String(o.pings ?? 200), '--mib', String(o.mib ?? 32)]), ['ignore', 'pipe', 'pipe']);
        between.push({ from: from.name, to: to.name, figures: await firstLine<LinkFigures>(child, `the link probe from ${from.name} to ${to.name}`) });
      }
    }
    return { toHosts, between };
  }

  /**
   * CPU seconds (user + system, every thread) the relays have used so far: what the emulation takes
   * from the machine, in the same CPUs as the workers.
   */
  relayCpuSeconds(): number {
    let seconds = 0;
    for (const relay of this.#relays.values()) {
      try {
        const stat = readFileSync(`/proc/${relay.pid}/stat`, 'utf8');
        // Fields 14 and 15 (utime, stime), counted from the state (field 3) after the command's ')'.
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        seconds += (Number(f[11]) + Number(f[12])) / TICKS;
      } catch {
        // gone
      }
    }
    return seconds;
  }

  /** Stops everything started in the hosts, then removes the namespaces. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    await Promise.all(this.#children.map((c) => stopChild(c)));
    this.network.destroy();
  }
}

/** Builds an emulated LAN (see EmulatedLan). */
export function emulatedLan(o: LanOptions): Promise<EmulatedLan> {
  return EmulatedLan.create(o);
}

async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * A worker process once its control port answers ready (within 60 s), as a LocalWorker; killed if it
 * does not get there.
 */
export async function readyWorker(w: Omit<LocalWorker, 'exited' | 'stop'>): Promise<LocalWorker> {
  const exited = new Promise<void>((resolve) => (w.child.exitCode !== null ? resolve() : w.child.once('exit', () => resolve())));
  const client = await WorkerClient.open(w.control, null);
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (w.child.exitCode !== null) throw new HearthError(ErrorCode.Unavailable, `worker ${w.name} exited with code ${w.child.exitCode}`);
      if (await client.health({ timeoutMs: 1000 }).then((h) => h.ready, () => false)) break;
      if (Date.now() > deadline) throw new HearthError(ErrorCode.Unavailable, `worker ${w.name} did not become ready within 60 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    w.child.kill('SIGKILL');
    throw e;
  } finally {
    client.close();
  }
  return { ...w, exited, stop: () => stopChild(w.child) };
}
