// A client for the coordinator's gRPC API, with a deadline on every call (used by `hearth status`
// and the tests).
import { clientConstructor, deadline, grpc } from '../common/grpc.js';
import { ErrorCode, HearthError } from '../common/errors.js';
import { fromGrpcError, unaryCall } from '../common/grpc-errors.js';
import type { WirePlan, WireWorkerSummary } from './views.js';

export interface GenerateOptions {
  maxTokens?: number;
  sampling?: { temperature?: number; top_k?: number; top_p?: number; min_p?: number; repeat_penalty?: number; seed?: number; greedy?: boolean; ignore_eos?: boolean };
  stop?: string[];
  /** false: process the whole prompt even when a prefix of it is cached. */
  cachePrompt?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  onChunk?: (text: string, tokens: number[]) => void;
}

export interface GenerateOutcome {
  text: string;
  tokens: number[];
  finishReason: string;
  usage: { prompt_tokens: number; completion_tokens: number; cached_prompt_tokens?: number; draft_tokens?: number; draft_accepted_tokens?: number };
}

export interface WireStatus {
  state: string;
  reason: string;
  model: string;
  model_name: string;
  load: { progress: number; seconds: number; bytes_sent: Record<string, string>; loads: number; connect_seconds: number; weights_seconds: number; context_seconds: number; groups: number };
  in_flight: number;
  waiting: number;
  parallel: number;
  workers: WireWorkerSummary[];
  plan: WirePlan;
  build: { llama_cpp_release: string; ggml_version: string; ggml_commit: string; rpc_protocol: string; backends: string[] };
  cluster_id: string;
  last_replan: string;
  speculation: string;
  /** What happened lately, oldest first (at most 200). */
  events: { time: string; kind: string; message: string }[];
  /** Serving figures, a sample every 2 s for the last five minutes, oldest first. */
  history: { t: number; tokens_per_second: number; ttft_ms: number; in_flight: number; waiting: number }[];
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

  close(): void {
    this.#client.close();
  }

  #unary<T>(method: string, timeoutMs: number, request: object = {}): Promise<T> {
    return unaryCall<T>(this.#client, method, request, { timeoutMs, metadata: this.#metadata }, `coordinator ${this.address}`);
  }

  #stream(method: string, body: object, o: GenerateOptions): Promise<GenerateOutcome> {
    const fn = (this.#client as unknown as Record<string, (req: object, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>>)[method]!.bind(this.#client);
    const request = { ...body, ...(o.maxTokens !== undefined ? { max_tokens: o.maxTokens } : {}), sampling: o.sampling ?? {}, stop: o.stop ?? [], ...(o.cachePrompt !== undefined ? { cache_prompt: o.cachePrompt } : {}) };
    return new Promise<GenerateOutcome>((resolve, reject) => {
      const call = fn(request, this.#metadata, { deadline: deadline(o.timeoutMs ?? 120_000) });
      const out: GenerateOutcome = { text: '', tokens: [], finishReason: '', usage: { prompt_tokens: 0, completion_tokens: 0 } };
      const onAbort = () => call.cancel();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      call.on('data', (m: { chunk?: { text: string; token_ids: number[] }; final?: { finish_reason: string; usage: GenerateOutcome['usage'] } }) => {
        if (m.chunk) {
          out.text += m.chunk.text;
          out.tokens.push(...m.chunk.token_ids);
          o.onChunk?.(m.chunk.text, m.chunk.token_ids);
        } else if (m.final) {
          out.finishReason = m.final.finish_reason;
          out.usage = m.final.usage;
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
