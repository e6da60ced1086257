import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  decodeDeviceMemory,
  decodeHello,
  encodeDeviceCount,
  encodeGetDeviceMemory,
  encodeHello,
  formatVersion,
  isCompatible,
  parseVersion,
  takeResponse,
} from '../../native/rpc-protocol.js';
import { parseEndpoint } from '../../native/rpc-probe.js';

test('HELLO is command 14 with 24 zero bytes of capabilities', () => {
  const hello = encodeHello();
  assert.equal(hello.length, 1 + 8 + 24);
  assert.equal(hello[0], 14);
  assert.equal(hello.readBigUInt64LE(1), 24n);
  assert.ok(hello.subarray(9).every((b) => b === 0));
});

test('DEVICE_COUNT has no payload; GET_DEVICE_MEMORY carries a u32 device', () => {
  assert.deepEqual([...encodeDeviceCount()], [15, 0, 0, 0, 0, 0, 0, 0, 0]);
  const mem = encodeGetDeviceMemory(3);
  assert.equal(mem[0], 11);
  assert.equal(mem.readBigUInt64LE(1), 4n);
  assert.equal(mem.readUInt32LE(9), 3);
});

test('responses are split off by their size prefix, and a wrong size is refused', () => {
  const payload = Buffer.alloc(28);
  payload.writeUInt8(7, 0);
  payload.writeUInt8(0, 1);
  payload.writeUInt8(2, 2);
  const framed = Buffer.concat([Buffer.from(new BigUint64Array([28n]).buffer), payload, Buffer.from([1, 2])]);
  assert.equal(takeResponse(framed.subarray(0, 20), 28), null, 'incomplete');
  const taken = takeResponse(framed, 28);
  assert.ok(taken);
  assert.deepEqual(decodeHello(taken.payload), { major: 7, minor: 0, patch: 2 });
  assert.deepEqual([...taken.rest], [1, 2]);
  assert.throws(() => takeResponse(framed, 16), /unexpected response size 28 \(expected 16\)/);
});

test('device memory decodes two u64 values', () => {
  const p = Buffer.alloc(16);
  p.writeBigUInt64LE(5n * 1024n ** 3n, 0);
  p.writeBigUInt64LE(8n * 1024n ** 3n, 8);
  assert.deepEqual(decodeDeviceMemory(p), { freeBytes: 5 * 1024 ** 3, totalBytes: 8 * 1024 ** 3 });
});

test("versions follow llama.cpp's rule: same major, server minor not newer", () => {
  const v7 = parseVersion('7.0.0')!;
  assert.equal(formatVersion(v7), '7.0.0');
  assert.ok(isCompatible(v7, { major: 7, minor: 0, patch: 9 }));
  assert.ok(isCompatible({ major: 7, minor: 2, patch: 0 }, { major: 7, minor: 1, patch: 0 }));
  assert.ok(!isCompatible(v7, { major: 7, minor: 1, patch: 0 }));
  assert.ok(!isCompatible(v7, { major: 6, minor: 0, patch: 0 }));
  assert.equal(parseVersion('7.0'), null);
});

test('endpoints are host:port with a valid port', () => {
  assert.deepEqual(parseEndpoint('127.0.0.1:50052'), { host: '127.0.0.1', port: 50052 });
  assert.deepEqual(parseEndpoint('gpu-box:1'), { host: 'gpu-box', port: 1 });
  for (const bad of ['127.0.0.1', ':50052', '127.0.0.1:0', '127.0.0.1:65536', 'a b:1', '127.0.0.1:port']) {
    assert.throws(() => parseEndpoint(bad), /is not an RPC endpoint: expected host:port/, bad);
  }
});
