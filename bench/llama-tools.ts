// llama.cpp's own programs (llama-server for the benchmarks, llama-gguf-split for the split-model
// tests), built once from the same llama.cpp tree and with the same CPU flags as hearth's native build,
// so a comparison is between the two programs and nothing else. They share one build tree, so the
// second tool costs only its own sources.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, homedir } from 'node:os';
import { join } from 'node:path';

import { ErrorCode, HearthError } from '../common/errors.js';
import { nativeBuildHint, readBuildInfo } from '../native/binding.js';

function run(cmd: string, args: string[], what: string, log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    let shown = -10;
    const onData = (d: Buffer) => {
      const text = d.toString();
      tail = (tail + text).slice(-4000);
      // Ninja prints [done/total], Make prints [ pct%].
      for (const m of text.matchAll(/^\[(?:(\d+)\/(\d+)|\s*(\d+)%)\]/gm)) {
        const pct = m[3] !== undefined ? Number(m[3]) : Math.floor((Number(m[1]) / Number(m[2])) * 100);
        if (pct >= shown + 10) {
          shown = pct;
          log(`  building ${what}: ${pct}%`);
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new HearthError(ErrorCode.Internal, `${cmd} ${args.slice(0, 3).join(' ')} failed (${code}):\n${tail}`))));
  });
}

/** llama.cpp's executables hearth uses from outside its own build. */
export type LlamaTool = 'llama-server' | 'llama-gguf-split';

/** The path of a llama.cpp tool, building it first when this machine has not yet. */
export async function ensureLlamaTool(tool: LlamaTool, log: (line: string) => void): Promise<string> {
  const info = readBuildInfo();
  if (!info.llamaCppDir || !existsSync(join(info.llamaCppDir, 'tools', 'server'))) {
    throw new HearthError(ErrorCode.FailedPrecondition, `the native build does not record its llama.cpp tree; ${nativeBuildHint()}`);
  }
  const dir = join(homedir(), '.cache', 'hearth', `llama-tools-${info.llamaCppRelease}-${info.llamaCppCommit ?? 'x'}${info.nativeCpu ? '-native' : ''}`);
  // llama.cpp's CMakeLists puts executables in <build>/bin.
  const binary = join(dir, 'build', 'bin', tool);
  // The tree carries hearth's patches (native/patches): a tool built before they changed is built again
  // (only what the patches touch is compiled again).
  const stamp = join(dir, `${tool}.patches`);
  const patches = info.llamaCppPatches ?? 'none';
  if (existsSync(binary) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === patches) return binary;
  mkdirSync(dir, { recursive: true });
  log(`building llama.cpp's ${tool} from ${info.llamaCppDir} (once; cached in ${dir})`);
  const defs = {
    CMAKE_BUILD_TYPE: 'Release',
    BUILD_SHARED_LIBS: 'OFF',
    GGML_RPC: 'ON',
    GGML_RPC_RDMA: 'OFF',
    GGML_NATIVE: info.nativeCpu ? 'ON' : 'OFF',
    GGML_OPENMP: 'OFF',
    LLAMA_BUILD_TESTS: 'OFF',
    LLAMA_BUILD_EXAMPLES: 'OFF',
    LLAMA_BUILD_COMMON: 'ON',
    LLAMA_BUILD_TOOLS: 'ON',
    LLAMA_BUILD_SERVER: 'ON',
  };
  const have = (cmd: string) => new Promise<boolean>((r) => spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).once('exit', (c) => r(c === 0)));
  const args = ['-S', info.llamaCppDir, '-B', join(dir, 'build'), ...Object.entries(defs).map(([k, v]) => `-D${k}=${v}`)];
  if (await have('ninja')) args.push('-G', 'Ninja');
  if (await have('ccache')) args.push('-DCMAKE_C_COMPILER_LAUNCHER=ccache', '-DCMAKE_CXX_COMPILER_LAUNCHER=ccache');
  try {
    await run('cmake', args, tool, log);
  } catch {
    // A build directory left by an earlier, different configuration (another generator): start afresh.
    rmSync(join(dir, 'build'), { recursive: true, force: true });
    await run('cmake', args, tool, log);
  }
  await run('cmake', ['--build', join(dir, 'build'), '--target', tool, '-j', String(Math.max(1, cpus().length))], tool, log);
  if (!existsSync(binary)) throw new HearthError(ErrorCode.Internal, `the ${tool} build did not produce ${binary}`);
  writeFileSync(stamp, `${patches}\n`);
  return binary;
}
