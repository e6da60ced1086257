// The model library against a local stand-in for the Hugging Face hub (HF_ENDPOINT): what it fetches,
// how it resumes and verifies, what it refuses, and what it finds on disk without the network.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { pino } from 'pino';

import { isHearthError } from '../../common/errors.js';
import type { DownloadProgress } from '../../models/download.js';
import { ModelLibrary } from '../../models/library.js';
import type { LibrarySettings } from '../../models/library-settings.js';
import { parseModelRef } from '../../models/model-ref.js';
import { freePort } from '../helpers/rpc-server.js';
import { runCli } from '../helpers/worker.js';
import { ggufLikeBytes, HUB_TOKEN, sha256, startFakeHub, type FakeHub } from '../helpers/hub-server.js';

const silent = pino({ level: 'silent' });

/** Every file under `dir`, relative, sorted. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as { name: string; parentPath: string; isDirectory(): boolean }[])
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('model library', () => {
  let hub: FakeHub;
  let root: string;
  let dir: string;
  let hfCache: string;
  const single = ggufLikeBytes(300_000, 1);
  const shard1 = ggufLikeBytes(200_000, 2);
  const shard2 = ggufLikeBytes(150_000, 3);
  const q8 = ggufLikeBytes(120_000, 4);
  const plainF16 = ggufLikeBytes(5_000, 5);

  const settings = (over: Partial<LibrarySettings> = {}): LibrarySettings => ({ dir, hfCaches: [hfCache], endpoint: hub.endpoint, token: null, offline: false, ...over });
  const library = (over: Partial<LibrarySettings> = {}, progress?: (p: DownloadProgress) => void) =>
    new ModelLibrary(settings(over), { log: silent, retryDelayMs: 10, idleMs: 5000, ...(progress ? { progress } : {}) });
  const cdnGets = () => hub.requests.filter((r) => r.path.startsWith('/cdn/') && r.method === 'GET');

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'hearth-library-'));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  beforeEach(async () => {
    hub = await startFakeHub();
    dir = mkdtempSync(join(root, 'lib-'));
    hfCache = mkdtempSync(join(root, 'hf-'));
    hub.addRepo('test/single', { files: [{ path: 'README.md', bytes: Buffer.from('# a model\n'), plain: true }, { path: 'single-Q8_0.gguf', bytes: single }] });
    hub.addRepo('test/split', {
      files: [
        { path: 'big-Q8_0.gguf', bytes: q8 },
        { path: 'Q4_K_M/big-Q4_K_M-00002-of-00002.gguf', bytes: shard2 },
        { path: 'Q4_K_M/big-Q4_K_M-00001-of-00002.gguf', bytes: shard1 },
        { path: 'big-F16.gguf', bytes: plainF16, plain: true },
      ],
    });
  });
  afterEach(async () => {
    await hub.close();
  });

  test('a single file: fetched into the Hugging Face layout, verified, with progress', async () => {
    const seen: DownloadProgress[] = [];
    const m = await library({}, (p) => seen.push(p)).resolve(parseModelRef('hf:test/single:Q8_0'));
    assert.equal(m.origin, 'downloaded');
    const commit = readFileSync(join(dir, 'models--test--single', 'refs', 'main'), 'utf8');
    assert.equal(m.path, join(dir, 'models--test--single', 'snapshots', commit, 'single-Q8_0.gguf'));
    assert.ok(lstatSync(m.path).isSymbolicLink());
    assert.equal(readlinkSync(m.path), join('..', '..', 'blobs', sha256(single)));
    assert.ok(readFileSync(m.path).equals(single));
    assert.deepEqual(filesUnder(join(dir, 'models--test--single')), ['blobs/' + sha256(single), 'refs/main', `snapshots/${commit}/single-Q8_0.gguf`], 'no temporary or lock file is left');
    assert.equal(seen.at(-1)?.received, single.length);
    assert.equal(seen.at(-1)?.total, single.length);
    const api = hub.requests.filter((r) => r.path.startsWith('/api/')).map((r) => r.path);
    assert.deepEqual(api, ['/api/models/test/single/refs', `/api/models/test/single/tree/${commit}?recursive=true`]);
    assert.ok(hub.requests.some((r) => r.path === `/test/single/resolve/${commit}/single-Q8_0.gguf`));
  });

  test('a split model picked by its quant tag (any case): every shard, and nothing else', async () => {
    hub.pageSize(2); // the listing comes in pages, as the hub's does for long ones
    const m = await library().resolve(parseModelRef('hf:test/split:q4_k_m'));
    assert.equal(m.files.length, 2);
    assert.match(m.path, /Q4_K_M\/big-Q4_K_M-00001-of-00002\.gguf$/);
    assert.match(m.files[1]!, /Q4_K_M\/big-Q4_K_M-00002-of-00002\.gguf$/);
    assert.ok(readFileSync(m.files[1]!).equals(shard2));
    assert.equal(cdnGets().length, 2, 'the Q8_0 file is not fetched');
    assert.ok(hub.requests.some((r) => r.path.includes('cursor=')), 'the second page of the listing was read');
    // A file kept outside LFS is checked against its git blob id.
    const f16 = await library().resolve(parseModelRef('hf:test/split:F16'));
    assert.ok(readFileSync(f16.path).equals(plainF16));
  });

  test('a dropped connection is resumed with a range request, in the same run and in the next', async () => {
    // Cut off seven times: more than five attempts, but each gets further, so the download goes on.
    hub.dropAfter(40_000, 7);
    const m = await library().resolve(parseModelRef('hf:test/single:Q8_0'));
    assert.ok(readFileSync(m.path).equals(single));
    const ranges = cdnGets().map((r) => r.range);
    assert.equal(ranges[0], null);
    const starts = ranges.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? '')?.[1]));
    assert.ok(starts.length >= 7 && starts.every((n, i) => n % 40_000 === 0 && n >= (starts[i - 1] ?? 40_000)), ranges.join(' '));
    assert.equal(starts.at(-1), 280_000);

    // A run that stopped earlier left bytes in the temporary file: the next starts from them.
    const other = mkdtempSync(join(root, 'lib-'));
    const blobs = join(other, 'models--test--single', 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${sha256(single)}.incomplete`), single.subarray(0, 50_000));
    const again = await library({ dir: other }).resolve(parseModelRef('hf:test/single:Q8_0'));
    assert.ok(readFileSync(again.path).equals(single));
    assert.equal(cdnGets().at(-1)?.range, 'bytes=50000-');
  });

  test('a URL whose file changed since the bytes on disk came: If-Range gets the whole new file, not a splice', async () => {
    const url = hub.plainFile('m/changed-Q8_0.gguf', q8);
    const dest = join(dir, 'urls', 'http', new URL(url).host, 'files', 'm', 'changed-Q8_0.gguf');
    mkdirSync(join(dest, '..'), { recursive: true });
    writeFileSync(`${dest}.incomplete`, single.subarray(0, 40_000)); // from the file as it was
    writeFileSync(`${dest}.incomplete.validator`, '"the-old-etag"');
    const m = await library().resolve(parseModelRef(url));
    assert.ok(readFileSync(m.path).equals(q8));
    assert.equal(hub.requests.at(-1)?.range, 'bytes=40000-', 'a resume was asked for, on condition');
    assert.deepEqual(filesUnder(join(dest, '..')), ['changed-Q8_0.gguf'], 'no temporary, validator or lock file left');
  });

  test('a tag pulled before the repository moved on is found in its older snapshot, offline', async () => {
    await library().resolve(parseModelRef('hf:test/split:Q8_0'));
    hub.addRepo('test/split', { commit: 'd'.repeat(40), files: [{ path: 'big-Q8_0.gguf', bytes: q8 }, { path: 'big-F16.gguf', bytes: plainF16, plain: true }] });
    await library().resolve(parseModelRef('hf:test/split:F16'));
    assert.equal(readFileSync(join(dir, 'models--test--split', 'refs', 'main'), 'utf8'), 'd'.repeat(40));
    const m = await library({ offline: true }).resolve(parseModelRef('hf:test/split:Q8_0'));
    assert.ok(readFileSync(m.path).equals(q8));
    assert.doesNotMatch(m.path, /d{40}/, 'from the snapshot it was pulled into');
    assert.deepEqual((await library({ offline: true }).list()).map((e) => e.ref), ['hf:test/split:F16', 'hf:test/split:Q8_0']);
  });

  test('a checksum mismatch is refused and nothing is left in the library', async () => {
    hub.addRepo('test/corrupt', { files: [{ path: 'c-Q4_K_M.gguf', bytes: single, listedSha256: sha256(q8) }] });
    await assert.rejects(library().resolve(parseModelRef('hf:test/corrupt')), (e: Error) => {
      assert.match(e.message, /c-Q4_K_M\.gguf from .*: checksum mismatch \(sha256 [0-9a-f]{64}, the source lists [0-9a-f]{64}\); the file is refused and removed/);
      return true;
    });
    assert.deepEqual(filesUnder(dir), []);
  });

  test('a gated repository: without a token a clear message, with one the files (and no token to the CDN)', async () => {
    hub.addRepo('test/gated', { gated: true, files: [{ path: 'g-Q8_0.gguf', bytes: q8 }] });
    await assert.rejects(library().resolve(parseModelRef('hf:test/gated')), (e: Error) => {
      assert.ok(isHearthError(e, 'UNAUTHENTICATED'));
      assert.match(e.message, /test\/gated is gated \(HTTP 401\): accept its conditions on .*test\/gated, then set HF_TOKEN to an access token/);
      return true;
    });
    const before = hub.requests.length;
    const m = await library({ token: HUB_TOKEN }).resolve(parseModelRef('hf:test/gated'));
    assert.ok(readFileSync(m.path).equals(q8));
    assert.ok(cdnGets().length > 0 && cdnGets().every((r) => !r.authorized), 'the token stays with the hub');
    assert.ok(hub.requests.slice(before).filter((r) => !r.path.startsWith('/cdn/')).every((r) => r.authorized));
  });

  test('an unknown repository or tag: 404s that say what exists', async () => {
    await assert.rejects(library().resolve(parseModelRef('hf:test/nope:Q4_K_M')), /no repository test\/nope on http:\/\/127\.0\.0\.1:\d+\/ \(HTTP 404\), or it is private \(set HF_TOKEN\)/);
    await assert.rejects(library().resolve(parseModelRef('hf:test/split:Q5_K_M')), /test\/split has no GGUF file for quantisation 'Q5_K_M'; it has: F16, Q4_K_M, Q8_0 \(for example hf:test\/split:F16\)/);
    assert.deepEqual(filesUnder(dir), []);
  });

  test('a URL that serves a web page, or bytes that are not GGUF, is refused and leaves nothing', async () => {
    const page = hub.plainFile('bartowski/model/blob/main/m-Q4_K_M.gguf', Buffer.from('<!doctype html><html><body>a model page</body></html>'), 'text/html; charset=utf-8');
    await assert.rejects(library().resolve(parseModelRef(page)), /serves a web page \(text\/html; charset=utf-8\), not the GGUF file m-Q4_K_M\.gguf: give the file's download link/);
    const text = hub.plainFile('x/notes.gguf', Buffer.from('just some text, not a model'));
    await assert.rejects(library().resolve(parseModelRef(text)), /notes\.gguf is not a GGUF file \(it begins with "just", not "GGUF"\); nothing was kept/);
    assert.deepEqual(filesUnder(dir).filter((f) => !f.endsWith('.lock')), []);
    assert.deepEqual(filesUnder(dir), []);
  });

  test('a URL: fetched under urls/, then found there without the server', async () => {
    const url = hub.plainFile('org/repo/resolve/main/u-Q8_0.gguf', q8);
    const m = await library().resolve(parseModelRef(url));
    assert.equal(m.path, join(dir, 'urls', 'http', new URL(url).host, 'files', 'org', 'repo', 'resolve', 'main', 'u-Q8_0.gguf'));
    assert.ok(readFileSync(m.path).equals(q8));
    await hub.close();
    const again = await library().resolve(parseModelRef(url));
    assert.equal(again.path, m.path);
    assert.equal(again.origin, 'library');
    const listed = await library().list();
    assert.deepEqual(listed.map((e) => [e.ref, e.tag, e.bytes]), [[url, 'Q8_0', q8.length]]);
    hub = await startFakeHub(); // for afterEach
  });

  test('a second start and a second pull use the library without the server', async () => {
    const first = await library().resolve(parseModelRef('hf:test/split:Q4_K_M'));
    await hub.close();
    const start = await library().resolve(parseModelRef('hf:test/split:Q4_K_M'));
    assert.deepEqual(start.files, first.files);
    assert.equal(start.origin, 'library');
    const pull = await library().resolve(parseModelRef('hf:test/split:Q4_K_M'), { refresh: true });
    assert.deepEqual(pull.files, first.files);
    // What is not there cannot be had without the hub: said so.
    await assert.rejects(library().resolve(parseModelRef('hf:test/split:Q8_0')), /cannot reach the hub at http:\/\/127\.0\.0\.1:\d+\/ for test\/split .*set HF_ENDPOINT to a mirror/);
    hub = await startFakeHub();
  });

  test('a model already in the Hugging Face cache is used as it is, with no network', async () => {
    const commit = 'c'.repeat(40);
    const repoDir = join(hfCache, 'models--org--cached');
    mkdirSync(join(repoDir, 'refs'), { recursive: true });
    mkdirSync(join(repoDir, 'blobs'));
    mkdirSync(join(repoDir, 'snapshots', commit), { recursive: true });
    writeFileSync(join(repoDir, 'refs', 'main'), commit);
    writeFileSync(join(repoDir, 'blobs', sha256(q8)), q8);
    symlinkSync(join('..', '..', 'blobs', sha256(q8)), join(repoDir, 'snapshots', commit, 'cached-F16.gguf'));
    const nowhere = `http://127.0.0.1:${await freePort()}/`;
    const m = await library({ endpoint: nowhere }).resolve(parseModelRef('hf:org/cached:f16'));
    assert.equal(m.origin, 'hf-cache');
    assert.equal(m.path, join(repoDir, 'snapshots', commit, 'cached-F16.gguf'));
    assert.deepEqual(filesUnder(dir), [], 'nothing copied into the library');
    const listed = await library({ endpoint: nowhere }).list();
    assert.deepEqual(listed.map((e) => [e.ref, e.origin]), [['hf:org/cached:F16', 'hf-cache']]);
    await assert.rejects(library().remove(parseModelRef('hf:org/cached')), /is in the Hugging Face cache .*which hearth reads but does not manage/);
    // A pull asks the hub for its newest commit; the cache has that commit's file, so nothing is fetched.
    hub.addRepo('org/cached', { commit, files: [{ path: 'cached-F16.gguf', bytes: q8 }] });
    const pulled = await library().resolve(parseModelRef('hf:org/cached:F16'), { refresh: true });
    assert.equal(pulled.path, m.path);
    assert.equal(pulled.origin, 'hf-cache');
    assert.equal(cdnGets().length, 0);
  });

  test('a full disk: a clear error, and the partial file removed', async () => {
    // The temporary file is /dev/full, where every write fails with ENOSPC as on a full disk.
    const blobs = join(dir, 'models--test--single', 'blobs');
    mkdirSync(blobs, { recursive: true });
    const temp = join(blobs, `${sha256(single)}.incomplete`);
    symlinkSync('/dev/full', temp);
    await assert.rejects(library().resolve(parseModelRef('hf:test/single:Q8_0')), (e: Error) => {
      assert.ok(isHearthError(e, 'RESOURCE_EXHAUSTED'), e.message);
      assert.match(e.message, /no space left on the disk of .*blobs while downloading single-Q8_0\.gguf \(0 of 300000 bytes were written\); the partial file is removed. Free space there, or point HEARTH_MODELS/);
      return true;
    });
    assert.equal(existsSync(temp) || lstatSync(temp, { throwIfNoEntry: false }) !== undefined, false);
    assert.deepEqual(filesUnder(dir), []);
  });

  test('two pulls of the same file at once: one downloads, the other waits and uses it', async () => {
    hub.throttle(400_000); // about a second for the file, so the two overlap
    const [a, b] = await Promise.all([library().resolve(parseModelRef('hf:test/single:Q8_0')), library().resolve(parseModelRef('hf:test/single:Q8_0'))]);
    assert.equal(a.path, b.path);
    assert.ok(readFileSync(a.path).equals(single));
    assert.equal(cdnGets().length, 1, 'the file was transferred once');
    assert.deepEqual(filesUnder(join(dir, 'models--test--single', 'blobs')), [sha256(single)]);

    // A lock left by a process that died is taken over, not waited on for ever.
    const other = mkdtempSync(join(root, 'lib-'));
    const blobs = join(other, 'models--test--single', 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${sha256(single)}.lock`), JSON.stringify({ pid: 2 ** 31 - 2, host: hostname() }));
    hub.throttle(0);
    const m = await library({ dir: other }).resolve(parseModelRef('hf:test/single:Q8_0'));
    assert.ok(readFileSync(m.path).equals(single));
  });

  test('list and rm: a tag removes its files and the blobs nothing else uses', async () => {
    await library().resolve(parseModelRef('hf:test/split:Q4_K_M'));
    await library().resolve(parseModelRef('hf:test/split:Q8_0'));
    await library().resolve(parseModelRef('hf:test/single'));
    const listed = await library().list();
    assert.deepEqual(listed.map((e) => [e.ref, e.files.length, e.bytes, e.origin]), [
      ['hf:test/single:Q8_0', 1, single.length, 'library'],
      ['hf:test/split:Q4_K_M', 2, shard1.length + shard2.length, 'library'],
      ['hf:test/split:Q8_0', 1, q8.length, 'library'],
    ]);
    const removed = await library().remove(parseModelRef('hf:test/split:q4_k_m'));
    assert.equal(removed.filter((p) => p.includes('/blobs/')).length, 2);
    assert.deepEqual((await library().list()).map((e) => e.ref), ['hf:test/single:Q8_0', 'hf:test/split:Q8_0']);
    assert.deepEqual(filesUnder(join(dir, 'models--test--split', 'blobs')), [sha256(q8)]);
    await library().remove(parseModelRef('hf:test/split'));
    assert.equal(existsSync(join(dir, 'models--test--split')), false);
    await assert.rejects(library().remove(parseModelRef('hf:test/split')), /hf:test\/split is not in the library/);
  });
});

/** `hearth ARGS` as a user runs it: its exit code and words. */
async function hearth(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = runCli(args, { env });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

describe('hearth model pull, list and rm', () => {
  test('pull a model, see it listed, remove it; bad names get clear errors', async () => {
    const hub = await startFakeHub();
    const dir = mkdtempSync(join(tmpdir(), 'hearth-model-cli-'));
    try {
      hub.addRepo('test/single', { files: [{ path: 'single-Q8_0.gguf', bytes: ggufLikeBytes(300_000, 1) }] });
      const env = { HF_ENDPOINT: hub.endpoint, HEARTH_MODELS: join(dir, 'lib'), HF_HUB_CACHE: join(dir, 'hf'), HF_TOKEN: '' };
      const pull = await hearth(['model', 'pull', 'test/single:Q8_0'], env);
      assert.equal(pull.code, 0, pull.stderr);
      assert.match(pull.stdout, /^hf:test\/single:Q8_0: 1 file, 293 KiB, downloaded\n  .*\/lib\/models--test--single\/snapshots\/[0-9a-f]{40}\/single-Q8_0\.gguf\n$/);
      assert.match(pull.stderr, /"msg":"downloaded single-Q8_0\.gguf"/, 'progress in the log when stderr is no terminal');
      const list = await hearth(['model', 'list'], env);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /model\s+size\s+architecture\s+quant\s+from/);
      assert.match(list.stdout, /hf:test\/single:Q8_0\s+293 KiB\s+\?\s+Q8_0\s+library/);
      const rm = await hearth(['model', 'rm', 'hf:test/single'], env);
      assert.equal(rm.code, 0, rm.stderr);
      assert.match(rm.stdout, /hf:test\/single: removed 1 path\n  .*models--test--single\n/);
      const nope = await hearth(['model', 'pull', 'test/nope'], env);
      assert.equal(nope.code, 1);
      assert.match(nope.stderr, /hearth: error: no repository test\/nope on http:\/\/127\.0\.0\.1:\d+\/ \(HTTP 404\)/);
      const both = await hearth(['coordinator', '--model', 'm.gguf', '-hf', 'a/b:Q4_K_M', '--no-mdns'], env);
      assert.equal(both.code, 2);
      assert.match(both.stderr, /--model m\.gguf and -hf a\/b:Q4_K_M both name the model; give --model hf:a\/b:Q4_K_M beside the others instead/);
    } finally {
      await hub.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
