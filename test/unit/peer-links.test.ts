// Peer links' pure parts: the PEER_HELLO header a worker's rpc port reads, and the addresses the
// coordinator gives a tensor split's servers for each other.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { peerAddresses, splitOf, type PeerDirectory } from '../../coordinator/links.js';
import type { Plan } from '../../coordinator/planner/types.js';
import { decodePeerHello, encodePeerHello, PEER_HELLO_SIZE } from '../../worker/rpc-router.js';

describe('PEER_HELLO', () => {
  test('33 bytes: command 21, payload size 24, session, ranks and target peer id, little-endian', () => {
    const b = encodePeerHello({ session: 0x0102030405060708n, fromRank: 2, toRank: 1, targetPeerId: 50123n });
    assert.equal(b.length, PEER_HELLO_SIZE);
    assert.equal(PEER_HELLO_SIZE, 33);
    assert.equal(b.toString('hex'), '15' + '1800000000000000' + '0807060504030201' + '02000000' + '01000000' + 'cbc3000000000000');
    assert.deepEqual(decodePeerHello(b), { session: 0x0102030405060708n, fromRank: 2, toRank: 1, targetPeerId: 50123n });
  });

  test('a short header, another command or another payload size is refused with why', () => {
    const good = encodePeerHello({ session: 1n, fromRank: 1, toRank: 0, targetPeerId: 5n });
    assert.match((decodePeerHello(good.subarray(0, 20)) as { refused: string }).refused, /20 bytes/);
    const hello = Buffer.from(good);
    hello[0] = 14;
    assert.match((decodePeerHello(hello) as { refused: string }).refused, /command 14/);
    const size = Buffer.from(good);
    size.writeBigUInt64LE(1n << 40n, 1);
    assert.match((decodePeerHello(size) as { refused: string }).refused, /payload of 1099511627776 bytes/);
  });
});

/** A directory of workers that announce `announced` behind each coordinator endpoint. */
function directory(announced: Record<string, string>, relay: (from: string, remote: string) => string | Error): PeerDirectory & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    announced: (endpoint) => announced[endpoint] ?? null,
    openPeerLink: async (from, remote) => {
      asked.push(`${from}>${remote}`);
      const r = relay(from, remote);
      if (r instanceof Error) throw r;
      return r;
    },
  };
}

describe('peer addresses of a tensor split', () => {
  test('open: every ordered pair of servers, each reaching the other at its announced address; a worker listed per device is one server', async () => {
    const d = directory({ '10.0.0.1:50052': '10.0.0.1:50052', '10.0.0.2:50052': '10.0.0.2:50052', '10.0.0.3:50052': '10.0.0.3:50052' }, () => new Error('not asked'));
    const { addresses, failures } = await peerAddresses(['10.0.0.1:50052', '10.0.0.2:50052', '10.0.0.2:50052', '10.0.0.3:50052'], false, d);
    assert.deepEqual(failures, []);
    assert.equal(addresses.length, 6);
    assert.deepEqual(addresses.find((a) => a.from === '10.0.0.3:50052' && a.to === '10.0.0.1:50052'), { from: '10.0.0.3:50052', to: '10.0.0.1:50052', address: '10.0.0.1:50052' });
    assert.ok(addresses.every((a) => a.from !== a.to));
    assert.deepEqual(d.asked, [], 'an open cluster needs no relay');
  });

  test('closed: the plan names local relays; each dialling worker is asked for a relay to the other worker\'s public address', async () => {
    const d = directory({ '127.0.0.1:4001': '192.168.1.10:50052', '127.0.0.1:4002': '192.168.1.11:50052' }, (from, remote) => `127.0.0.1:${from === '127.0.0.1:4001' ? 7001 : 7002}${remote.endsWith('10:50052') ? '0' : '1'}`);
    const { addresses, failures } = await peerAddresses(['127.0.0.1:4001', '127.0.0.1:4002'], true, d);
    assert.deepEqual(failures, []);
    assert.deepEqual(addresses, [
      { from: '127.0.0.1:4001', to: '127.0.0.1:4002', address: '127.0.0.1:70011' },
      { from: '127.0.0.1:4002', to: '127.0.0.1:4001', address: '127.0.0.1:70020' },
    ]);
    assert.deepEqual(d.asked.sort(), ['127.0.0.1:4001>192.168.1.11:50052', '127.0.0.1:4002>192.168.1.10:50052']);
  });

  test('a pair whose link cannot be opened, or whose worker is unknown, is left out and said why', async () => {
    const d = directory({ '127.0.0.1:4001': '192.168.1.10:50052', '127.0.0.1:4002': '192.168.1.11:50052' }, (from) =>
      from === '127.0.0.1:4002' ? new Error('connection refused') : from === '127.0.0.1:4003' ? new Error('no admitted worker serves it') : '127.0.0.1:7000',
    );
    const r = await peerAddresses(['127.0.0.1:4001', '127.0.0.1:4002', '127.0.0.1:4003'], true, d);
    assert.deepEqual(r.addresses, [{ from: '127.0.0.1:4001', to: '127.0.0.1:4002', address: '127.0.0.1:7000' }]);
    assert.equal(r.failures.length, 5);
    assert.ok(r.failures.some((f) => f.from === '127.0.0.1:4002' && f.to === '127.0.0.1:4001' && /connection refused/.test(f.reason)));
    assert.ok(r.failures.some((f) => f.to === '127.0.0.1:4003' && /no worker announces/.test(f.reason)));
  });

  test('a plan without a split field splits by layers', () => {
    const plan = {} as Plan;
    assert.equal(splitOf(plan), 'layer');
    assert.equal(splitOf({ ...plan, split: 'tensor' } as Plan), 'tensor');
    assert.equal(splitOf({ ...plan, split: 'rows' } as unknown as Plan), 'layer');
  });
});
