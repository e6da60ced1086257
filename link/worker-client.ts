// A client for a worker's control service, with a deadline on every call.
import { clientConstructor, grpc } from '../common/grpc.js';
import { unaryCall } from '../common/grpc-errors.js';
import { SecureRelay } from './relay.js';
import type { ClusterSecret } from './token.js';
import type { WireHealth, WireWorkerInfo } from './worker-wire.js';

/**
 * A worker that was cut off must be found again within seconds of the network returning: reconnect
 * attempts stay at most a second apart (grpc-js would back off to minutes), and an HTTP/2 ping finds a
 * connection that died silently (a pulled cable sends no reset).
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = Object.freeze({
  'grpc.initial_reconnect_backoff_ms': 250,
  'grpc.max_reconnect_backoff_ms': 1000,
  'grpc.keepalive_time_ms': 2000,
  'grpc.keepalive_timeout_ms': 2000,
  'grpc.keepalive_permit_without_calls': 1,
});

export class WorkerClient {
  readonly address: string;
  readonly #client: grpc.Client;
  #relay: SecureRelay | null = null;

  /**
   * A client for the worker at `control`: straight there, or with the cluster's secret through a
   * relay of its own (a closed worker answers nothing else). close() closes the relay too.
   */
  static async open(control: string, secret: ClusterSecret | null): Promise<WorkerClient> {
    if (!secret) return new WorkerClient(control);
    const relay = await SecureRelay.open({ secret, kind: 'control', remote: control });
    const client = new WorkerClient(relay.endpoint);
    client.#relay = relay;
    return client;
  }

  constructor(address: string) {
    this.address = address;
    const Ctor = clientConstructor('WorkerService');
    this.#client = new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  getInfo(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireWorkerInfo> {
    return unaryCall(this.#client, 'GetInfo', {}, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  health(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireHealth> {
    return unaryCall(this.#client, 'Health', {}, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  close(): void {
    this.#client.close();
    void this.#relay?.close();
  }
}
