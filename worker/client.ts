// A client for a worker's control service, with a deadline on every call.
import { clientConstructor, grpc } from '../common/grpc.js';
import { unaryCall } from '../common/grpc-errors.js';
import type { WireHealth, WireWorkerInfo } from './types.js';

export class WorkerClient {
  readonly address: string;
  readonly #client: grpc.Client;

  constructor(address: string) {
    this.address = address;
    const Ctor = clientConstructor('WorkerService');
    this.#client = new Ctor(address, grpc.credentials.createInsecure());
  }

  getInfo(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireWorkerInfo> {
    return unaryCall(this.#client, 'GetInfo', {}, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  health(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireHealth> {
    return unaryCall(this.#client, 'Health', {}, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  close(): void {
    this.#client.close();
  }
}
