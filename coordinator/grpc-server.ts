// hearth.v1.CoordinatorService over gRPC.
import { bindGrpcServer, closeGrpcServer, grpc, serviceDefinition } from '../common/grpc.js';
import type { SystemInfo } from '../native/binding.js';
import type { Coordinator, GenerationRequest } from './coordinator.js';
import type { RequestSettings } from './params.js';
import { toGrpcError } from '../common/grpc-errors.js';
import { keyRefusal, presentedKey } from './api-keys.js';
import { planView, statusView, workerView } from './views.js';
import type { WireEmbed, WireGenerate, WirePlan, WireRerank } from './wire.js';

/** Aborted when the client goes away or its deadline passes. */
function cancelledSignal(call: { on(event: 'cancelled', listener: () => void): unknown }): AbortSignal {
  const abort = new AbortController();
  call.on('cancelled', () => abort.abort());
  return abort.signal;
}

function settings(r: WireGenerate): RequestSettings {
  const s = r.sampling ?? {};
  return {
    maxTokens: r.max_tokens,
    temperature: s.temperature,
    topK: s.top_k,
    topP: s.top_p,
    minP: s.min_p,
    repeatPenalty: s.repeat_penalty,
    seed: s.seed,
    greedy: s.greedy,
    ignoreEos: s.ignore_eos,
    stop: r.stop ?? [],
    cachePrompt: r.cache_prompt,
  };
}

export class CoordinatorGrpcServer {
  readonly #server = new grpc.Server();
  readonly #coordinator: Coordinator;
  readonly #build: SystemInfo;

  constructor(coordinator: Coordinator, build: SystemInfo, options: { apiKeys: readonly string[] } = { apiKeys: [] }) {
    this.#coordinator = coordinator;
    this.#build = build;
    /** With API keys set, every call must carry one (metadata `authorization: Bearer KEY`). */
    const refused = (call: { metadata: grpc.Metadata }): Partial<grpc.StatusObject> | null => {
      const why = keyRefusal(presentedKey(call.metadata.get('authorization')[0], call.metadata.get('x-api-key')[0]), options.apiKeys);
      return why ? { code: grpc.status.UNAUTHENTICATED, details: why } : null;
    };
    const stream = (toRequest: (r: WireGenerate) => GenerationRequest) => (call: grpc.ServerWritableStream<WireGenerate, unknown>) => {
      const no = refused(call);
      if (no) {
        call.emit('error', no);
        return;
      }
      void this.#generate(call, toRequest);
    };
    const unary =
      <Req, T>(answer: (call: grpc.ServerUnaryCall<Req, T>) => T | Promise<T>) =>
      (call: grpc.ServerUnaryCall<Req, T>, callback: grpc.sendUnaryData<T>) => {
        const no = refused(call);
        if (no) {
          callback(no);
          return;
        }
        Promise.resolve()
          .then(() => answer(call))
          .then(
            (v) => callback(null, v),
            (e: unknown) => callback(toGrpcError(e)),
          );
      };
    this.#server.addService(serviceDefinition('CoordinatorService'), {
      Generate: stream((r) => ({ model: r.model || undefined, prompt: { kind: 'text', text: r.prompt ?? '' }, settings: settings(r) })),
      Chat: stream((r) => ({ model: r.model || undefined, prompt: { kind: 'chat', messages: r.messages ?? [] }, settings: settings(r) })),
      ListWorkers: unary(() => {
        const c = this.#coordinator.snapshot();
        return { workers: c.workers.map((w) => workerView(w, c.secure, c.contentId)) };
      }),
      GetPlan: unary(() => this.#plan()),
      Replan: unary(async (call: grpc.ServerUnaryCall<{ force_reload?: boolean }, unknown>) => {
        await this.#coordinator.replan('requested over gRPC', { force: call.request.force_reload === true });
        return this.#plan();
      }),
      GetStatus: unary(() => statusView(this.#coordinator.snapshot(), this.#build)),
      Embed: unary(async (call: grpc.ServerUnaryCall<WireEmbed, unknown>) => {
        const r = call.request;
        const result = await this.#coordinator.embed(
          { ...(r.model ? { model: r.model } : {}), inputs: r.inputs ?? [], normalize: r.normalize ?? true, truncate: r.truncate === true },
          { signal: cancelledSignal(call) },
        );
        return { model: result.model, embeddings: result.embeddings.map((values) => ({ values })), prompt_tokens: result.promptTokens };
      }),
      Rerank: unary(async (call: grpc.ServerUnaryCall<WireRerank, unknown>) => {
        const r = call.request;
        const result = await this.#coordinator.rerank(
          { ...(r.model ? { model: r.model } : {}), query: r.query ?? '', documents: r.documents ?? [], ...(r.top_n !== undefined && r.top_n !== null ? { topN: r.top_n } : {}) },
          { signal: cancelledSignal(call) },
        );
        return { model: result.model, results: result.results.map((x) => ({ index: x.index, relevance_score: x.relevanceScore })), prompt_tokens: result.promptTokens };
      }),
    });
  }

  #plan(): WirePlan {
    const c = this.#coordinator.snapshot();
    return planView(c.plan, { ctxSize: c.ctxSize, parallel: c.parallel });
  }

  async #generate(call: grpc.ServerWritableStream<WireGenerate, unknown>, toRequest: (r: WireGenerate) => GenerationRequest): Promise<void> {
    const abort = new AbortController();
    // A client that goes away, or whose deadline passes, cancels its generation.
    call.on('cancelled', () => abort.abort());
    try {
      const result = await this.#coordinator.generate(toRequest(call.request), {
        signal: abort.signal,
        handlers: {
          onToken: (text, token) => {
            if (!call.cancelled) call.write({ chunk: { text, token_ids: token >= 0 ? [token] : [] } });
          },
        },
      });
      if (call.cancelled) return;
      call.write({ final: { finish_reason: result.finishReason, usage: { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, cached_prompt_tokens: result.usage.cachedTokens, draft_tokens: result.usage.draftTokens, draft_accepted_tokens: result.usage.draftAcceptedTokens }, resumed: result.resumed ?? 0 } });
      call.end();
    } catch (e) {
      if (call.cancelled) return;
      call.emit('error', toGrpcError(e));
    }
  }

  listen(host: string, port: number): Promise<number> {
    return bindGrpcServer(this.#server, host, port, (err) => `cannot listen for gRPC on ${host}:${port}: ${err.message} (choose another with --grpc-port)`);
  }

  close(graceMs = 2000): Promise<void> {
    return closeGrpcServer(this.#server, graceMs);
  }
}
