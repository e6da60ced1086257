// `hearth model ...`: create test models, show what a GGUF holds, and keep the model library (pull,
// list, rm).
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';

import { configureLogger, logger } from '../../common/logger.js';
import { readModelFacts, type ModelFacts } from '../../models/gguf-info.js';
import type { LibraryEntry } from '../../models/library.js';
import { formatModelRef, HUB_PREFIX, parseHubRef, parseModelRef, type ModelRef } from '../../models/model-ref.js';
import { createTestModel, TEST_MODEL_PRESETS, TEST_MODEL_QUANTS, type TestModelPreset, type TestModelQuant } from '../../models/test-models.js';
import { modelKind, type ModelKind } from '../../coordinator/served-models.js';
import { formatBytes, table } from '../format.js';
import { openLibrary, resolveModel } from '../model-source.js';
import { parseInteger } from '../options.js';

/** For pull and rm a bare OWNER/REPO[:QUANT] names a hub model, as llama-server's -hf and `ollama pull` take it. */
function libraryRef(text: string): ModelRef {
  return text.startsWith(HUB_PREFIX) || /^https?:\/\//i.test(text) ? parseModelRef(text, 'model') : parseHubRef(text, 'model');
}

const KIND_WORDS: Record<ModelKind, string> = { chat: 'text generation', embedding: 'an embedding model', rerank: 'a reranker' };

/** The most common weight type among the tensors ("Q4_K"), when the file name carries no tag. */
function dominantType(facts: ModelFacts): string {
  const weights = Object.entries(facts.tensorTypes).filter(([t]) => t !== 'F32');
  return weights.sort((a, b) => b[1] - a[1])[0]?.[0] ?? '-';
}

async function listRow(e: LibraryEntry): Promise<string[]> {
  const facts = await readModelFacts(e.path).catch(() => null);
  const size = `${formatBytes(e.bytes)}${e.files.length > 1 ? ` (${e.files.length} files)` : ''}`;
  const from = e.origin === 'library' ? 'library' : `Hugging Face cache`;
  return [e.ref, size, facts?.architecture ?? '?', e.tag || (facts ? dominantType(facts) : '?'), from];
}

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('create test models and inspect GGUF files');

  model
    .command('create-test')
    .description('write a GGUF with random weights and the real llama SPM tokenizer: chat models of several architectures, an embedding model (embed) and a reranker (rerank)')
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
        ['pooling', `${f.poolingType ?? 'none'} (${KIND_WORDS[modelKind(f)]})`],
      ];
      process.stdout.write(table(rows) + '\n');
      if (f.shards.length > 1) {
        const shards = f.shards.map((s, i) => [String(i + 1), s.path, String(s.tensorCount), formatBytes(s.bytes)]);
        process.stdout.write('\n' + table([['shard', 'file', 'tensors', 'size'], ...shards]) + '\n');
      }
    });

  model
    .command('pull <model>')
    .description('fetch a model into the library: hf:OWNER/REPO[:QUANT] (or OWNER/REPO[:QUANT]) or a URL; a split model comes with every shard')
    .action(async (text: string) => {
      const ref = libraryRef(text);
      const log = configureLogger({ level: 'info', name: 'hearth-model' }).child({ component: 'models' });
      const m = await resolveModel(ref, log, { refresh: true });
      let bytes = 0;
      for (const f of m.files) bytes += (await stat(f)).size;
      const how = { downloaded: 'downloaded', library: 'already in the library', 'hf-cache': 'found in the Hugging Face cache', file: 'a local file' }[m.origin];
      process.stdout.write(`${formatModelRef(ref)}: ${m.files.length} file${m.files.length > 1 ? 's' : ''}, ${formatBytes(bytes)}, ${how}\n${m.files.map((f) => `  ${f}\n`).join('')}`);
    });

  model
    .command('list')
    .description('the models in the library and the Hugging Face cache: name (what --model takes), size, architecture, quantisation, where from')
    .option('--json', 'print the list as JSON')
    .action(async (opts: { json?: boolean }) => {
      configureLogger({ level: 'warn' });
      const library = openLibrary(logger('models'));
      const entries = await library.list();
      if (opts.json) {
        process.stdout.write(JSON.stringify(entries, null, 2) + '\n');
        return;
      }
      const { dir, hfCaches } = library.settings;
      process.stdout.write(`library: ${dir} (HEARTH_MODELS); also read: ${hfCaches.join(', ')}\n`);
      if (entries.length === 0) {
        process.stdout.write('no models yet: `hearth model pull OWNER/REPO:QUANT` fetches one\n');
        return;
      }
      const rows = [['model', 'size', 'architecture', 'quant', 'from']];
      for (const e of entries) rows.push(await listRow(e));
      process.stdout.write(table(rows) + '\n');
    });

  model
    .command('rm <model>')
    .description("remove a model from the library: hf:OWNER/REPO:QUANT its files, hf:OWNER/REPO the whole repository, or a URL's file")
    .action(async (text: string) => {
      configureLogger({ level: 'warn' });
      const removed = await openLibrary(logger('models')).remove(libraryRef(text));
      process.stdout.write(`${text}: removed ${removed.length} path${removed.length > 1 ? 's' : ''}\n${removed.map((p) => `  ${p}\n`).join('')}`);
    });
}
