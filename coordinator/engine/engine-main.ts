// The engine process: the only process that holds a llama model over RPC devices. llama.cpp's RPC
// client aborts the process when a worker disappears; this process is expendable by design, and the
// coordinator that spawned it survives, re-plans and starts a new one.
import { performance } from 'node:perf_hooks';

import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import { loadBinding } from '../../native/binding.js';
import { connectRpcServers, LlamaModel, type LlamaContext } from '../../native/llama.js';
import { createContexts, memoryOf, SchedulerGroups, type RequestSink } from './groups.js';
import type { EngineLoadSpec, FromEngine, LoadedInfo, ToEngine } from './protocol.js';
import { Scheduler } from './scheduler.js';
import { bytesSentTo } from './tcp-bytes.js';

function send(message: FromEngine): void {
  process.send?.(message);
}

let model: LlamaModel | null = null;
let contexts: LlamaContext[] = [];
let scheduler: RequestSink | null = null;

async function load(spec: EngineLoadSpec): Promise<void> {
  const started = performance.now();
  const devices = spec.rpcEndpoints.length > 0 ? await connectRpcServers([...new Set(spec.rpcEndpoints)], { timeoutMs: 5000 }) : [];
  const connected = performance.now();
  // A worker with several devices appears once per device in the plan, in its server's device order.
  const used = new Map<string, number>();
  const names = spec.rpcEndpoints.map((endpoint) => {
    const ofServer = devices.filter((d) => d.endpoint === endpoint);
    const index = used.get(endpoint) ?? 0;
    used.set(endpoint, index + 1);
    const d = ofServer[index];
    if (!d) throw new HearthError(ErrorCode.FailedPrecondition, `worker ${endpoint} serves ${ofServer.length} devices, the plan needs ${index + 1}; re-plan`);
    return d.name;
  });
  let lastProgress = -1;
  model = await LlamaModel.load(spec.modelPath, {
    devices: names,
    tensorSplit: spec.tensorSplit.length > 0 ? spec.tensorSplit : null,
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
  contexts = await createContexts(model, spec);
  const ctx = contexts[0]!;
  const m = model;
  scheduler = contexts.length === 1 ? new Scheduler(m, ctx, send) : new SchedulerGroups(contexts.length, (g, sendOf) => new Scheduler(m, contexts[g]!, sendOf), send);
  const info: LoadedInfo = {
    placement: [...model.placement],
    devices: spec.rpcEndpoints.map((endpoint, i) => ({ endpoint, name: names[i]! })),
    memory: memoryOf(contexts),
    bytesSent: bytesSentTo([...new Set(spec.rpcEndpoints)]),
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
  };
  send({ type: 'loaded', info });
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
      if (!scheduler) {
        send({ type: 'request-error', id: message.id, code: ErrorCode.Unavailable, message: 'the model is not loaded yet' });
        return;
      }
      scheduler.submit(message.id, message.prompt, message.params);
      return;
    case 'cancel':
      scheduler?.cancel(message.id);
      return;
    case 'shutdown':
      // Freeing remote buffers is the servers' job when the connection closes; exit promptly.
      process.exit(0);
  }
}

// Forward llama.cpp's warnings and errors to the coordinator's log.
loadBinding().setLogger((level, msg) => send({ type: 'log', level, msg }), 'warn');
process.on('message', (m) => onMessage(m as ToEngine));
// The coordinator owns this process: when its IPC channel closes, the coordinator is gone.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
