// A local stand-in for the Hugging Face hub, reached through HF_ENDPOINT: the API calls llama.cpp's -hf
// makes (refs, a recursive tree with sizes and LFS sha256s, paginated), files at
// /{repo}/resolve/{rev}/{path} redirecting to a CDN-like path with x-linked-etag and x-linked-size,
// range requests and ETags there, 401 for a gated repository without the token, 404s with the hub's
// x-error-code. It can cut a transfer off mid-file, slow it down, and serve plain files and web pages.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export const HUB_TOKEN = 'hf_testtokentesttokentesttokentesttoken';

export interface FakeHubFile {
  path: string;
  bytes: Buffer;
  /** Kept outside LFS (listed with a git blob id instead of a sha256); default false. */
  plain?: boolean;
  /** A sha256 to list instead of the true one (a corrupted upload, a lying mirror). */
  listedSha256?: string;
}

export interface FakeHubRepo {
  files: FakeHubFile[];
  gated?: boolean;
  commit?: string;
}

export interface HubRequest {
  method: string;
  /** Path and query; CDN requests begin with /cdn/. */
  path: string;
  range: string | null;
  /** An Authorization header came with it. */
  authorized: boolean;
}

export interface FakeHub {
  /** The endpoint, ending in '/': what HF_ENDPOINT is set to. */
  endpoint: string;
  requests: HubRequest[];
  addRepo(repo: string, spec: FakeHubRepo): { commit: string };
  /** The next `times` file transfers stop after `bytes` bytes: the connection is destroyed. */
  dropAfter(bytes: number, times?: number): void;
  /** Every file transfer sends at most this many bytes per second (0: as fast as it can). */
  throttle(bytesPerSecond: number): void;
  /** A file at /files/PATH, as any web server would serve it. */
  plainFile(path: string, bytes: Buffer, contentType?: string): string;
  /** Tree listings in pages of this many entries (Link: rel="next"), as the hub pages long listings. */
  pageSize(n: number): void;
  /** The bytes of file transfers (CDN and plain files) sent so far. */
  bytesServed(): number;
  close(): Promise<void>;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
export const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** Bytes that begin as a GGUF file, then `size - 4` pseudo-random bytes from `seed`. */
export function ggufLikeBytes(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  b.write('GGUF', 0, 'latin1');
  let x = seed >>> 0 || 1;
  for (let i = 4; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export async function startFakeHub(): Promise<FakeHub> {
  const repos = new Map<string, Required<FakeHubRepo>>();
  const blobs = new Map<string, Buffer>();
  const plain = new Map<string, { bytes: Buffer; type: string }>();
  const requests: HubRequest[] = [];
  const sockets = new Set<Socket>();
  let drops: { bytes: number; times: number } = { bytes: 0, times: 0 };
  let rate = 0;
  let page = 0;
  let served = 0;

  /** Sends `bytes` with range support; cut off or slowed as the test asked. */
  async function sendFile(req: IncomingMessage, res: ServerResponse, bytes: Buffer, type: string, etag: string): Promise<void> {
    let start = 0;
    let status = 200;
    const headers: Record<string, string> = { 'content-type': type, 'accept-ranges': 'bytes', etag: `"${etag}"` };
    // If-Range: the range only while the file is still the one the client's bytes came from.
    const ifRange = req.headers['if-range'];
    const range = ifRange === undefined || ifRange === headers.etag ? /^bytes=(\d+)-$/.exec(req.headers.range ?? '') : null;
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) {
        res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
        res.end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${bytes.length - 1}/${bytes.length}`;
    }
    headers['content-length'] = String(bytes.length - start);
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    let limit = bytes.length;
    if (drops.times > 0) {
      drops.times--;
      limit = Math.min(bytes.length, start + drops.bytes);
    }
    const step = rate > 0 ? Math.max(1, Math.floor(rate / 20)) : 1 << 20;
    for (let at = start; at < limit; at += step) {
      const chunk = bytes.subarray(at, Math.min(limit, at + step));
      served += chunk.length;
      if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
      if (rate > 0) await new Promise((r) => setTimeout(r, 50));
      if (res.destroyed) return;
    }
    if (limit < bytes.length) {
      // Time for the client to take in what was sent: the test is of a cut, not of a lost buffer.
      await new Promise((r) => setTimeout(r, 200));
      res.socket?.destroy();
      return;
    }
    res.end();
  }

  const record = (req: IncomingMessage, url: URL) =>
    requests.push({ method: req.method ?? 'GET', path: url.pathname + url.search, range: req.headers.range ?? null, authorized: req.headers.authorization !== undefined });

  // The CDN is another origin, as the hub's is: a client must not carry the hub's token there.
  const cdn = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://cdn');
    record(req, url);
    const bytes = blobs.get(url.pathname.split('/')[2] ?? '');
    if (url.pathname.split('/')[1] !== 'cdn' || !bytes) return json(res, 404, { error: 'no such blob' });
    void sendFile(req, res, bytes, 'application/octet-stream', sha256(bytes));
  });

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://hub');
    record(req, url);
    const authorized = req.headers.authorization === `Bearer ${HUB_TOKEN}`;
    const segments = url.pathname.split('/').filter((s) => s !== '').map(decodeURIComponent);
    if (segments[0] === 'files') {
      const file = plain.get(segments.slice(1).join('/'));
      if (!file) return json(res, 404, { error: 'not found' });
      void sendFile(req, res, file.bytes, file.type, sha256(file.bytes).slice(0, 16));
      return;
    }
    const api = segments[0] === 'api' && segments[1] === 'models';
    const repoName = api ? `${segments[2]}/${segments[3]}` : `${segments[0]}/${segments[1]}`;
    const rest = api ? segments.slice(4) : segments.slice(2);
    const repo = repos.get(repoName);
    if (!repo) return json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
    if (repo.gated && !authorized) {
      return json(res, 401, { error: `Access to model ${repoName} is restricted. You must have access to it and be authenticated to access it. Please log in.` }, { 'x-error-code': 'GatedRepo' });
    }
    const revOk = (rev: string | undefined) => rev === repo.commit || rev === 'main';

    if (api && rest[0] === 'refs') {
      return json(res, 200, { branches: [{ name: 'main', ref: 'refs/heads/main', targetCommit: repo.commit }], converts: [], tags: [] });
    }
    if (api && rest[0] === 'tree') {
      if (!revOk(rest[1])) return json(res, 404, { error: `Invalid rev id: ${rest[1]}` }, { 'x-error-code': 'RevisionNotFound' });
      const entries = repo.files.map((f) =>
        f.plain
          ? { type: 'file', oid: gitOid(f.bytes), size: f.bytes.length, path: f.path }
          : { type: 'file', oid: gitOid(Buffer.from(`pointer ${f.path}`)), size: f.bytes.length, path: f.path, lfs: { oid: f.listedSha256 ?? sha256(f.bytes), size: f.bytes.length, pointerSize: 134 } },
      );
      const dirs = [...new Set(repo.files.map((f) => f.path.split('/').slice(0, -1).join('/')).filter((d) => d !== ''))].map((d) => ({ type: 'directory', oid: '0'.repeat(40), size: 0, path: d }));
      const all = [...dirs, ...entries];
      if (page > 0) {
        const cursor = Number(url.searchParams.get('cursor') ?? 0);
        const next = cursor + page;
        const headers: Record<string, string> = next < all.length ? { link: `<${url.pathname}?recursive=true&cursor=${next}>; rel="next"` } : {};
        return json(res, 200, all.slice(cursor, next), headers);
      }
      return json(res, 200, all);
    }
    if (!api && rest[0] === 'resolve') {
      if (!revOk(rest[1])) return json(res, 404, { error: 'Revision Not Found' }, { 'x-error-code': 'RevisionNotFound' });
      const file = repo.files.find((f) => f.path === rest.slice(2).join('/'));
      if (!file) return json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' });
      if (file.plain) {
        void sendFile(req, res, file.bytes, 'text/plain', gitOid(file.bytes));
        return;
      }
      const sha = sha256(file.bytes);
      blobs.set(sha, file.bytes);
      res.writeHead(302, {
        location: `${cdnOrigin}/cdn/${sha}?response-content-disposition=attachment`,
        'x-linked-etag': `"${file.listedSha256 ?? sha}"`,
        'x-linked-size': String(file.bytes.length),
        'x-repo-commit': repo.commit,
        etag: `"${file.listedSha256 ?? sha}"`,
      });
      res.end();
      return;
    }
    json(res, 404, { error: 'not found' });
  });
  for (const s of [server, cdn]) {
    s.on('connection', (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  }
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const cdnOrigin = `http://127.0.0.1:${(cdn.address() as AddressInfo).port}`;

  return {
    endpoint,
    requests,
    addRepo(repo, spec) {
      const commit = spec.commit ?? createHash('sha1').update(repo).digest('hex');
      repos.set(repo, { files: spec.files, gated: spec.gated ?? false, commit });
      return { commit };
    },
    dropAfter(bytes, times = 1) {
      drops = { bytes, times };
    },
    throttle(bytesPerSecond) {
      rate = bytesPerSecond;
    },
    plainFile(path, bytes, contentType = 'application/octet-stream') {
      plain.set(path, { bytes, type: contentType });
      return `${endpoint}files/${path}`;
    },
    pageSize(n) {
      page = n;
    },
    bytesServed: () => served,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all([server, cdn].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
