// Test models, made once per machine and reused by every test file (creation is deterministic).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { ensureLlamaTool } from '../../bench/llama-tools.js';
import { createTestModel, testModelFileName, type TestModelPreset, type TestModelQuant } from '../../models/test-models.js';
import { spawnChild } from './children.js';

export const TEST_MODEL_DIR = join(tmpdir(), 'hearth-test-models');

export async function testModel(preset: TestModelPreset = 'tiny', quant: TestModelQuant = 'f16', seed = 1): Promise<string> {
  const path = join(TEST_MODEL_DIR, testModelFileName(preset, quant, seed));
  if (!existsSync(path)) await createTestModel({ out: path, preset, quant, seed });
  return path;
}

/**
 * A test model split by llama.cpp's own `llama-gguf-split --split --split-max-size MAX` (built once per
 * machine from hearth's llama.cpp tree), made once and reused. The shards' paths, shard 1 first.
 */
export async function splitTestModel(preset: TestModelPreset, maxSize: string, quant: TestModelQuant = 'f16', seed = 1): Promise<string[]> {
  const model = await testModel(preset, quant, seed);
  const name = basename(model, '.gguf');
  const dir = join(TEST_MODEL_DIR, `${name}-split-${maxSize}`);
  if (!existsSync(dir)) {
    const tool = await ensureLlamaTool('llama-gguf-split', (line) => process.stderr.write(`${line}\n`));
    // Made aside and renamed whole, so a test never sees half a set.
    mkdirSync(TEST_MODEL_DIR, { recursive: true });
    const work = mkdtempSync(join(TEST_MODEL_DIR, '.split-'));
    try {
      await run(tool, ['--split', '--split-max-size', maxSize, model, join(work, name)]);
      renameSync(work, dir);
    } catch (e) {
      rmSync(work, { recursive: true, force: true });
      throw e;
    }
  }
  return readdirSync(dir).sort().map((f) => join(dir, f));
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${out}`))));
  });
}
