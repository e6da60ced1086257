// An interrupted test run leaves nothing running: node's test runner on a test file that has hearth
// workers (each with its ggml-rpc-server) up, interrupted the ways a run ends early. The first case
// also has a coordinator (with its engine), an rpc server of the file's own and a process in a network
// namespace up. How the helpers do it: test/helpers/children.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { withParentDeath } from '../helpers/child-command.js';
import { describeTree, interruptTestRun, type Interruption } from '../helpers/interrupt.js';
import { testModel } from '../helpers/models.js';
import { netnsUnavailable } from '../helpers/netns.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/interrupted.fixture.ts', import.meta.url));

describe('an interrupted test run', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-interrupt-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function interrupt(name: string, signal: NodeJS.Signals, target: 'runner' | 'file', all = false): Promise<Interruption> {
    if (all) await testModel(); // made here, so that the run's own start stays quick
    const ready = join(dir, `${name}.ready`);
    const run = await interruptTestRun(FIXTURE, {
      signal,
      target,
      ready: () => existsSync(ready),
      env: { HEARTH_INTERRUPT_READY: ready, HEARTH_INTERRUPT_ALL: all ? '1' : '0' },
    });
    const has = (what: string, n = 1) => run.tree.filter((p) => p.command.includes(what)).length >= n;
    assert.ok(has('cli/main.ts worker', all ? 2 : 1) && has('ggml-rpc-server', all ? 3 : 1), `the run had its processes up:\n${describeTree(run.tree)}`);
    assert.deepEqual(run.left, [], `still running after ${signal} to the ${target}:\n${describeTree(run.left)}\n--- the run ---\n${run.output}`);
    return run;
  }

  test('SIGTERM to node --test (which passes it to each file and exits): every process stops, namespaces are removed', async () => {
    const run = await interrupt('sigterm', 'SIGTERM', 'runner', true);
    assert.ok(run.tree.some((p) => p.command.includes('engine-main')), `the run had a coordinator's engine up:\n${describeTree(run.tree)}`);
    if (netnsUnavailable() === null) {
      assert.ok(run.tree.some((p) => p.command.includes('setInterval')), `the run had its namespaced process up:\n${describeTree(run.tree)}`);
      const filePid = run.tree.find((p) => p.command.includes(FIXTURE))!.pid;
      assert.doesNotMatch(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }), new RegExp(`^h${filePid}-`, 'm'));
    }
  });

  test('SIGKILL to the test file: the kernel stops its children', { skip: !withParentDeath && 'needs setpriv (util-linux)' }, async () => {
    await interrupt('sigkill-file', 'SIGKILL', 'file');
  });

  test('SIGKILL to node --test: the orphaned test file notices and stops its children', async () => {
    await interrupt('sigkill-runner', 'SIGKILL', 'runner');
  });
});
