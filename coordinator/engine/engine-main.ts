// The engine process: the only process that holds a llama model over RPC devices. llama.cpp's RPC
// client aborts the process when a worker disappears; this process is expendable by design, and the
// coordinator that spawned it survives, re-plans and starts a new one.
import { performance } from 'node:perf_hooks';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { expertTensorPattern } from '../../models/gguf-info.js';
import { loadBinding, type NativeBinding } from '../../native/binding.js';
import { connectRpcServers, LlamaModel, type LlamaContext } from '../../native/llama.js';
import { createContexts, memoryOf, SchedulerGroups, type RequestSink } from './groups.js';
import { calibrationRows, measureDecodeSeconds } from './decode-timing.js';
import { DraftModel } from './draft-model.js';
import { DraftTuner } from './draft-tuner.js';
import { createEmbeddingContext, Embedder } from './embedder.js';
import type { Drafter } from './drafter.js';
import { NgramDrafter } from './ngram-drafter.js';
import type { EngineLoadSpec, FromEngine, LoadedInfo, PeerAddress, SpeculationSettings, ToEngine } from './protocol.js';
import { Scheduler } from './scheduler.js';
import { bytesSentTo } from '../../host/tcp-bytes.js';

function send(message: FromEngine): void {
  process.send?.(message);
}

let model: LlamaModel | null = null;
let contexts: LlamaContext[] = [];
let scheduler: RequestSink | null = null;
/** An embedding or reranker model's engine answers embed and rerank instead of generate. */
let embedder: Embedder | null = null;

async function load(spec: EngineLoadSpec): Promise<void> {
  const started = performance.now();
  // A worker that runs only the draft model is connected too.
  const endpoints = [...new Set([...spec.rpcEndpoints, ...(spec.speculation?.draftEndpoint ? [spec.speculation.draftEndpoint] : [])])];
  const devices = endpoints.length > 0 ? await connectRpcServers(endpoints, { timeoutMs: 5000 }) : [];
  const connected = performance.now();
  // A worker with several devices appears once per device in the plan: rpcDevices says which of its server's.
  const names = spec.rpcEndpoints.map((endpoint, i) => {
    const ofServer = devices.filter((d) => d.endpoint === endpoint);
    const index = spec.rpcDevices[i] ?? 0;
    const d = ofServer[index];
    if (!d) throw new HearthError(ErrorCode.FailedPrecondition, `worker ${endpoint} serves ${ofServer.length} devices, the plan needs ${index + 1}; re-plan`);
    return d.name;
  });
  if (spec.peerAddresses && spec.peerAddresses.length > 0) setPeerAddresses(spec.peerAddresses);
  let lastProgress = -1;
  model = await LlamaModel.load(spec.modelPath, {
    devices: names,
    // Tensor mode: llama.cpp makes one meta device of these; it needs flash attention, which the
    // contexts leave on 'auto' so that llama.cpp turns it on.
    splitMode: spec.splitMode ?? 'layer',
    tensorSplit: spec.tensorSplit.length > 0 ? spec.tensorSplit : null,
    tensorOverrides: spec.expertOverrides.map((o) => ({ pattern: expertTensorPattern(o.layers), device: names[o.device]! })),
    nGpuLayers: spec.nGpuLayers,
    // Whole percents are enough for a progress display, and keep the IPC channel quiet.
    onProgress: (value) => {
      if (value - lastProgress >= 0.01 || value === 1) {
        lastProgress = value;
        send({ type: 'progress', value });
      }
    },
  });
  const weightsLoaded = performance.now();
  if (spec.embeddings) return loadedForEmbeddings(spec, model, names, endpoints, { started, connected, weightsLoaded });
  contexts = await createContexts(model, spec);
  const ctx = contexts[0]!;
  const m = model;
  // Speculation: one draft model, and a draft context per group beside that group's context (a
  // context decodes in one thread at a time); one tuner for all, from group 0's timings.
  const draftDevice = spec.speculation?.draftEndpoint ? (devices.find((d) => d.endpoint === spec.speculation!.draftEndpoint)?.name ?? null) : null;
  const draft = spec.speculation ? await loadDraft(spec, model, draftDevice, contexts.map((c) => c.info.nSeqMax)) : null;
  const drafts = draft?.drafts ?? [];
  const speculating = spec.speculation !== null && (drafts.length > 0 || spec.speculation.ngram > 0);
  const tuner = speculating && spec.speculation!.tune ? await tuneDrafts(ctx, spec.speculation!, drafts) : null;
  const settings = spec.speculation;
  const speculation = (g: number) => (settings ? { settings, drafters: draftersOf(settings, drafts[g] ?? null), tuner } : null);
  scheduler =
    contexts.length === 1
      ? new Scheduler(m, ctx, send, speculation(0), spec.chatTemplate ?? null)
      : new SchedulerGroups(contexts.length, (g, sendOf) => new Scheduler(m, contexts[g]!, sendOf, speculation(g), spec.chatTemplate ?? null), send);
  const info: LoadedInfo = {
    placement: [...model.placement],
    devices: spec.rpcEndpoints.map((endpoint, i) => ({ endpoint, name: names[i]! })),
    memory: memoryOf(contexts),
    bytesSent: bytesSentTo(endpoints),
    loadSeconds: (performance.now() - started) / 1000,
    phases: {
      connectSeconds: (connected - started) / 1000,
      weightsSeconds: (weightsLoaded - connected) / 1000,
      contextSeconds: (performance.now() - weightsLoaded) / 1000,
    },
    nCtxSeq: ctx.info.nCtxSeq,
    nSeqMax: contexts.reduce((n, c) => n + c.info.nSeqMax, 0),
    groups: contexts.length,
    nVocab: model.info.nVocab,
    chatTemplate: model.info.chatTemplate !== null,
    speculation: spec.speculation
      ? {
          draftModel: drafts.length > 0 ? spec.speculation.draftModel : null,
          draftDevice: drafts.length > 0 ? (draftDevice ?? 'CPU') : null,
          draftEndpoint: drafts.length > 0 && draftDevice ? spec.speculation.draftEndpoint! : null,
          ngram: spec.speculation.ngram,
          draftBytes: drafts.length > 0 ? memoryOf(drafts.map((d) => d.context)).reduce((n, e) => n + e.modelBytes + e.contextBytes + e.computeBytes, 0) : 0,
          note: draft?.note ?? null,
        }
      : null,
  };
  send({ type: 'loaded', info });
}

/**
 * A tensor split: where each rpc server dials each other one for the direct all-reduce, given to the
 * RPC backend before the model (and its meta device, whose comm_init hands them to the servers) is made.
 */
function setPeerAddresses(pairs: PeerAddress[]): void {
  // An addon built before peer links lacks the call (a stale build beside newer sources).
  const b: Partial<Pick<NativeBinding, 'rpcPeerAddress'>> = loadBinding();
  if (typeof b.rpcPeerAddress !== 'function') {
    throw new HearthError(
      ErrorCode.FailedPrecondition,
      `this build of hearth's native addon cannot tell rpc servers their peers' addresses (it has no rpcPeerAddress), which a tensor split needs; rebuild it (npm run build:native) or split by layers`,
    );
  }
  for (const p of pairs) b.rpcPeerAddress(p.from, p.to, p.address);
}

/** An embedding or reranker model: one embeddings context, no speculation, no generation. */
async function loadedForEmbeddings(spec: EngineLoadSpec, m: LlamaModel, names: string[], endpoints: string[], t: { started: number; connected: number; weightsLoaded: number }): Promise<void> {
  const ctx = await createEmbeddingContext(m, spec);
  contexts = [ctx];
  embedder = new Embedder(m, ctx, spec.ctxSize, send);
  const info: LoadedInfo = {
    placement: [...m.placement],
    devices: spec.rpcEndpoints.map((endpoint, i) => ({ endpoint, name: names[i]! })),
    memory: memoryOf(contexts),
    bytesSent: bytesSentTo(endpoints),
    loadSeconds: (performance.now() - t.started) / 1000,
    phases: {
      connectSeconds: (t.connected - t.started) / 1000,
      weightsSeconds: (t.weightsLoaded - t.connected) / 1000,
      contextSeconds: (performance.now() - t.weightsLoaded) / 1000,
    },
    nCtxSeq: Math.min(spec.ctxSize, ctx.info.nCtxSeq),
    nSeqMax: ctx.info.nSeqMax,
    groups: 1,
    nVocab: m.info.nVocab,
    chatTemplate: m.info.chatTemplate !== null,
    embeddings: { pooling: ctx.info.poolingType, nEmbdOut: m.info.nEmbdOut, nClsOut: m.info.nClsOut },
    speculation: null,
  };
  send({ type: 'loaded', info });
}

/**
 * The draft model, on a worker's device (`device`, an RPC device) or on this process's CPU, with one
 * context per group of the target's (`shares`: their sequences), each like its group's. A draft that
 * fails to load (or does not fit the target's vocabulary) leaves the engine serving without it, and
 * says why.
 */
async function loadDraft(spec: EngineLoadSpec, target: LlamaModel, device: string | null, shares: number[]): Promise<{ drafts: DraftModel[]; note: string | null } | null> {
  const settings: SpeculationSettings = spec.speculation!;
  if (!settings.draftModel) return null;
  let draftModel: LlamaModel | null = null;
  const drafts: DraftModel[] = [];
  try {
    draftModel = await LlamaModel.load(settings.draftModel, device ? { devices: [device], nGpuLayers: -1 } : { devices: [], nGpuLayers: 0 });
    const difference = target.vocabularyDifference(draftModel);
    if (difference) throw new HearthError(ErrorCode.InvalidArgument, `its vocabulary does not match the model's: ${difference}`);
    for (const share of shares) {
      const context = await draftModel.createContext({ nCtx: spec.ctxSize * share, nSeqMax: share, nBatch: spec.nBatch, nUbatch: spec.nUbatch, nThreads: spec.threads });
      drafts.push(new DraftModel(draftModel, context));
    }
    return { drafts, note: null };
  } catch (e) {
    for (const d of drafts) d.dispose();
    draftModel?.dispose();
    const note = `the draft model ${settings.draftModel} is not used: ${messageOf(e)}`;
    send({ type: 'log', level: 'warn', msg: `${note}; serving without it${settings.ngram > 0 ? ' (n-gram lookup only)' : ''}` });
    return { drafts: [], note };
  }
}

/** A group's drafters, in the order they are asked: the n-gram lookup first (it costs nothing), the draft model for what it leaves short. */
function draftersOf(settings: SpeculationSettings, draft: DraftModel | null): Drafter[] {
  const out: Drafter[] = [];
  if (settings.ngram > 0) out.push(new NgramDrafter(settings.ngram));
  if (draft) out.push(draft);
  return out;
}

/**
 * Times verifications of 1.. rows on the loaded model and a draft step, so that the tuner drafts only as
 * far as pays on this cluster. Sequence 0 is empty now; its cells are freed again.
 */
async function tuneDrafts(ctx: LlamaContext, settings: SpeculationSettings, drafts: DraftModel[]): Promise<DraftTuner> {
  const verify = await measureDecodeSeconds(ctx, 0, calibrationRows(settings.draftMax, settings.maxSequences));
  // Every group's draft context, so that none starts out priced at nothing.
  for (const d of drafts) await d.calibrate();
  const draft = drafts[0];
  const ms = (s: number) => `${(s * 1000).toFixed(1)} ms`;
  send({
    type: 'log',
    level: 'info',
    msg: `speculative decoding: a verification of n rows takes ${verify.map(([n, s]) => `${n}: ${ms(s)}`).join(', ')}${draft ? `; a draft step ${ms(draft.stepSeconds)}` : ''}`,
  });
  return new DraftTuner(verify);
}

function onMessage(message: ToEngine): void {
  switch (message.type) {
    case 'load':
      load(message.spec).catch((e: unknown) => {
        const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
        send({ type: 'load-failed', code, message: messageOf(e) });
      });
      return;
    case 'generate':
      if (embedder) {
        send({ type: 'request-error', id: message.id, code: ErrorCode.InvalidArgument, message: 'this engine serves an embedding or reranker model: it does not generate text' });
        return;
      }
      if (!scheduler) {
        send({ type: 'request-error', id: message.id, code: ErrorCode.Unavailable, message: 'the model is not loaded yet' });
        return;
      }
      scheduler.submit(message.id, message.prompt, message.params);
      return;
    case 'embed':
    case 'rerank':
      if (!embedder) {
        const what = scheduler ? 'this engine serves a text generation model: it gives no embeddings or rerank scores' : 'the model is not loaded yet';
        send({ type: 'request-error', id: message.id, code: scheduler ? ErrorCode.InvalidArgument : ErrorCode.Unavailable, message: what });
        return;
      }
      if (message.type === 'embed') embedder.embed(message.id, message.inputs, message.params);
      else embedder.rerank(message.id, message.query, message.documents);
      return;
    case 'cancel':
      scheduler?.cancel(message.id);
      embedder?.cancel(message.id);
      return;
    case 'shutdown':
      // Freeing remote buffers is the servers' job when the connection closes; exit promptly.
      process.exit(0);
  }
}

// Forward llama.cpp's warnings and errors to the coordinator's log.
// "graph reuse disabled" is the pipeline's own choice (groups.ts), not news for the operator.
const EXPECTED = /graph reuse disabled/;
loadBinding().setLogger((level, msg) => send({ type: 'log', level: EXPECTED.test(msg) ? 'debug' : level, msg }), 'warn');
process.on('message', (m) => onMessage(m as ToEngine));
// The coordinator owns this process: when its IPC channel closes, the coordinator is gone.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
