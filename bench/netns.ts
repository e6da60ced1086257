// Hosts in network namespaces for a benchmark that pulls a cable: each host a namespace with one veth to
// a bridge in a hub namespace, and this process's namespace on the bridge too, so the coordinator and
// its clients run as usual and reach the hosts' addresses. Nothing touches this machine's interfaces.
// The minimum of test/helpers/netns.ts (bench/ may not import test/); destroy() and the exit hook
// remove every namespace again.
import { execFileSync } from 'node:child_process';

const SUBNET = '10.232.0';

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

export interface BenchHost {
  name: string;
  netns: string;
  address: string;
}

export class BenchNetwork {
  readonly hosts: BenchHost[];
  readonly #hub: string;
  #destroyed = false;
  readonly #onExit = () => this.destroy();

  private constructor(hub: string, hosts: BenchHost[]) {
    this.#hub = hub;
    this.hosts = hosts;
    process.once('exit', this.#onExit);
  }

  static create(names: string[]): BenchNetwork {
    const tag = `b${process.pid}`;
    const hub = `${tag}-hub`;
    const hosts = names.map((name, i) => ({ name, netns: `${tag}-${name}`, address: `${SUBNET}.${i + 2}` }));
    const net = new BenchNetwork(hub, hosts);
    try {
      ip('netns', 'add', hub);
      ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', hub, 'link', 'set', 'br0', 'up');
      // Deleting the hub deletes the pair's other end, and with it this one.
      ip('link', 'add', tag, 'type', 'veth', 'peer', 'name', 'here', 'netns', hub);
      ip('-n', hub, 'link', 'set', 'here', 'master', 'br0');
      ip('-n', hub, 'link', 'set', 'here', 'up');
      ip('addr', 'add', `${SUBNET}.1/24`, 'dev', tag);
      ip('link', 'set', tag, 'up');
      hosts.forEach((h, i) => {
        ip('netns', 'add', h.netns);
        ip('link', 'add', 'eth0', 'netns', h.netns, 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', hub);
        ip('-n', hub, 'link', 'set', `p${i}`, 'master', 'br0');
        ip('-n', hub, 'link', 'set', `p${i}`, 'up');
        ip('-n', h.netns, 'link', 'set', 'lo', 'up');
        ip('-n', h.netns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
        ip('-n', h.netns, 'link', 'set', 'eth0', 'up');
      });
    } catch (e) {
      net.destroy();
      throw e;
    }
    return net;
  }

  /** Pulls a host's cable: its port on the bridge goes down, and its packets vanish (no reset, no error). */
  cut(host: string): void {
    ip('-n', this.#hub, 'link', 'set', this.#port(host), 'down');
  }

  restore(host: string): void {
    ip('-n', this.#hub, 'link', 'set', this.#port(host), 'up');
  }

  #port(host: string): string {
    const i = this.hosts.findIndex((x) => x.name === host);
    if (i < 0) throw new Error(`no bench host ${host}`);
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
