// Pipelined decode with real processes: two workers, a coordinator whose engine splits its sequences
// over one context per worker. The groups show in the status, every request's greedy tokens are the
// single-process reference's and the same as without pipelining, and a prompt goes back to the group
// that holds its prefix. Speed is the benchmark's business, not asserted here.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, referenceRuns, type GreedyRun, GREEDY, PROMPTS } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const TOKENS = 24;

describe('pipelined decode over two workers', () => {
  let model: string;
  let refs: GreedyRun[];
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle | null = null;
  let pipelined: number[][] = [];

  const generateAll = async (c: CoordinatorHandle) => (await Promise.all(PROMPTS.map((p) => c.client.generate(p, { maxTokens: TOKENS, sampling: GREEDY })))).map((o) => o.tokens);

  before(async () => {
    model = await testModel('tiny');
    refs = await referenceRuns(model, PROMPTS, TOKENS);
    workers.push(await startWorker(['--name', 'p-a']), await startWorker(['--name', 'p-b']));
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('by default the engine decodes in one context per worker, and says so', async () => {
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--parallel', '8']);
    const s = await coord.client.getStatus();
    assert.equal(s.plan.devices.length, 2);
    assert.equal(s.plan.groups, 2, 'planned for two contexts');
    assert.equal(s.load.groups, 2, 'the engine loaded two contexts');
  });

  test('8 concurrent requests over two contexts each give the single-process greedy tokens', async () => {
    pipelined = await generateAll(coord!);
    pipelined.forEach((tokens, i) => assertGreedyMatches(tokens, refs[i]!, `prompt ${i}: ${PROMPTS[i]}`));
  });

  test('a prompt that extends a finished one goes to the group that caches it', async () => {
    const c = coord!;
    const story = `${'The old lighthouse keeper climbed the stairs every evening to light the lamp. '.repeat(8)}One night`;
    // A long request holds the first group; the story goes to the other, less loaded one.
    const busy = c.client.generate(PROMPTS[0]!, { maxTokens: 200, sampling: GREEDY });
    await new Promise((r) => setTimeout(r, 100));
    const first = await c.client.generate(story, { maxTokens: 4, sampling: GREEDY });
    await busy;
    // Both groups are idle now: least-loaded routing would pick the first group, whose cache does not
    // hold the story; the cache-aware router sends it back to the second.
    const again = await c.client.generate(`${story}${first.text} and then`, { maxTokens: 4, sampling: GREEDY });
    // The story is over 64 tokens longer than what it shares with the busy request's prompt.
    assert.ok((again.usage.cached_prompt_tokens ?? 0) >= 64, `cached ${again.usage.cached_prompt_tokens} of ${again.usage.prompt_tokens} prompt tokens`);
  });

  test('with --pipeline off the engine has one context and the same greedy tokens', async () => {
    await coord!.stop();
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--parallel', '8', '--pipeline', 'off']);
    const s = await coord.client.getStatus();
    assert.equal(s.plan.groups, 1);
    assert.equal(s.load.groups, 1);
    const single = await generateAll(coord);
    single.forEach((tokens, i) => assertGreedyMatches(tokens, refs[i]!, `prompt ${i} without pipelining`));
    assert.deepEqual(pipelined, single, 'the same tokens with and without pipelining');
  });
});
