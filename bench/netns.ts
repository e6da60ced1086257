// Hosts in network namespaces, for the tests and the benchmarks of what crosses a network: each host is a
// namespace with one veth to a bridge that lives in a hub namespace of its own, so nothing touches this
// machine's real interfaces and no packet leaves it. A host's cable can be pulled. Every namespace is
// removed again by destroy() (and by the process exit hook). (test/helpers/netns.ts adds processes
// that the tests' cleanup stops; bench/lan.ts builds the emulated LAN on these hosts: cables limited,
// a round trip added by delay relays, workers started in the hosts.)
import { execFileSync } from 'node:child_process';

/** The tests' subnet; a benchmark takes another (`subnet`), so the two can run at once. */
export const SUBNET = '10.231.0';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Why namespaces cannot be made here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return "the 'ip' command (iproute2) is missing";
  }
  return null;
}

export interface NetHost {
  name: string;
  netns: string;
  address: string;
}

export class HostNetwork {
  readonly hosts: NetHost[];
  readonly #hub: string;
  #destroyed = false;
  readonly #onExit = () => this.destroy();

  /** Made by create(), which builds the namespaces. */
  constructor(hub: string, hosts: NetHost[]) {
    this.#hub = hub;
    this.hosts = hosts;
    process.once('exit', this.#onExit);
  }

  /**
   * `joinHere`: this process's own namespace joins the bridge too, as the subnet's `.1`, so the
   * coordinator and its clients run as usual and reach the hosts' addresses directly. `subnet` (three
   * octets) and `tag` (a prefix of the namespaces' names) keep two networks of one machine apart.
   */
  static create<T extends HostNetwork>(
    this: new (hub: string, hosts: NetHost[]) => T,
    names: string[],
    options: { joinHere?: boolean; subnet?: string; tag?: string } = {},
  ): T {
    const subnet = options.subnet ?? SUBNET;
    const tag = `${options.tag ?? 'h'}${process.pid}`;
    const hub = `${tag}-hub`;
    const hosts = names.map((name, i) => ({ name, netns: `${tag}-${name}`, address: `${subnet}.${i + 2}` }));
    const net = new this(hub, hosts);
    try {
      ip('netns', 'add', hub);
      ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', hub, 'link', 'set', 'br0', 'up');
      if (options.joinHere) {
        // Deleting the hub deletes the pair's other end, and with it this one.
        ip('link', 'add', tag, 'type', 'veth', 'peer', 'name', 'here', 'netns', hub);
        ip('-n', hub, 'link', 'set', 'here', 'master', 'br0');
        ip('-n', hub, 'link', 'set', 'here', 'up');
        ip('addr', 'add', `${subnet}.1/24`, 'dev', tag);
        ip('link', 'set', tag, 'up');
      }
      hosts.forEach((h, i) => {
        ip('netns', 'add', h.netns);
        const port = `p${i}`;
        ip('link', 'add', 'eth0', 'netns', h.netns, 'type', 'veth', 'peer', 'name', port, 'netns', hub);
        ip('-n', hub, 'link', 'set', port, 'master', 'br0');
        ip('-n', hub, 'link', 'set', port, 'up');
        ip('-n', h.netns, 'link', 'set', 'lo', 'up');
        ip('-n', h.netns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
        ip('-n', h.netns, 'link', 'set', 'eth0', 'up');
        // Multicast needs a route; the default one keeps it on eth0.
        ip('-n', h.netns, 'route', 'add', 'default', 'dev', 'eth0');
      });
    } catch (e) {
      net.destroy();
      throw e;
    }
    return net;
  }

  host(name: string): NetHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name} on this network`);
    return h;
  }

  /**
   * Pulls a host's cable: its port on the bridge goes down, so packets to and from it vanish (no
   * reset, no error on the other hosts). `restore` plugs it back in.
   */
  cut(host: string): void {
    ip('-n', this.#hub, 'link', 'set', this.#port(host), 'down');
  }

  restore(host: string): void {
    ip('-n', this.#hub, 'link', 'set', this.#port(host), 'up');
  }

  /**
   * Limits a host's cable to `rate` (tc's spelling, e.g. `1gbit`) both ways: a token bucket (`tbf`) on
   * each end of its veth, its port on the bridge (what the host receives) and its own eth0 (what it
   * sends). No added delay: the hosts stay a switch apart.
   */
  limit(host: string, rate: string): void {
    const tbf = ['root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '50ms'];
    execFileSync('tc', ['-n', this.#hub, 'qdisc', 'add', 'dev', this.#port(host), ...tbf], { stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('tc', ['-n', this.host(host).netns, 'qdisc', 'add', 'dev', 'eth0', ...tbf], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /**
   * Sends TCP connections that come in on a host's cable for `port` to `toPort` on the same address
   * instead (iptables REDIRECT): a relay in front of a service that binds the host's address. The
   * host's own connections to itself are not redirected.
   */
  redirect(host: string, port: number, toPort: number): void {
    execFileSync('ip', ['netns', 'exec', this.host(host).netns, 'iptables', '-t', 'nat', '-A', 'PREROUTING', '-i', 'eth0', '-p', 'tcp', '--dport', String(port), '-j', 'REDIRECT', '--to-ports', String(toPort)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  }

  #port(host: string): string {
    const i = this.hosts.findIndex((x) => x.name === host);
    if (i < 0) throw new Error(`no host ${host} on this network`);
    return `p${i}`;
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    process.off('exit', this.#onExit);
    for (const ns of [...this.hosts.map((h) => h.netns), this.#hub]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  }
}
