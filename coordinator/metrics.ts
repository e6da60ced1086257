// Prometheus metrics for the coordinator, named after llama-server's where they mean the same thing,
// under the hearth_ prefix. Counters follow the coordinator's request events, so gRPC and HTTP both
// count; gauges read its snapshot when scraped.
import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { WorkerRecord } from './registry.js';
import { COORDINATOR_STATES, type CoordinatorEvents, type CoordinatorSnapshot, type ModelSnapshot, type RequestFinished } from './snapshot.js';
import { workerMemory } from './views.js';

/** The coordinator as metrics see it: its events, and a snapshot to read gauges from. */
export interface MetricsSource extends EventEmitter<CoordinatorEvents> {
  snapshot(): CoordinatorSnapshot;
}

export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly promptTokens = new Counter({ name: 'hearth_prompt_tokens_total', help: 'Prompt tokens of finished requests, cached or processed', registers: [this.registry] });
  readonly promptTokensCached = new Counter({
    name: 'hearth_prompt_tokens_cached_total',
    help: 'Prompt tokens whose KV was reused from the prompt cache',
    registers: [this.registry],
  });
  readonly promptTokensProcessed = new Counter({
    name: 'hearth_prompt_tokens_processed_total',
    help: 'Prompt tokens the engine computed (not found in the prompt cache)',
    registers: [this.registry],
  });
  readonly draftTokens = new Counter({ name: 'hearth_draft_tokens_total', help: 'Speculative decoding: tokens drafted and verified', registers: [this.registry] });
  readonly draftTokensAccepted = new Counter({
    name: 'hearth_draft_tokens_accepted_total',
    help: 'Speculative decoding: drafted tokens the model accepted (each one a decode step saved)',
    registers: [this.registry],
  });
  readonly generatedTokens = new Counter({ name: 'hearth_generated_tokens_total', help: 'Tokens generated', registers: [this.registry] });
  readonly requests = new Counter({
    name: 'hearth_requests_total',
    help: 'Finished generation requests by outcome (stop, length, tool_calls, cancelled, error)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly timeToFirstToken = new Histogram({
    name: 'hearth_time_to_first_token_seconds',
    help: 'From admission of a request to its first generated token',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly requestsResumed = new Counter({
    name: 'hearth_requests_resumed_total',
    help: 'Requests caught by an engine loss (a worker lost or leaving, the engine crashed) that went on after the re-plan',
    registers: [this.registry],
  });
  readonly resumePause = new Histogram({
    name: 'hearth_resume_pause_seconds',
    help: "A resumed request's pause: from its last token before the engine loss (or the loss) to its first token after",
    buckets: [0.25, 0.5, 1, 2, 4, 8, 15, 30, 60],
    registers: [this.registry],
  });
  readonly embeddingRequests = new Counter({
    name: 'hearth_embedding_requests_total',
    help: 'Finished embeddings and rerank requests by endpoint (embeddings, rerank) and outcome (ok, error)',
    labelNames: ['endpoint', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly embeddingInputs = new Counter({
    name: 'hearth_embedding_inputs_total',
    help: 'Inputs embedded, or documents scored, by requests that succeeded',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });
  readonly embeddingPromptTokens = new Counter({
    name: 'hearth_embedding_prompt_tokens_total',
    help: 'Tokens the engine computed for embeddings and rerank requests',
    registers: [this.registry],
  });
  readonly tokensPerSecond = new Gauge({
    name: 'hearth_generation_tokens_per_second',
    help: 'Decode speed of the last finished request (tokens after the first, per second)',
    registers: [this.registry],
  });

  constructor(source: MetricsSource) {
    source.on('first-token', (seconds) => this.timeToFirstToken.observe(seconds));
    source.on('request-finished', (r) => this.#finished(r));
    source.on('pooled-finished', (r) => {
      this.embeddingRequests.inc({ endpoint: r.endpoint, outcome: r.outcome });
      if (r.outcome !== 'ok') return;
      this.embeddingInputs.inc({ endpoint: r.endpoint }, r.inputs);
      this.embeddingPromptTokens.inc(r.promptTokens);
    });
    source.on('request-resumed', (pause) => {
      this.requestsResumed.inc();
      this.resumePause.observe(pause);
    });
    const reg = [this.registry];
    const now = () => source.snapshot();
    new Gauge({ name: 'hearth_requests_in_flight', help: 'Requests holding a slot', registers: reg, collect() { this.set(now().inFlight); } });
    new Gauge({ name: 'hearth_requests_waiting', help: 'Requests waiting for a slot', registers: reg, collect() { this.set(now().waiting); } });
    new Gauge({ name: 'hearth_model_load_progress', help: 'Progress of the current or last model load, 0..1', registers: reg, collect() { this.set(now().load.progress); } });
    new Gauge({
      name: 'hearth_state',
      help: 'The coordinator state (1 for the current one)',
      labelNames: ['state'] as const,
      registers: reg,
      collect() {
        const state = now().state;
        for (const s of COORDINATOR_STATES) this.set({ state: s }, s === state ? 1 : 0);
      },
    });
    const workerGauge = (name: string, help: string, value: (w: WorkerRecord) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['worker', 'endpoint'] as const,
        registers: reg,
        collect() {
          this.reset();
          for (const w of now().workers) this.set({ worker: w.name, endpoint: w.control }, value(w));
        },
      });
    const modelGauge = (name: string, help: string, value: (m: ModelSnapshot) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['model'] as const,
        registers: reg,
        collect() {
          this.reset();
          for (const m of now().models ?? []) this.set({ model: m.id }, value(m));
        },
      });
    modelGauge('hearth_model_loaded', 'Whether the served model is in memory (1) or not (0)', (m) => (m.status === 'loaded' ? 1 : 0));
    modelGauge('hearth_model_loaded_bytes', 'Bytes the loaded model holds over every device (weights, KV cache, compute buffers)', (m) => m.loadedBytes);
    modelGauge('hearth_model_loads', 'Loads of the model since the coordinator started (a rise without requests is a re-plan)', (m) => m.load.loads);
    modelGauge('hearth_model_requests_in_flight', 'Requests holding a slot of the model', (m) => m.inFlight);
    modelGauge('hearth_model_requests_waiting', 'Requests waiting for a slot of the model (or for it to load)', (m) => m.waiting);
    workerGauge('hearth_worker_up', 'Whether the worker is admitted and answering (1) or not (0)', (w) => (w.state === 'admitted' ? 1 : 0));
    workerGauge('hearth_worker_free_bytes', "Free memory the worker's devices report", (w) => workerMemory(w).freeBytes);
    workerGauge('hearth_worker_total_bytes', "Total memory of the worker's devices", (w) => workerMemory(w).totalBytes);
  }

  #finished(r: RequestFinished): void {
    this.requests.inc({ outcome: r.outcome });
    if (r.decodeTokensPerSecond !== null) this.tokensPerSecond.set(r.decodeTokensPerSecond);
    const u = r.usage;
    if (!u) return;
    this.promptTokens.inc(u.promptTokens);
    this.promptTokensCached.inc(u.cachedTokens);
    this.promptTokensProcessed.inc(u.promptTokens - u.cachedTokens);
    this.generatedTokens.inc(u.completionTokens);
    this.draftTokens.inc(u.draftTokens);
    this.draftTokensAccepted.inc(u.draftAcceptedTokens);
  }
}
