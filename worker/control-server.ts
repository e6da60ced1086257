// The worker's gRPC control service (hearth.v1.WorkerService). It answers from the daemon's state and
// never touches the rpc port. With a token it listens on loopback behind the control gateway, so every
// call here, OpenPeerLink included, came over an authenticated link.
import { bindGrpcServer, closeGrpcServer, grpc, serviceDefinition } from '../common/grpc.js';
import { toGrpcError } from '../common/grpc-errors.js';
import type {
  WireDrain, WireDrainRequest, WireHealth, WireOpenPeerLink, WireOpenPeerLinkRequest, WireRelease, WireReleaseRequest, WireWatch, WireWorkerInfo,
} from '../link/worker-wire.js';

export interface WorkerStatusSource {
  info(request: WireWatch): WireWorkerInfo;
  health(request: WireWatch): WireHealth;
  drain(request: WireDrainRequest): Promise<WireDrain>;
  release(request: WireReleaseRequest): WireRelease;
  openPeerLink(request: WireOpenPeerLinkRequest): Promise<WireOpenPeerLink>;
}

export class ControlServer {
  readonly #server = new grpc.Server();
  #port: number | null = null;

  constructor(source: WorkerStatusSource) {
    const unary =
      <Req, Res>(answer: (request: Req) => Res | Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>) => {
        Promise.resolve()
          .then(() => answer(call.request))
          .then(
            (res) => callback(null, res),
            (e: unknown) => callback(toGrpcError(e)),
          );
      };
    this.#server.addService(serviceDefinition('WorkerService'), {
      GetInfo: unary((r: WireWatch) => source.info(r)),
      Health: unary((r: WireWatch) => source.health(r)),
      Drain: unary((r: WireDrainRequest) => source.drain(r)),
      Release: unary((r: WireReleaseRequest) => source.release(r)),
      OpenPeerLink: unary((r: WireOpenPeerLinkRequest) => source.openPeerLink(r)),
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
