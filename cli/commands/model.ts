// `hearth model ...`: create test models and show what a GGUF holds.
import type { Command } from 'commander';

import { readModelFacts } from '../../models/gguf-info.js';
import { createTestModel, TEST_MODEL_PRESETS, TEST_MODEL_QUANTS, type TestModelPreset, type TestModelQuant } from '../../models/test-models.js';
import { formatBytes, table } from '../format.js';
import { parseInteger } from '../options.js';

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('create test models and inspect GGUF files');

  model
    .command('create-test')
    .description('write a llama-architecture GGUF with random weights and the real llama SPM tokenizer')
    .requiredOption('--out <file>', 'where to write the model')
    .option('--preset <name>', `shape: ${Object.keys(TEST_MODEL_PRESETS).join(' | ')}`, 'tiny')
    .option('--quant <type>', `weights: ${TEST_MODEL_QUANTS.join(' | ')}`, 'f16')
    .option('--seed <n>', 'random seed (same seed, same bytes)', '1')
    .action(async (opts: { out: string; preset: string; quant: string; seed: string }) => {
      const started = Date.now();
      process.stderr.write(`creating ${opts.preset} test model (${opts.quant}, seed ${opts.seed}) ...\n`);
      const out = await createTestModel({
        out: opts.out,
        preset: opts.preset as TestModelPreset,
        quant: opts.quant as TestModelQuant,
        seed: parseInteger(opts.seed, '--seed', { min: 0 }),
      });
      const facts = await readModelFacts(out);
      process.stdout.write(`${out}: ${facts.layerCount} layers, ${formatBytes(facts.fileBytes)}, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    });

  model
    .command('info <file>')
    .description("show a GGUF's architecture, shape and per-layer sizes without loading weights (any shard of a split model shows the whole model)")
    .option('--json', 'print the facts as JSON')
    .action(async (file: string, opts: { json?: boolean }) => {
      const f = await readModelFacts(file);
      if (opts.json) {
        process.stdout.write(JSON.stringify(f, null, 2) + '\n');
        return;
      }
      const rows: string[][] = [
        ['field', 'value'],
        ['architecture', f.architecture],
        ['name', f.name ?? '-'],
        ['layers', String(f.layerCount)],
        ['context length', String(f.contextLength)],
        ['embedding', String(f.embeddingLength)],
        ['heads (kv)', `${f.headCount} (${f.headCountKv})`],
        ['vocabulary', String(f.vocabSize)],
        ['tensor types', Object.entries(f.tensorTypes).map(([t, n]) => `${t}×${n}`).join(' ')],
        ['per layer', f.layerBytes.length ? `${formatBytes(Math.min(...f.layerBytes))} .. ${formatBytes(Math.max(...f.layerBytes))}` : '-'],
        ['input (host)', formatBytes(f.inputBytes)],
        ['output', `${formatBytes(f.outputBytes)}${f.outputTied ? ' (tied to the input embedding)' : ''}`],
        ['total tensors', formatBytes(f.totalTensorBytes)],
        [f.shards.length > 1 ? `files (${f.shards.length} shards)` : 'file', formatBytes(f.fileBytes)],
        ['chat template', f.chatTemplate ? 'yes' : 'no'],
      ];
      process.stdout.write(table(rows) + '\n');
      if (f.shards.length > 1) {
        const shards = f.shards.map((s, i) => [String(i + 1), s.path, String(s.tensorCount), formatBytes(s.bytes)]);
        process.stdout.write('\n' + table([['shard', 'file', 'tensors', 'size'], ...shards]) + '\n');
      }
    });
}
