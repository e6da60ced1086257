// Speculative decoding against the target model split over two real workers, through the real HTTP
// API with the official openai client: the greedy tokens with a draft model (or with n-gram lookup) are
// the target's own, seeded sampling gives what it gives without speculation, and the usage and
// /metrics report the drafted and accepted tokens. Bad drafts: another vocabulary is refused at
// start, naming both; a draft that cannot be loaded leaves the coordinator serving without it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { readBuildInfo } from '../../native/binding.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, referenceRuns, type GreedyRun, GREEDY } from '../helpers/generate.js';
import { expectApiError, metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const PROMPTS = [
  'The old stone hearth kept the house warm through the long winter nights while the children slept',
  'In the morning the baker walked to the market with bread and',
  'A list of rivers, mountains and towns that travellers pass on the road north:',
];
const TOKENS = 40;

/** A passage, then a request to repeat it: the reply can be drafted from the prompt itself. */
const REPEAT =
  'Read this passage. The river ran past the mill and under the stone bridge, where the miller kept his boats, and on past the orchard ' +
  'where the apples ripened late in the year. Now repeat the passage word for word. The river ran past the mill and under';

type Details = { accepted_prediction_tokens: number; rejected_prediction_tokens: number } | undefined;

describe('speculative decoding', () => {
  const workers: WorkerHandle[] = [];
  let target: string;
  let draft: string;
  let refs: GreedyRun[];
  let coord: CoordinatorHandle | null = null;
  const start = async (extra: string[]) => {
    await coord?.stop();
    coord = await startCoordinator(target, workers.map((w) => w.control), ['--parallel', '2', ...extra]);
    return new OpenAI({ baseURL: `${coord.http}/v1`, apiKey: 'unused', maxRetries: 0 });
  };

  before(async () => {
    [target, draft] = [await testModel('target'), await testModel('draft')];
    workers.push(await startWorker(['--name', 'spec-1']), await startWorker(['--name', 'spec-2']));
    refs = await referenceRuns(target, PROMPTS, TOKENS);
  });
  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test("with a draft model, greedy output is the target's own; usage and /metrics count drafted and accepted tokens", async (t) => {
    const openai = await start(['--draft-model', draft, '--draft-max', '6']);
    let drafted = 0;
    let accepted = 0;
    for (const [i, prompt] of PROMPTS.entries()) {
      const out = await coord!.client.generate(prompt, { maxTokens: TOKENS, sampling: GREEDY });
      assertGreedyMatches(out.tokens, refs[i]!, `prompt ${i}`);
      assert.ok(out.usage.draft_accepted_tokens! > 0, `prompt ${i}: the target accepted drafted tokens: ${JSON.stringify(out.usage)}`);
      drafted += out.usage.draft_tokens!;
      accepted += out.usage.draft_accepted_tokens!;
    }
    t.diagnostic(`gRPC: drafted ${drafted}, accepted ${accepted} (${((100 * accepted) / drafted).toFixed(0)} %)`);
    assert.ok(accepted < drafted, 'the draft is good, not perfect: some drafted tokens are rejected');

    // The same over HTTP, in OpenAI's terms for predicted outputs.
    const r = await openai.completions.create({ model: 'any', prompt: PROMPTS[0]!, max_tokens: TOKENS, temperature: 0 });
    const d = (r.usage as { completion_tokens_details?: { accepted_prediction_tokens: number; rejected_prediction_tokens: number } }).completion_tokens_details;
    assert.ok(d && d.accepted_prediction_tokens > 0 && d.rejected_prediction_tokens > 0, JSON.stringify(r.usage));
    drafted += d.accepted_prediction_tokens + d.rejected_prediction_tokens;
    accepted += d.accepted_prediction_tokens;
    const m = await (await fetch(`${coord!.http}/metrics`)).text();
    assert.equal(metric(m, 'hearth_draft_tokens_total'), drafted);
    assert.equal(metric(m, 'hearth_draft_tokens_accepted_total'), accepted);
  });

  test('seeded sampling gives the same text with and without speculation; speculative.n_max 0 turns it off per request', async () => {
    // A fixed draft length: the tuner's lengths follow timings, and with them the shapes of the
    // verification batches, whose logits differ from one-token decoding in the last bits; a sample
    // drawn next to a cut-off (top_p, min_p) can then go either way, run to run. Fixed, the run repeats.
    const openai = await start(['--draft-model', draft, '--draft-max', '6', '--draft-tune', 'off']);
    for (const [i, prompt] of PROMPTS.entries()) {
      const body = { model: 'any', prompt, max_tokens: TOKENS, temperature: 0.9, seed: 7 + i };
      const spec = await openai.completions.create(body);
      const plain = await openai.completions.create({ ...body, 'speculative.n_max': 0 } as OpenAI.CompletionCreateParamsNonStreaming);
      assert.equal(spec.choices[0]!.text, plain.choices[0]!.text, `prompt ${i}: sampled text`);
      assert.ok(((spec.usage as { completion_tokens_details?: Details }).completion_tokens_details?.accepted_prediction_tokens ?? 0) > 0, `prompt ${i}: drafts were accepted while sampling`);
      assert.equal((plain.usage as { completion_tokens_details?: Details }).completion_tokens_details, undefined, `prompt ${i}: no drafts with speculative.n_max 0`);
    }
  });

  test("the draft model on a worker the user names: the worker's device runs it, greedy output is unchanged", async () => {
    await start(['--draft-model', draft, '--draft-worker', 'spec-2']);
    const status = await coord!.client.getStatus();
    // Two workers and two slots: pipelined decode runs two groups, each with its own draft context.
    assert.equal(status.load.groups, 2, 'speculation runs beside pipelined decode');
    // The engine says where it loaded the draft: an RPC device of spec-2's server.
    const where = /^draft model draft-f16-seed1-r2\.gguf on worker spec-2 \((RPC\S*) at ([^)]+)\): up to 8 tokens per step/.exec(status.speculation);
    assert.ok(where, status.speculation);
    assert.equal(where[2], status.workers.find((w) => w.name === 'spec-2')!.rpc_endpoint);
    const out = await coord!.client.generate(PROMPTS[1]!, { maxTokens: TOKENS, sampling: GREEDY });
    assertGreedyMatches(out.tokens, refs[1]!, 'prompt 1');
    assert.ok(out.usage.draft_accepted_tokens! > 0, JSON.stringify(out.usage));
  });

  test("llama-server's per-request speculative fields out of range are 400s naming the field", async () => {
    const openai = new OpenAI({ baseURL: `${coord!.http}/v1`, apiKey: 'unused', maxRetries: 0 });
    const ask = (extra: Record<string, unknown>) => openai.completions.create({ model: 'any', prompt: 'x', max_tokens: 2, ...extra } as OpenAI.CompletionCreateParamsNonStreaming);
    await expectApiError(ask({ 'speculative.n_max': -1 }), 400, 'invalid_request_error', /speculative\.n_max: must be between 0 and 256, got -1/);
    await expectApiError(ask({ 'speculative.n_max': 100_000 }), 400, 'invalid_request_error', /speculative\.n_max: must be between 0 and 256/);
    await expectApiError(ask({ 'speculative.n_max': 2.5 }), 400, 'invalid_request_error', /speculative\.n_max: must be a whole number/);
    await expectApiError(ask({ 'speculative.n_min': 9, 'speculative.n_max': 4 }), 400, 'invalid_request_error', /speculative\.n_min: must not exceed speculative\.n_max \(4\)/);
    await expectApiError(ask({ 'speculative.p_min': 1.5 }), 400, 'invalid_request_error', /speculative\.p_min: must be between 0 and 1/);
    await expectApiError(ask({ 'speculative.n_max': 'many' }), 400, 'invalid_request_error', /speculative\.n_max: must be a number/);
  });

  test("n-gram lookup drafts from the prompt and the reply; greedy output is still the model's own", async (t) => {
    // The small model's greedy text soon repeats itself (random weights), which is what lookup drafts
    // from; the target's seldom does.
    const small = await testModel('small');
    await coord?.stop();
    coord = await startCoordinator(small, workers.map((w) => w.control), ['--parallel', '2', '--draft-ngram', '3']);
    const [ref] = await referenceRuns(small, [REPEAT], 64);
    const out = await coord.client.generate(REPEAT, { maxTokens: 64, sampling: GREEDY });
    assertGreedyMatches(out.tokens, ref!, 'the repeat prompt');
    t.diagnostic(`n-gram: drafted ${out.usage.draft_tokens}, accepted ${out.usage.draft_accepted_tokens}`);
    assert.ok(out.usage.draft_accepted_tokens! > 0, `n-gram lookup drafted tokens the model accepted: ${JSON.stringify(out.usage)}`);
    assert.match((await coord.client.getStatus()).speculation, /^n-gram lookup \(3 tokens\): up to 8 tokens per step/);
  });

  test('a draft model with another vocabulary is refused at start, naming both vocabularies', async (t) => {
    const llamaCpp = readBuildInfo().llamaCppDir;
    const gpt2 = llamaCpp ? join(llamaCpp, 'models', 'ggml-vocab-gpt-2.gguf') : null;
    if (!gpt2 || !existsSync(gpt2)) {
      t.skip(`llama.cpp's GPT-2 vocabulary file is not at ${gpt2 ?? '(no llama.cpp source recorded in the build)'}`);
      return;
    }
    await coord?.stop();
    coord = await startCoordinator(target, workers.map((w) => w.control), ['--draft-model', gpt2], { waitServing: false });
    const code = await coord.exited;
    const logs = coord.logs();
    coord = null;
    assert.notEqual(code, 0, 'the coordinator does not start');
    assert.match(logs, /--draft-model: .*ggml-vocab-gpt-2\.gguf cannot draft for .*target-f16-seed1-r2\.gguf: the tokenizers differ: target-f16-seed1-r2\.gguf has a SPM tokenizer with 32000 tokens, ggml-vocab-gpt-2\.gguf a BPE tokenizer with 50257 tokens/);
  });

  test('a draft model that cannot be loaded leaves the coordinator serving without speculation, and it says so', async () => {
    const broken = join(mkdtempSync(join(tmpdir(), 'hearth-draft-')), 'broken.gguf');
    writeFileSync(broken, 'not a model at all');
    await start(['--draft-model', broken]);
    const status = await coord!.client.getStatus();
    assert.match(status.speculation, /^off \(the draft model .*broken\.gguf cannot be loaded: /);
    assert.match(coord!.logs(), /broken\.gguf cannot be loaded.*serving without it, without speculative decoding/);
    const out = await coord!.client.generate(PROMPTS[0]!, { maxTokens: 8, sampling: GREEDY });
    assert.equal(out.usage.completion_tokens, 8);
    assert.ok(!out.usage.draft_tokens, 'nothing was drafted');
  });
});
