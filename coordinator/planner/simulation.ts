// `hearth plan --simulate FILE.yaml`: a cluster described on paper (devices with memory and speed, a
// model by its GGUF or its shape), planned by the same pure planner, so that people can see what a
// cluster they do not have yet would do. See examples/home-cluster.yaml.
import { dirname, resolve } from 'node:path';
import { z } from 'zod';

import { parseByteSize } from '../../common/bytes.js';
import { describeIssues, readYamlFile } from '../../common/config-file.js';
import { ErrorCode, HearthError } from '../../common/errors.js';
import type { ModelFacts } from '../../models/gguf-info.js';
import { hopFromRtt } from './time-model.js';
import type { CandidateDevice, PlanInput } from './types.js';

const size = z.union([z.string(), z.number()]);
const cacheType = z.enum(['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1']);

/** A model by its shape: what the planner needs from a GGUF header, written by hand. */
const modelShape = z.strictObject({
  name: z.string().optional(),
  /** general.architecture: whether llama.cpp can split it by tensor (default llama). */
  architecture: z.string().min(1).optional(),
  layers: z.number().int().min(1).max(1024),
  /** Bytes of one block's weights ("0.48GiB"). */
  layerSize: size,
  /** The output head (output.weight and output_norm). */
  outputSize: size,
  /** The input embedding: it stays in the coordinator's memory. */
  inputSize: size.optional(),
  embedding: z.number().int().min(1),
  feedForward: z.number().int().min(1).optional(),
  heads: z.number().int().min(1),
  kvHeads: z.number().int().min(1),
  headDim: z.number().int().min(1),
  vocab: z.number().int().min(1),
  /** Mixture of experts: how many experts a block has, how many a token uses, and their bytes in one block. */
  experts: z.strictObject({ count: z.number().int().min(1), used: z.number().int().min(1), size }).optional(),
});

const simulatedDevice = z.strictObject({
  /** The machine (a worker's name, or "coordinator" with local: true). */
  name: z.string().min(1),
  /** ggml device name on that machine. */
  device: z.string().min(1).default('CPU'),
  /** Memory it lends (free memory, or its --memory cap). */
  memory: size,
  /** Decode speed: what the worker's calibration reports, or about 70 % of the memory bandwidth ("300GB/s"). */
  speed: size.optional(),
  /** Time per token that reaching it adds (RPC round trips), in milliseconds; by default priced from rttMs. */
  hopMs: z.number().min(0).max(10_000).optional(),
  /** Round trip to it from the coordinator (and, taken alike, from the other workers), in milliseconds. */
  rttMs: z.number().min(0).max(10_000).optional(),
  /** Its network link in Gb/s (tensor mode's partial sums cross it). */
  linkGbps: z.number().positive().max(10_000).optional(),
  /** The RPC protocol its worker speaks (default: this build's); tensor mode needs 7.1.0. */
  rpcProtocol: z.string().regex(/^\d+\.\d+\.\d+$/, 'must be a version such as 7.1.0').optional(),
  /** The coordinator's own device (at most one, listed first). */
  local: z.boolean().optional(),
});

export const simulationSchema = z.strictObject({
  model: z.union([z.string().min(1), modelShape]),
  placement: z.enum(['speed', 'memory']).optional(),
  /** layer, tensor or auto (default auto). */
  split: z.enum(['layer', 'tensor', 'auto']).optional(),
  /** Every device's round trip and link, where a device gives none (defaults 0.35 ms and 1 Gb/s). */
  rttMs: z.number().min(0).max(10_000).optional(),
  linkGbps: z.number().positive().max(10_000).optional(),
  ctxSize: z.number().int().min(256).max(1 << 20).optional(),
  parallel: z.number().int().min(1).max(64).optional(),
  pipeline: z.union([z.enum(['auto', 'off']), z.number().int().min(1).max(64)]).optional(),
  cacheType: cacheType.optional(),
  ubatchSize: z.number().int().min(16).max(8192).optional(),
  reserveMiB: z.number().int().min(0).max(1 << 20).optional(),
  devices: z.array(simulatedDevice).min(1, 'list at least one device'),
});

export type Simulation = z.infer<typeof simulationSchema>;

function bytesOf(value: string | number, where: string): number {
  const bytes = parseByteSize(value);
  if (bytes === null) throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${value}' is not a size; write it like 24GiB or 512MiB`);
  return bytes;
}

/** "300GB/s", "300 GB/s", "300GB" (per second implied) or bytes per second. */
function speedOf(value: string | number, where: string): number {
  const bytes = parseByteSize(typeof value === 'string' ? value.replace(/\s*\/\s*s$/i, '') : value);
  if (bytes === null || bytes <= 0) throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${value}' is not a speed; write it like 300GB/s`);
  return bytes;
}

export function shapeFacts(shape: z.infer<typeof modelShape>): ModelFacts {
  const layer = bytesOf(shape.layerSize, 'model.layerSize');
  const output = bytesOf(shape.outputSize, 'model.outputSize');
  const input = shape.inputSize === undefined ? 0 : bytesOf(shape.inputSize, 'model.inputSize');
  return {
    path: '(simulated)',
    fileBytes: shape.layers * layer + output + input,
    shards: [],
    architecture: shape.architecture ?? 'llama',
    name: shape.name ?? 'simulated model',
    layerCount: shape.layers,
    contextLength: 1 << 20,
    embeddingLength: shape.embedding,
    feedForwardLength: shape.feedForward ?? null,
    headCount: shape.heads,
    headCountKv: shape.kvHeads,
    headDimK: shape.headDim,
    headDimV: shape.headDim,
    vocabSize: shape.vocab,
    fileType: null,
    chatTemplate: null,
    layerBytes: new Array<number>(shape.layers).fill(layer),
    inputBytes: input,
    outputBytes: output,
    outputTied: false,
    otherBytes: 0,
    totalTensorBytes: shape.layers * layer + output + input,
    tensorTypes: {},
    experts: shape.experts ? expertsOf(shape.experts, shape.layers, layer) : null,
  };
}

function expertsOf(e: { count: number; used: number; size: string | number }, layers: number, layer: number): ModelFacts['experts'] {
  const bytes = bytesOf(e.size, 'model.experts.size');
  if (e.used > e.count) throw new HearthError(ErrorCode.InvalidArgument, `model.experts.used (${e.used}) is more than model.experts.count (${e.count})`);
  if (bytes > layer) throw new HearthError(ErrorCode.InvalidArgument, `model.experts.size (${e.size}) is more than model.layerSize: the experts are part of a block`);
  return { count: e.count, used: e.used, layerBytes: new Array<number>(layers).fill(bytes) };
}

/** Reads and checks a simulation file; `readModel` reads a GGUF header when the model is a path. */
export async function readSimulation(file: string, readModel: (path: string) => Promise<ModelFacts>): Promise<PlanInput> {
  const parsed = simulationSchema.safeParse(readYamlFile(file));
  if (!parsed.success) throw new HearthError(ErrorCode.InvalidArgument, describeIssues(parsed.error, file));
  const sim = parsed.data;
  const model = typeof sim.model === 'string' ? await readModel(resolve(dirname(resolve(file)), sim.model)) : shapeFacts(sim.model);
  const locals = sim.devices.filter((d) => d.local);
  if (locals.length > 1 || (locals.length === 1 && !sim.devices[0]!.local)) {
    throw new HearthError(ErrorCode.InvalidArgument, `${file}: devices: at most one device is local (the coordinator's own), and it must be listed first`);
  }
  const devices: CandidateDevice[] = sim.devices.map((d, i) => {
    const where = `${file}: devices.${i} (${d.name})`;
    const memory = bytesOf(d.memory, `${where}.memory`);
    // Devices listed under one machine name are one worker serving several devices, in this order.
    const serverIndex = sim.devices.slice(0, i).filter((x) => x.name === d.name).length;
    return {
      serverIndex,
      key: `${d.name}/${d.device}`,
      kind: d.local ? 'local' : 'rpc',
      owner: d.name,
      deviceName: d.device,
      endpoint: d.local ? null : `${d.name}:50052`,
      freeBytes: memory,
      totalBytes: memory,
      bytesPerSecond: d.speed === undefined ? null : speedOf(d.speed, `${where}.speed`),
      ...linkOf(d.hopMs, d.rttMs ?? sim.rttMs, d.linkGbps ?? sim.linkGbps),
      ...(d.rpcProtocol === undefined ? {} : { rpcProtocol: d.rpcProtocol }),
    };
  });
  const keys = new Set<string>();
  for (const d of devices) {
    if (keys.has(d.key)) throw new HearthError(ErrorCode.InvalidArgument, `${file}: devices: ${d.key} is listed twice`);
    keys.add(d.key);
  }
  const cache = sim.cacheType ?? 'f16';
  return {
    model,
    devices,
    context: { ctxSize: sim.ctxSize ?? 4096, parallel: sim.parallel ?? 1, typeK: cache, typeV: cache, nUbatch: sim.ubatchSize ?? 512, pipeline: sim.pipeline ?? 'auto' },
    reserveBytes: (sim.reserveMiB ?? 512) * 1024 * 1024,
    objective: sim.placement ?? 'speed',
    split: sim.split ?? 'auto',
  };
}

/** A device's hop, round trip and link as the planner takes them: a hop given is kept, else priced from the round trip. */
function linkOf(hopMs: number | undefined, rttMs: number | undefined, gbps: number | undefined): Pick<CandidateDevice, 'hopSeconds' | 'rttSeconds' | 'linkBytesPerSecond'> {
  const rtt = rttMs === undefined ? {} : { rttSeconds: rttMs / 1000 };
  const hop = hopMs !== undefined ? { hopSeconds: hopMs / 1000 } : rttMs !== undefined ? { hopSeconds: hopFromRtt(rttMs / 1000) } : {};
  return { ...rtt, ...hop, ...(gbps === undefined ? {} : { linkBytesPerSecond: (gbps * 1e9) / 8 }) };
}
