// Malformed input for a worker's network ports: random bytes, ggml RPC frames that are valid up to
// a crafted field (huge sizes, out-of-range offsets, bogus tensor ids, truncated frames), TLS garbage,
// and slow drips. Deterministic for a seed, so a failure can be replayed.
import { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

import { encodeHello } from '../../native/rpc-protocol.js';

/** One input: what a hostile peer sends on one connection. */
export interface FuzzInput {
  kind: 'random' | 'crafted' | 'tls-garbage' | 'wrong-psk' | 'slow-drip';
  bytes: Buffer;
}

const CMD = { ALLOC_BUFFER: 0, BUFFER_GET_BASE: 3, FREE_BUFFER: 4, SET_TENSOR: 6, SET_TENSOR_HASH: 7, GET_TENSOR: 8, COPY_TENSOR: 9, GRAPH_COMPUTE: 10, GET_DEVICE_MEMORY: 11, HELLO: 14 } as const;
/** sizeof(rpc_tensor) in this release (packed): id, type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src, view_offs, data, name[64], use_count. */
export const RPC_TENSOR_SIZE = 8 + 4 + 8 + 16 + 16 + 4 + 64 + 4 + 80 + 8 + 8 + 8 + 64 + 4;

/** xorshift32: small, seedable, the same everywhere. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

export function frame(cmd: number, payload: Buffer, declaredSize: bigint = BigInt(payload.length)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUInt8(cmd, 0);
  head.writeBigUInt64LE(declaredSize, 1);
  return Buffer.concat([head, payload]);
}

/** An rpc_tensor with the given fields (the rest zero). */
export function rpcTensor(f: { id?: bigint; type?: number; buffer?: bigint; ne?: number[]; nb?: number[]; data?: bigint }): Buffer {
  const b = Buffer.alloc(RPC_TENSOR_SIZE);
  b.writeBigUInt64LE(f.id ?? 1n, 0);
  b.writeUInt32LE(f.type ?? 0, 8);
  b.writeBigUInt64LE(f.buffer ?? 0n, 12);
  (f.ne ?? [1, 1, 1, 1]).forEach((v, i) => b.writeUInt32LE(v >>> 0, 20 + 4 * i));
  (f.nb ?? [4, 4, 4, 4]).forEach((v, i) => b.writeUInt32LE(v >>> 0, 36 + 4 * i));
  // data sits after id..view_offs: 8+4+8+16+16+4+64+4+80+8+8 = 220
  b.writeBigUInt64LE(f.data ?? 0n, 220);
  return b;
}

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

function big(rand: () => number): bigint {
  const pick = [0n, 1n, 0xffffffffn, 1n << 40n, 1n << 62n, 0xffff_ffff_ffff_ffffn, BigInt(Math.floor(rand() * 2 ** 48))];
  return pick[Math.floor(rand() * pick.length)]!;
}

/** A HELLO, then a frame that is valid up to one crafted field. */
function crafted(rand: () => number): Buffer {
  const hello = frame(CMD.HELLO, encodeHello().subarray(9));
  const tensor = () =>
    rpcTensor({ id: big(rand), type: Math.floor(rand() * 64), buffer: big(rand), ne: [1, 2, 3, 4].map(() => Math.floor(rand() * 2 ** 32)), nb: [1, 2, 3, 4].map(() => Math.floor(rand() * 2 ** 32)), data: big(rand) });
  const choices: (() => Buffer)[] = [
    () => frame(CMD.SET_TENSOR, Buffer.concat([tensor(), Buffer.alloc(8), randomBytes(rand, 64)]), big(rand)),
    () => frame(CMD.GET_TENSOR, Buffer.concat([tensor(), Buffer.alloc(8).fill(0xff), Buffer.alloc(8).fill(0xff)])),
    () => frame(CMD.COPY_TENSOR, Buffer.concat([tensor(), tensor()])),
    () => frame(CMD.GRAPH_COMPUTE, Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0x7f]), randomBytes(rand, 64)])),
    () => frame(CMD.FREE_BUFFER, Buffer.alloc(8).fill(0x41)),
    () => frame(CMD.BUFFER_GET_BASE, randomBytes(rand, 8)),
    () => frame(CMD.SET_TENSOR_HASH, Buffer.concat([tensor(), randomBytes(rand, 16)])),
    () => frame(CMD.GET_DEVICE_MEMORY, Buffer.from([0xff, 0xff, 0xff, 0xff])),
    () => frame(Math.floor(rand() * 256), randomBytes(rand, Math.floor(rand() * 300)), big(rand)),
    // Truncated: the declared size promises more than ever comes.
    () => frame(CMD.SET_TENSOR, randomBytes(rand, 40), 1n << 30n),
    () => frame(CMD.HELLO, Buffer.alloc(10)).subarray(0, 15),
  ];
  return Buffer.concat([hello, choices[Math.floor(rand() * choices.length)]!()]);
}

/** Bytes shaped like TLS records (a handshake, an alert, application data) with garbage inside. */
function tlsGarbage(rand: () => number): Buffer {
  const type = [0x16, 0x15, 0x17, 0x14][Math.floor(rand() * 4)]!;
  const body = randomBytes(rand, Math.floor(rand() * 600));
  const head = Buffer.from([type, 0x03, [0x01, 0x03, 0x04][Math.floor(rand() * 3)]!, 0, 0]);
  head.writeUInt16BE(rand() < 0.2 ? 0xffff : body.length, 3);
  // A ClientHello header with nonsense lengths, half the time.
  const hello = rand() < 0.5 ? Buffer.from([0x01, 0xff, 0xff, 0xff, 0x03, 0x03]) : Buffer.alloc(0);
  return Buffer.concat([head, hello, body]);
}

export function fuzzInputs(seed: number, counts: { random: number; crafted: number; tlsGarbage: number; wrongPsk: number; slowDrip: number }): FuzzInput[] {
  const rand = prng(seed);
  const out: FuzzInput[] = [];
  for (let i = 0; i < counts.random; i++) out.push({ kind: 'random', bytes: randomBytes(rand, 1 + Math.floor(rand() * 2048)) });
  for (let i = 0; i < counts.crafted; i++) out.push({ kind: 'crafted', bytes: crafted(rand) });
  for (let i = 0; i < counts.tlsGarbage; i++) out.push({ kind: 'tls-garbage', bytes: tlsGarbage(rand) });
  for (let i = 0; i < counts.wrongPsk; i++) out.push({ kind: 'wrong-psk', bytes: crafted(rand) });
  // A drip that looks like the start of a TLS handshake, so a server keeps reading until its timeout.
  for (let i = 0; i < counts.slowDrip; i++) out.push({ kind: 'slow-drip', bytes: Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), randomBytes(rand, 512)]) });
  return out;
}

/**
 * Sends one input to 127.0.0.1:port and resolves when the peer closed or `holdMs` passed. A wrong-psk
 * input completes a real TLS ClientHello with a key of no cluster, then sends its bytes; a slow drip
 * sends one byte every `dripMs`. Resolves with how long the connection lived and what came back.
 */
export function sendInput(port: number, input: FuzzInput, o: { holdMs: number; dripMs?: number; wrongPsk?: Buffer; identity?: string }): Promise<{ aliveMs: number; received: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let received = 0;
    let done = false;
    let timer: NodeJS.Timeout | null = null;
    let drip: NodeJS.Timeout | null = null;
    const finish = (socket: Socket) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      if (drip) clearInterval(drip);
      socket.destroy();
      resolve({ aliveMs: Date.now() - started, received });
    };
    if (input.kind === 'wrong-psk') {
      const tls = tlsConnect({
        host: '127.0.0.1',
        port,
        minVersion: 'TLSv1.3',
        ciphers: 'TLS_AES_128_GCM_SHA256',
        pskCallback: () => ({ psk: o.wrongPsk ?? Buffer.alloc(32, 7), identity: o.identity ?? 'not-this-cluster' }),
        checkServerIdentity: () => undefined,
      });
      tls.on('secureConnect', () => tls.write(input.bytes));
      tls.on('data', (d: Buffer) => (received += d.length));
      tls.on('error', () => finish(tls));
      tls.on('close', () => finish(tls));
      timer = setTimeout(() => finish(tls), o.holdMs);
      return;
    }
    const socket = new Socket();
    socket.on('data', (d: Buffer) => (received += d.length));
    socket.on('error', () => finish(socket));
    socket.on('close', () => finish(socket));
    socket.connect(port, '127.0.0.1', () => {
      if (input.kind === 'slow-drip') {
        let i = 0;
        drip = setInterval(() => {
          if (i < input.bytes.length && !socket.destroyed) socket.write(input.bytes.subarray(i, ++i));
        }, o.dripMs ?? 200);
      } else {
        socket.write(input.bytes);
      }
    });
    timer = setTimeout(() => finish(socket), o.holdMs);
  });
}

/** Runs `inputs` with at most `concurrency` connections open at once. */
export async function fuzzPort(port: number, inputs: FuzzInput[], o: { concurrency: number; holdMs: number; dripMs?: number; dripHoldMs?: number }) {
  const results: { kind: FuzzInput['kind']; aliveMs: number; received: number }[] = [];
  let next = 0;
  const lane = async () => {
    while (next < inputs.length) {
      const input = inputs[next++]!;
      const r = await sendInput(port, input, { holdMs: input.kind === 'slow-drip' ? (o.dripHoldMs ?? 15_000) : o.holdMs, dripMs: o.dripMs });
      results.push({ kind: input.kind, ...r });
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, lane));
  return results;
}

/**
 * Frames that make this release's ggml-rpc-server abort: a real buffer, then a GET_TENSOR whose data
 * pointer lies outside it (GGML_ASSERT in deserialize_tensor). Sent over a plain connection, it needs
 * the buffer's address from ALLOC_BUFFER's reply, so it is a conversation, not a blob.
 */
export async function crashRpcServer(port: number, timeoutMs = 5000): Promise<'closed' | 'timeout'> {
  const socket = new Socket();
  let buf = Buffer.alloc(0);
  const wait = (n: number) =>
    new Promise<Buffer | null>((resolve) => {
      const t = setTimeout(() => resolve(null), timeoutMs);
      const check = () => {
        if (buf.length >= n) {
          clearTimeout(t);
          socket.off('data', check);
          const out = buf.subarray(0, n);
          buf = buf.subarray(n);
          resolve(out);
        }
      };
      socket.on('data', check);
      check();
    });
  socket.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  const closed = new Promise<'closed'>((resolve) => socket.once('close', () => resolve('closed')));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.connect(port, '127.0.0.1', () => resolve()));
  socket.write(encodeHello());
  if (!(await wait(8 + 28))) return 'timeout';
  const alloc = Buffer.alloc(12);
  alloc.writeUInt32LE(0, 0);
  alloc.writeBigUInt64LE(4096n, 4);
  socket.write(frame(CMD.ALLOC_BUFFER, alloc));
  const reply = await wait(8 + 16);
  if (!reply) return 'timeout';
  const remotePtr = reply.readBigUInt64LE(8);
  socket.write(frame(CMD.GET_TENSOR, Buffer.concat([rpcTensor({ buffer: remotePtr, data: 0n }), Buffer.alloc(8), Buffer.from([4, 0, 0, 0, 0, 0, 0, 0])])));
  const result = await Promise.race([closed, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs))]);
  socket.destroy();
  return result;
}
