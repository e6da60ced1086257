// One measurement client for both servers: streamed /v1/completions over HTTP, timed on arrival of
// each server-sent event. Both sides get the same prompts, the same greedy settings and fixed lengths.
import { performance } from 'node:perf_hooks';

export interface StreamTiming {
  /** Request sent → first token, ms. */
  ttftMs: number;
  /** Request sent → last event, ms. */
  totalMs: number;
  /** First token → last token, ms. */
  decodeMs: number;
  promptTokens: number;
  completionTokens: number;
}

/**
 * Streams one completion. `cache_prompt: false` and a unique prompt keep llama-server from reusing a
 * cached prefix (hearth keeps none), so both sides process every prompt in full.
 */
export async function streamCompletion(base: string, prompt: string, maxTokens: number): Promise<StreamTiming> {
  const started = performance.now();
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, cache_prompt: false, stream: true, stream_options: { include_usage: true } }),
  });
  if (!r.ok || !r.body) throw new Error(`${base} answered ${r.status}: ${await r.text()}`);
  let first = 0;
  let last = 0;
  let chunks = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const part of r.body) {
    buffer += decoder.decode(part as Uint8Array, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const data = JSON.parse(event.slice(6)) as { error?: { message: string }; usage?: { prompt_tokens: number; completion_tokens: number }; choices?: { text?: string }[] };
      if (data.error) throw new Error(data.error.message);
      if (data.usage) {
        promptTokens = data.usage.prompt_tokens;
        completionTokens = data.usage.completion_tokens;
      }
      if (data.choices && data.choices.length > 0 && data.choices[0]!.text !== undefined && data.choices[0]!.text !== '') {
        const now = performance.now();
        if (first === 0) first = now;
        last = now;
        chunks++;
      }
    }
  }
  const done = performance.now();
  return {
    ttftMs: first - started,
    totalMs: done - started,
    decodeMs: last - first,
    promptTokens,
    completionTokens: completionTokens || chunks,
  };
}

/** A prompt that is unique from its first word (no shared prefix between requests). */
export function uniquePrompt(tag: number, words: number): string {
  const base = 'the old stone hearth kept the whole house warm through the long winter nights while';
  const pool = base.split(' ');
  const out = [`Story ${tag}:`];
  for (let i = 0; i < words; i++) out.push(pool[(i + tag) % pool.length]!);
  return out.join(' ');
}

export interface SuiteSettings {
  genTokens: number;
  longPromptWords: number;
  concurrency: number[];
}

export interface SuiteFigures {
  /** Single request: generated tokens per second (after the first token). */
  genTps: number;
  /** Prompt processing, tokens per second, for the long prompt. */
  ppTps: number;
  ppPromptTokens: number;
  /** Time to first token of a short single request, ms. */
  ttftMs: number;
  /** Aggregate generated tokens per second by concurrency level. */
  aggregateTps: Record<string, number>;
}

let tagCounter = 1;

export async function runSuite(base: string, s: SuiteSettings): Promise<SuiteFigures> {
  // Warm-up: the first request after a load allocates graphs.
  await streamCompletion(base, uniquePrompt(tagCounter++, 8), 4);
  // Three single requests, their medians: one request alone is at the mercy of a passing hiccup.
  const singles = [];
  for (let i = 0; i < 3; i++) singles.push(await streamCompletion(base, uniquePrompt(tagCounter++, 12), s.genTokens));
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const long = await streamCompletion(base, uniquePrompt(tagCounter++, s.longPromptWords), 2);
  const aggregateTps: Record<string, number> = {};
  for (const n of s.concurrency) {
    const started = performance.now();
    const runs = await Promise.all(Array.from({ length: n }, () => streamCompletion(base, uniquePrompt(tagCounter++, 12), s.genTokens)));
    const seconds = (performance.now() - started) / 1000;
    aggregateTps[String(n)] = runs.reduce((sum, r) => sum + r.completionTokens, 0) / seconds;
  }
  return {
    genTps: median(singles.map((r) => (r.completionTokens - 1) / (r.decodeMs / 1000))),
    ppTps: long.promptTokens / (long.ttftMs / 1000),
    ppPromptTokens: long.promptTokens,
    ttftMs: median(singles.map((r) => r.ttftMs)),
    aggregateTps,
  };
}
