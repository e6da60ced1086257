#!/usr/bin/env node
// Builds hearth's native parts: the addon (native/build/Release/hearth.node) and the worker's
// ggml-rpc-server, against llama.cpp taken from outside the repository.
//
//   node native/scripts/build.mjs [--cuda] [--metal] [--vulkan] [--portable] [--clean]
//
// Environment: LLAMA_CPP_DIR (use this llama.cpp tree), HEARTH_GPU=cuda,metal,vulkan (same as the
// flags, for `npm ci`), HEARTH_CACHE_DIR (where the llama.cpp source is kept), HEARTH_SKIP_NATIVE=1.
//
// hearth's patches to llama.cpp (native/patches/*.patch, in name order) are applied to that tree before it
// is built: the cached tree is patched in place (and put back first when the patches change); a
// LLAMA_CPP_DIR tree must already carry them.
//
// Without LLAMA_CPP_DIR the source is llama.cpp release v0.5.0 as shipped inside the npm package
// node-llama-cpp@3.22.1 (llama/gitRelease.bundle): the package tarball is fetched with `npm pack`
// (no install, none of its prebuilt binaries), the bundle cloned once into the cache, reused after.
// ccache, when present, makes rebuilds from a fresh clone quick; it never changes the output.
//
// It runs from a checkout (`npm ci`, `npm run build:native`) and as the install script of the
// installed package (`npm install -g`, `npx`), where the working directory is the package and its
// dependencies may sit in a node_modules above it.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const LLAMA_RELEASE = 'v0.5.0';
const SOURCE_PACKAGE = 'node-llama-cpp@3.22.1';
const CMAKE_MIN = [3, 18];
// cmake-js builds Release unless told --debug, which this script never passes.
const BUILD_TYPE = 'Release';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const nativeDir = join(root, 'native');
const buildDir = join(nativeDir, 'build');
const outDir = join(buildDir, 'Release');
const started = Date.now();

// npm runs an installed package's install script with its output captured, and shows that output only
// when the script fails: a global install would sit silent for minutes. So while npm hides this
// script's output, progress also goes straight to the terminal, when there is one.
// (`npm install --foreground-scripts` shows all of it, the compiler's lines included.) A checkout's
// own `npm ci` runs the script in the foreground: its output is wherever the user sent it.
const terminal = (() => {
  const env = process.env;
  const hidden = env.npm_lifecycle_event === 'install' && env.npm_config_foreground_scripts !== 'true' && !existsSync(join(root, '.git'));
  if (!hidden || process.stderr.isTTY) return null;
  try {
    return openSync('/dev/tty', 'w');
  } catch {
    return null; // no controlling terminal (CI, a service): the captured output is all there is
  }
})();

function log(message) {
  const line = `[hearth build] ${message}\n`;
  process.stderr.write(line);
  if (terminal !== null) {
    try {
      // npm may have drawn its spinner on the line: clear it first.
      writeSync(terminal, `\r\x1b[2K${line}`);
    } catch {
      // the terminal went away; stderr still has the line
    }
  }
}

function fail(message) {
  log(`error: ${message}`);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (r.error) fail(`${cmd} could not start: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
}

/** The executable `cmd` resolves to on PATH (or `cmd` itself when it is a path), or null. */
function which(cmd) {
  const candidates = isAbsolute(cmd) || cmd.includes('/') ? [resolve(cmd)] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, cmd));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return null;
}

const have = (cmd) => which(cmd) !== null;

const INSTALL_HINT = {
  cmake: 'apt-get install cmake (Debian, Ubuntu), dnf install cmake (Fedora), brew install cmake (macOS)',
  compiler: 'apt-get install g++ (Debian, Ubuntu), dnf install gcc-c++ (Fedora), xcode-select --install (macOS)',
  make: 'apt-get install make (Debian, Ubuntu), dnf install make (Fedora), xcode-select --install (macOS)',
  git: 'apt-get install git (Debian, Ubuntu), dnf install git (Fedora), xcode-select --install (macOS)',
};

/**
 * Everything the build needs, checked before anything is fetched or built, so that a missing tool is
 * one line naming what to install rather than a CMake error deep in a log.
 */
function checkTools(env) {
  const missing = [];
  const cmake = which('cmake');
  if (!cmake) {
    missing.push(`cmake ${CMAKE_MIN.join('.')} or later (${INSTALL_HINT.cmake})`);
  } else {
    const version = /cmake version (\d+)\.(\d+)/.exec(spawnSync(cmake, ['--version'], { encoding: 'utf8' }).stdout ?? '');
    const [major, minor] = version ? [Number(version[1]), Number(version[2])] : [0, 0];
    if (major < CMAKE_MIN[0] || (major === CMAKE_MIN[0] && minor < CMAKE_MIN[1])) {
      missing.push(`cmake ${CMAKE_MIN.join('.')} or later, found ${version ? `${major}.${minor}` : 'an unreadable version'} at ${cmake} (${INSTALL_HINT.cmake})`);
    }
  }
  if (process.platform !== 'win32') {
    // CMake takes the compilers from CC and CXX when they are set, and looks on PATH otherwise.
    const cxx = env.CXX ? [env.CXX.split(' ')[0]] : ['c++', 'g++', 'clang++'];
    const cc = env.CC ? [env.CC.split(' ')[0]] : ['cc', 'gcc', 'clang'];
    if (!cxx.some(have)) missing.push(`a C++17 compiler (${env.CXX ? `CXX=${env.CXX} is not found` : 'none of c++, g++, clang++ is on PATH'}; ${INSTALL_HINT.compiler})`);
    else if (!cc.some(have)) missing.push(`a C compiler (${env.CC ? `CC=${env.CC} is not found` : 'none of cc, gcc, clang is on PATH'}; ${INSTALL_HINT.compiler})`);
    // cmake-js generates for Ninja when it is there, Unix Makefiles otherwise.
    if (!have('ninja') && !have('make')) missing.push(`make or ninja (${INSTALL_HINT.make})`);
  }
  if (!env.LLAMA_CPP_DIR && !existsSync(join(llamaCacheDir(env), '.hearth-complete')) && !have('git')) {
    missing.push(`git, to unpack the llama.cpp source the first time (${INSTALL_HINT.git}; or set LLAMA_CPP_DIR to a llama.cpp ${LLAMA_RELEASE} tree)`);
  }
  if (missing.length > 0) {
    fail(`hearth's native build needs ${missing.length === 1 ? missing[0] : `these, which are missing:\n  - ${missing.join('\n  - ')}`}\nInstall ${missing.length === 1 ? 'it' : 'them'}, ${whatNext()}.`);
  }
}

/** What to do after installing a missing tool, from where this build runs. */
function whatNext() {
  if (existsSync(join(root, '.git'))) return 'then run `npm run build:native`';
  // npm removes a package whose install script failed: the install is what to repeat.
  if (process.env.npm_lifecycle_event === 'install') return 'then install hearth again';
  return `then run \`node ${join(root, 'native', 'scripts', 'build.mjs')}\``;
}

/**
 * A dependency's folder, found as Node finds modules: in an installed package the dependencies may be
 * hoisted into a node_modules above this package (npx, or a project's node_modules).
 */
function dependencyDir(name) {
  try {
    return dirname(createRequire(import.meta.url).resolve(`${name}/package.json`));
  } catch {
    fail(`the dependency ${name} is missing (looked from ${root}); in a checkout run \`npm ci\`, otherwise reinstall hearth`);
  }
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

function llamaCacheDir(env) {
  return join(cacheRoot(env), `llama.cpp-${LLAMA_RELEASE}`);
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
    return { dir, release: env.HEARTH_LLAMA_RELEASE ?? 'custom', ours: false };
  }
  const cache = cacheRoot(env);
  const dir = llamaCacheDir(env);
  if (existsSync(join(dir, '.hearth-complete'))) {
    log(`using cached llama.cpp ${LLAMA_RELEASE} at ${dir}`);
    return { dir, release: LLAMA_RELEASE, ours: true };
  }
  mkdirSync(cache, { recursive: true });
  const work = mkdtempSync(join(cache, 'fetch-'));
  try {
    log(`fetching llama.cpp ${LLAMA_RELEASE} from the npm package ${SOURCE_PACKAGE} (source bundle only)`);
    // The npm that runs this script when it is an install script (npm_execpath), else the one on PATH.
    // In the fetch's own folder: npm reads no project's settings there.
    const npm = env.npm_execpath ? [process.execPath, [env.npm_execpath]] : ['npm', []];
    const packed = spawnSync(npm[0], [...npm[1], 'pack', SOURCE_PACKAGE, '--silent', '--pack-destination', work], { cwd: work, stdio: ['ignore', 'ignore', 'inherit'] });
    if (packed.error || packed.status !== 0) {
      fail(`could not fetch ${SOURCE_PACKAGE} from the npm registry (npm pack ${packed.error ? `could not start: ${packed.error.message}` : `exited with ${packed.status ?? packed.signal}`}); check that the registry is reachable, or set LLAMA_CPP_DIR to a llama.cpp ${LLAMA_RELEASE} tree`);
    }
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
  return { dir, release: LLAMA_RELEASE, ours: true };
}

const patchDir = join(nativeDir, 'patches');

/** hearth's patches to llama.cpp, in the order they apply, and one short hash of them all. */
function ourPatches() {
  const files = existsSync(patchDir) ? readdirSync(patchDir).filter((f) => f.endsWith('.patch')).sort() : [];
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update(readFileSync(join(patchDir, f)));
  return { files: files.map((f) => join(patchDir, f)), id: files.length ? hash.digest('hex').slice(0, 12) : 'none' };
}

const gitQuiet = (dir, args) => spawnSync('git', ['-C', dir, ...args], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });

/**
 * Applies hearth's patches to the llama.cpp tree. The cached tree is hearth's own: it is patched in place,
 * and put back to the release first when it carries other patches. A LLAMA_CPP_DIR tree is the user's:
 * it is only checked, and a tree without the patches is refused with the command that applies them.
 */
function applyPatches(source) {
  const patches = ourPatches();
  if (patches.files.length === 0) return patches.id;
  const marker = join(source.dir, '.hearth-patches');
  if (!source.ours) {
    const missing = patches.files.filter((f) => gitQuiet(source.dir, ['apply', '--reverse', '--check', f]).status !== 0);
    if (missing.length > 0) {
      fail(`LLAMA_CPP_DIR ${source.dir} lacks hearth's patches to llama.cpp; apply them with\n  ${missing.map((f) => `git -C ${source.dir} apply ${f}`).join('\n  ')}\nor unset LLAMA_CPP_DIR to build the release hearth fetches`);
    }
    return patches.id;
  }
  if (existsSync(marker) && readFileSync(marker, 'utf8').trim() === patches.id) return patches.id;
  if (!have('git')) fail(`git is needed to apply hearth's patches to llama.cpp (${INSTALL_HINT.git})`);
  // back to the release, then the patches; the marker is written last, so an interrupted run starts over
  rmSync(marker, { force: true });
  const reset = gitQuiet(source.dir, ['checkout', '--', '.']);
  if (reset.status !== 0) fail(`could not restore the llama.cpp tree at ${source.dir}: ${reset.stderr.trim()}; remove that folder and build again`);
  for (const f of patches.files) {
    const r = gitQuiet(source.dir, ['apply', f]);
    if (r.status !== 0) fail(`hearth's patch ${f} does not apply to llama.cpp ${source.release} at ${source.dir}: ${r.stderr.trim()}`);
    log(`applied ${f.slice(root.length + 1)}`);
  }
  writeFileSync(marker, `${patches.id}\n`);
  return patches.id;
}

async function build(source, opts, env) {
  if (opts.clean) rmSync(buildDir, { recursive: true, force: true });
  const cmakeJs = join(dependencyDir('cmake-js'), 'bin', 'cmake-js');
  const defs = {
    LLAMA_CPP_DIR: source.dir,
    HEARTH_LLAMA_RELEASE: source.release,
    NODE_ADDON_API_DIR: dependencyDir('node-addon-api'),
    GGML_NATIVE: opts.portable ? 'OFF' : 'ON',
    GGML_CUDA: opts.gpu.includes('cuda') ? 'ON' : 'OFF',
    GGML_METAL: opts.gpu.includes('metal') ? 'ON' : 'OFF',
    GGML_VULKAN: opts.gpu.includes('vulkan') ? 'ON' : 'OFF',
  };
  const childEnv = { ...env };
  const ccache = have('ccache');
  if (ccache) {
    defs.CMAKE_C_COMPILER_LAUNCHER = 'ccache';
    defs.CMAKE_CXX_COMPILER_LAUNCHER = 'ccache';
    // Paths below this folder are hashed relative to it, so a clone or an installed copy elsewhere
    // still hits the cache. The llama.cpp tree sits outside it, in the cache: its absolute paths are
    // the same for every copy of hearth that uses the same cache.
    childEnv.CCACHE_BASEDIR = childEnv.CCACHE_BASEDIR ?? root;
  }
  const defArgs = Object.entries(defs).map(([k, v]) => `--CD${k}=${v}`);
  // cmake-js configures only a build folder that has none yet: a folder configured before a setting was
  // added (NODE_ADDON_API_DIR, by an older hearth) is configured again first, keeping what it has built.
  const cache = join(buildDir, 'CMakeCache.txt');
  if (existsSync(cache) && !readFileSync(cache, 'utf8').includes('NODE_ADDON_API_DIR:')) {
    log('configuring the build folder again: an older hearth configured it');
    run(process.execPath, [cmakeJs, 'configure', '-d', nativeDir, '-O', buildDir, ...defArgs], { cwd: root, env: childEnv, stdio: 'ignore' });
  }
  const args = [cmakeJs, 'build', '-d', nativeDir, '-O', buildDir, '--parallel', String(Math.max(1, cpus().length)), ...defArgs];
  log(`building in ${buildDir} (backends: cpu${opts.gpu.length ? ', ' + opts.gpu.join(', ') : ''}; native CPU flags ${defs.GGML_NATIVE}${ccache ? '; ccache' : ''}); a few minutes the first time`);
  const compileStarted = Date.now();
  await compile(args, { cwd: root, env: childEnv });
  log(`compiled in ${seconds(Date.now() - compileStarted)}`);

  // Artefacts the runtime needs, side by side: the tokenizer for test models and what was built.
  copyFileSync(join(source.dir, 'models', 'ggml-vocab-llama-spm.gguf'), join(outDir, 'ggml-vocab-llama-spm.gguf'));
  const commit = spawnSync('git', ['-C', source.dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout?.trim() || null;
  writeFileSync(
    join(outDir, 'build-info.json'),
    JSON.stringify({ llamaCppRelease: source.release, llamaCppCommit: commit, llamaCppPatches: source.patches, llamaCppDir: source.dir, gpu: opts.gpu, nativeCpu: !opts.portable, buildType: BUILD_TYPE }, null, 2) + '\n',
  );
}

function seconds(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
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
  log(`done in ${seconds(Date.now() - started)}: llama.cpp ${info.release}, ggml ${info.ggml}, RPC protocol ${info.rpc}, backends ${info.backends.join(', ')}; in ${outDir}`);
}

async function main() {
  const env = process.env;
  if (env.HEARTH_SKIP_NATIVE === '1') {
    log('HEARTH_SKIP_NATIVE=1: skipping the native build');
    return;
  }
  const opts = parseOptions(process.argv.slice(2), env);
  checkTools(env);
  const source = obtainLlamaSource(env);
  source.patches = applyPatches(source);
  await build(source, opts, env);
  verify();
}

await main();
