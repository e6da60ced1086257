// The planner's input checks. Only malformed input throws; a model that does not fit is a Refusal value.
import { ErrorCode, HearthError } from '../../common/errors.js';
import { isCacheType } from './kv.js';
import { SPLIT_SETTINGS, type CandidateDevice, type ModelFacts, type PlanContext, type PlanInput } from './types.js';

export function validate(input: PlanInput): void {
  validateModel(input.model);
  validateContext(input.context);
  requireBytes(input.reserveBytes, 'reserveBytes');
  validateDevices(input.devices);
  if (input.split !== undefined && !SPLIT_SETTINGS.includes(input.split)) invalid(`split: '${String(input.split)}' is not one of ${SPLIT_SETTINGS.join(', ')}`);
}

function invalid(message: string): never {
  throw new HearthError(ErrorCode.InvalidArgument, `cannot plan: ${message}`);
}

function requireWhole(value: number, field: string, min: number): void {
  if (!Number.isInteger(value) || value < min) invalid(`${field} must be a whole number >= ${min}, got ${value}`);
}

function requireBytes(value: number, field: string): void {
  if (!Number.isFinite(value) || value < 0) invalid(`${field} must be a byte count >= 0, got ${value}`);
}

function validateModel(model: ModelFacts): void {
  requireWhole(model.layerCount, `model.layerCount (${model.path})`, 1);
  if (model.layerBytes.length !== model.layerCount) {
    invalid(`model.layerBytes has ${model.layerBytes.length} entries but model.layerCount is ${model.layerCount} (${model.path})`);
  }
  model.layerBytes.forEach((b, i) => requireBytes(b, `model.layerBytes[${i}]`));
  requireBytes(model.inputBytes, 'model.inputBytes');
  requireBytes(model.outputBytes, 'model.outputBytes');
  const sizes = ['embeddingLength', 'headCount', 'headCountKv', 'headDimK', 'headDimV', 'vocabSize'] as const;
  for (const key of sizes) requireBytes(model[key], `model.${key}`);
  if (model.feedForwardLength !== null) requireBytes(model.feedForwardLength, 'model.feedForwardLength');
  if (model.experts) validateExperts(model, model.experts);
}

function validateExperts(model: ModelFacts, experts: NonNullable<ModelFacts['experts']>): void {
  const { count, used, layerBytes } = experts;
  requireWhole(count, 'model.experts.count', 1);
  requireWhole(used, 'model.experts.used', 1);
  if (used > count) invalid(`model.experts.used (${used}) is more than model.experts.count (${count})`);
  if (layerBytes.length !== model.layerCount) invalid(`model.experts.layerBytes has ${layerBytes.length} entries for ${model.layerCount} layers`);
  layerBytes.forEach((b, i) => {
    requireBytes(b, `model.experts.layerBytes[${i}]`);
    if (b > model.layerBytes[i]!) invalid(`model.experts.layerBytes[${i}] (${b}) is more than the whole block (${model.layerBytes[i]})`);
  });
}

function validateContext(context: PlanContext): void {
  requireWhole(context.ctxSize, 'context.ctxSize', 1);
  requireWhole(context.parallel, 'context.parallel', 1);
  requireWhole(context.nUbatch, 'context.nUbatch', 1);
  if (!isCacheType(context.typeK)) invalid(`context.typeK: unknown cache type '${String(context.typeK)}'`);
  if (!isCacheType(context.typeV)) invalid(`context.typeV: unknown cache type '${String(context.typeV)}'`);
}

function validateDevices(devices: CandidateDevice[]): void {
  const keys = new Set<string>();
  devices.forEach((d, i) => {
    const field = `devices[${i}] (${d.key})`;
    if (keys.has(d.key)) invalid(`${field}: key '${d.key}' appears twice`);
    keys.add(d.key);
    requireBytes(d.freeBytes, `${field}.freeBytes`);
    if (d.kind === 'local' && i > 0) {
      invalid(`${field} is the local device and must come first, because llama.cpp keeps the first layers on the host CPU`);
    }
    if (d.kind === 'rpc' && !d.endpoint) invalid(`${field}.endpoint is missing; an RPC device needs its worker's host:port`);
  });
}
