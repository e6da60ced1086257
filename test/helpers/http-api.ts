// Helpers for tests of the OpenAI-compatible HTTP API: a value from /metrics, and an expected error.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

/** The value of metric `name` (with exactly `labels`, as written inside the braces) in /metrics text; NaN when absent. */
export function metric(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

/** `p` fails with an OpenAI API error of this status and type, whose message matches `pattern`. */
export async function expectApiError(p: Promise<unknown>, status: number, type: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof OpenAI.APIError, String(e));
    assert.equal(e.status, status, e.message);
    assert.equal((e.error as { type?: string } | undefined)?.type, type, JSON.stringify(e.error));
    assert.match(e.message, pattern);
    return true;
  });
}
