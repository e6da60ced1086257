// What the coordinator tells the rest of the process: its events, and a snapshot of its state as a
// plain value. Views, metrics and the serving history read these, never the Coordinator class.
import type { FinishReason, LoadedInfo, Usage } from './engine/protocol.js';
import type { PlanResult } from './planner/types.js';
import type { WorkerRecord } from './registry.js';
import type { ModelKind, ModelPolicy, ModelStatus } from './served-models.js';

export type CoordinatorState = 'starting' | 'planning' | 'loading' | 'serving' | 'draining' | 'degraded' | 'stopping';
export const COORDINATOR_STATES: readonly CoordinatorState[] = ['starting', 'planning', 'loading', 'serving', 'draining', 'degraded', 'stopping'];

/** Something that happened, for people to read: workers, state changes (re-plans, loads), the engine. */
export interface CoordinatorEvent {
  time: string;
  kind: 'worker' | 'state' | 'load' | 'resume';
  message: string;
}

/** The serving figures at one moment: generated tokens/s over the last interval, its mean time to first token. */
export interface ServingSample {
  t: number;
  tokensPerSecond: number;
  ttftMs: number;
  inFlight: number;
  waiting: number;
}

export interface LoadRecord {
  progress: number;
  seconds: number;
  phases: LoadedInfo['phases'] | null;
  bytesSent: Record<string, number> | null;
  loads: number;
  /** Contexts the engine decodes in (pipelined decode); 0 before a load. */
  groups: number;
}

/** How one request ended: its finish reason (or an error), what it counted, how fast it decoded. */
export interface RequestFinished {
  outcome: FinishReason | 'error';
  usage: Usage | null;
  /** Tokens after the first, per second; null when too few to tell. */
  decodeTokensPerSecond: number | null;
}

/** How one embeddings or rerank request ended, and what it held. */
export interface PooledFinished {
  endpoint: 'embeddings' | 'rerank';
  outcome: 'ok' | 'error';
  /** Inputs embedded, or documents scored. */
  inputs: number;
  promptTokens: number;
}

export interface CoordinatorEvents {
  state: [CoordinatorState, string];
  event: [CoordinatorEvent];
  /** A request's first generated token, this long after it arrived. */
  'first-token': [seconds: number];
  /** One generated token (streamed to its client). */
  token: [];
  'request-finished': [RequestFinished];
  /** An embeddings or rerank request ended. */
  'pooled-finished': [PooledFinished];
  /** A request caught by an engine loss went on, after a pause of this long (from its last token before the loss). */
  'request-resumed': [pauseSeconds: number];
}

/** The coordinator at one moment, as a plain value. Endpoints in `plan` are the workers' own addresses. */
export interface CoordinatorSnapshot {
  state: CoordinatorState;
  reason: string;
  modelPath: string;
  modelName: string;
  contentId: string | null;
  plan: PlanResult | null;
  load: LoadRecord;
  inFlight: number;
  waiting: number;
  parallel: number;
  ctxSize: number;
  workers: WorkerRecord[];
  secure: boolean;
  clusterId: string | null;
  lastReplan: string;
  speculation: string;
  events: CoordinatorEvent[];
  history: ServingSample[];
  /** Every served model, the default first (the fields above are its). */
  models: ModelSnapshot[];
}

/** One served model at one moment. */
export interface ModelSnapshot {
  id: string;
  aliases: string[];
  kind: ModelKind;
  policy: ModelPolicy;
  status: ModelStatus;
  /** The model's own state; 'unloaded' for one only on disk. */
  state: CoordinatorState | 'unloaded';
  reason: string;
  modelPath: string;
  modelName: string;
  contentId: string | null;
  /** Its plan while it is wanted (loaded, loading, or not fitting), else null. */
  plan: PlanResult | null;
  load: LoadRecord;
  inFlight: number;
  waiting: number;
  parallel: number;
  ctxSize: number;
  loadedBytes: number;
  lastUsedAt: number | null;
  expiresAt: number | null;
  speculation: string;
}
