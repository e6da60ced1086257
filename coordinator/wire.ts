// The coordinator's wire types (hearth.v1 CoordinatorService in proto/hearth/v1/coordinator.proto), as
// @grpc/proto-loader presents them with common/grpc.ts's options: snake_case fields, enums as strings,
// 64-bit integers as decimal strings. The client, the views and the gRPC server all use these; a unit
// test checks them against the proto.

export interface WireSampling {
  temperature?: number;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  repeat_penalty?: number;
  seed?: number;
  greedy?: boolean;
  ignore_eos?: boolean;
}

export interface WireGenerate {
  prompt?: string;
  messages?: { role: string; content: string }[];
  max_tokens?: number;
  sampling?: WireSampling | null;
  stop?: string[];
  cache_prompt?: boolean;
  /** The served model by id or alias; empty: the default. */
  model?: string;
}

export interface WireEmbed {
  model?: string;
  inputs?: string[];
  normalize?: boolean | null;
  truncate?: boolean;
}

export interface WireEmbedResponse {
  model: string;
  embeddings: { values: number[] }[];
  prompt_tokens: number;
}

export interface WireRerank {
  model?: string;
  query?: string;
  documents?: string[];
  top_n?: number | null;
}

export interface WireRerankResponse {
  model: string;
  results: { index: number; relevance_score: number }[];
  prompt_tokens: number;
}

export interface WireWorkerSummary {
  worker_id: string;
  name: string;
  control_address: string;
  rpc_endpoint: string;
  state: string;
  reason: string;
  backend: string;
  free_bytes: string;
  total_bytes: string;
  rpc_protocol: string;
  llama_cpp_release: string;
  source: string;
  link: string;
  /** Whether the worker holds the served model on its own disk: "ready", "seeding 40%", "failed", or "". */
  model_local: string;
  /** Bytes of tensors its rpc server keeps on disk. */
  tensor_cache_bytes: string;
  /** Its fastest device's measured speed, bytes of weights per second; 0 when not measured. */
  bytes_per_second: number;
}

export interface WirePlan {
  fits: boolean;
  devices: {
    owner: string;
    device: string;
    endpoint: string;
    first_layer: number;
    layers: number;
    holds_output: boolean;
    weight_bytes: string;
    kv_bytes: string;
    compute_bytes: string;
    free_bytes: string;
    bytes_per_second?: number;
    seconds_per_token?: number;
    /** Absent (proto3 default) when empty. */
    expert_layers?: number[];
    /** Tensor split: its share of every layer, 0..1; absent (proto3 default) with whole layers. */
    share?: number;
  }[];
  refusal: string;
  suggestions: string[];
  host_bytes: string;
  ctx_size: number;
  parallel: number;
  excluded: string[];
  /** Absent (proto3 default) before a plan fits. */
  objective?: string;
  predicted_seconds_per_token?: number;
  /** Absent (proto3 default) before a plan fits. */
  groups?: number;
  /** 'layer' or 'tensor'; absent (proto3 default) before a plan fits. */
  split?: string;
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
  /** Every served model, the default first. */
  models: WireModelStatus[];
}

export interface WireModelStatus {
  id: string;
  aliases: string[];
  kind: string;
  policy: string;
  status: string;
  state: string;
  reason: string;
  model: string;
  model_name: string;
  plan: WirePlan;
  load: WireStatus['load'];
  in_flight: number;
  waiting: number;
  loaded_bytes: string;
  last_used: number;
  expires: number;
  speculation: string;
}
