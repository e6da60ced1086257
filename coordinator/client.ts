// A client for the coordinator's gRPC API, with a deadline on every call (used by `hearth status`
// and the tests).
import { clientConstructor, deadline, grpc } from '../common/grpc.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { fromGrpcError, unaryCall } from '../common/grpc-errors.js';
import type { WireEmbed, WireEmbedResponse, WirePlan, WireRerank, WireRerankResponse, WireStatus, WireWorkerSummary } from './wire.js';

export interface GenerateOptions {
  maxTokens?: number;
  sampling?: { temperature?: number; top_k?: number; top_p?: number; min_p?: number; repeat_penalty?: number; seed?: number; greedy?: boolean; ignore_eos?: boolean };
  stop?: string[];
  /** false: process the whole prompt even when a prefix of it is cached. */
  cachePrompt?: boolean;
  /** The served model by id or alias; undefined: the default. */
  model?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  onChunk?: (text: string, tokens: number[]) => void;
}

export interface GenerateOutcome {
  text: string;
  tokens: number[];
  finishReason: string;
  usage: { prompt_tokens: number; completion_tokens: number; cached_prompt_tokens?: number; draft_tokens?: number; draft_accepted_tokens?: number };
  /** How often the request went on after its engine was lost. */
  resumed?: number;
}


export class CoordinatorClient {
  readonly address: string;
  readonly #client: grpc.Client;
  readonly #metadata: grpc.Metadata;

  /** `apiKey`: sent with every call when the coordinator requires one. */
  constructor(address: string, options: { apiKey?: string | null } = {}) {
    this.address = address;
    this.#metadata = new grpc.Metadata();
    if (options.apiKey) this.#metadata.set('authorization', `Bearer ${options.apiKey}`);
    const Ctor = clientConstructor('CoordinatorService');
    this.#client = new Ctor(address, grpc.credentials.createInsecure());
  }

  generate(prompt: string, options: GenerateOptions = {}): Promise<GenerateOutcome> {
    return this.#stream('Generate', { prompt }, options);
  }

  chat(messages: { role: string; content: string }[], options: GenerateOptions = {}): Promise<GenerateOutcome> {
    return this.#stream('Chat', { messages }, options);
  }

  listWorkers(timeoutMs = 3000): Promise<{ workers: WireWorkerSummary[] }> {
    return this.#unary('ListWorkers', timeoutMs);
  }

  getPlan(timeoutMs = 3000): Promise<WirePlan> {
    return this.#unary('GetPlan', timeoutMs);
  }

  replan(options: { forceReload?: boolean; timeoutMs?: number } = {}): Promise<WirePlan> {
    return this.#unary('Replan', options.timeoutMs ?? 300_000, { force_reload: options.forceReload === true });
  }

  getStatus(timeoutMs = 3000): Promise<WireStatus> {
    return this.#unary('GetStatus', timeoutMs);
  }

  embed(request: WireEmbed, timeoutMs = 120_000): Promise<WireEmbedResponse> {
    return this.#unary('Embed', timeoutMs, request);
  }

  rerank(request: WireRerank, timeoutMs = 120_000): Promise<WireRerankResponse> {
    return this.#unary('Rerank', timeoutMs, request);
  }

  close(): void {
    this.#client.close();
  }

  #unary<T>(method: string, timeoutMs: number, request: object = {}): Promise<T> {
    return unaryCall<T>(this.#client, method, request, { timeoutMs, metadata: this.#metadata }, `coordinator ${this.address}`);
  }

  #stream(method: string, body: object, o: GenerateOptions): Promise<GenerateOutcome> {
    const fn = (this.#client as unknown as Record<string, (req: object, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>>)[method]!.bind(this.#client);
    const request = { ...body, ...(o.maxTokens !== undefined ? { max_tokens: o.maxTokens } : {}), sampling: o.sampling ?? {}, stop: o.stop ?? [], ...(o.cachePrompt !== undefined ? { cache_prompt: o.cachePrompt } : {}), ...(o.model !== undefined ? { model: o.model } : {}) };
    return new Promise<GenerateOutcome>((resolve, reject) => {
      const call = fn(request, this.#metadata, { deadline: deadline(o.timeoutMs ?? 120_000) });
      const out: GenerateOutcome = { text: '', tokens: [], finishReason: '', usage: { prompt_tokens: 0, completion_tokens: 0 } };
      const onAbort = () => call.cancel();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      call.on('data', (m: { chunk?: { text: string; token_ids: number[] }; final?: { finish_reason: string; usage: GenerateOutcome['usage']; resumed?: number } }) => {
        if (m.chunk) {
          out.text += m.chunk.text;
          out.tokens.push(...m.chunk.token_ids);
          o.onChunk?.(m.chunk.text, m.chunk.token_ids);
        } else if (m.final) {
          out.finishReason = m.final.finish_reason;
          out.usage = m.final.usage;
          out.resumed = m.final.resumed ?? 0;
        }
      });
      call.on('error', (e: grpc.ServiceError) => {
        o.signal?.removeEventListener('abort', onAbort);
        reject(e.code === grpc.status.CANCELLED && o.signal?.aborted ? new HearthError(ErrorCode.Cancelled, 'cancelled') : fromGrpcError(e, `${method} on ${this.address}`));
      });
      call.on('end', () => {
        o.signal?.removeEventListener('abort', onAbort);
        resolve(out);
      });
    });
  }
}
