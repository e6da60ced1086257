// The one place hearth's error codes become gRPC statuses.
import { ErrorCode, HearthError, messageOf } from './errors.js';
import { deadline, grpc } from './grpc.js';

const STATUS: Record<ErrorCode, grpc.status> = {
  [ErrorCode.InvalidArgument]: grpc.status.INVALID_ARGUMENT,
  [ErrorCode.NotFound]: grpc.status.NOT_FOUND,
  [ErrorCode.InvalidModel]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.Unavailable]: grpc.status.UNAVAILABLE,
  [ErrorCode.FailedPrecondition]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.ResourceExhausted]: grpc.status.RESOURCE_EXHAUSTED,
  [ErrorCode.Cancelled]: grpc.status.CANCELLED,
  [ErrorCode.DeadlineExceeded]: grpc.status.DEADLINE_EXCEEDED,
  [ErrorCode.Unsupported]: grpc.status.UNIMPLEMENTED,
  [ErrorCode.Internal]: grpc.status.INTERNAL,
  [ErrorCode.Unauthenticated]: grpc.status.UNAUTHENTICATED,
};

export function toGrpcError(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof HearthError) return { code: STATUS[e.code], details: e.message };
  return { code: grpc.status.INTERNAL, details: `internal error: ${messageOf(e)}` };
}

const CODES = new Map<grpc.status, ErrorCode>(Object.entries(STATUS).map(([k, v]) => [v, k as ErrorCode]));

/** For clients: a gRPC failure as a HearthError with the matching code. */
export function fromGrpcError(e: grpc.ServiceError, what: string): HearthError {
  return new HearthError(CODES.get(e.code) ?? ErrorCode.Unavailable, `${what}: ${e.details || e.message}`, { cause: e });
}

type UnaryMethod<Res> = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * One unary call with a deadline, cancelled when `signal` aborts; a failure is a HearthError whose
 * message starts with `what` ("worker 10.0.0.5:50051: Health failed: ...").
 */
export function unaryCall<Res>(
  client: grpc.Client,
  method: string,
  request: object,
  options: { timeoutMs: number; signal?: AbortSignal | undefined; metadata?: grpc.Metadata },
  what: string,
): Promise<Res> {
  const fn = (client as unknown as Record<string, UnaryMethod<Res>>)[method]!.bind(client);
  return new Promise<Res>((resolve, reject) => {
    const onAbort = () => call.cancel();
    const call = fn(request, options.metadata ?? new grpc.Metadata(), { deadline: deadline(options.timeoutMs) }, (err, res) => {
      options.signal?.removeEventListener('abort', onAbort);
      if (err) reject(fromGrpcError(err, `${what}: ${method} failed`));
      else resolve(res as Res);
    });
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
