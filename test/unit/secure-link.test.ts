// The closed cluster's pure parts: tokens and what is derived from them, where a token may come from,
// protected mode, the process title, and which mDNS adverts a coordinator takes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, test } from 'node:test';

import { withoutToken } from '../../cli/options.js';
import { compileCoordinatorConfig, protectedModeRefusal } from '../../coordinator/config.js';
import { sameCluster } from '../../coordinator/discovery/mdns.js';
import { ClusterSecret, isLoopback, newToken, resolveSecret } from '../../link/token.js';
import { compileWorkerConfig } from '../../worker/config.js';
import { advertTxt } from '../../worker/mdns.js';

const env = { XDG_CACHE_HOME: '/var/cache/x', XDG_STATE_HOME: '/var/state/x' };

describe('cluster token', () => {
  test('a new token is one printable line of 256 random bits, different each time', () => {
    const a = newToken();
    const b = newToken();
    assert.match(a, /^hearth1_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, b);
    assert.equal(Buffer.from(a.slice('hearth1_'.length), 'base64url').length, 32);
  });

  test('the key and the public cluster id are derived, stable, and never the token', () => {
    const token = newToken();
    const s1 = ClusterSecret.fromToken(token, 'flag');
    const s2 = ClusterSecret.fromToken(`  ${token}\n`, 'env');
    assert.equal(s1.clusterId, s2.clusterId);
    assert.deepEqual(s1.psk, s2.psk);
    assert.match(s1.clusterId, /^[0-9a-f]{16}$/);
    assert.equal(s1.psk.length, 32);
    const other = ClusterSecret.fromToken(newToken(), 'flag');
    assert.notEqual(other.clusterId, s1.clusterId);
    // The id is not a piece of the token or of the key.
    assert.ok(!token.includes(s1.clusterId));
    assert.ok(!s1.psk.toString('hex').includes(s1.clusterId));
  });

  test('printing, logging or serialising the secret shows the cluster id only', () => {
    const token = newToken();
    const s = ClusterSecret.fromToken(token, 'flag');
    for (const text of [JSON.stringify({ s }), inspect(s), String(s), `${s}`, inspect({ nested: { s } }, { depth: 5 })]) {
      assert.ok(!text.includes(token.slice(8)), text);
      assert.ok(text.includes(s.clusterId), text);
    }
  });

  test('a malformed token is refused, naming where it came from and not what it was', () => {
    const weak = 'password123';
    for (const [source, where] of [['flag', /--token/], ['env', /HEARTH_TOKEN/], ['config', /config file/]] as const) {
      assert.throws(
        () => ClusterSecret.fromToken(weak, source),
        (e: Error) => where.test(e.message) && /hearth token/.test(e.message) && !e.message.includes(weak),
      );
    }
    assert.throws(() => ClusterSecret.fromToken('hearth1_' + 'A'.repeat(42), 'flag'), /256 bits/);
  });

  test('sources: flag, then file, then the environment, then the config; two flags are an error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-token-'));
    try {
      const [t1, t2, t3] = [newToken(), newToken(), newToken()];
      const file = join(dir, 'cluster.token');
      writeFileSync(file, `${t2}\n`);
      const id = (t: string) => ClusterSecret.fromToken(t, 'flag').clusterId;
      assert.equal(resolveSecret({ flag: t1, env: t3 })?.clusterId, id(t1));
      assert.equal(resolveSecret({ file, env: t3 })?.clusterId, id(t2));
      assert.equal(resolveSecret({ file })?.file, file);
      assert.equal(resolveSecret({ env: t3, config: { token: t1 } })?.clusterId, id(t3));
      assert.equal(resolveSecret({ config: { tokenFile: file } })?.clusterId, id(t2));
      assert.equal(resolveSecret({ env: '' }), null);
      assert.equal(resolveSecret({}), null);
      assert.throws(() => resolveSecret({ flag: t1, file }), /either --token or --token-file/);
      assert.throws(() => resolveSecret({ file: join(dir, 'nope') }), /cannot read the token file .*nope/);
      writeFileSync(file, 'not a token\n');
      assert.throws(() => resolveSecret({ file }), (e: Error) => /token file .*cluster\.token does not hold a hearth cluster token/.test(e.message));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('protected mode', () => {
  test('a worker on a network address needs a token or --insecure; loopback needs neither', () => {
    assert.throws(() => compileWorkerConfig({ file: null, flags: {}, env }), (e: Error) => /refusing to serve on 0\.0\.0\.0 without a cluster token/.test(e.message) && /--insecure/.test(e.message) && /hearth token/.test(e.message));
    assert.throws(() => compileWorkerConfig({ file: null, flags: { host: '10.1.2.3' }, env }), /refusing to serve on 10\.1\.2\.3/);
    assert.equal(compileWorkerConfig({ file: null, flags: { insecure: true }, env }).secret, null);
    assert.equal(compileWorkerConfig({ file: null, flags: { host: '127.0.0.1' }, env }).secret, null);
    assert.ok(compileWorkerConfig({ file: null, flags: { token: newToken() }, env }).secret);
  });

  test('a worker config file takes token and tokenFile (relative to the file)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hearth-cfg-'));
    try {
      const token = newToken();
      writeFileSync(join(dir, 'cluster.token'), token);
      const file = join(dir, 'worker.yaml');
      writeFileSync(file, 'tokenFile: ./cluster.token\n');
      const c = compileWorkerConfig({ file, flags: {}, env });
      assert.equal(c.secret?.clusterId, ClusterSecret.fromToken(token, 'flag').clusterId);
      assert.equal(c.secret?.file, join(dir, 'cluster.token'));
      writeFileSync(file, 'token: 12345\n');
      assert.throws(() => compileWorkerConfig({ file, flags: {}, env }), /token: .*string/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('coordinator APIs on a network address need API keys or --insecure', () => {
    const c = (flags: object) => compileCoordinatorConfig({ file: null, flags });
    assert.equal(protectedModeRefusal(c({})), null, 'the default host is 127.0.0.1');
    assert.match(protectedModeRefusal(c({ host: '0.0.0.0' })) ?? '', /refusing to serve the APIs on 0\.0\.0\.0 without API keys.*--api-key.*--insecure/);
    assert.equal(protectedModeRefusal(c({ host: '0.0.0.0', apiKeys: ['k-123456789'] })), null);
    assert.equal(protectedModeRefusal(c({ host: '0.0.0.0', insecure: true })), null);
    const token = newToken();
    assert.equal(compileCoordinatorConfig({ file: null, flags: {}, env: { HEARTH_TOKEN: token } }).secret?.source, 'env');
  });

  test('loopback is the whole 127/8 range', () => {
    assert.ok(isLoopback('127.0.0.1'));
    assert.ok(isLoopback('127.3.2.1'));
    assert.ok(!isLoopback('0.0.0.0'));
    assert.ok(!isLoopback('10.0.0.1'));
  });
});

describe('what a token may never reach', () => {
  test('the process title shows --token without its value', () => {
    const token = newToken();
    assert.deepEqual(withoutToken(['worker', '--token', token, '--host', '0.0.0.0']), ['worker', '--token', '***', '--host', '0.0.0.0']);
    assert.deepEqual(withoutToken(['worker', `--token=${token}`]), ['worker', '--token=***']);
    assert.deepEqual(withoutToken(['worker', '--token-file', '/x']), ['worker', '--token-file', '/x']);
  });

  test('the mDNS advert carries the public cluster id, never the token', () => {
    const token = newToken();
    const s = ClusterSecret.fromToken(token, 'flag');
    const txt = advertTxt({ workerId: 'w', name: 'n', controlPort: 1, rpcPort: 2, rpcProtocol: '7.0.0', backend: 'CPU', memTotalBytes: 1, memFreeBytes: 1, clusterId: s.clusterId });
    assert.equal(txt.cid, s.clusterId);
    assert.ok(!JSON.stringify(txt).includes(token.slice(8)));
    const open = advertTxt({ workerId: 'w', name: 'n', controlPort: 1, rpcPort: 2, rpcProtocol: '7.0.0', backend: 'CPU', memTotalBytes: 1, memFreeBytes: 1, clusterId: null });
    assert.equal('cid' in open, false);
  });

  test('a coordinator takes adverts of its own cluster only', () => {
    assert.ok(sameCluster({ cid: 'abc' }, 'abc'));
    assert.ok(!sameCluster({ cid: 'abd' }, 'abc'));
    assert.ok(!sameCluster({}, 'abc'), 'an open worker is not part of a closed cluster');
    assert.ok(!sameCluster({ cid: 'abc' }, null), 'an open coordinator cannot reach a closed worker');
    assert.ok(sameCluster({}, null));
    assert.ok(sameCluster(undefined, null));
  });
});
