// Fixtures for the planner's tests: a small llama-like model's facts, and the check that a plan's
// bytes per device are what llama.cpp allocated after a real load.
import assert from 'node:assert/strict';

import type { Plan } from '../../coordinator/planner/types.js';
import type { ModelFacts } from '../../models/gguf-info.js';
import type { LlamaContext, LlamaModel, RpcDevice } from '../../native/llama.js';

const MiB = 1024 ** 2;

/** A small llama-like model: 8 blocks of 100 MiB, a 100 MiB output head, 512 bytes of f16 KV per token per layer. */
export function plannerModel(overrides: Partial<ModelFacts> = {}): ModelFacts {
  const layerCount = overrides.layerCount ?? 8;
  return {
    path: '/models/tiny.gguf',
    fileBytes: 0,
    shards: [],
    architecture: 'llama',
    name: 'tiny',
    layerCount,
    contextLength: 4096,
    embeddingLength: 256,
    feedForwardLength: 1024,
    headCount: 4,
    headCountKv: 2,
    headDimK: 64,
    headDimV: 64,
    vocabSize: 1000,
    fileType: 1,
    chatTemplate: null,
    layerBytes: new Array<number>(layerCount).fill(100 * MiB),
    inputBytes: 20 * MiB,
    outputBytes: 100 * MiB,
    outputTied: false,
    otherBytes: 0,
    totalTensorBytes: 0,
    tensorTypes: {},
    ...overrides,
  };
}

/**
 * The plan's layers, weights and KV per device are what llama.cpp applied and allocated (its memory
 * breakdown, summed over the contexts of a pipelined plan), and its compute estimate is not below llama.cpp's.
 */
export function assertPlanMatchesLlama(p: Plan, devices: RpcDevice[], model: LlamaModel, ctx: LlamaContext | LlamaContext[]): void {
  // With pipelined decode, one context per group: the weights once, every context's KV and compute.
  const contexts = Array.isArray(ctx) ? ctx : [ctx];
  assert.equal(contexts.length, p.groups, 'one context per planned group');
  const breakdowns = contexts.map((c) => c.memoryBreakdown());
  p.devices.forEach((planned, i) => {
    const entries = breakdowns.map((b) => b.find((e) => e.device === devices[i]!.name));
    assert.ok(entries.every((e) => e), `llama.cpp reports ${devices[i]!.name} in every context`);
    const actual = { modelBytes: entries[0]!.modelBytes, contextBytes: 0, computeBytes: 0 };
    for (const e of entries) {
      actual.contextBytes += e!.contextBytes;
      actual.computeBytes += e!.computeBytes;
    }
    assert.equal(model.layersByDevice().get(devices[i]!.name) ?? 0, planned.layers, 'the layer counts llama.cpp applied');
    // Weights: the same bytes, up to buffer alignment.
    assert.ok(Math.abs(actual.modelBytes - planned.weightBytes) <= 64 * 1024, `weights on ${planned.owner}: planned ${planned.weightBytes}, llama.cpp ${actual.modelBytes}`);
    // KV: exactly, for the padded context of every sequence.
    assert.equal(actual.contextBytes, planned.kvBytes, `kv on ${planned.owner}`);
    // Compute: the planner's estimate is conservative.
    assert.ok(planned.computeBytes >= actual.computeBytes, `compute: planned ${planned.computeBytes} < llama.cpp ${actual.computeBytes} on ${planned.owner}`);
  });
}
