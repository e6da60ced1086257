// bench/lan.ts, the emulated LAN the benchmarks measure on: a connection into a host gets the round trip
// asked for, from this machine and from another host alike (the tensor split's peer links), at no more
// than the cable's rate; destroy() leaves no namespace behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, test } from 'node:test';

import { emulatedLan, type EmulatedLan } from '../../bench/lan.js';
import { netnsUnavailable } from '../helpers/netns.js';

const unavailable = netnsUnavailable();

describe('emulated LAN', { skip: unavailable ?? false }, () => {
  let lan: EmulatedLan | null = null;
  after(async () => {
    await lan?.destroy();
  });

  test('every connection into a host takes the RTT, at most the cable rate', async (t) => {
    // Its own subnet and tag: the tests' networks (10.231.0) and a running benchmark's (10.235.0) stay apart.
    lan = await emulatedLan({ hosts: ['a', 'b'], rttMs: 2, rateMbit: 200, subnet: '10.236.0', tag: 'lt' });
    const links = await lan.measureLinks({ pings: 100, mib: 8 });
    for (const { host, figures } of links.toHosts) {
      t.diagnostic(`here → ${host}: ${figures.rttMs.median.toFixed(3)} ms, ${figures.upMbit.toFixed(0)} / ${figures.downMbit.toFixed(0)} Mb/s`);
      assert.ok(figures.rttMs.median >= 1.5 && figures.rttMs.median <= 3, `round trip here → ${host}: ${figures.rttMs.median.toFixed(3)} ms for 2 ms`);
      assert.ok(figures.upMbit <= 220 && figures.downMbit <= 220, `here → ${host} carried ${figures.upMbit.toFixed(0)} / ${figures.downMbit.toFixed(0)} Mb/s on a 200 Mb/s cable`);
    }
    const [between] = links.between;
    assert.ok(between, 'no host-to-host figures');
    t.diagnostic(`a → b: ${between.figures.rttMs.median.toFixed(3)} ms, ${between.figures.upMbit.toFixed(0)} / ${between.figures.downMbit.toFixed(0)} Mb/s`);
    assert.ok(between.figures.rttMs.median >= 1.5 && between.figures.rttMs.median <= 3, `round trip a → b: ${between.figures.rttMs.median.toFixed(3)} ms for 2 ms`);
    assert.ok(between.figures.upMbit <= 220, `a → b carried ${between.figures.upMbit.toFixed(0)} Mb/s on a 200 Mb/s cable`);

    const names = lan.hosts.map((h) => h.netns);
    await lan.destroy();
    lan = null;
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of names) assert.ok(!left.includes(n), `namespace ${n} is still there`);
  });
});
