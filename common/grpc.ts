// gRPC plumbing shared by every service: the proto files loaded with one fixed set of options, and
// deadlines for clients.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, HearthError } from './errors.js';

export { grpc };

/** Loader options, fixed in one place: field names as in the .proto, 64-bit ints as strings. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

function protoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'hearth', 'v1'))) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new HearthError(ErrorCode.Internal, 'cannot find the proto/ folder of this hearth installation');
    dir = up;
  }
}

let cached: grpc.GrpcObject | null = null;

/** The hearth.v1 package with every service. */
export function hearthProto(): grpc.GrpcObject {
  if (cached) return cached;
  const root = protoRoot();
  const definition = protoLoader.loadSync(['hearth/v1/worker.proto', 'hearth/v1/coordinator.proto'], { ...PROTO_LOADER_OPTIONS, includeDirs: [root] });
  const loaded = grpc.loadPackageDefinition(definition);
  cached = (loaded.hearth as grpc.GrpcObject).v1 as grpc.GrpcObject;
  return cached;
}

export function serviceDefinition(name: string): grpc.ServiceDefinition {
  const ctor = hearthProto()[name] as grpc.ServiceClientConstructor | undefined;
  if (!ctor) throw new HearthError(ErrorCode.Internal, `no gRPC service hearth.v1.${name}`);
  return ctor.service;
}

export function clientConstructor(name: string): grpc.ServiceClientConstructor {
  const ctor = hearthProto()[name] as grpc.ServiceClientConstructor | undefined;
  if (!ctor) throw new HearthError(ErrorCode.Internal, `no gRPC service hearth.v1.${name}`);
  return ctor;
}

export function deadline(ms: number): Date {
  return new Date(Date.now() + ms);
}

/** Lets calls in flight finish for up to `graceMs`, then cuts the rest. */
export async function closeGrpcServer(server: grpc.Server, graceMs = 2000): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Binds an insecure server; `describe` turns a bind failure into the message the user sees. */
export function bindGrpcServer(server: grpc.Server, host: string, port: number, describe: (err: Error) => string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
      if (err) reject(new HearthError(ErrorCode.FailedPrecondition, describe(err)));
      else resolve(bound);
    });
  });
}
