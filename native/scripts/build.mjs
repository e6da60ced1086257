#!/usr/bin/env node
// Builds hearth's native parts: the addon (native/build/Release/hearth.node) and the worker's
// ggml-rpc-server, against llama.cpp taken from outside the repository.
//
//   node native/scripts/build.mjs [--cuda] [--metal] [--vulkan] [--portable] [--clean]
//
// Environment: LLAMA_CPP_DIR (use this llama.cpp tree), HEARTH_GPU=cuda,metal,vulkan (same as the
// flags, for `npm ci`), HEARTH_CACHE_DIR (where the llama.cpp source is kept), HEARTH_SKIP_NATIVE=1.
//
// Without LLAMA_CPP_DIR the source is llama.cpp release v0.5.0 as shipped inside the npm package
// node-llama-cpp@3.22.1 (llama/gitRelease.bundle): the package tarball is fetched with `npm pack`
// (no install, none of its prebuilt binaries), the bundle cloned once into the cache, reused after.
// ccache, when present, makes rebuilds from a fresh clone quick; it never changes the output.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const LLAMA_RELEASE = 'v0.5.0';
const SOURCE_PACKAGE = 'node-llama-cpp@3.22.1';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const nativeDir = join(root, 'native');
const buildDir = join(nativeDir, 'build');
const outDir = join(buildDir, 'Release');

function log(message) {
  process.stderr.write(`[hearth build] ${message}\n`);
}

function fail(message) {
  process.stderr.write(`[hearth build] error: ${message}\n`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (r.error) fail(`${cmd} could not start: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function parseOptions(argv, env) {
  const gpu = new Set((env.HEARTH_GPU ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
  const opts = { portable: env.HEARTH_PORTABLE === '1', clean: false };
  for (const arg of argv) {
    if (arg === '--cuda' || arg === '--metal' || arg === '--vulkan') gpu.add(arg.slice(2));
    else if (arg === '--portable') opts.portable = true;
    else if (arg === '--clean') opts.clean = true;
    else fail(`unknown option ${arg} (known: --cuda --metal --vulkan --portable --clean)`);
  }
  for (const g of gpu) {
    if (!['cuda', 'metal', 'vulkan'].includes(g)) fail(`HEARTH_GPU: unknown backend '${g}' (known: cuda, metal, vulkan)`);
  }
  return { ...opts, gpu: [...gpu].sort() };
}

function cacheRoot(env) {
  if (env.HEARTH_CACHE_DIR) return resolve(env.HEARTH_CACHE_DIR);
  return join(env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache'), 'hearth');
}

function checkLlamaTree(dir, origin) {
  for (const f of ['CMakeLists.txt', 'include/llama.h', 'ggml/include/ggml-rpc.h', 'tools/rpc/rpc-server.cpp', 'models/ggml-vocab-llama-spm.gguf']) {
    if (!existsSync(join(dir, f))) fail(`${origin} ${dir} is not a usable llama.cpp tree: ${f} is missing`);
  }
}

// Fetches the llama.cpp source once into the cache; a half-finished fetch never becomes the cache.
function obtainLlamaSource(env) {
  if (env.LLAMA_CPP_DIR) {
    const dir = resolve(env.LLAMA_CPP_DIR);
    checkLlamaTree(dir, 'LLAMA_CPP_DIR');
    log(`using llama.cpp from LLAMA_CPP_DIR=${dir}`);
    return { dir, release: env.HEARTH_LLAMA_RELEASE ?? 'custom' };
  }
  const cache = cacheRoot(env);
  const dir = join(cache, `llama.cpp-${LLAMA_RELEASE}`);
  if (existsSync(join(dir, '.hearth-complete'))) {
    log(`using cached llama.cpp ${LLAMA_RELEASE} at ${dir}`);
    return { dir, release: LLAMA_RELEASE };
  }
  if (!have('git')) fail('git is needed to unpack the llama.cpp source; install git, or set LLAMA_CPP_DIR');
  mkdirSync(cache, { recursive: true });
  const work = mkdtempSync(join(cache, 'fetch-'));
  try {
    log(`fetching llama.cpp ${LLAMA_RELEASE} from the npm package ${SOURCE_PACKAGE} (source bundle only)`);
    run('npm', ['pack', SOURCE_PACKAGE, '--silent', '--pack-destination', work], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = join(work, `${SOURCE_PACKAGE.replace('@', '-')}.tgz`);
    if (!existsSync(tgz)) fail(`npm pack did not produce ${tgz}`);
    run('tar', ['-xzf', tgz, '-C', work, 'package/llama/gitRelease.bundle', 'package/llama/binariesGithubRelease.json']);
    const release = JSON.parse(readFileSync(join(work, 'package/llama/binariesGithubRelease.json'), 'utf8')).release;
    if (release !== LLAMA_RELEASE) fail(`${SOURCE_PACKAGE} ships llama.cpp ${release}, expected ${LLAMA_RELEASE}`);
    const tree = join(work, 'llama.cpp');
    run('git', ['-c', 'advice.detachedHead=false', 'clone', '--quiet', join(work, 'package/llama/gitRelease.bundle'), tree], { stdio: ['ignore', 'ignore', 'inherit'] });
    checkLlamaTree(tree, 'the fetched bundle');
    writeFileSync(join(tree, '.hearth-complete'), `${SOURCE_PACKAGE} ${release}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tree, dir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  log(`llama.cpp ${LLAMA_RELEASE} unpacked at ${dir}`);
  return { dir, release: LLAMA_RELEASE };
}

async function build(source, opts, env) {
  if (!have('cmake')) fail('cmake is needed (apt-get install cmake, or brew install cmake)');
  if (opts.clean) rmSync(buildDir, { recursive: true, force: true });
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  if (!existsSync(cmakeJs)) fail('cmake-js is missing: run `npm ci` first');
  const defs = {
    LLAMA_CPP_DIR: source.dir,
    HEARTH_LLAMA_RELEASE: source.release,
    GGML_NATIVE: opts.portable ? 'OFF' : 'ON',
    GGML_CUDA: opts.gpu.includes('cuda') ? 'ON' : 'OFF',
    GGML_METAL: opts.gpu.includes('metal') ? 'ON' : 'OFF',
    GGML_VULKAN: opts.gpu.includes('vulkan') ? 'ON' : 'OFF',
  };
  const childEnv = { ...env };
  if (have('ccache')) {
    defs.CMAKE_C_COMPILER_LAUNCHER = 'ccache';
    defs.CMAKE_CXX_COMPILER_LAUNCHER = 'ccache';
    // Paths below these folders are hashed relative to them, so a clone elsewhere still hits the cache.
    childEnv.CCACHE_BASEDIR = childEnv.CCACHE_BASEDIR ?? root;
  }
  const args = [cmakeJs, 'build', '-d', nativeDir, '-O', buildDir, '--parallel', String(Math.max(1, cpus().length))];
  for (const [k, v] of Object.entries(defs)) args.push(`--CD${k}=${v}`);
  log(`building (backends: cpu${opts.gpu.length ? ', ' + opts.gpu.join(', ') : ''}; native CPU flags ${defs.GGML_NATIVE})`);
  const started = Date.now();
  await compile(args, { cwd: root, env: childEnv });
  log(`compiled in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // Artefacts the runtime needs, side by side: the tokenizer for test models and what was built.
  copyFileSync(join(source.dir, 'models', 'ggml-vocab-llama-spm.gguf'), join(outDir, 'ggml-vocab-llama-spm.gguf'));
  const commit = spawnSync('git', ['-C', source.dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || null;
  writeFileSync(
    join(outDir, 'build-info.json'),
    JSON.stringify({ llamaCppRelease: source.release, llamaCppCommit: commit, llamaCppDir: source.dir, gpu: opts.gpu, nativeCpu: !opts.portable }, null, 2) + '\n',
  );
}

// The compiler's output (thousands of lines, mostly llama.cpp's warnings) goes to native/build/build.log;
// the terminal gets a live progress line every tenth of the way, and the log's tail when the build fails.
async function compile(args, options) {
  mkdirSync(buildDir, { recursive: true });
  const logPath = join(buildDir, 'build.log');
  const logFile = createWriteStream(logPath);
  const child = spawn(process.execPath, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const tail = [];
  let shown = -10;
  const onLine = (line) => {
    logFile.write(line + '\n');
    tail.push(line);
    if (tail.length > 60) tail.shift();
    const m = /^\[(\d+)\/(\d+)\]/.exec(line);
    if (m && Number(m[2]) > 2) {
      const pct = Math.floor((Number(m[1]) / Number(m[2])) * 100);
      if (pct >= shown + 10) {
        shown = pct;
        log(`  ${String(pct).padStart(3)}% (${m[1]}/${m[2]} build steps)`);
      }
    }
  };
  createInterface({ input: child.stdout }).on('line', onLine);
  createInterface({ input: child.stderr }).on('line', onLine);
  const [code, signal] = await new Promise((resolvePromise) => {
    child.once('error', (e) => resolvePromise([null, e.message]));
    child.once('close', (c, sig) => resolvePromise([c, sig]));
  });
  await new Promise((r) => logFile.end(r));
  if (code !== 0) {
    process.stderr.write(tail.join('\n') + '\n');
    fail(`the native build failed (${signal ?? `exit ${code}`}); the full log is ${logPath}`);
  }
}

// A freshly built addon is first loaded in a child process: a bad binary would crash this one.
function verify() {
  const probe = `const b = require(${JSON.stringify(join(outDir, 'hearth.node'))}); const i = b.systemInfo();
    process.stdout.write(JSON.stringify({ release: i.llamaCppRelease, ggml: i.ggmlVersion, rpc: i.rpcProtocol, backends: i.backends }));`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
  if (r.status !== 0) fail(`the built addon does not load: ${r.stderr || r.signal}`);
  const info = JSON.parse(r.stdout);
  const server = spawnSync(join(outDir, 'ggml-rpc-server'), ['--help'], { encoding: 'utf8' });
  if (server.error) fail(`the built ggml-rpc-server does not run: ${server.error.message}`);
  log(`ok: llama.cpp ${info.release}, ggml ${info.ggml}, RPC protocol ${info.rpc}, backends ${info.backends.join(', ')}`);
}

async function main() {
  const env = process.env;
  if (env.HEARTH_SKIP_NATIVE === '1') {
    log('HEARTH_SKIP_NATIVE=1: skipping the native build');
    return;
  }
  const opts = parseOptions(process.argv.slice(2), env);
  const source = obtainLlamaSource(env);
  await build(source, opts, env);
  verify();
}

await main();
