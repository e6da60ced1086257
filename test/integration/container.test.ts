// The image as a user runs it: `podman build` of the Containerfile, then `podman run --network host
// IMAGE worker --token-file ...` with the token file mounted, reached over its secure link.
//
// No registry can be reached here and a native build takes minutes, so the two stages that need them
// are replaced (--build-context, as docker buildx takes it too): `build` by the checkout's own build,
// `runtime-base` by an image made of this machine's node and the libraries node and the native build
// link. The runtime stage (what it copies, its environment, volume and entrypoint) and host networking
// are the real ones; the replaced stages' steps are not run here (test/unit/containerfile.test.ts
// checks what they install, copy and run).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { nativeArtifacts } from '../../native/binding.js';
import { ClusterSecret, newToken } from '../../link/token.js';
import { WorkerClient } from '../../link/worker-client.js';
import { spawnChild } from '../helpers/children.js';
import { freePort } from '../helpers/rpc-server.js';
import { waitFor } from '../helpers/worker.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const havePodman = process.platform === 'linux' && spawnSync('podman', ['--version'], { stdio: 'ignore' }).status === 0;
const built = existsSync(join(repo, 'dist/cli/program.js')) && existsSync(nativeArtifacts().addon);
const skip = !havePodman ? 'podman is not installed' : !built ? 'the checkout is not built (npm ci, or npm run build after changes)' : false;

const tag = (name: string) => `localhost/hearth-test-${name}:${process.pid}`;
const names = { base: tag('base'), build: tag('build'), image: tag('image'), container: `hearth-test-worker-${process.pid}` };

/** podman with this test's settings (CONTAINERS_CONF, once the probe below has chosen). */
let containersConf: string | null = null;
function podman(args: string[], timeoutMs = 120_000) {
  const env = containersConf ? { ...process.env, CONTAINERS_CONF: containersConf } : process.env;
  return spawnSync('podman', args, { encoding: 'utf8', timeout: timeoutMs, env, maxBuffer: 64 << 20 });
}

/** `tar -c` of `paths` in `dir` (following links: node_modules may be one), under `prefix`, into `podman import`. */
function importTree(dir: string, paths: string[], image: string, prefix = ''): void {
  const script = 'set -o pipefail; dir=$1 prefix=$2 image=$3; shift 3; tar -c -h -C "$dir" --transform "s,^,$prefix," "$@" | podman import - "$image"';
  const r = spawnSync('bash', ['-c', script, 'bash', dir, prefix, image, ...paths], {
    encoding: 'utf8',
    timeout: 120_000,
    env: containersConf ? { ...process.env, CONTAINERS_CONF: containersConf } : process.env,
  });
  assert.equal(r.status, 0, `podman import ${image}: ${r.stderr}`);
}

/** node_modules as the build stage leaves it (npm prune --omit=dev): the production dependencies' folders. */
function productionModules(): string[] {
  const r = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: repo, encoding: 'utf8', timeout: 60_000 });
  const dirs = r.stdout.split('\n').filter((l) => l.startsWith(repo) && l.length > repo.length).map((l) => l.slice(repo.length));
  assert.ok(dirs.length > 0, `npm ls: ${r.stderr}`);
  // A folder inside another is in the archive already.
  return dirs.filter((d) => !dirs.some((o) => o !== d && d.startsWith(`${o}/`)));
}

/** A root file system with node at /usr/local/bin/node (where node's images keep it) and the shared libraries it and the native build need. */
function baseTree(dir: string): void {
  const binaries = [process.execPath, nativeArtifacts().addon, nativeArtifacts().rpcServer];
  const libs = new Set<string>();
  for (const b of binaries) {
    for (const m of spawnSync('ldd', [b], { encoding: 'utf8' }).stdout.matchAll(/(\/\S+) \(0x/g)) libs.add(m[1]!);
  }
  for (const lib of libs) {
    mkdirSync(join(dir, dirname(lib)), { recursive: true });
    copyFileSync(lib, join(dir, lib)); // the file a link points to, under the link's name
  }
  mkdirSync(join(dir, 'usr/local/bin'), { recursive: true });
  copyFileSync(process.execPath, join(dir, 'usr/local/bin/node'));
  mkdirSync(join(dir, 'tmp'), { mode: 0o1777 });
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
}

describe('container image', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-container-'));
  after(() => {
    podman(['rm', '-f', '-t', '0', names.container]);
    podman(['rmi', '-f', names.image, names.build, names.base]);
    rmSync(dir, { recursive: true, force: true });
  });
  // A test process that exits any other way still takes its container down (a SIGKILL leaves it to
  // the --timeout it was started with).
  process.on('exit', () => void podman(['rm', '-f', '-t', '0', names.container], 20_000));

  test('builds from the checkout and runs a worker that answers over its secure link', async (t) => {
    const started = Date.now();
    const lap = (what: string, since: number) => t.diagnostic(`${what}: ${((Date.now() - since) / 1000).toFixed(1)} s`);

    let since = Date.now();
    baseTree(join(dir, 'base'));
    importTree(join(dir, 'base'), ['.'], names.base);
    lap('base image from this machine\'s node and libraries', since);

    // This machine's kernel may refuse podman's defaults (crun with cgroup v1 and v2 both mounted;
    // rlimits above what the process may raise): then runc and the inherited limits.
    let probe = podman(['run', '--rm', names.base, '/usr/local/bin/node', '-e', '0']);
    if (probe.status !== 0) {
      const first = probe.stderr.trim();
      containersConf = join(dir, 'containers.conf');
      writeFileSync(containersConf, '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n');
      probe = podman(['run', '--rm', names.base, '/usr/local/bin/node', '-e', '0']);
      if (probe.status !== 0) return t.skip(`podman cannot run a container here: ${first}; with runc and inherited limits: ${probe.stderr.trim()}`);
      t.diagnostic(`podman's defaults failed (${first}); runc with the inherited limits works`);
    }

    since = Date.now();
    importTree(repo, ['package.json', 'bin', 'dist', 'proto', 'native/CMakeLists.txt', 'native/build/Release', 'coordinator/http/dashboard', ...productionModules()], names.build, 'opt/hearth/');
    lap('the checkout\'s build as an image', since);

    since = Date.now();
    const build = podman([
      'build', '--network', 'host', '-f', join(repo, 'Containerfile'), '-t', names.image,
      '--build-context', `runtime-base=container-image://${names.base}`, '--build-context', `build=container-image://${names.build}`, repo,
    ], 300_000);
    assert.equal(build.status, 0, build.stderr + build.stdout);
    assert.doesNotMatch(build.stdout, /STEP \d+\/\d+: RUN/, 'the build stage is replaced, not run');
    lap('podman build', since);

    const token = newToken();
    writeFileSync(join(dir, 'cluster.token'), `${token}\n`, { mode: 0o600 });
    const rpcPort = await freePort();
    let controlPort = await freePort();
    while (controlPort === rpcPort) controlPort = await freePort();
    since = Date.now();
    const run = spawnChild('podman', [
      'run', '--rm', '--name', names.container, '--network', 'host', '--timeout', '120', '-v', `${join(dir, 'cluster.token')}:/etc/hearth/cluster.token:ro`,
      names.image, 'worker', '--token-file', '/etc/hearth/cluster.token', '--host', '127.0.0.1', '--rpc-port', String(rpcPort), '--control-port', String(controlPort),
      '--name', 'in-a-container', '--no-mdns', '--no-calibrate', '--threads', '1',
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: containersConf ? { ...process.env, CONTAINERS_CONF: containersConf } : process.env });
    let logs = '';
    run.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
    run.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const exited = new Promise<number | null>((resolve) => run.once('exit', (code) => resolve(code)));

    const client = await WorkerClient.open(`127.0.0.1:${controlPort}`, ClusterSecret.fromToken(token, 'flag'));
    try {
      await waitFor('the worker in the container to be ready', async () => {
        if (run.exitCode !== null) throw new Error(`podman run exited with ${run.exitCode}: ${logs}`);
        return (await client.health({ timeoutMs: 1000 })).ready;
      }, 60_000);
      lap('podman run until the worker is ready', since);
      const info = await client.getInfo();
      assert.equal(info.name, 'in-a-container');
      assert.equal(info.link.secure, true, 'the token file mounted into the container closed the worker');
      assert.equal(info.cache.dir, '/var/lib/hearth/cache/hearth/rpc-cache', 'the tensor cache is in the volume');
      assert.ok(info.devices.some((d) => d.backend === 'CPU'));
    } finally {
      client.close();
    }

    since = Date.now();
    const stop = podman(['stop', '-t', '10', names.container]);
    assert.equal(stop.status, 0, stop.stderr);
    assert.equal(await exited, 0, `the worker stops cleanly on podman stop:\n${logs}`);
    assert.match(logs, /worker stopped/);
    lap('podman stop', since);
    lap('in all', started);
  });
});
