// HTTP for the model library: Node's fetch with redirects followed by hand, so that a token goes to
// the hub's origin and never to the CDN a file redirects to, and so that what the hub says on its
// redirect (x-linked-etag: the file's sha256, x-linked-size) is not lost.

/** An answer that was not 2xx, with what the hub says about it (x-error-code, its JSON `error`). */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly url: string,
    /** Hugging Face's machine-readable reason: RepoNotFound, GatedRepo, EntryNotFound, RevisionNotFound. */
    readonly errorCode: string | null,
    readonly serverMessage: string | null,
  ) {
    super(`HTTP ${status} from ${url}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.name = 'HttpStatusError';
  }

  /** Worth another attempt: the server or the path to it had trouble, not the request. */
  get transient(): boolean {
    return this.status >= 500 || this.status === 429 || this.status === 408;
  }
}

export interface HttpRequest {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** A bearer token, sent to the first URL's origin only. */
  token?: string | null;
  signal?: AbortSignal;
}

export interface HttpAnswer {
  response: Response;
  /** The URL that answered, after redirects. */
  url: string;
  /** The file's sha256 as the hub (or a server) names it on any hop: x-linked-etag, or an ETag that is one. */
  sha256: string | null;
  /** x-linked-size from the hub's redirect, when given. */
  linkedSize: number | null;
}

const MAX_REDIRECTS = 10;

/** A hop's header value as a sha256, if it is one (ETags come quoted, sometimes weak). */
function sha256Of(value: string | null): string | null {
  const v = value?.replace(/^W\//, '').replaceAll('"', '').trim().toLowerCase() ?? '';
  return /^[0-9a-f]{64}$/.test(v) ? v : null;
}

/** Reads at most a few KiB of an error body for its message; the hub answers `{"error": "..."}`. */
async function errorMessage(response: Response): Promise<string | null> {
  const header = response.headers.get('x-error-message');
  if (header) return header;
  const text = (await response.text().catch(() => '')).slice(0, 4096).trim();
  try {
    const json = JSON.parse(text) as { error?: unknown };
    if (typeof json.error === 'string') return json.error;
  } catch {
    // not JSON
  }
  return text && !text.startsWith('<') ? text.slice(0, 300) : null;
}

/**
 * Fetches `url`, following redirects; a status outside 2xx throws HttpStatusError (its body read for
 * the message). Network failures throw fetch's own errors.
 */
export async function httpFetch(url: string, request: HttpRequest = {}): Promise<HttpAnswer> {
  const origin = new URL(url).origin;
  let current = url;
  let sha256: string | null = null;
  let linkedSize: number | null = null;
  for (let hop = 0; ; hop++) {
    const headers: Record<string, string> = { ...request.headers };
    if (request.token && new URL(current).origin === origin) headers.authorization = `Bearer ${request.token}`;
    const response = await fetch(current, { method: request.method ?? 'GET', headers, redirect: 'manual', signal: request.signal ?? null });
    sha256 ??= sha256Of(response.headers.get('x-linked-etag')) ?? sha256Of(response.headers.get('etag'));
    const size = Number(response.headers.get('x-linked-size') ?? NaN);
    if (linkedSize === null && Number.isSafeInteger(size)) linkedSize = size;
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      if (hop >= MAX_REDIRECTS) throw new HttpStatusError(response.status, current, null, `more than ${MAX_REDIRECTS} redirects`);
      current = new URL(location, current).href;
      continue;
    }
    if (response.status < 200 || response.status >= 300) {
      const message = request.method === 'HEAD' ? null : await errorMessage(response);
      throw new HttpStatusError(response.status, current, response.headers.get('x-error-code'), message);
    }
    return { response, url: current, sha256, linkedSize };
  }
}

/** A fetch failure below HTTP (refused, reset, cut off mid-body), which a retry may get past. */
export function isNetworkError(e: unknown): boolean {
  if (!(e instanceof Error) || e.name === 'AbortError') return false;
  if (e instanceof TypeError) return true; // fetch failed, terminated
  const code = (e as NodeJS.ErrnoException).code ?? ((e.cause as NodeJS.ErrnoException | undefined)?.code);
  return typeof code === 'string' && (code.startsWith('UND_ERR') || ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND'].includes(code));
}

/** The total length a 206 answer's Content-Range gives ("bytes 100-199/1000" → 1000), or null. */
export function contentRangeTotal(response: Response): { start: number; total: number | null } | null {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
  if (!m) return null;
  return { start: Number(m[1]), total: m[2] === '*' ? null : Number(m[2]) };
}
