// llama.cpp's own llama-embedding as the one-process reference for hearth's embeddings and rerank:
// built from hearth's native build tree (the same llama.cpp tree and flags, its libraries reused, so it
// costs one source file and a link; native/CMakeLists.txt) and run on a model with no RPC at all.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { packageRoot } from '../../native/binding.js';
import { spawnChild } from './children.js';

let built: Promise<string> | null = null;

/** The llama-embedding executable, built on first use (cmake --build is a no-op when it is up to date). */
export function llamaEmbedding(): Promise<string> {
  built ??= (async () => {
    const dir = join(packageRoot(), 'native', 'build');
    await run('cmake', ['--build', dir, '--target', 'llama-embedding', '-j', '2']);
    const binary = join(dir, 'tools', 'llama-embedding');
    if (!existsSync(binary)) throw new Error(`the llama-embedding build did not produce ${binary}`);
    return binary;
  })();
  return built;
}

/**
 * Each prompt's pooled output as llama-embedding prints it (7 decimals): a vector, normalised as
 * `normalize` says (2: unit length, -1: raw), or for a reranker the scores. A rerank prompt is
 * `query\tdocument`; llama-embedding fills the model's rerank template with them.
 */
export async function referenceEmbeddings(model: string, prompts: readonly string[], options: { normalize: -1 | 2; outputs?: number }): Promise<number[][]> {
  if (prompts.some((p) => p.includes('\n'))) throw new Error('llama-embedding takes one prompt per line');
  const out = await run(await llamaEmbedding(), ['-m', model, '-p', prompts.join('\n'), '--embd-output-format', 'json', '--embd-normalize', String(options.normalize), '-t', '1', '-c', '2048', '--no-warmup']);
  // A reranker's row holds its scores first; llama-embedding prints a whole embedding's width after them.
  const rows = [...out.matchAll(/"embedding": \[([^\]]*)\]/g)].map((m) => m[1]!.split(',').map(Number));
  if (rows.length !== prompts.length) throw new Error(`llama-embedding gave ${rows.length} embeddings for ${prompts.length} prompts:\n${out.slice(0, 2000)}`);
  return options.outputs === undefined ? rows : rows.map((r) => r.slice(0, options.outputs));
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${cmd} ${args.slice(0, 4).join(' ')} exited with ${code}:\n${stderr.slice(-3000)}`))));
  });
}

/** The cosine similarity of two vectors. */
export function cosine(a: readonly number[], b: readonly number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return dot / Math.sqrt(na * nb);
}
