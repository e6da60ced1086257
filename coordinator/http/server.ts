// The OpenAI-compatible HTTP API, /health and /metrics, on the coordinator's HTTP port.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { loadBinding } from '../../native/binding.js';
import { keyRefusal, presentedKey } from '../api-keys.js';
import type { Coordinator, GenerationRequest } from '../coordinator.js';
import type { GenerateResult } from '../engine/engine-process.js';
import type { ChatDelta, TokenLogprob } from '../engine/protocol.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { ServedModel } from '../served-models.js';
import { statusView } from '../views.js';
import { registerDashboard } from './dashboard.js';
import { registerEmbeddingRoutes } from './embedding-routes.js';
import { toOpenAiError, type OpenAiErrorBody } from './errors.js';
import { registerOllama } from './ollama.js';
import { chatRequest, completionRequest, usage, type StreamOptions } from './openai.js';

export interface HttpOptions {
  /** Accepted API keys; empty: no authentication. */
  apiKeys: readonly string[];
  bodyLimitBytes: number;
  /** SSE comment pings while a stream waits (prompt processing, a busy queue). */
  pingMs: number;
  /** Headers of a stream go out when its request starts, or after this long, whichever is first. */
  headersAfterMs: number;
}

type Kind = 'chat' | 'completion';

/**
 * A body over the limit is refused before it is read; a client still uploading it would then hit a
 * closed socket (EPIPE) instead of reading the 413. So the rest is read and thrown away, up to
 * `maxBytes`; a client sending more than that is cut off.
 */
function discardBody(req: IncomingMessage, maxBytes: number): void {
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > maxBytes) req.destroy();
  });
  req.resume();
}

export class HttpApi {
  readonly app: FastifyInstance;
  readonly #coordinator: Coordinator;
  readonly #options: HttpOptions;
  readonly #created = Math.floor(Date.now() / 1000);

  constructor(coordinator: Coordinator, metrics: CoordinatorMetrics, options: HttpOptions, log: Logger) {
    this.#coordinator = coordinator;
    this.#options = options;
    // Fastify's own per-request logging is off; failures are logged by the error handler below.
    this.app = Fastify({ bodyLimit: options.bodyLimitBytes, logger: false });
    // Bodies are parsed here, whatever their content type, so that every malformed body gets the
    // same OpenAI-shaped 400.
    this.app.removeAllContentTypeParsers();
    this.app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    this.app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
        // Fastify asks for the connection to close here; the client may still be uploading, and would
        // get EPIPE instead of this answer. Read the rest (bounded) and keep the connection.
        reply.removeHeader('connection');
        discardBody(req.raw, options.bodyLimitBytes * 4);
        return reply.code(413).send(errorBody(`request body is larger than the limit of ${options.bodyLimitBytes} bytes`, 'invalid_request_error'));
      }
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
        return reply.code(err.statusCode).send(errorBody(err.message, 'invalid_request_error'));
      }
      const { status, body } = toOpenAiError(err);
      if (status >= 500) log.error({ status, err: body.error.message }, 'HTTP request failed');
      return reply.code(status).send(body);
    });
    this.app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody(`no route ${req.method} ${req.url}`, 'not_found_error')));

    this.app.get('/health', (_req, reply) => this.#health(reply));
    registerDashboard(this.app);
    // The dashboard's view of everything, as `hearth status --json` prints it; API keys apply.
    this.app.get('/api/status', { preHandler: this.#auth }, () => statusView(coordinator.snapshot(), loadBinding().systemInfo()));
    this.app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
    this.app.get('/v1/models', { preHandler: this.#auth }, () => ({ object: 'list', data: coordinator.models().map((m) => this.#modelCard(m)) }));
    this.app.post('/v1/chat/completions', { preHandler: this.#auth }, (req, reply) => this.#generate('chat', req, reply));
    this.app.post('/v1/completions', { preHandler: this.#auth }, (req, reply) => this.#generate('completion', req, reply));
    registerEmbeddingRoutes(this.app, coordinator, this.#auth);
    registerOllama(this.app, coordinator, options, log);
  }

  async listen(host: string, port: number): Promise<number> {
    try {
      await this.app.listen({ host, port });
    } catch (e) {
      throw new HearthError(ErrorCode.FailedPrecondition, `cannot listen for HTTP on ${host}:${port}: ${(e as Error).message} (choose another with --http-port)`);
    }
    const addr = this.app.server.address();
    return typeof addr === 'object' && addr ? addr.port : port;
  }

  async close(): Promise<void> {
    await this.app.close();
  }

  /** The default model's id. */
  get modelId(): string {
    return this.#coordinator.models()[0]?.id ?? 'hearth';
  }

  /** OpenAI's model object, with what hearth knows of it: whether it is in memory, what it is for, its other names. */
  #modelCard(m: ServedModel) {
    return {
      id: m.id,
      object: 'model',
      created: this.#created,
      owned_by: 'hearth',
      status: m.status,
      kind: m.kind,
      policy: m.policy,
      aliases: m.aliases,
      context_length: m.ctxSize,
      ...(m.facts ? { architecture: m.facts.architecture, size_bytes: m.facts.fileBytes } : {}),
    };
  }

  #auth = async (req: FastifyRequest, reply: FastifyReply) => {
    const keys = this.#options.apiKeys;
    if (keys.length === 0) return;
    const refusal = keyRefusal(presentedKey(req.headers.authorization, req.headers['x-api-key']), keys);
    if (refusal) return reply.code(401).send(errorBody(refusal, 'authentication_error', 'invalid_api_key'));
  };

  #health(reply: FastifyReply) {
    const c = this.#coordinator;
    if (c.state === 'serving') return reply.send({ status: 'ok', model: this.modelId });
    const message = c.state === 'loading' ? `Loading model (${Math.round(c.loadRecord.progress * 100)}%)` : `${c.state}: ${c.reason || 'not serving'}`;
    return reply.code(503).send({ error: { code: 503, message, type: 'unavailable_error' } });
  }

  async #generate(kind: Kind, req: FastifyRequest, reply: FastifyReply) {
    let body: unknown;
    try {
      body = typeof req.body === 'string' && req.body.length > 0 ? JSON.parse(req.body) : undefined;
    } catch (e) {
      return reply.code(400).send(errorBody(`the request body is not valid JSON: ${(e as Error).message}`, 'invalid_request_error'));
    }
    const parsed = kind === 'chat' ? chatRequest(body) : completionRequest(body);
    // Answers name the model that answered, by its id (a request may have used an alias).
    const model = this.#coordinator.resolveModel(parsed.request.model, 'chat').id;
    const abort = new AbortController();
    // A client that disconnects cancels its generation and frees its slot.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    if (parsed.stream.stream) return this.#stream(kind, model, parsed.request, parsed.stream, parsed.logprobs, reply, abort);
    const logprobs: TokenLogprob[] = [];
    const result = await this.#coordinator.generate(parsed.request, {
      signal: abort.signal,
      handlers: parsed.logprobs ? { onToken: (_text, _token, extra) => extra.logprob && logprobs.push(extra.logprob) } : {},
    });
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const finish = finishReason(result.finishReason);
    // A request resumed after an engine loss says so, for clients that want to know of the pause.
    reply.header(RESUMED_HEADER, String(result.resumed ?? 0));
    if (kind === 'chat') {
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message: chatMessageOf(result), logprobs: parsed.logprobs ? { content: logprobs.map(chatLogprob), refusal: null } : null, finish_reason: finish }],
        usage: usage(result.usage),
      };
    }
    return {
      id,
      object: 'text_completion',
      created,
      model,
      choices: [{ index: 0, text: result.text, logprobs: parsed.logprobs ? completionLogprobs(logprobs, 0) : null, finish_reason: finish }],
      usage: usage(result.usage),
    };
  }

  /**
   * Server-sent events in OpenAI's shape. Headers wait until the request starts (so a refused request
   * still gets its proper status), or until `headersAfterMs`; after that, a failure is an error chunk
   * followed by [DONE], since the status is already sent.
   */
  async #stream(kind: Kind, model: string, request: GenerationRequest, so: StreamOptions, wantLogprobs: boolean, reply: FastifyReply, abort: AbortController) {
    reply.hijack();
    const res = reply.raw;
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    let opened = false;
    const write = (data: unknown) => {
      if (!res.destroyed) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    let textOffset = 0;
    const chunk = (delta: Record<string, unknown>, finish: string | null, lp: TokenLogprob[] = []) => {
      if (kind === 'chat') {
        const logprobs = wantLogprobs && lp.length > 0 ? { content: lp.map(chatLogprob), refusal: null } : null;
        return { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta, logprobs, finish_reason: finish }] };
      }
      const logprobs = wantLogprobs && lp.length > 0 ? completionLogprobs(lp, textOffset) : null;
      textOffset += typeof delta.content === 'string' ? delta.content.length : 0;
      return { id, object: 'text_completion', created, model, choices: [{ index: 0, text: delta.content ?? '', logprobs, finish_reason: finish }] };
    };
    const open = () => {
      if (opened || res.destroyed) return;
      opened = true;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      if (kind === 'chat') write(chunk({ role: 'assistant', content: '' }, null));
    };
    const headersTimer = setTimeout(open, this.#options.headersAfterMs);
    const ping = setInterval(() => {
      if (opened && !res.destroyed) res.write(': ping\n\n');
    }, this.#options.pingMs);
    try {
      const result = await this.#coordinator.generate(request, {
        signal: abort.signal,
        handlers: {
          onStarted: open,
          onToken: (text, _token, extra) => {
            open();
            const lp = extra.logprob ? [extra.logprob] : [];
            const delta = kind === 'chat' && extra.delta ? wireDelta(extra.delta) : text ? { content: text } : null;
            if (delta || lp.length > 0) write(chunk(delta ?? {}, null, lp));
          },
        },
      });
      open();
      // Headers are long gone: the final chunk says how often the stream paused for a resume.
      write({ ...chunk({}, finishReason(result.finishReason)), hearth_resumed: result.resumed ?? 0 });
      if (so.includeUsage) write({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage: usage(result.usage) });
      write('[DONE]');
      res.end();
    } catch (e) {
      if (abort.signal.aborted || res.destroyed) return;
      const { status, body } = toOpenAiError(e);
      if (!opened) {
        opened = true;
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(body));
        return;
      }
      write(body);
      write('[DONE]');
      res.end();
    } finally {
      clearTimeout(headersTimer);
      clearInterval(ping);
    }
  }
}

/** How often a request went on after its engine was lost (on every non-streamed answer; streams say it in their final chunk as `hearth_resumed`). */
export const RESUMED_HEADER = 'x-hearth-resumed';

function finishReason(r: GenerateResult['finishReason']): string {
  return r === 'length' ? 'length' : r === 'tool_calls' ? 'tool_calls' : 'stop';
}

/** The assistant message of a chat completion: its content, reasoning and tool calls. */
function chatMessageOf(result: GenerateResult) {
  const r = result.reply;
  if (!r) return { role: 'assistant', content: result.text };
  const calls = r.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }));
  return {
    role: 'assistant',
    // OpenAI's content is null when the reply is only tool calls.
    content: r.content === '' && calls.length > 0 ? null : r.content,
    ...(r.reasoningContent ? { reasoning_content: r.reasoningContent } : {}),
    ...(calls.length > 0 ? { tool_calls: calls } : {}),
  };
}

/** A streamed change to a chat reply in OpenAI's delta shape; null when nothing changed. */
function wireDelta(d: ChatDelta): Record<string, unknown> | null {
  const out: Record<string, unknown> = {};
  if (d.content) out.content = d.content;
  if (d.reasoningContent) out.reasoning_content = d.reasoningContent;
  if (d.toolCalls && d.toolCalls.length > 0) {
    out.tool_calls = d.toolCalls.map((c) => ({
      index: c.index,
      ...(c.id ? { id: c.id, type: 'function' } : {}),
      function: { ...(c.name ? { name: c.name } : {}), arguments: c.arguments },
    }));
  }
  return Object.keys(out).length > 0 ? out : null;
}

function chatLogprob(l: TokenLogprob) {
  return { token: l.token, logprob: l.logprob, bytes: l.bytes, top_logprobs: l.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })) };
}

/** Legacy completions' logprobs: parallel arrays, alternatives as {token: logprob} maps. */
function completionLogprobs(lps: TokenLogprob[], offset: number) {
  const textOffset: number[] = [];
  let at = offset;
  for (const l of lps) {
    textOffset.push(at);
    at += l.token.length;
  }
  return {
    tokens: lps.map((l) => l.token),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((t) => [t.token, t.logprob]))),
    text_offset: textOffset,
  };
}

function errorBody(message: string, type: string, code: string | null = null): OpenAiErrorBody {
  return { error: { message, type, param: null, code } };
}
