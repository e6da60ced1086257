// The dashboard in a real browser (Debian's chromium, driven by playwright-core) against a real
// two-worker cluster: what a person opening http://coordinator:8080/ sees and can do.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';

import { startCoordinator, type CoordinatorHandle } from '../helpers/coordinator.js';
import { testModel } from '../helpers/models.js';
import { readyHealth, startWorker, waitFor, type WorkerHandle } from '../helpers/worker.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `no browser: ${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`;
/** Where the screenshot goes; the README's docs/dashboard.png is a copy of one. */
const SCREENSHOT = process.env.HEARTH_DASHBOARD_SCREENSHOT ?? join(tmpdir(), 'hearth-dashboard.png');
/** Waits in the page: generous, since two cores run the cluster and the browser at once. */
const WAIT = { timeout: 30_000 };

/** The page's globals as the functions run inside it use them (this program has no DOM types). */
interface PageGlobals {
  document: {
    querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null;
    body: { dataset: Record<string, string | undefined> };
  };
  sameDocument?: boolean;
}

/** Waits until the text of the page's `selector` matches `re`. */
async function waitText(page: Page, selector: string, re: RegExp): Promise<void> {
  try {
    await page.waitForFunction(
      ([sel, source, flags]) => new RegExp(source!, flags).test((globalThis as unknown as PageGlobals).document.querySelector(sel!)?.textContent ?? ''),
      [selector, re.source, re.flags],
      WAIT,
    );
  } catch (e) {
    const text = await page.locator(selector).first().textContent().catch(() => null);
    throw new Error(`${selector} never matched ${re}; it shows: ${JSON.stringify(text)} (${(e as Error).message.split('\n')[0]})`);
  }
}

/**
 * The tiny test model may end an answer at any token; the page's requests are made long (480 tokens,
 * no end of sequence) where a test needs a generation still running when it acts.
 */
async function longAnswers(page: Page, maxTokens = 480): Promise<void> {
  await page.route('**/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData() ?? '{}') as Record<string, unknown>;
    return route.continue({ postData: JSON.stringify({ ...body, max_tokens: maxTokens, ignore_eos: true }) });
  });
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill('#prompt', text);
  await page.click('#send');
}

/** Text of the last assistant reply, once it has at least `chars` characters. */
async function answerText(page: Page, chars = 1): Promise<string> {
  const handle = await page.waitForFunction((n) => {
    const t = (globalThis as unknown as PageGlobals).document.querySelector('#chat-log li.assistant:last-child .text')?.textContent ?? '';
    return t.length >= n ? t : null;
  }, chars, WAIT);
  return (await handle.jsonValue()) as string;
}

async function startCluster(extra: string[] = [], apiKey?: string): Promise<{ workers: WorkerHandle[]; coord: CoordinatorHandle }> {
  const model = await testModel('tiny');
  const workers = [await startWorker(['--name', 'w-a']), await startWorker(['--name', 'w-b'])];
  try {
    const coord = await startCoordinator(model, workers.map((w) => w.control), extra, apiKey ? { apiKey } : {});
    return { workers, coord };
  } catch (e) {
    await Promise.all(workers.map((w) => w.stop()));
    throw e;
  }
}

describe('the dashboard', { skip }, () => {
  let browser: Browser;
  let workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM });
    // A context long enough that the answer the stop button ends is still running when it is clicked.
    ({ workers, coord } = await startCluster(['--ctx-size', '4096']));
  });

  after(async () => {
    await browser?.close();
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('shows both workers with their memory, and the plan with one bar per device', async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
      await page.goto(`${coord.http}/`);
      for (const name of ['w-a', 'w-b']) {
        const row = page.locator(`#workers tr[data-worker="${name}"][data-state="admitted"]`);
        await row.waitFor(WAIT);
        assert.match(await row.innerText(), /127\.0\.0\.1:\d+/);
        assert.match(await row.innerText(), /CPU/);
        assert.match(await row.innerText(), /hearth · [\d.]+ \w+ free · [\d.]+ \w+ total/);
      }
      await page.locator('#plan-devices li').nth(1).waitFor(WAIT);
      const devices = await page.locator('#plan-devices li').allInnerTexts();
      assert.equal(devices.length, 2, devices.join('\n'));
      assert.match(devices.join('\n'), /layers 0–\d/);
      assert.match(devices.join('\n'), /\+ output/);
      assert.match(devices[0]!, /weights [\d.]+ \w+ · KV [\d.]+ \w+ · compute [\d.]+ \w+/);
      assert.match(await page.innerText('#plan-summary'), /context 4096 tokens · parallel 4/);
      assert.equal(await page.isVisible('#banner'), false, 'no banner while serving');
      assert.equal(await page.isVisible('#key-form'), false, 'no key prompt without API keys');
      // The event log tells how the cluster came to be.
      await waitText(page, '#events', /model loaded/);
    } finally {
      await page.close();
    }
  });

  test('the chat streams an answer with its tokens/s, and the stop button ends it', async (t) => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
      await longAnswers(page, 3500);
      await page.goto(`${coord.http}/`);
      await page.locator('#workers tr[data-worker="w-a"]').waitFor(WAIT);
      await send(page, 'Tell me about the stone bridge.');
      const early = await answerText(page, 1);
      // Streaming: the same reply grows while the request is still open.
      const later = await answerText(page, early.length + 1);
      assert.ok(later.startsWith(early));
      assert.equal(await page.isEnabled('#stop'), true);
      assert.match(await page.innerText('#chat-stats'), /\d+ tokens · [\d.]+ tokens\/s/);
      await page.click('#stop');
      await page.locator('#chat-log li.assistant[data-ending="stopped"]').waitFor(WAIT);
      assert.equal(await page.isEnabled('#send'), true);
      // Stopping in the page frees the slot on the coordinator.
      await waitFor('the slot to be freed', async () => (await coord.client.getStatus()).in_flight === 0, 10_000);
      // A whole answer in a new chat (a short one); the serving figures (the first chart: tokens/s) see it.
      await longAnswers(page);
      await page.click('#clear');
      await send(page, 'Once upon a time in a distant land');
      await page.locator('#chat-log li.assistant:last-child[data-ending="done"]').waitFor(WAIT);
      await waitText(page, '#charts figcaption', /peak ([1-9]|0\.\d*[1-9])/);
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      t.diagnostic(`screenshot: ${SCREENSHOT}`);
    } finally {
      await page.close();
    }
  });

  test('SIGKILL of a worker rpc server: the answer in progress goes on after a pause, the page shows the loss, the resume and the re-plan, without a reload', async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
      await longAnswers(page);
      await page.goto(`${coord.http}/`);
      await page.locator('#workers tr[data-worker="w-b"][data-state="admitted"]').waitFor(WAIT);
      await page.evaluate(() => ((globalThis as unknown as PageGlobals).sameDocument = true));
      const loadsBefore = (await coord.client.getStatus()).load.loads;
      const replanBefore = await page.innerText('#plan-replan');
      const victim = await readyHealth(workers[1]!.client);
      await send(page, 'Keep talking.');
      await answerText(page, 4);
      process.kill(victim.rpc_server_pid, 'SIGKILL');

      // The answer in progress is resumed on the next plan and ends as any answer does; the page tells
      // what happened to the worker and to the answer.
      const ended = page.locator('#chat-log li.assistant:last-child[data-ending="done"]');
      await ended.waitFor(WAIT);
      await waitText(page, '#events', /worker w-b .*(lost|restarted its rpc server|suspect)/);
      await waitText(page, '#events', /resume: resumed 1 request after worker w-b .*lost its rpc server/);
      // Then the re-plan: serving again, on a plan made after the loss.
      await page.waitForFunction((before) => {
        const now = (globalThis as unknown as PageGlobals).document.querySelector('#plan-replan')?.textContent ?? '';
        return now !== before && /^Last re-plan: /.test(now);
      }, replanBefore, WAIT);
      await waitText(page, '#events', /planning: the engine was lost/);
      await page.waitForFunction(() => (globalThis as unknown as PageGlobals).document.body.dataset.state === 'serving', null, WAIT);
      assert.ok((await coord.client.getStatus()).load.loads > loadsBefore);
      assert.equal(await page.evaluate(() => (globalThis as unknown as PageGlobals).sameDocument), true, 'the page was not reloaded');
    } finally {
      await page.close();
    }
  });
});

describe('the dashboard with API keys', { skip }, () => {
  const KEY = 'dashboard-key-1';
  let browser: Browser;
  let workers: WorkerHandle[] = [];
  let coord: CoordinatorHandle;

  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM });
    ({ workers, coord } = await startCluster(['--api-key', KEY], KEY));
  });

  after(async () => {
    await browser?.close();
    await coord?.stop();
    await Promise.all(workers.map((w) => w.stop()));
  });

  test('the page shows only a prompt for the key, asks again for a wrong one, and works once given the right one', async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    try {
      await longAnswers(page, 16);
      await page.goto(`${coord.http}/`);
      await page.locator('#key-form').waitFor({ state: 'visible', ...WAIT });
      assert.equal(await page.isVisible('#main'), false, 'nothing but the prompt');
      assert.equal(await page.locator('#workers tbody tr').count(), 0, 'no cluster facts without a key');

      await page.fill('#key', 'not-the-key');
      await page.click('#key-form button');
      await waitText(page, '#key-why', /refused/);
      assert.equal(await page.isVisible('#main'), false);

      await page.fill('#key', KEY);
      await page.click('#key-form button');
      await page.locator('#workers tr[data-worker="w-b"][data-state="admitted"]').waitFor(WAIT);
      assert.equal(await page.isVisible('#key-form'), false);
      await send(page, 'Hello');
      await page.locator('#chat-log li.assistant:last-child[data-ending="done"]').waitFor(WAIT);
      assert.ok((await answerText(page, 1)).length > 0);

      // The key is remembered: a reload goes straight to the cluster.
      await page.reload();
      await page.locator('#workers tr[data-worker="w-a"]').waitFor(WAIT);
      assert.equal(await page.isVisible('#key-form'), false);
    } finally {
      await context.close();
    }
  });
});
