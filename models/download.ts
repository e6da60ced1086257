// One file fetched into the model library: into a temporary name beside its destination, resumed with a
// range request after an interruption, and renamed into place only when complete and its size and
// checksum are what the source lists, so a half or wrong file never becomes a model. A lock file makes
// two processes fetching the same file take turns.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir, open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { withFileLock } from './file-lock.js';
import { contentRangeTotal, httpFetch, HttpStatusError, isNetworkError, type HttpAnswer } from './http.js';

/** What the source says the file is; null where it does not say. */
export interface ExpectedFile {
  readonly size: number | null;
  /** Lower-case hex: the hub's LFS oid, or x-linked-etag. */
  readonly sha256: string | null;
  /** A git blob id (sha1 of "blob SIZE\0" + bytes): what the hub lists for a file kept outside LFS. */
  readonly gitOid: string | null;
}

export interface DownloadProgress {
  /** The file's name, for people. */
  readonly file: string;
  readonly received: number;
  readonly total: number | null;
  /** Bytes that were already on disk when this run started (a resume), not counted in the rate. */
  readonly resumedFrom: number;
}

export type ProgressSink = (p: DownloadProgress) => void;

export interface DownloadRequest {
  readonly url: string;
  /** A bearer token for the URL's own origin (never sent where a redirect leads). */
  readonly token: string | null;
  readonly dest: string;
  /** The temporary name; bytes there are resumed from. */
  readonly temp: string;
  /** The file's name in messages and progress. */
  readonly label: string;
  readonly expected: ExpectedFile;
  /** Refuse bytes that do not begin as a GGUF file (an HTML page, an error document). */
  readonly gguf: boolean;
  readonly signal?: AbortSignal;
  readonly progress?: ProgressSink;
  /** Called when another process holds the file's lock and this one waits. */
  readonly onWait?: () => void;
  /** Attempts in a row that get no further, each resuming where the last stopped (default 5). */
  readonly attempts?: number;
  /** The first retry's delay, doubled for each next one (default 1 s). */
  readonly retryDelayMs?: number;
  /** An attempt that receives nothing for this long is dropped and retried (default 60 s). */
  readonly idleMs?: number;
  readonly userAgent?: string;
}

const GGUF_MAGIC = Buffer.from('GGUF');

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => null))?.size ?? 0;
}

/** Fetches `request.url` into `request.dest`, unless that exists already. */
export async function downloadFile(request: DownloadRequest): Promise<void> {
  await mkdir(dirname(request.dest), { recursive: true });
  try {
    await withFileLock(
      `${request.dest}.lock`,
      async () => {
        if (await exists(request.dest)) return; // another process finished it while we waited
        await fetchWithRetries(request);
      },
      { signal: request.signal, onWait: () => request.onWait?.() },
    );
  } catch (e) {
    if (!request.signal?.aborted || e instanceof HearthError) throw e;
    throw new HearthError(ErrorCode.Cancelled, `download of ${request.label} stopped before it began`);
  }
}

/** Attempts until one completes; an attempt that got bytes further starts the count and the delays afresh. */
async function fetchWithRetries(request: DownloadRequest): Promise<void> {
  const attempts = request.attempts ?? 5;
  let delay = request.retryDelayMs ?? 1000;
  for (let attempt = 1; ; attempt++) {
    const before = await sizeOf(request.temp);
    try {
      await attemptOnce(request);
      return;
    } catch (e) {
      if ((await sizeOf(request.temp)) > before) {
        attempt = 1;
        delay = request.retryDelayMs ?? 1000;
      }
      const transient = isNetworkError(e) || (e instanceof HttpStatusError && e.transient) || (e instanceof TransientError);
      if (!transient || attempt >= attempts || request.signal?.aborted) {
        if (request.signal?.aborted) {
          throw new HearthError(ErrorCode.Cancelled, `download of ${request.label} stopped; the ${await sizeOf(request.temp)} bytes fetched are kept in ${request.temp}, and the next run resumes from them`);
        }
        if (transient) {
          throw new HearthError(ErrorCode.Unavailable, `download of ${request.label} failed after ${attempts} attempts: ${messageOf(e)}; the bytes fetched are kept and the next run resumes from them`, { cause: e });
        }
        throw e;
      }
      await sleep(delay, undefined, request.signal ? { signal: request.signal } : {}).catch(() => undefined);
      delay *= 2;
    }
  }
}

/** A failure another attempt may get past: nothing arrived for too long, or the body ended early. */
class TransientError extends Error {}

interface Hashes {
  sha256: Hash;
  git: Hash | null;
}

/** Hashes the bytes a previous attempt left, so the checksum covers the whole file. */
async function hashExisting(path: string, bytes: number, hashes: Hashes): Promise<void> {
  if (bytes === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) {
    hashes.sha256.update(chunk as Buffer);
    hashes.git?.update(chunk as Buffer);
  }
}

function newHashes(expected: ExpectedFile): Hashes {
  const git = expected.gitOid !== null && expected.size !== null ? createHash('sha1').update(`blob ${expected.size}\0`) : null;
  return { sha256: createHash('sha256'), git };
}

/** The validator (ETag or Last-Modified) the bytes in the temporary file came with, kept beside it for If-Range. */
const validatorPath = (request: DownloadRequest) => `${request.temp}.validator`;

async function readValidator(request: DownloadRequest): Promise<string | null> {
  return (await readFile(validatorPath(request), 'utf8').catch(() => '')).trim() || null;
}

/** A strong validator of the answer, for resuming from it: an ETag that is not weak, else Last-Modified. */
function validatorOf(response: Response): string | null {
  const etag = response.headers.get('etag');
  if (etag && !etag.startsWith('W/')) return etag;
  return response.headers.get('last-modified');
}

/**
 * A request for the bytes from `offset`, on the condition (If-Range) that the file is still the one
 * they came from; a server that ignores the range, or whose file changed, sends all of it (offset 0).
 */
async function requestFrom(request: DownloadRequest, offset: number, signal: AbortSignal): Promise<{ answer: HttpAnswer; offset: number }> {
  const headers: Record<string, string> = { 'accept-encoding': 'identity', ...(request.userAgent ? { 'user-agent': request.userAgent } : {}) };
  if (offset > 0) {
    headers.range = `bytes=${offset}-`;
    const validator = await readValidator(request);
    if (validator) headers['if-range'] = validator;
  }
  let answer: HttpAnswer;
  try {
    answer = await httpFetch(request.url, { headers, token: request.token, signal });
  } catch (e) {
    // 416: what we hold is not a prefix of what is there now; start over.
    if (offset > 0 && e instanceof HttpStatusError && e.status === 416) {
      await rm(request.temp, { force: true });
      return requestFrom(request, 0, signal);
    }
    throw e;
  }
  const response = answer.response;
  if (offset > 0 && response.status !== 206) offset = 0;
  if (response.status === 206 && contentRangeTotal(response)?.start !== offset) {
    await response.body?.cancel();
    throw new HearthError(ErrorCode.Unavailable, `${request.url} answered a request for the bytes from ${offset} with ${response.headers.get('content-range')}`);
  }
  if (offset === 0) {
    const validator = validatorOf(response);
    if (validator) await writeFile(validatorPath(request), validator);
    else await rm(validatorPath(request), { force: true });
  }
  return { answer, offset };
}

/** One attempt: resume from the temporary file's bytes, fetch the rest, verify, rename into place. */
async function attemptOnce(request: DownloadRequest): Promise<void> {
  let offset = await sizeOf(request.temp);
  if (request.expected.size !== null && offset > request.expected.size) {
    await rm(request.temp, { force: true });
    offset = 0;
  }
  // Hashed before the request: a large resumed file takes a while to read, which no server should wait on.
  let hashes = newHashes(request.expected);
  await hashExisting(request.temp, offset, hashes);
  const idleMs = request.idleMs ?? 60_000;
  const idle = new AbortController();
  const signal = request.signal ? AbortSignal.any([request.signal, idle.signal]) : idle.signal;
  let idleTimer = setTimeout(() => idle.abort(), idleMs);
  const stillAlive = () => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => idle.abort(), idleMs);
  };
  try {
    let answer: HttpAnswer | null = null;
    // Bytes enough already (a run stopped between the last byte and the rename): verify them as they are.
    if (request.expected.size === null || offset < request.expected.size) {
      const from = offset;
      ({ answer, offset } = await requestFrom(request, offset, signal));
      if (offset !== from) hashes = newHashes(request.expected);
    }
    if (answer) refuseHtml(request, answer.response);
    const total = request.expected.size ?? answer?.linkedSize ?? (answer ? totalOf(answer.response) : offset);
    const sha256 = request.expected.sha256 ?? answer?.sha256 ?? null;
    const received = await receive(request, answer?.response ?? null, offset, total, hashes, stillAlive);
    await verify(request, received, total, sha256, hashes);
    await rename(request.temp, request.dest);
    await rm(validatorPath(request), { force: true });
  } catch (e) {
    if (idle.signal.aborted && !request.signal?.aborted) throw new TransientError(`nothing arrived from ${request.url} for ${idleMs / 1000} s`);
    if (e instanceof HearthError && (e.code === ErrorCode.InvalidModel || e.code === ErrorCode.ResourceExhausted)) {
      await rm(request.temp, { force: true });
      await rm(validatorPath(request), { force: true });
    }
    throw e;
  } finally {
    clearTimeout(idleTimer);
  }
}

/** Appends the body to the temporary file from `offset`, hashing and reporting as it goes; the bytes on disk after. */
async function receive(request: DownloadRequest, response: Response | null, offset: number, total: number | null, hashes: Hashes, stillAlive: () => void): Promise<number> {
  const handle = await open(request.temp, offset > 0 ? 'a' : 'w');
  let received = offset;
  // Bytes from before a resume were checked when they arrived.
  let head: Buffer | null = request.gguf && offset === 0 ? Buffer.alloc(0) : null;
  try {
    for await (const chunk of (response?.body ?? []) as AsyncIterable<Uint8Array>) {
      stillAlive();
      if (head !== null) {
        head = Buffer.concat([head, chunk.subarray(0, GGUF_MAGIC.length - head.length)]);
        if (head.length === GGUF_MAGIC.length) head = checkMagic(request, head);
      }
      await write(request, handle, chunk, received, total);
      hashes.sha256.update(chunk);
      hashes.git?.update(chunk);
      received += chunk.length;
      request.progress?.({ file: request.label, received, total, resumedFrom: offset });
      if (total !== null && received > total) break;
    }
    await handle.sync();
  } finally {
    await handle.close().catch(() => undefined);
  }
  if (head !== null && received > 0) checkMagic(request, head);
  return received;
}

/** The whole file's length from a 200 or 206 answer, or null when the server does not say. */
function totalOf(response: Response): number | null {
  if (response.status === 206) return contentRangeTotal(response)?.total ?? null;
  const length = Number(response.headers.get('content-length') ?? NaN);
  return Number.isSafeInteger(length) ? length : null;
}

function refuseHtml(request: DownloadRequest, response: Response): void {
  const type = response.headers.get('content-type') ?? '';
  if (request.gguf && /^text\/html\b/i.test(type)) {
    void response.body?.cancel();
    throw new HearthError(
      ErrorCode.InvalidModel,
      `${request.url} serves a web page (${type}), not the GGUF file ${request.label}: give the file's download link ` +
        '(on Hugging Face, the one with /resolve/ in it, not /blob/), or name the model as hf:OWNER/REPO:QUANT',
    );
  }
}

/** Null once the first bytes are GGUF's magic (nothing more to check); throws when they are not. */
function checkMagic(request: DownloadRequest, head: Buffer): null {
  if (head.equals(GGUF_MAGIC)) return null;
  throw new HearthError(
    ErrorCode.InvalidModel,
    `${request.url} is not a GGUF file (it begins with ${JSON.stringify(head.toString('latin1'))}, not "GGUF"); nothing was kept`,
  );
}

/** Writes a chunk; a full disk becomes an error that says so (attemptOnce removes the partial file). */
async function write(request: DownloadRequest, handle: FileHandle, chunk: Uint8Array, received: number, total: number | null): Promise<void> {
  try {
    await handle.write(chunk);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') throw e;
    const left = total === null ? '' : ` (${received} of ${total} bytes were written)`;
    throw new HearthError(
      ErrorCode.ResourceExhausted,
      `no space left on the disk of ${dirname(request.dest)} while downloading ${request.label}${left}; the partial file is removed. ` +
        'Free space there, or point HEARTH_MODELS at a disk with room for the model',
      { cause: e },
    );
  }
}

async function verify(request: DownloadRequest, received: number, total: number | null, sha256: string | null, hashes: Hashes): Promise<void> {
  const refuse = async (what: string) => {
    await rm(request.temp, { force: true });
    throw new HearthError(ErrorCode.InvalidModel, `${request.label} from ${request.url}: ${what}; the file is refused and removed, nothing was kept`);
  };
  if (total !== null && received !== total) {
    if (received < total) throw new TransientError(`the connection ended after ${received} of ${total} bytes`);
    await refuse(`${received} bytes arrived where ${total} were listed`);
  }
  const got = hashes.sha256.digest('hex');
  if (sha256 !== null && got !== sha256) await refuse(`checksum mismatch (sha256 ${got}, the source lists ${sha256})`);
  if (hashes.git && request.expected.gitOid !== null) {
    const oid = hashes.git.digest('hex');
    if (oid !== request.expected.gitOid.toLowerCase()) await refuse(`checksum mismatch (git blob id ${oid}, the source lists ${request.expected.gitOid})`);
  }
}
