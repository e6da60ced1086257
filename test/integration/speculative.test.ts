// Speculative decoding against the target model split over two real workers, through the real HTTP
// API with the official openai client: the greedy tokens with a draft model (or with n-gram lookup) are
// the target's own, seeded sampling gives what it gives without speculation, and the usage and
// /metrics report the drafted and accepted tokens. Bad drafts: another vocabulary is refused at
// start, naming both; a draft that cannot be loaded leaves the coordinator serving without it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, referenceRuns, type GreedyRun } from '../helpers/generate.js';
import { metric } from '../helpers/http-api.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const PROMPTS = [
  'The old stone hearth kept the house warm through the long winter nights while the children slept',
  'In the morning the baker walked to the market with bread and',
  'A list of rivers, mountains and towns that travellers pass on the road north:',
];
const TOKENS = 40;

const GREEDY = { temperature: 0, greedy: true };

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
    workers.push(await startWorker(), await startWorker());
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
});
