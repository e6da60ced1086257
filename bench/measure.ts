// One measurement client for both servers: streamed /v1/completions and /v1/chat/completions over HTTP,
// timed on arrival of each server-sent event. Both sides get the same prompts, the same greedy settings
// and fixed lengths.
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

/** The fields of a streamed event either server sends that the benchmark reads. */
export interface StreamEvent {
  error?: { message: string };
  usage?: {
    prompt_tokens: number;
    completion_tokens: number;
    prompt_tokens_details?: { cached_tokens?: number } | null;
    /** hearth's speculative decoding, in OpenAI's terms for predicted outputs. */
    completion_tokens_details?: { accepted_prediction_tokens: number; rejected_prediction_tokens: number };
  };
  /**
   * llama-server's, on its last event: cache_n is the same count as usage's cached_tokens; the draft
   * counts only when it drafted.
   */
  timings?: { cache_n?: number; draft_n?: number; draft_n_accepted?: number };
  choices?: { text?: string; delta?: { content?: string | null; reasoning_content?: string | null; tool_calls?: unknown[] } }[];
}

/** POSTs a streamed request and yields its server-sent events as they arrive, each with its arrival time. */
export async function* streamEvents(url: string, body: Record<string, unknown>): AsyncGenerator<{ data: StreamEvent; at: number }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok || !r.body) throw new Error(`${url} answered ${r.status}: ${await r.text()}`);
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const part of r.body) {
    buffer += decoder.decode(part as Uint8Array, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const data = JSON.parse(event.slice(6)) as StreamEvent;
      if (data.error) throw new Error(data.error.message);
      yield { data, at: performance.now() };
    }
  }
}

/**
 * Streams one completion. `cache_prompt: false` and a unique prompt keep either server from reusing a
 * cached prefix, so both sides process every prompt in full.
 */
export async function streamCompletion(base: string, prompt: string, maxTokens: number): Promise<StreamTiming> {
  const started = performance.now();
  let first = 0;
  let last = 0;
  let chunks = 0;
  let promptTokens = 0;
  let completionTokens = 0;
  const body = { prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, cache_prompt: false, stream: true, stream_options: { include_usage: true } };
  for await (const { data, at } of streamEvents(`${base}/v1/completions`, body)) {
    if (data.usage) {
      promptTokens = data.usage.prompt_tokens;
      completionTokens = data.usage.completion_tokens;
    }
    const text = data.choices?.[0]?.text;
    if (text !== undefined && text !== '') {
      if (first === 0) first = at;
      last = at;
      chunks++;
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

export interface ChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

export interface ChatTurnTiming {
  /** Request sent → first reply text, ms. */
  ttftMs: number;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens the server took from its cache; null when it reported no count. */
  cachedTokens: number | null;
  /** The assistant's reply as streamed, to carry into the next turn. */
  reply: string;
}

/**
 * Streams one chat turn with the servers' default prompt cache (cache_prompt is not sent; both default
 * to true). The first token is the first event that carries reply text: hearth opens a chat stream with
 * an empty assistant delta as soon as the request starts, llama-server with a null one, neither a token.
 */
export async function streamChat(base: string, messages: readonly ChatMessage[], maxTokens: number): Promise<ChatTurnTiming> {
  const started = performance.now();
  let first = 0;
  let reply = '';
  let promptTokens = 0;
  let completionTokens = 0;
  let cachedTokens: number | null = null;
  const body = { messages, max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } };
  for await (const { data, at } of streamEvents(`${base}/v1/chat/completions`, body)) {
    if (data.usage) {
      promptTokens = data.usage.prompt_tokens;
      completionTokens = data.usage.completion_tokens;
      cachedTokens = data.usage.prompt_tokens_details?.cached_tokens ?? cachedTokens;
    }
    if (cachedTokens === null && typeof data.timings?.cache_n === 'number') cachedTokens = data.timings.cache_n;
    const delta = data.choices?.[0]?.delta;
    if (!delta) continue;
    if (typeof delta.content === 'string') reply += delta.content;
    if (first === 0 && (!!delta.content || !!delta.reasoning_content || (delta.tool_calls?.length ?? 0) > 0)) first = at;
  }
  if (first === 0) throw new Error(`${base} streamed no reply text for a chat turn of ${messages.length} messages`);
  return { ttftMs: first - started, promptTokens, completionTokens, cachedTokens, reply };
}

/** A prompt that is unique from its first word (no shared prefix between requests). */
export function uniquePrompt(tag: number, words: number): string {
  const base = 'the old stone hearth kept the whole house warm through the long winter nights while';
  const pool = base.split(' ');
  const out = [`Story ${tag}:`];
  for (let i = 0; i < words; i++) out.push(pool[(i + tag) % pool.length]!);
  return out.join(' ');
}

/**
 * Deterministic prose of `words` words that no other call shares a prefix with: it opens with the tag
 * and starts its sentences at a place the tag picks.
 */
export function uniqueProse(tag: number, words: number): string {
  const sentences = [
    'The old stone hearth kept the whole house warm through the long winter nights.',
    'Every evening the family gathered around it to share bread, tea and the news of the day.',
    'The grandmother told stories of storms at sea, of lost ships and of sailors who came home.',
    'Outside, the snow piled high against the walls and the wind sang in the chimney.',
    'The children listened with wide eyes until the fire burned low and the embers glowed red.',
    'In the morning the father carried in fresh wood from the shed behind the barn.',
    'By spring the roads were open again and travellers stopped at the door to rest.',
    'They always asked about the hearth, for its warmth was known in every village of the valley.',
  ].map((x) => x.split(' '));
  const out = [`Chat ${tag}:`];
  for (let i = 0; out.length - 1 < words; i++) {
    for (const w of sentences[(tag + i) % sentences.length]!) {
      if (out.length - 1 >= words) break;
      out.push(w);
    }
  }
  return out.join(' ');
}

/** The short user messages of the turns after the first, in order (repeated if there are more turns). */
const FOLLOW_UPS = ['Go on with the story.', 'What happened next?', 'And how did it end?'];

export interface ChatSettings {
  /** Turns in the conversation, the first included. */
  turns: number;
  /** Words of the first user message (uniqueProse: 1,200 words are about 1,480 tokens of the llama SPM vocabulary). */
  firstPromptWords: number;
  /** Tokens generated per turn (ignore_eos). */
  replyTokens: number;
  /** Milliseconds between a reply and the next turn: the time a person reads and types (0: none). */
  pauseMs?: number;
  /**
   * Picks the conversation's prose: every side of a repetition is given the same one, so their token
   * counts compare one for one (absent: a new one each time).
   */
  tag?: number;
}

/** A multi-turn chat whose later turns can take their prompt's prefix from the cache. */
export interface ChatFigures {
  /** Per turn: prompt tokens as the server counted them (chat template included). */
  promptTokens: number[];
  /** Per turn: prompt tokens taken from the cache as the server reported them; null where it reported none. */
  cachedTokens: (number | null)[];
  /** Per turn: request sent → first reply text, ms. */
  ttftMs: number[];
  /** The first turn's time to first token: the whole long prompt processed. */
  firstTtftMs: number;
  /** Median time to first token of the later turns (2 to the last). */
  laterTtftMs: number;
}

export interface SuiteSettings {
  genTokens: number;
  longPromptWords: number;
  concurrency: number[];
  /** The multi-turn chat; null skips it. */
  chat: ChatSettings | null;
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
  /** Absent in results from before the prompt cache, and when the suite skipped it. */
  chat?: ChatFigures | null;
}

let tagCounter = 1;

/**
 * One conversation: the long first message, then each turn appends the reply it got and a short
 * message, so every later prompt extends the one before it by the reply and a few tokens.
 */
export async function runChat(base: string, c: ChatSettings): Promise<ChatFigures> {
  const messages: ChatMessage[] = [{ role: 'user', content: `${uniqueProse(c.tag ?? tagCounter++, c.firstPromptWords)}\n\nTell me a story that goes on from this.` }];
  const turns: ChatTurnTiming[] = [];
  for (let t = 0; t < c.turns; t++) {
    if (t > 0) messages.push({ role: 'assistant', content: turns[t - 1]!.reply }, { role: 'user', content: FOLLOW_UPS[(t - 1) % FOLLOW_UPS.length]! });
    if (t > 0 && c.pauseMs) await new Promise((r) => setTimeout(r, c.pauseMs));
    turns.push(await streamChat(base, messages, c.replyTokens));
  }
  const ttft = turns.map((x) => x.ttftMs);
  return {
    promptTokens: turns.map((x) => x.promptTokens),
    cachedTokens: turns.map((x) => x.cachedTokens),
    ttftMs: ttft,
    firstTtftMs: ttft[0]!,
    laterTtftMs: ttft.length > 1 ? median(ttft.slice(1)) : NaN,
  };
}

/** The median; of an even count, the mean of the middle two. */
function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export async function runSuite(base: string, s: SuiteSettings): Promise<SuiteFigures> {
  // Warm-up: the first request after a load allocates graphs.
  await streamCompletion(base, uniquePrompt(tagCounter++, 8), 4);
  // Three single requests, their medians: one request alone is at the mercy of a passing hiccup.
  const singles = [];
  for (let i = 0; i < 3; i++) singles.push(await streamCompletion(base, uniquePrompt(tagCounter++, 12), s.genTokens));
  const long = await streamCompletion(base, uniquePrompt(tagCounter++, s.longPromptWords), 2);
  const aggregateTps: Record<string, number> = {};
  for (const n of s.concurrency) {
    const started = performance.now();
    const runs = await Promise.all(Array.from({ length: n }, () => streamCompletion(base, uniquePrompt(tagCounter++, 12), s.genTokens)));
    const seconds = (performance.now() - started) / 1000;
    aggregateTps[String(n)] = runs.reduce((sum, r) => sum + r.completionTokens, 0) / seconds;
  }
  // Last, alone on an idle server: its turns must not queue behind other requests.
  const chat = s.chat ? await runChat(base, s.chat) : null;
  return {
    genTps: median(singles.map((r) => (r.completionTokens - 1) / (r.decodeMs / 1000))),
    ppTps: long.promptTokens / (long.ttftMs / 1000),
    ppPromptTokens: long.promptTokens,
    ttftMs: median(singles.map((r) => r.ttftMs)),
    aggregateTps,
    ...(chat ? { chat } : {}),
  };
}
