// hearth's error taxonomy: a few stable codes. Each API maps them in one place (gRPC status, HTTP and
// OpenAI error shapes); messages say what happened, to what, and what the user can do.

export const ErrorCode = {
  InvalidArgument: 'INVALID_ARGUMENT',
  NotFound: 'NOT_FOUND',
  InvalidModel: 'INVALID_MODEL',
  Unavailable: 'UNAVAILABLE',
  FailedPrecondition: 'FAILED_PRECONDITION',
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
  Cancelled: 'CANCELLED',
  DeadlineExceeded: 'DEADLINE_EXCEEDED',
  Unsupported: 'UNSUPPORTED',
  Internal: 'INTERNAL',
  Unauthenticated: 'UNAUTHENTICATED',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class HearthError extends Error {
  readonly code: ErrorCode;
  /** The code the native layer (or another source) used, kept for logs and tests. */
  readonly detail: string | null;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; detail?: string | null } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HearthError';
    this.code = code;
    this.detail = options.detail ?? null;
  }
}

export function isHearthError(e: unknown, code?: ErrorCode): e is HearthError {
  return e instanceof HearthError && (code === undefined || e.code === code);
}

/** The message of anything thrown, for logs and wrapping. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
