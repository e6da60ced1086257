// A model split by tensors through the coordinator (--split tensor): every worker holds a share of every
// layer and the workers all-reduce the partial sums among themselves (hearth's patch to ggml-rpc). Closed
// cluster of three workers (peer links through relays the workers open), and an open one of two with
// pipelined decode; greedy answers equal the one-process reference, the prompt cache and n-gram
// speculation work, and a worker lost mid-answer makes the engine stop and re-plan, the answers going on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { newToken } from '../../link/token.js';
import { ChurnWorker } from '../helpers/churn.js';
import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { assertGreedyMatches, GREEDY, PROMPTS, referenceRuns, type GreedyRun } from '../helpers/generate.js';
import { testModel } from '../helpers/models.js';
import { processTree } from '../helpers/process-tree.js';
import { references, underFault, type References } from '../helpers/resume.js';
import { startWorker, type WorkerHandle } from '../helpers/worker.js';

const TOKENS = 24;

/** Every prompt at once (continuous batching in tensor mode), each equal to its reference. */
async function allEqual(coord: CoordinatorHandle, refs: GreedyRun[], what: string): Promise<void> {
  const outs = await Promise.all(PROMPTS.map((p) => coord.client.generate(p, { maxTokens: TOKENS, sampling: GREEDY, timeoutMs: 120_000 })));
  outs.forEach((o, i) => assertGreedyMatches(o.tokens, refs[i]!, `${what}, prompt ${i}`));
}

/**
 * Cuts the peer links of these workers' rpc servers: every connection an rpc server dialled itself (its
 * local port is not the one it listens on), leaving the coordinator's links to them. `ss -K` aborts the
 * sockets as a network fault would. Returns how many it cut.
 */
function cutPeerLinks(workers: ChurnWorker[]): number {
  const servers = new Set(workers.flatMap((w) => processTree(w.handle.process.pid!)).filter((p) => /ggml-rpc-server/.test(p.command)).map((p) => p.pid));
  const owned = (line: string) => [...line.matchAll(/pid=(\d+)/g)].some((m) => servers.has(Number(m[1])));
  const listening = new Set(execFileSync('ss', ['-tlnpH'], { encoding: 'utf8' }).split('\n').filter(owned).map((l) => l.trim().split(/\s+/)[3]!.split(':').pop()));
  let cut = 0;
  for (const line of execFileSync('ss', ['-tnpH', 'state', 'established'], { encoding: 'utf8' }).split('\n').filter(owned)) {
    const [, , local, peer] = line.trim().split(/\s+/);
    if (!local || !peer || listening.has(local.split(':').pop())) continue;
    execFileSync('ss', ['-K', 'src', local, 'dst', peer]);
    cut++;
  }
  return cut;
}

describe('tensor split, a closed cluster of three workers', () => {
  const token = newToken();
  const workers: ChurnWorker[] = [];
  let model: string;
  let coord: CoordinatorHandle;
  let greedyRefs: GreedyRun[];
  let refs: References;

  before(async () => {
    model = await testModel('small');
    greedyRefs = await referenceRuns(model, PROMPTS, TOKENS);
    for (const name of ['tensor-a', 'tensor-b', 'tensor-c']) workers.push(await ChurnWorker.start(name, token));
    coord = await startCoordinator(model, workers.map((w) => w.handle.control), ['--split', 'tensor', '--parallel', '8', '--draft-ngram', '2', '--watchdog-seconds', '6'], { token, waitServing: false });
    const serving = await coord.waitStatus((s) => s.state === 'serving' && s.plan.devices.length === 3, 90_000);
    assert.equal(serving.plan.split, 'tensor');
    const shares = serving.plan.devices.map((d) => d.share ?? 0);
    assert.ok(shares.every((x) => x > 0.2) && Math.abs(shares.reduce((a, b) => a + b, 0) - 1) < 1e-6, `every worker holds a share of every layer: ${shares.join(', ')}`);
    refs = await references(model, coord);
  });

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('the workers reduce among themselves, and the answers equal the reference', async () => {
    assert.match(coord.logs(), /3 servers all-reduce among themselves/);
    assert.doesNotMatch(coord.logs(), /partial sums go through this client|no peer link/);
    await allEqual(coord, greedyRefs, 'three workers');
    // The prompt cache: a long prompt asked again is mostly taken from the cache, and answers the same.
    const story = `${'The old lighthouse keeper climbed the stairs every evening to light the lamp. '.repeat(8)}One night`;
    const first = await coord.client.generate(story, { maxTokens: 4, sampling: GREEDY });
    const again = await coord.client.generate(`${story}${first.text} and then`, { maxTokens: 4, sampling: GREEDY });
    assert.ok((again.usage.cached_prompt_tokens ?? 0) >= 64, `the prompt came from the cache: ${JSON.stringify(again.usage)}`);
  });

  test('n-gram speculation drafts, and the answer is the same', async () => {
    const prompt = 'one two three four one two three four one two three four one two three';
    const [ref] = await referenceRuns(model, [prompt], TOKENS);
    const out = await coord.client.generate(prompt, { maxTokens: TOKENS, sampling: GREEDY });
    assert.ok((out.usage.draft_tokens ?? 0) > 0, `the engine drafted: ${JSON.stringify(out.usage)}`);
    assertGreedyMatches(out.tokens, ref!, 'speculative');
  });

  test('a peer link cut mid-answer: the engine stops and re-plans as for a lost worker, the answers go on', { timeout: 180_000 }, async (t) => {
    let cut = 0;
    t.diagnostic(`longest pause ${await underFault(coord, refs, 'cut-peer-link', () => void (cut = cutPeerLinks(workers)), 0)} ms`);
    assert.ok(cut >= 2, `peer links were cut (${cut})`);
    await coord.waitStatus((s) => s.state === 'serving' && s.in_flight === 0 && s.plan.devices.length === 3, 60_000);
  });

  test('a whole worker killed mid-answer: the engine re-plans on the two left, the answers go on', { timeout: 180_000 }, async (t) => {
    t.diagnostic(`longest pause ${await underFault(coord, refs, 'kill-worker', () => void workers[2]!.handle.stop('SIGKILL'), 0)} ms`);
    const status = await coord.waitStatus((s) => s.state === 'serving' && s.in_flight === 0, 60_000);
    assert.equal(status.plan.devices.length, 2);
    assert.match(coord.logs(), /2 servers all-reduce among themselves/);
  });
});

describe('tensor split, an open cluster of two workers with pipelined decode', () => {
  const workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  after(async () => {
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('two contexts decode side by side, every answer equal to the reference', async () => {
    const model = await testModel('tiny');
    const refs = await referenceRuns(model, PROMPTS, TOKENS);
    for (const name of ['tensor-open-a', 'tensor-open-b']) workers.push(await startWorker(['--name', name]));
    coord = await startCoordinator(model, workers.map((w) => w.control), ['--split', 'tensor', '--parallel', '8', '--pipeline', '2'], { waitServing: false });
    await coord.waitStatus((s) => s.state === 'serving', 90_000);
    assert.match(coord.logs(), /2 servers all-reduce among themselves/);
    await allEqual(coord, refs, 'pipelined');
  });
});
