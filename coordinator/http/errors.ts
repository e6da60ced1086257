// The one place hearth's errors become HTTP statuses and OpenAI's error shape. A request error is a
// 4xx: official clients retry 5xx and 429, which is right only for conditions that can pass.
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | number | null };
}

const MAPPING: Record<ErrorCode, { status: number; type: string }> = {
  [ErrorCode.InvalidArgument]: { status: 400, type: 'invalid_request_error' },
  [ErrorCode.Unsupported]: { status: 400, type: 'invalid_request_error' },
  [ErrorCode.NotFound]: { status: 404, type: 'not_found_error' },
  [ErrorCode.ResourceExhausted]: { status: 429, type: 'rate_limit_error' },
  [ErrorCode.Cancelled]: { status: 499, type: 'cancelled' },
  [ErrorCode.DeadlineExceeded]: { status: 504, type: 'timeout_error' },
  [ErrorCode.Unavailable]: { status: 503, type: 'unavailable_error' },
  [ErrorCode.FailedPrecondition]: { status: 503, type: 'unavailable_error' },
  [ErrorCode.InvalidModel]: { status: 503, type: 'unavailable_error' },
  [ErrorCode.Internal]: { status: 500, type: 'server_error' },
  [ErrorCode.Unauthenticated]: { status: 401, type: 'authentication_error' },
};

/** The field an error names ("max_tokens: must be ..." → max_tokens). */
function paramOf(message: string): string | null {
  const m = /^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): /.exec(message);
  return m ? m[1]! : null;
}

export function toOpenAiError(e: unknown): { status: number; body: OpenAiErrorBody } {
  if (e instanceof HearthError) {
    const { status, type } = MAPPING[e.code];
    return { status, body: { error: { message: e.message, type, param: status === 400 ? paramOf(e.message) : null, code: e.code.toLowerCase() } } };
  }
  return { status: 500, body: { error: { message: `internal error: ${messageOf(e)}`, type: 'server_error', param: null, code: 'internal' } } };
}

export function invalid(message: string): HearthError {
  return new HearthError(ErrorCode.InvalidArgument, message);
}
