// A client for a worker's control service, with a deadline on every call.
import { clientConstructor, deadline, grpc } from '../common/grpc.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import type { WireHealth, WireWorkerInfo } from './types.js';

type Unary<Res> = (request: object, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;

export class WorkerClient {
  readonly address: string;
  readonly #client: grpc.Client;

  constructor(address: string) {
    this.address = address;
    const Ctor = clientConstructor('WorkerService');
    this.#client = new Ctor(address, grpc.credentials.createInsecure());
  }

  getInfo(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireWorkerInfo> {
    return this.#unary<WireWorkerInfo>('GetInfo', options);
  }

  health(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<WireHealth> {
    return this.#unary<WireHealth>('Health', options);
  }

  close(): void {
    this.#client.close();
  }

  #unary<Res>(method: string, options: { timeoutMs?: number; signal?: AbortSignal }): Promise<Res> {
    const fn = (this.#client as unknown as Record<string, Unary<Res>>)[method]!.bind(this.#client);
    return new Promise<Res>((resolve, reject) => {
      const call = fn({}, { deadline: deadline(options.timeoutMs ?? 3000) }, (err, res) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (err) {
          const code = err.code === grpc.status.DEADLINE_EXCEEDED ? ErrorCode.DeadlineExceeded : err.code === grpc.status.CANCELLED ? ErrorCode.Cancelled : ErrorCode.Unavailable;
          reject(new HearthError(code, `worker ${this.address}: ${method} failed: ${err.details || err.message}`, { cause: err }));
        } else {
          resolve(res as Res);
        }
      });
      const onAbort = () => call.cancel();
      options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
