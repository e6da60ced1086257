// The few llama.cpp RPC messages hearth speaks itself (ggml/src/ggml-rpc/ggml-rpc.cpp, protocol 7.x):
// HELLO, DEVICE_COUNT and GET_DEVICE_MEMORY, and the command a peer server's link opens with
// (PEER_HELLO, hearth's patch, 7.1; worker/rpc-router.ts reads it). Pure encoding and decoding; the socket is in rpc-probe.ts.
//
// Request:  u8 command | u64 payload size | payload      (little-endian, packed)
// Response: u64 payload size | payload

export const RpcCommand = {
  GetDeviceMemory: 11,
  Hello: 14,
  DeviceCount: 15,
  PeerHello: 21,
} as const;

const CONN_CAPS_SIZE = 24;
export const HELLO_RESPONSE_SIZE = 4 + CONN_CAPS_SIZE;

export interface RpcVersion {
  major: number;
  minor: number;
  patch: number;
}

export function formatVersion(v: RpcVersion): string {
  return `${v.major}.${v.minor}.${v.patch}`;
}

export function parseVersion(text: string): RpcVersion | null {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(text.trim());
  return m ? { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) } : null;
}

/**
 * llama.cpp's own rule (negotiate_hello): a client refuses a server whose major differs or whose minor
 * is newer than its own.
 */
export function isCompatible(client: RpcVersion, server: RpcVersion): boolean {
  return client.major === server.major && server.minor <= client.minor;
}

export function encodeRequest(command: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.alloc(1 + 8 + payload.length);
  out.writeUInt8(command, 0);
  out.writeBigUInt64LE(BigInt(payload.length), 1);
  out.set(payload, 9);
  return out;
}

/** HELLO with zeroed connection capabilities: plain TCP, no RDMA upgrade. */
export function encodeHello(): Buffer {
  return encodeRequest(RpcCommand.Hello, new Uint8Array(CONN_CAPS_SIZE));
}

export function encodeDeviceCount(): Buffer {
  return encodeRequest(RpcCommand.DeviceCount);
}

export function encodeGetDeviceMemory(device: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32LE(device, 0);
  return encodeRequest(RpcCommand.GetDeviceMemory, payload);
}

/**
 * Splits one response off the front of `data`: null while incomplete; throws when the size field
 * does not match what the command answers with (not an RPC server, or another protocol version).
 */
export function takeResponse(data: Buffer, expectedSize: number): { payload: Buffer; rest: Buffer } | null {
  if (data.length < 8) return null;
  const size = data.readBigUInt64LE(0);
  if (size !== BigInt(expectedSize)) {
    throw new Error(`unexpected response size ${size} (expected ${expectedSize}): not a llama.cpp RPC server of a compatible version`);
  }
  if (data.length < 8 + expectedSize) return null;
  return { payload: data.subarray(8, 8 + expectedSize), rest: data.subarray(8 + expectedSize) };
}

export function decodeHello(payload: Buffer): RpcVersion {
  return { major: payload.readUInt8(0), minor: payload.readUInt8(1), patch: payload.readUInt8(2) };
}

export function decodeDeviceCount(payload: Buffer): number {
  return payload.readUInt32LE(0);
}

export function decodeDeviceMemory(payload: Buffer): { freeBytes: number; totalBytes: number } {
  return { freeBytes: Number(payload.readBigUInt64LE(0)), totalBytes: Number(payload.readBigUInt64LE(8)) };
}
