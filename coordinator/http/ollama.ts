// The Ollama API on the coordinator's HTTP port, for the apps that speak it (its docs/api.md, checked
// with the official `ollama` client): /api/chat and /api/generate streamed as NDJSON by default,
// /api/embed, the listings (/api/tags, /api/ps, /api/show, /api/version), and GET / answering
// "Ollama is running" to API clients (browsers still get the dashboard). Requests are parsed in
// ollama-request.ts and answers shaped in ollama-response.ts and ollama-models.ts; this module only
// routes, streams, and reads the model files' stamps.
import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { ErrorCode, HearthError, isHearthError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { modelContentId } from '../../models/content-id.js';
import type { ModelFacts } from '../../models/gguf-info.js';
import { keyRefusal, presentedKey } from '../api-keys.js';
import type { GenerationRequest } from '../coordinator.js';
import type { GenerateHandlers, GenerateResult } from '../engine/engine-process.js';
import type { EmbedRequest, EmbedResult, ModelKind, ServedModel } from '../served-models.js';
import { toOpenAiError } from './errors.js';
import { psEntry, showResponse, tagsEntries, type FileStamp } from './ollama-models.js';
import { chatRequest, embeddingsRequest, embedRequest, generateRequest, modelName, ollamaBody, type OllamaGeneration } from './ollama-request.js';
import { embedVectors, finalLine, loadLine, logprob, partLine, toolCalls, type OllamaEndpoint, type OllamaLogprob, type Timing } from './ollama-response.js';

/** What the Ollama API needs of the coordinator (a fake in unit tests). */
export interface OllamaBackend {
  models(): ServedModel[];
  resolveModel(name: string | undefined, kind: ModelKind): ServedModel;
  generate(request: GenerationRequest, options: { signal?: AbortSignal; handlers?: GenerateHandlers }): Promise<GenerateResult>;
  embed(request: EmbedRequest): Promise<EmbedResult>;
  /** Loads the model if it is not in memory, and resolves once it serves. */
  loadModel(name: string, signal?: AbortSignal): Promise<void>;
  /** Unloads an on-demand model (after its requests in flight); false for a pinned one, which stays. */
  unloadModel(name: string): Promise<boolean>;
}

export interface OllamaOptions {
  /** Accepted API keys; empty: no authentication. */
  apiKeys: readonly string[];
  /** Headers of a stream go out when its request starts, or after this long, whichever is first. */
  headersAfterMs: number;
}

/** The Ollama release whose API this one follows (logprobs came in 0.12.11): apps gate features on it. */
export const OLLAMA_API_VERSION = '0.12.11';

/** What Ollama answers on GET /; clients probe it to find a server. */
export const OLLAMA_RUNNING = 'Ollama is running';

/** How often a request went on after its engine was lost (server.ts's RESUMED_HEADER; importing it from there would be a cycle). */
const RESUMED_HEADER = 'x-hearth-resumed';

/** What hearth did differently from what the request asked (a larger num_ctx, ignored options, keep_alive 0). */
const NOTES_HEADER = 'x-hearth-notes';

/** The model management endpoints that make no sense on a cluster, and what to do instead. */
const MANAGEMENT: readonly { method: 'POST' | 'DELETE' | 'HEAD'; url: string; what: string }[] = [
  { method: 'POST', url: '/pull', what: 'hearth does not pull models through the Ollama API: list the model under models: in cluster.yaml (or give --model) and the coordinator fetches it, or fetch it ahead with `hearth model pull REF`' },
  { method: 'POST', url: '/push', what: 'hearth does not push models to a registry' },
  { method: 'POST', url: '/create', what: "hearth does not build models from a Modelfile: it serves the GGUF models that models: in cluster.yaml (or --model) lists, with their own chat templates; give a model another name with an alias there" },
  { method: 'POST', url: '/copy', what: 'hearth does not copy models: give a model another name with an alias under models: in cluster.yaml' },
  { method: 'DELETE', url: '/delete', what: 'hearth does not delete models through the Ollama API: take the model out of models: in cluster.yaml, and `hearth model rm REF` removes its files from the library' },
  { method: 'POST', url: '/blobs/:digest', what: 'hearth does not take model blobs: it serves the GGUF models that models: in cluster.yaml (or --model) lists' },
  { method: 'HEAD', url: '/blobs/:digest', what: 'hearth does not keep Ollama blobs: it serves the GGUF models that models: in cluster.yaml (or --model) lists' },
];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** hearth's errors in Ollama's shape, with the status each one's code maps to on every HTTP API. */
export function ollamaError(e: unknown): { status: number; body: { error: string } } {
  const { status, body } = toOpenAiError(e);
  return { status, body: { error: body.error.message } };
}

/** A header value safe to send: ASCII without control characters. */
function headerText(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** Registers the Ollama API: GET / for API clients, and /api/* in a scope whose errors are all in Ollama's shape. */
export function registerOllama(app: FastifyInstance, backend: OllamaBackend, options: OllamaOptions, log: Logger): void {
  const api = new OllamaApi(backend, options, log.child({ part: 'ollama' }));
  // GET / is the dashboard's page; a client that does not ask for HTML is probing for an Ollama server.
  app.addHook('onRequest', async (req, reply) => {
    if ((req.method === 'GET' || req.method === 'HEAD') && req.url.split('?')[0] === '/' && !/text\/html/.test(req.headers.accept ?? '')) {
      return reply.type('text/plain; charset=utf-8').send(OLLAMA_RUNNING);
    }
  });
  void app.register(async (scope) => api.routes(scope), { prefix: '/api' });
}

class OllamaApi {
  readonly #backend: OllamaBackend;
  readonly #options: OllamaOptions;
  readonly #log: Logger;
  /** Digests read from model files, by path, size and time: a file is read once, and again when it changes. */
  readonly #stamps = new Map<string, FileStamp>();
  /** num_ctx values already logged as larger than the served context, per model. */
  readonly #numCtxLogged = new Set<string>();

  constructor(backend: OllamaBackend, options: OllamaOptions, log: Logger) {
    this.#backend = backend;
    this.#options = options;
    this.#log = log;
  }

  routes(scope: FastifyInstance): void {
    scope.addHook('onRequest', this.#auth);
    // Errors the shared error handler answers for these routes (a body over the limit: 413) come out in Ollama's shape too.
    scope.addHook('onSend', async (_req, reply, payload) => {
      if (reply.statusCode < 400 || typeof payload !== 'string') return payload;
      try {
        const p: unknown = JSON.parse(payload);
        if (isObject(p) && isObject(p.error) && typeof p.error.message === 'string') return JSON.stringify({ error: p.error.message });
      } catch {
        // not JSON: sent as it is
      }
      return payload;
    });
    scope.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url}: this is hearth's Ollama API, which has /api/chat, /api/generate, /api/embed, /api/tags, /api/show, /api/ps and /api/version` }));

    scope.get('/version', () => ({ version: OLLAMA_API_VERSION }));
    scope.get('/tags', this.#json(() => ({ models: this.#backend.models().flatMap((m) => tagsEntries(m, this.#stamp(m.facts))) })));
    scope.get('/ps', this.#json(() => ({ models: this.#backend.models().filter((m) => m.status === 'loaded').map((m) => psEntry(m, this.#stamp(m.facts))) })));
    scope.post('/show', this.#json((req) => {
      const b = ollamaBody(req.body);
      const model = this.#resolve(modelName(b), null);
      return showResponse(model, this.#stamp(model.facts));
    }));
    scope.post('/chat', (req, reply) => this.#generate('chat', req, reply));
    scope.post('/generate', (req, reply) => this.#generate('generate', req, reply));
    scope.post('/embed', this.#json((req) => this.#embed(req, false)));
    scope.post('/embeddings', this.#json((req) => this.#embed(req, true)));
    for (const m of MANAGEMENT) {
      scope.route({ method: m.method, url: m.url, handler: (_req, reply) => reply.code(501).send({ error: `${m.what}; the models served here are: ${this.#names()}` }) });
    }
  }

  /** API keys as on the other routes; /api/version stays public, as GET / does (clients probe both). */
  #auth = async (req: FastifyRequest, reply: FastifyReply) => {
    const keys = this.#options.apiKeys;
    if (keys.length === 0 || req.url.split('?')[0] === '/api/version') return;
    const refusal = keyRefusal(presentedKey(req.headers.authorization, req.headers['x-api-key']), keys);
    if (refusal) return reply.code(401).send({ error: refusal });
  };

  /** A handler that answers JSON, or an error in Ollama's shape. */
  #json(fn: (req: FastifyRequest, reply: FastifyReply) => unknown) {
    return async (req: FastifyRequest, reply: FastifyReply) => {
      try {
        return reply.send(await fn(req, reply));
      } catch (e) {
        return this.#fail(reply, e);
      }
    };
  }

  #fail(reply: FastifyReply, e: unknown) {
    const { status, body } = ollamaError(e);
    if (status >= 500) this.#log.error({ status, err: body.error }, 'Ollama API request failed');
    return reply.code(status).type('application/json; charset=utf-8').send(body);
  }

  #names(): string {
    return this.#backend.models().map((m) => m.id).join(', ');
  }

  /**
   * The model a request names, in Ollama's words when there is none. Ollama's default tag is accepted
   * (NAME:latest is NAME), since apps add it. `kind` null: any kind (/api/show).
   */
  #resolve(name: string, kind: ModelKind | null): ServedModel {
    const find = (n: string) => {
      if (kind !== null) return this.#backend.resolveModel(n, kind);
      const m = this.#backend.models().find((x) => x.id === n || x.aliases.includes(n));
      if (!m) throw new HearthError(ErrorCode.NotFound, `model '${n}' not found`);
      return m;
    };
    try {
      return find(name);
    } catch (e) {
      if (!isHearthError(e, ErrorCode.NotFound)) throw e;
      if (name.endsWith(':latest')) {
        try {
          return find(name.slice(0, -':latest'.length));
        } catch (e2) {
          if (!isHearthError(e2, ErrorCode.NotFound)) throw e2;
        }
      }
      throw new HearthError(ErrorCode.NotFound, `model '${name}' not found; the models served here are: ${this.#names()}`);
    }
  }

  /** The model file's digest and time, read once per version of the file; null when it cannot be read. */
  #stamp(facts: ModelFacts | null): FileStamp | null {
    if (!facts || facts.shards.length === 0) return null;
    try {
      const stats = facts.shards.map((s) => statSync(s.path));
      const key = facts.shards.map((s, i) => `${s.path}:${stats[i]!.size}:${stats[i]!.mtimeMs}`).join('|');
      let stamp = this.#stamps.get(key);
      if (!stamp) {
        stamp = { digest: modelContentId(facts.shards.map((s) => s.path)), modifiedAt: new Date(Math.max(...stats.map((s) => s.mtimeMs))) };
        this.#stamps.set(key, stamp);
      }
      return stamp;
    } catch (e) {
      this.#log.warn({ path: facts.path, err: (e as Error).message }, 'cannot read the model file for its digest');
      return null;
    }
  }

  /** What hearth did differently from what the request asked, for the notes header (and the log, once per model and num_ctx). */
  #notes(g: OllamaGeneration, model: ServedModel): string[] {
    const notes: string[] = [];
    const over = g.options.numCtxOver;
    if (over !== null) {
      notes.push(`options.num_ctx ${over} is more than the ${model.ctxSize} tokens per request that ${model.id} is served with; the served context applies, and a longer prompt is refused`);
      const key = `${model.id}:${over}`;
      if (!this.#numCtxLogged.has(key)) {
        this.#numCtxLogged.add(key);
        this.#log.info({ model: model.id, numCtx: over, ctxSize: model.ctxSize }, 'an Ollama client asked for a larger context than the model is served with; the served context applies');
      }
    }
    if (g.options.ignored.length > 0) notes.push(`options not supported, ignored: ${g.options.ignored.join(', ')}`);
    if (g.unload && model.policy === 'pinned') notes.push(`keep_alive 0 (unload): ${model.id} is pinned in the cluster's configuration, so it stays loaded`);
    return notes;
  }

  async #generate(endpoint: OllamaEndpoint, req: FastifyRequest, reply: FastifyReply) {
    const timing: Timing = { received: performance.now(), started: null, firstToken: null, ended: 0 };
    let g: OllamaGeneration;
    let model: ServedModel;
    try {
      const b = ollamaBody(req.body);
      model = this.#resolve(modelName(b), 'chat');
      g = endpoint === 'chat' ? chatRequest(b, model) : generateRequest(b, model);
    } catch (e) {
      return this.#fail(reply, e);
    }
    const notes = this.#notes(g, model);
    const headers: Record<string, string> = notes.length > 0 ? { [NOTES_HEADER]: headerText(notes.join(' | ')) } : {};
    reply.headers(headers);
    // Ollama's "load the model" (an empty prompt), or with keep_alive 0 its "unload the model".
    if (g.loadOnly) {
      try {
        if (g.unload) await this.#backend.unloadModel(model.id);
        else await this.#backend.loadModel(model.id);
      } catch (e) {
        return this.#fail(reply, e);
      }
      return reply.send({ ...loadLine(endpoint, g.name, new Date()), ...(g.unload ? { done_reason: 'unload' } : {}) });
    }
    const abort = new AbortController();
    // A client that disconnects cancels its generation and frees its slot.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    if (g.stream) return this.#stream(endpoint, g, reply, abort, timing, headers);
    const lps: OllamaLogprob[] = [];
    try {
      const result = await this.#backend.generate(g.request, {
        signal: abort.signal,
        handlers: {
          onStarted: () => (timing.started ??= performance.now()),
          onToken: (_text, _token, extra) => {
            timing.firstToken ??= performance.now();
            if (g.logprobs && extra.logprob) lps.push(logprob(extra.logprob));
          },
        },
      });
      timing.ended = performance.now();
      reply.header(RESUMED_HEADER, String(result.resumed ?? 0));
      return reply.send(finalLine(endpoint, g.name, new Date(), result, timing, { logprobs: g.logprobs ? lps : null }));
    } catch (e) {
      // Also after a disconnect (the answer then goes nowhere), so that the handler always answers.
      return this.#fail(reply, e);
    }
  }

  /**
   * NDJSON: a line per change of the reply, tool calls whole (with arguments as objects) on a line of
   * their own when the reply ends, then the final line with the figures. Headers wait until the request
   * starts (so a refused request still gets its status), or until `headersAfterMs`; after that a
   * failure is an `{"error": ...}` line, as Ollama sends it.
   */
  async #stream(endpoint: OllamaEndpoint, g: OllamaGeneration, reply: FastifyReply, abort: AbortController, timing: Timing, headers: Record<string, string>) {
    reply.hijack();
    const res = reply.raw;
    let opened = false;
    const write = (line: unknown) => {
      if (!res.destroyed) res.write(`${JSON.stringify(line)}\n`);
    };
    const open = () => {
      if (opened || res.destroyed) return;
      opened = true;
      // `connection` set here, as /v1's streams set it, keeps Node from advertising its 72-s Keep-Alive
      // timeout: a client that aborts a stream (Node's fetch) keeps its socket for that long, and the
      // server's close waits for it (a coordinator's stop took 69 s instead of 3).
      res.writeHead(200, { ...headers, 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    };
    const headersTimer = setTimeout(open, this.#options.headersAfterMs);
    const chat = g.request.prompt.kind === 'chat';
    try {
      const result = await this.#backend.generate(g.request, {
        signal: abort.signal,
        handlers: {
          onStarted: () => {
            timing.started ??= performance.now();
            open();
          },
          onToken: (text, _token, extra) => {
            timing.firstToken ??= performance.now();
            open();
            const lps = g.logprobs && extra.logprob ? [logprob(extra.logprob)] : [];
            const content = chat && extra.delta ? (extra.delta.content ?? '') : text;
            const thinking = chat ? (extra.delta?.reasoningContent ?? '') : '';
            if (content || thinking || lps.length > 0) write(partLine(endpoint, g.name, new Date(), { content, thinking, logprobs: lps }));
          },
        },
      });
      timing.ended = performance.now();
      open();
      const calls = endpoint === 'chat' && result.reply ? toolCalls(result.reply.toolCalls) : [];
      if (calls.length > 0) write(partLine(endpoint, g.name, new Date(), { toolCalls: calls }));
      write(finalLine(endpoint, g.name, new Date(), result, timing, null));
      res.end();
    } catch (e) {
      if (abort.signal.aborted || res.destroyed) return;
      const { status, body } = ollamaError(e);
      if (status >= 500) this.#log.error({ status, err: body.error }, 'Ollama API stream failed');
      if (!opened) {
        opened = true;
        res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(body));
        return;
      }
      write(body);
      res.end();
    } finally {
      clearTimeout(headersTimer);
    }
  }

  /** /api/embed (normalized vectors, `dimensions`), or the older /api/embeddings (one raw vector). */
  async #embed(req: FastifyRequest, legacy: boolean) {
    const received = performance.now();
    const b = ollamaBody(req.body);
    const model = this.#resolve(modelName(b), 'embedding');
    if (legacy) {
      const e = embeddingsRequest(b, model);
      if (e.request.inputs.length === 0) return { embedding: [] };
      const result = await this.#backend.embed(e.request);
      return { embedding: result.embeddings[0] ?? [] };
    }
    const e = embedRequest(b, model);
    if (e.request.inputs.length === 0) return { model: e.name, embeddings: [] };
    const result = await this.#backend.embed(e.request);
    return {
      model: e.name,
      embeddings: embedVectors(result.embeddings, e.dimensions),
      total_duration: Math.round((performance.now() - received) * 1e6),
      load_duration: 0,
      prompt_eval_count: result.promptTokens,
    };
  }
}
