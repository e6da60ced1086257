// The worker's gRPC control service (hearth.v1.WorkerService). It answers from the daemon's state and
// never touches the rpc port.
import { bindGrpcServer, closeGrpcServer, grpc, serviceDefinition } from '../common/grpc.js';
import { messageOf } from '../common/errors.js';
import type { WireHealth, WireWorkerInfo } from '../link/worker-wire.js';

export interface WorkerStatusSource {
  info(): WireWorkerInfo;
  health(): WireHealth;
}

export class ControlServer {
  readonly #server = new grpc.Server();
  #port: number | null = null;

  constructor(source: WorkerStatusSource) {
    const unary =
      <T>(answer: () => T) =>
      (_call: grpc.ServerUnaryCall<unknown, T>, callback: grpc.sendUnaryData<T>) => {
        try {
          callback(null, answer());
        } catch (e) {
          callback({ code: grpc.status.INTERNAL, details: messageOf(e) });
        }
      };
    this.#server.addService(serviceDefinition('WorkerService'), {
      GetInfo: unary(() => source.info()),
      Health: unary(() => source.health()),
    });
  }

  get port(): number | null {
    return this.#port;
  }

  async listen(host: string, port: number): Promise<number> {
    this.#port = await bindGrpcServer(this.#server, host, port, (err) =>
      /EADDRINUSE|address already in use|No address added/i.test(err.message)
        ? `control port ${port} on ${host} is already in use (another worker?); choose another with --control-port`
        : `cannot listen on ${host}:${port} for the control service: ${err.message}`,
    );
    return this.#port;
  }

  close(graceMs = 2000): Promise<void> {
    return closeGrpcServer(this.#server, graceMs);
  }
}
