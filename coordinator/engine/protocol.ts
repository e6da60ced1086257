// Messages between the coordinator and its engine child process (Node IPC, JSON).
import type { ChatMessage, CacheType } from '../../native/binding.js';

export interface SamplingSettings {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  greedy: boolean;
  ignoreEos: boolean;
}

export interface GenerateParams {
  maxTokens: number;
  sampling: SamplingSettings;
  stop: string[];
}

export type PromptInput = { kind: 'text'; text: string } | { kind: 'chat'; messages: ChatMessage[] };

export interface EngineLoadSpec {
  modelPath: string;
  rpcEndpoints: string[];
  tensorSplit: number[];
  nGpuLayers: number;
  ctxSize: number;
  parallel: number;
  nBatch: number;
  nUbatch: number;
  typeK: CacheType;
  typeV: CacheType;
  threads: number;
}

export interface LoadedInfo {
  placement: { layer: number; device: string }[];
  /** Per RPC endpoint: device names the engine registered for it. */
  devices: { endpoint: string; name: string }[];
  memory: { buffer: string; device: string | null; modelBytes: number; contextBytes: number; computeBytes: number }[];
  /** Bytes this process sent to each RPC endpoint during the load (kernel TCP counters), or null when unknown. */
  bytesSent: Record<string, number> | null;
  loadSeconds: number;
  /** Where the load's time went: probing and registering the RPC servers, the weights, the context. */
  phases: { connectSeconds: number; weightsSeconds: number; contextSeconds: number };
  nCtxSeq: number;
  nSeqMax: number;
  nVocab: number;
  chatTemplate: boolean;
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export type ToEngine =
  | { type: 'load'; spec: EngineLoadSpec }
  | { type: 'generate'; id: string; prompt: PromptInput; params: GenerateParams }
  | { type: 'cancel'; id: string }
  | { type: 'shutdown' };

export type FromEngine =
  | { type: 'ready' }
  | { type: 'progress'; value: number }
  | { type: 'loaded'; info: LoadedInfo }
  | { type: 'load-failed'; code: string; message: string }
  /** Sent after every decode step: the watchdog's sign of progress. */
  | { type: 'tick' }
  | { type: 'started'; id: string; promptTokens: number }
  | { type: 'token'; id: string; text: string; token: number }
  | { type: 'done'; id: string; finishReason: FinishReason; usage: Usage; text: string }
  | { type: 'request-error'; id: string; code: string; message: string }
  | { type: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string };
