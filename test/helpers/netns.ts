// Test hosts in network namespaces: each host is a namespace with one veth to a bridge that lives in
// a hub namespace of its own, so nothing touches this machine's real interfaces and no packet leaves
// it. Every namespace is removed again by destroy() (and by the process exit hook).
import { execFileSync, type ChildProcess } from 'node:child_process';

import { spawnChild } from './children.js';

export const SUBNET = '10.231.0';
/** This process's address on the bridge, for a network made with `joinHere`. */
export const HERE = `${SUBNET}.1`;

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

export interface TestHost {
  name: string;
  netns: string;
  address: string;
}

export class TestNetwork {
  readonly hosts: TestHost[];
  readonly #hub: string;
  #destroyed = false;
  readonly #onExit = () => this.destroy();

  private constructor(hub: string, hosts: TestHost[]) {
    this.#hub = hub;
    this.hosts = hosts;
    process.once('exit', this.#onExit);
  }

  /**
   * `joinHere`: this process's own namespace joins the bridge too, as `${SUBNET}.1` (HERE), so a test
   * can run the coordinator and its clients as usual and reach the hosts' addresses directly.
   */
  static create(names: string[], options: { joinHere?: boolean } = {}): TestNetwork {
    const tag = `h${process.pid}`;
    const hub = `${tag}-hub`;
    const hosts = names.map((name, i) => ({ name, netns: `${tag}-${name}`, address: `${SUBNET}.${i + 2}` }));
    const net = new TestNetwork(hub, hosts);
    try {
      ip('netns', 'add', hub);
      ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', hub, 'link', 'set', 'br0', 'up');
      if (options.joinHere) {
        // Deleting the hub deletes the pair's other end, and with it this one.
        ip('link', 'add', tag, 'type', 'veth', 'peer', 'name', 'here', 'netns', hub);
        ip('-n', hub, 'link', 'set', 'here', 'master', 'br0');
        ip('-n', hub, 'link', 'set', 'here', 'up');
        ip('addr', 'add', `${HERE}/24`, 'dev', tag);
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

  host(name: string): TestHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no test host ${name}`);
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

  #port(host: string): string {
    const i = this.hosts.findIndex((x) => x.name === host);
    if (i < 0) throw new Error(`no test host ${host}`);
    return `p${i}`;
  }

  spawn(host: string, command: string, args: string[]): ChildProcess {
    return spawnChild('ip', ['netns', 'exec', this.host(host).netns, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
