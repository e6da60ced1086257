// Test hosts in network namespaces (bench/netns.ts), with processes started in them that the tests'
// cleanup stops (spawnChild).
import type { ChildProcess } from 'node:child_process';

import { HostNetwork, SUBNET } from '../../bench/netns.js';
import { spawnChild } from './children.js';

export { netnsUnavailable, SUBNET, type NetHost as TestHost } from '../../bench/netns.js';
/** This process's address on the bridge, for a network made with `joinHere`. */
export const HERE = `${SUBNET}.1`;

export class TestNetwork extends HostNetwork {
  spawn(host: string, command: string, args: string[]): ChildProcess {
    return spawnChild('ip', ['netns', 'exec', this.host(host).netns, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }
}
