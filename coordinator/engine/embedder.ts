// The embeddings engine's work loop: an embedding or reranker model's one embeddings context, and the
// requests it answers one after another (a llama context decodes in one thread at a time). A request's
// inputs are tokenized as llama-server tokenizes them, fitted to the model (embed-batches.ts), packed
// several to a decode, and answered with each input's pooled vector (or each document's score).
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import type { LlamaContext, LlamaModel } from '../../native/llama.js';
import { embedSteps, fitInput, inputLimit, splittable } from './embed-batches.js';
import type { EmbedInput, EmbedParams, EngineLoadSpec, FromEngine, PooledResult } from './protocol.js';
import { rerankTokens } from './rerank-prompt.js';

/**
 * Sequences one decode may hold. The KV cache is unified (one pool of ctxSize × parallel cells, as
 * llama-embedding runs), so more sequences cost no memory; short inputs (a chunked document) share a decode.
 */
const EMBED_SEQUENCES = 64;

type Job = { id: string; cancelled: boolean } & ({ kind: 'embed'; inputs: EmbedInput[]; params: EmbedParams } | { kind: 'rerank'; query: string; documents: string[] });

/** The embeddings context for a load spec: the model's pooling, one decode per micro-batch. */
export async function createEmbeddingContext(model: LlamaModel, spec: EngineLoadSpec): Promise<LlamaContext> {
  // llama-server runs embeddings with n_batch = n_ubatch: pooling that needs every output of a sequence
  // must see them in one micro-batch.
  const nBatch = Math.min(spec.nBatch, spec.nUbatch);
  const ctx = await model.createContext({
    embeddings: true,
    nCtx: spec.ctxSize * spec.parallel,
    // llama.cpp keeps an output per sequence within a batch's outputs: no more sequences than tokens.
    nSeqMax: Math.min(EMBED_SEQUENCES, nBatch),
    // One pool of cells: the split into equal micro-batches that separate per-sequence caches use would
    // cut a sequence across micro-batches, which mean and cls pooling cannot take.
    kvUnified: true,
    nBatch,
    nUbatch: nBatch,
    typeK: spec.typeK,
    typeV: spec.typeV,
    nThreads: spec.threads,
  });
  const pooling = ctx.info.poolingType;
  if (pooling === 'none' || pooling === 'unspecified') {
    ctx.dispose();
    throw new HearthError(ErrorCode.InvalidModel, `${spec.modelPath} has no pooling type (<architecture>.pooling_type), so it gives no vector per input: it is not an embedding or reranker model`);
  }
  return ctx;
}

export class Embedder {
  readonly #model: LlamaModel;
  readonly #ctx: LlamaContext;
  readonly #send: (m: FromEngine) => void;
  /** Tokens one input may have: the context per request (ctxSize), and one decode unless last-token pooling. */
  readonly #limit: number;
  readonly #jobs: Job[] = [];
  #running: Job | null = null;

  constructor(model: LlamaModel, ctx: LlamaContext, ctxPerInput: number, send: (m: FromEngine) => void) {
    this.#model = model;
    this.#ctx = ctx;
    this.#send = send;
    this.#limit = inputLimit(ctx.info.poolingType, ctx.info.nBatch, Math.min(ctxPerInput, ctx.info.nCtxSeq));
  }

  get active(): number {
    return this.#jobs.length + (this.#running ? 1 : 0);
  }

  embed(id: string, inputs: EmbedInput[], params: EmbedParams): void {
    this.#submit({ id, cancelled: false, kind: 'embed', inputs, params });
  }

  rerank(id: string, query: string, documents: string[]): void {
    this.#submit({ id, cancelled: false, kind: 'rerank', query, documents });
  }

  /** A waiting request is dropped; a running one stops after its current decode. Either is answered as cancelled. */
  cancel(id: string): void {
    if (this.#running?.id === id) this.#running.cancelled = true;
    const i = this.#jobs.findIndex((j) => j.id === id);
    if (i >= 0) {
      this.#jobs.splice(i, 1);
      this.#fail(id, new HearthError(ErrorCode.Cancelled, 'request cancelled'));
    }
  }

  #submit(job: Job): void {
    this.#jobs.push(job);
    if (!this.#running) void this.#loop();
  }

  async #loop(): Promise<void> {
    for (let job = this.#jobs.shift(); job; job = this.#jobs.shift()) {
      this.#running = job;
      try {
        const result = await this.#run(job);
        this.#send({ type: 'pooled', id: job.id, result });
      } catch (e) {
        this.#fail(job.id, e);
      } finally {
        this.#running = null;
      }
    }
  }

  #fail(id: string, e: unknown): void {
    const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
    this.#send({ type: 'request-error', id, code, message: messageOf(e) });
  }

  async #run(job: Job): Promise<PooledResult> {
    const pooling = this.#ctx.info.poolingType;
    if (job.kind === 'embed') {
      if (pooling === 'rank') throw new HearthError(ErrorCode.InvalidArgument, 'this is a reranker model: it scores documents against a query (rerank), it gives no embeddings');
      const inputs = job.inputs.map((input, i) => this.#embedTokens(input, i, job.params.truncate));
      const vectors = await this.#pool(job, inputs, job.params.normalize ? 2 : -1);
      return { kind: 'embed', embeddings: vectors.map((v) => Array.from(v)), promptTokens: total(inputs) };
    }
    if (pooling !== 'rank') throw new HearthError(ErrorCode.InvalidArgument, 'this is an embedding model: it gives vectors (embeddings), it does not rerank');
    const info = this.#model.info;
    const tokenize = (text: string, addSpecial: boolean, parseSpecial: boolean) => this.#model.tokenize(text, { addSpecial, parseSpecial });
    const pairs = job.documents.map((document, i) => {
      const tokens = rerankTokens(info, tokenize, job.query, document);
      if (tokens.length > this.#limit) {
        throw new HearthError(ErrorCode.InvalidArgument, `documents[${i}]: with the query it is ${tokens.length} tokens, more than the ${this.#limit} this model takes per pair; shorten it`);
      }
      return tokens;
    });
    // llama-server's score: the first of the rank head's outputs (a Qwen3 reranker's P(yes)), unnormalised.
    const outputs = await this.#pool(job, pairs, -1);
    return { kind: 'rerank', scores: outputs.map((o) => o[0]!), promptTokens: total(pairs) };
  }

  /** An input's tokens as llama-server's /v1/embeddings takes them: text with special tokens added and parsed; token ids as given. */
  #embedTokens(input: EmbedInput, i: number, truncate: boolean): number[] {
    const what = `input[${i}]`;
    const info = this.#model.info;
    let tokens: number[];
    if (typeof input === 'string') {
      if (input === '') throw new HearthError(ErrorCode.InvalidArgument, `${what}: is empty; give some text to embed`);
      tokens = Array.from(this.#model.tokenize(input, { addSpecial: true, parseSpecial: true }));
    } else {
      const bad = input.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= info.nVocab);
      if (bad >= 0) throw new HearthError(ErrorCode.InvalidArgument, `${what}[${bad}]: token ${input[bad]} is outside the vocabulary (0..${info.nVocab - 1})`);
      tokens = input;
    }
    return fitInput(tokens, this.#limit, { truncate, what, appendedEos: typeof input === 'string' && info.addEos ? info.eos : null });
  }

  /** Each input's pooled output, computed in as few decodes as fit. */
  async #pool(job: Job, inputs: number[][], normalize: -1 | 2): Promise<Float32Array[]> {
    const info = this.#ctx.info;
    const out = new Array<Float32Array>(inputs.length);
    const steps = embedSteps(
      inputs.map((t) => t.length),
      { nBatch: info.nBatch, nSeqMax: info.nSeqMax, splittable: splittable(info.poolingType) },
    );
    try {
      for (const step of steps) {
        if (job.cancelled) throw new HearthError(ErrorCode.Cancelled, 'request cancelled');
        if (step.fresh) this.#ctx.clear();
        const rows = { tokens: [] as number[], positions: [] as number[], seqIds: [] as number[] };
        for (const p of step.pieces) {
          for (let k = p.from; k < p.to; k++) {
            rows.tokens.push(inputs[p.input]![k]!);
            rows.positions.push(k);
            rows.seqIds.push(p.seq);
          }
        }
        const pooled = await this.#ctx.embed(rows, step.done.map((d) => d.seq), normalize);
        step.done.forEach((d, k) => (out[d.input] = pooled[k]!));
        // The watchdog's sign of progress, as after every generation step.
        this.#send({ type: 'tick' });
      }
    } finally {
      this.#ctx.clear();
    }
    return out;
  }
}

function total(inputs: number[][]): number {
  return inputs.reduce((n, t) => n + t.length, 0);
}
