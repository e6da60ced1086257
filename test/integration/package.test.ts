// hearth as a user gets it: the package `npm pack` makes of this checkout, installed with
// `npm install -g` into a prefix of its own (the install builds the native parts), then run from there
// with the working directory elsewhere: `hearth info`, two workers and a coordinator that puts layers
// on both, and a completion over HTTP. Nothing the installed hearth runs may come from the checkout.
//
// The install's native build is the cost: minutes cold, about half a minute when ccache already holds
// this checkout's build (as in CI after `npm ci`): native/scripts/build.mjs hashes paths relative to the
// package, and both builds use the same llama.cpp tree in hearth's cache.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { childCommand } from '../helpers/child-command.js';
import { spawnChild } from '../helpers/children.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { processTree, type Proc } from '../helpers/process-tree.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const CHECKOUT = realpathSync(fileURLToPath(new URL('../../', import.meta.url)));
const VERSION = (JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8')) as { version: string }).version;

interface Run {
  code: number | null;
  stdout: string;
  /** stdout and stderr together, as a terminal shows them. */
  all: string;
  seconds: number;
}

/** Runs a command to its end, killed after `timeoutMs`. */
function run(cmd: string, args: string[], o: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  const started = Date.now();
  // stdin stays open: `script` ends its session when its input ends.
  const child = spawnChild(cmd, args, { cwd: o.cwd, env: o.env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let all = '';
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    all += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (all += d.toString()));
  const timer = setTimeout(() => {
    all += `\n[test] killed after ${o.timeoutMs / 1000} s\n`;
    child.kill('SIGKILL');
  }, o.timeoutMs);
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, all, seconds: (Date.now() - started) / 1000 });
    });
  });
}

/** A terminal's output as text: colours, cursor moves and carriage returns taken out. */
function plain(text: string): string {
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '\n');
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('the npm package, installed and run from elsewhere', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  const work = realpathSync(mkdtempSync(join(tmpdir(), 'hearth-package-')));
  const prefix = join(work, 'prefix');
  const installed = join(prefix, 'lib', 'node_modules', 'hearth');
  const hearth = join(prefix, 'bin', 'hearth');
  // Where the installed hearth runs: neither the checkout nor the package.
  const elsewhere = join(work, 'elsewhere');
  mkdirSync(elsewhere);
  let tarball: string | null = null;
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle | null = null;

  // A user's shell: this one without what `npm test` and the test runner add (a key set to undefined is
  // left out of a child's environment, also where the helpers spread process.env beneath it), with
  // this node first on PATH (the installed bin's `#!/usr/bin/env node`).
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: [join(prefix, 'bin'), dirname(process.execPath), process.env.PATH].join(delimiter) };
  for (const key of Object.keys(env)) {
    const npmOwn = /^npm_/i.test(key) && !/^npm_config_(cache|userconfig|registry)$/i.test(key);
    if (npmOwn || ['NODE_OPTIONS', 'NODE_TEST_CONTEXT', 'INIT_CWD', 'NODE', 'HEARTH_SKIP_NATIVE'].includes(key)) env[key] = undefined;
  }
  const hearthSync = (...args: string[]) => spawnSync(...childCommand(hearth, args), { cwd: elsewhere, env, encoding: 'utf8', timeout: 120_000 });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
    rmSync(work, { recursive: true, force: true });
  });
  // An interrupted run exits without after() (test/helpers/children.ts): the install is about 120 MB.
  process.once('exit', () => {
    try {
      rmSync(work, { recursive: true, force: true });
    } catch {
      // a killed child was still writing; /tmp keeps the rest
    }
  });

  test('npm pack ships the compiled program, the native sources and what the runtime reads, and nothing else', { timeout: 300_000 }, async (t) => {
    const r = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: CHECKOUT, env, timeoutMs: 280_000 });
    assert.equal(r.code, 0, r.all);
    const [packed] = JSON.parse(r.stdout) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
    const paths = packed!.files.map((f) => f.path);
    t.diagnostic(`npm pack: ${packed!.filename}, ${paths.length} files, ${(packed!.size / 1024).toFixed(0)} KiB (${(packed!.unpackedSize / 1024).toFixed(0)} KiB unpacked), ${r.seconds.toFixed(1)} s`);
    for (const needed of [
      'package.json', 'README.md', 'bin/hearth.js', 'dist/pack-info.json', 'dist/cli/program.js', 'dist/cli/main.js', 'dist/bench/command.js',
      'dist/coordinator/engine/engine-main.js', 'proto/hearth/v1/worker.proto', 'proto/hearth/v1/coordinator.proto', 'coordinator/http/dashboard/index.html',
      'native/CMakeLists.txt', 'native/package.json', 'native/scripts/build.mjs', 'native/src/rpc-server/main.cpp', 'native/patches/ggml-rpc-peer-allreduce.patch',
    ]) {
      assert.ok(paths.includes(needed), `${needed} is in the package`);
    }
    const unwanted = paths.filter((p) => /^(test|bench|docs|examples|scripts|\.ci)\/|^dist\/test\/|^native\/build\/|\.(ts|map)$|^BENCHMARKS\.md$|^cluster\.example\.yaml$|^tsconfig/.test(p));
    assert.deepEqual(unwanted, [], 'no tests, benchmark data or results, build output, sources compiled into dist/, or docs beyond the README');

    tarball = join(work, packed!.filename);
    const info = JSON.parse(spawnSync('tar', ['-xzOf', tarball, 'package/dist/pack-info.json'], { encoding: 'utf8' }).stdout) as { version: string; commit: string | null };
    assert.equal(info.version, VERSION);
    const head = spawnSync('git', ['-C', CHECKOUT, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
    if (head.status === 0) assert.equal(info.commit, head.stdout.trim(), 'the commit the package was packed from');
  });

  test('npm install -g builds the native parts, its progress on the terminal although npm hides the script', { timeout: 1_200_000 }, async (t) => {
    assert.ok(tarball, 'npm pack made a tarball');
    // `script` gives npm a terminal, as a person's install has: npm then hides the install script's
    // output, and the build writes its progress to the terminal itself.
    const install = ['npm', 'install', '--global', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball].map(quote).join(' ');
    const r = await run('script', ['-qec', install, '/dev/null'], { cwd: elsewhere, env, timeoutMs: 1_150_000 });
    const out = plain(r.all);
    assert.equal(r.code, 0, out.slice(-6000));
    assert.match(out, /\[hearth build\] building in .*native\/build/);
    assert.match(out, /\[hearth build\] +\d+% \(\d+\/\d+ build steps\)/);
    const done = /\[hearth build\] done in ([^:]+): llama\.cpp/.exec(out);
    assert.ok(done, `the build's summary line reached the terminal:\n${out.slice(-3000)}`);
    t.diagnostic(`npm install -g: ${r.seconds.toFixed(0)} s, of which the native build ${done[1]}`);
  });

  test('hearth info from the installed copy: the version, the commit it was packed from, where it is installed, the native build', { timeout: 120_000 }, () => {
    const json = hearthSync('info', '--json');
    assert.equal(json.status, 0, json.stderr);
    const info = JSON.parse(json.stdout) as { hearth: { version: string; kind: string; commit: string | null; root: string }; native: { dir: string; buildType: string; llamaCppRelease: string; rpcProtocol: string; backends: string[] } };
    assert.equal(info.hearth.kind, 'package');
    assert.equal(info.hearth.version, VERSION);
    assert.equal(info.hearth.root, installed);
    const head = spawnSync('git', ['-C', CHECKOUT, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
    if (head.status === 0) assert.equal(info.hearth.commit, head.stdout.trim());
    assert.equal(info.native.dir, join(installed, 'native', 'build', 'Release'));
    assert.equal(info.native.buildType, 'Release');
    assert.match(info.native.llamaCppRelease, /^v\d+\.\d+\.\d+$/);
    assert.match(info.native.rpcProtocol, /^\d+\.\d+\.\d+$/);
    assert.ok(info.native.backends.includes('CPU') && info.native.backends.includes('RPC'), info.native.backends.join(', '));

    const text = hearthSync('info');
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^hearth ${VERSION.replace(/\./g, '\\.')} \\(package, commit [0-9a-f]{7}`, 'm'));
    assert.ok(text.stdout.includes(`installed at ${installed}\n`), text.stdout);
    assert.match(text.stdout, /^native build: Release, /m);
  });

  test('two workers and a coordinator from the installed copy put layers on both workers and answer over HTTP', { timeout: 300_000 }, async () => {
    const model = join(work, 'tiny.gguf');
    const created = hearthSync('model', 'create-test', '--out', model);
    assert.equal(created.status, 0, created.stderr);

    const options = { hearth: [hearth], cwd: elsewhere, env };
    workers.push(await startWorker(['--name', 'pkg-a'], options), await startWorker(['--name', 'pkg-b'], options));
    // startCoordinator passes --local-device off and --placement memory: the layers go to the workers.
    coord = await startCoordinator(model, workers.map((w) => w.control), [], options);
    const status = await coord.client.getStatus();
    assert.deepEqual(status.plan.devices.map((d) => d.owner).sort(), ['pkg-a', 'pkg-b']);
    assert.ok(status.plan.devices.every((d) => d.layers >= 1), JSON.stringify(status.plan.devices));

    const res = await fetch(`${coord.http}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'any', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as { choices: { text: string; finish_reason: string }[]; usage: { completion_tokens: number } };
    assert.equal(typeof body.choices[0]!.text, 'string');
    assert.equal(body.usage.completion_tokens, 12);
    // The dashboard's files are read from the package (coordinator/http/dashboard), not compiled into dist/.
    const page = await fetch(`${coord.http}/dashboard/app.js`);
    assert.equal(page.status, 200);
    assert.ok((await page.text()).length > 0);

    // What runs: every process of the cluster (workers, their rpc servers, the coordinator, its engine),
    // its executable, command line, working directory and mapped files.
    const procs: (Proc & { exe: string; cwd: string; maps: string[] })[] = [coord, ...workers].flatMap((h) => processTree(h.process.pid!)).map((p) => {
      const maps = readFileSync(`/proc/${p.pid}/maps`, 'utf8').split('\n').map((l) => l.split(/\s+/).slice(5).join(' ')).filter((f) => f.startsWith('/'));
      return { ...p, exe: readlinkSync(`/proc/${p.pid}/exe`), cwd: readlinkSync(`/proc/${p.pid}/cwd`), maps: [...new Set(maps)] };
    });
    const show = (p: (typeof procs)[number]) => `${p.pid} ${p.command}\n  exe ${p.exe}, cwd ${p.cwd}`;
    for (const p of procs) {
      assert.equal(p.cwd, elsewhere, show(p));
      for (const path of [p.exe, p.command, ...p.maps]) assert.ok(!path.includes(CHECKOUT), `nothing from the checkout: ${path}\n${show(p)}`);
    }
    const servers = procs.filter((p) => p.exe.endsWith('/ggml-rpc-server'));
    assert.equal(servers.length, 2, procs.map(show).join('\n'));
    for (const s of servers) assert.equal(s.exe, join(installed, 'native', 'build', 'Release', 'ggml-rpc-server'));
    // The engine that serves, and maybe a spare one waiting for the next load.
    const engines = procs.filter((p) => p.command.includes('engine-main'));
    assert.ok(engines.length >= 1, procs.map(show).join('\n'));
    for (const e of engines) assert.ok(e.command.includes(join(installed, 'dist', 'coordinator', 'engine', 'engine-main.js')), show(e));
    const addon = join(installed, 'native', 'build', 'Release', 'hearth.node');
    assert.ok(engines.some((e) => e.maps.includes(addon)), `an engine loaded the installed addon:\n${engines.map((e) => e.maps.join('\n')).join('\n\n')}`);
    for (const h of [coord, ...workers]) assert.ok(procs.find((p) => p.pid === h.process.pid)!.command.includes(hearth), 'started as the installed bin');
  });

  test("the installed build script names the missing tools, with how to install them, and leaves the build as it was", () => {
    const addon = join(installed, 'native', 'build', 'Release', 'hearth.node');
    const builtAt = statSync(addon).mtimeMs;
    const script = join(installed, 'native', 'scripts', 'build.mjs');
    const bare = join(work, 'bare-bin');
    mkdirSync(bare);
    symlinkSync(process.execPath, join(bare, 'node'));
    // Not through childCommand: its setpriv is not on the bare PATH. The script stops at its first check.
    const build = (extra: NodeJS.ProcessEnv) => spawnSync(process.execPath, [script], { cwd: elsewhere, env: { ...env, CC: undefined, CXX: undefined, ...extra }, encoding: 'utf8', timeout: 60_000 });

    const nothing = build({ PATH: bare });
    assert.equal(nothing.status, 1, nothing.stderr);
    assert.match(nothing.stderr, /needs these, which are missing:/);
    assert.match(nothing.stderr, /cmake 3\.18 or later \(apt-get install cmake/);
    assert.match(nothing.stderr, /a C\+\+17 compiler \(none of c\+\+, g\+\+, clang\+\+ is on PATH; apt-get install g\+\+/);
    assert.match(nothing.stderr, /make or ninja \(apt-get install make/);
    assert.ok(nothing.stderr.includes(`Install them, then run \`node ${script}\`.`), nothing.stderr);

    const badCxx = build({ CXX: join(work, 'no-such-c++') });
    assert.equal(badCxx.status, 1, badCxx.stderr);
    assert.match(badCxx.stderr, /needs a C\+\+17 compiler \(CXX=.*no-such-c\+\+ is not found/);
    assert.equal(statSync(addon).mtimeMs, builtAt, 'the installed build is untouched');
  });
});
