// A client for a worker's control service, with a deadline on every call.
import { clientConstructor, grpc } from '../common/grpc.js';
import { unaryCall } from '../common/grpc-errors.js';
import { SecureRelay } from './relay.js';
import type { ClusterSecret } from './token.js';
import type { WireDrain, WireDrainRequest, WireHealth, WireOpenPeerLink, WireRelease, WireWorkerInfo } from './worker-wire.js';

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
   * relay of its own (a closed worker answers nothing else). close() closes the relay too. `check`:
   * prove the key first, so that a wrong token fails with a LinkError that says so.
   */
  static async open(control: string, secret: ClusterSecret | null, options: { check?: boolean } = {}): Promise<WorkerClient> {
    if (!secret) return new WorkerClient(control);
    const relay = await SecureRelay.open({ secret, kind: 'control', remote: control });
    if (options.check) {
      try {
        await relay.check();
      } catch (e) {
        await relay.close();
        throw e;
      }
    }
    const client = new WorkerClient(relay.endpoint);
    client.#relay = relay;
    return client;
  }

  constructor(address: string) {
    this.address = address;
    const Ctor = clientConstructor('WorkerService');
    this.#client = new Ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  /** `watchMs`: only from a coordinator that admits or admitted the worker (see GetInfoRequest in worker.proto). */
  getInfo(options: { timeoutMs?: number; signal?: AbortSignal; watchMs?: number } = {}): Promise<WireWorkerInfo> {
    return unaryCall(this.#client, 'GetInfo', { watch_ms: options.watchMs ?? 0 }, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  health(options: { timeoutMs?: number; signal?: AbortSignal; watchMs?: number } = {}): Promise<WireHealth> {
    return unaryCall(this.#client, 'Health', { watch_ms: options.watchMs ?? 0 }, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  /** Asks the worker to leave; with `wait`, the answer comes when the drain has ended (give a timeout to match). */
  drain(request: WireDrainRequest, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireDrain> {
    return unaryCall(this.#client, 'Drain', request, { timeoutMs: options.timeoutMs ?? 3000, signal: options.signal }, `worker ${this.address}`);
  }

  /** Tells the worker this coordinator no longer uses it: a draining worker stops. */
  release(reason: string, options: { timeoutMs?: number } = {}): Promise<WireRelease> {
    return unaryCall(this.#client, 'Release', { reason }, { timeoutMs: options.timeoutMs ?? 2000 }, `worker ${this.address}`);
  }

  /** Where this worker's rpc server dials to reach the rpc server at `endpoint` (another worker's public address). */
  openPeerLink(endpoint: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireOpenPeerLink> {
    return unaryCall(this.#client, 'OpenPeerLink', { endpoint }, { timeoutMs: options.timeoutMs ?? 5000, signal: options.signal }, `worker ${this.address}`);
  }

  close(): void {
    this.#client.close();
    void this.#relay?.close();
  }
}
