// The cluster as the planner sees it: the admitted workers' devices (less the ones held out for
// flapping), the coordinator's own CPU, each worker's hop priced from its round-trip time (and its
// link's speed, for tensor mode's partial sums), the memory a running engine holds counted free, and the
// draft model's share taken off its device.
import { basename } from 'node:path';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { calibrateDevices, calibrationTypeOf, type CalibrationType, type DeviceSpeed } from '../host/calibration.js';
import { hostMemory } from '../host/host-memory.js';
import { minRtts } from '../host/tcp-bytes.js';
import { isLoopback } from '../link/token.js';
import { readModelFacts, type ModelFacts } from '../models/gguf-info.js';
import { rpcProtocolVersion } from '../native/llama.js';
import { NO_MODEL, type CoordinatorConfig } from './config.js';
import type { LoadedInfo } from './engine/protocol.js';
import type { WorkerLinks } from './links.js';
import { kvLayerBytes } from './planner/kv.js';
import { computeBufferBytes, logitsBufferBytes } from './planner/planner.js';
import { hopFromRtt } from './planner/time-model.js';
import type { CandidateDevice, PlacementObjective, Plan, PlanInput } from './planner/types.js';
import type { WorkerRecord, WorkerRegistry } from './registry.js';

/**
 * Candidate devices for the planner: the local host first (llama.cpp puts first layers there), then
 * workers newest first. `weights`: the measured type closest to the model's weights; a device's speed
 * for it, or its F16 speed when it reports no figure per type (an older worker).
 */
export function candidateDevices(
  workers: readonly WorkerRecord[],
  local: { enabled: boolean; freeBytes: number; totalBytes: number; speeds?: DeviceSpeed | null },
  weights: CalibrationType = 'f16',
): CandidateDevice[] {
  const speedOf = (f16: number, byType: Partial<Record<string, number>> | undefined) => {
    const v = byType?.[weights] ?? f16;
    return v > 0 ? v : null;
  };
  const out: CandidateDevice[] = [];
  if (local.enabled) {
    out.push({
      key: 'local/CPU', kind: 'local', owner: 'coordinator', deviceName: 'CPU', endpoint: null,
      freeBytes: local.freeBytes, totalBytes: local.totalBytes, bytesPerSecond: local.speeds ? speedOf(local.speeds.bytesPerSecond, local.speeds.byType) : null,
    });
  }
  for (const w of workers) {
    if (!w.info || !w.rpcEndpoint) continue;
    for (const [serverIndex, d] of w.info.devices.entries()) {
      out.push({
        key: `${w.id}/${d.name}`, kind: 'rpc', owner: w.name, deviceName: d.name, endpoint: w.rpcEndpoint, serverIndex,
        freeBytes: Number(d.free_bytes), totalBytes: Number(d.total_bytes), bytesPerSecond: speedOf(d.bytes_per_second, d.bytes_per_second_by_type),
        rpcProtocol: w.info.build.rpc_protocol,
        ...(onLoopback(w) ? { linkBytesPerSecond: LOOPBACK_BYTES_PER_SECOND } : {}),
      });
    }
  }
  return out;
}

/** What a hop to a worker costs per generated token, from the round trip to it in milliseconds (time-model.ts's hopFromRtt). */
export function hopSecondsFromRtt(rttMs: number): number {
  return hopFromRtt(rttMs / 1000);
}

/**
 * A worker on this machine (its rpc address on loopback, as in tests and benchmarks): its partial sums
 * cross no network, so its link is taken to be as fast as the kernel copies (nobody measures links).
 */
const LOOPBACK_BYTES_PER_SECOND = 2e9;

function onLoopback(w: WorkerRecord): boolean {
  const remote = w.rpcRemote ?? w.rpcEndpoint;
  return remote !== null && isLoopback(remote.slice(0, remote.lastIndexOf(':')));
}

/**
 * What a worker's CPU device lends hearth in all, its rpc servers' holdings included (free + held), or
 * null when that cannot be told (another kind of device, an older worker that does not report them).
 */
function hostMemoryLent(d: CandidateDevice, workers: readonly WorkerRecord[]): number | null {
  if (d.kind !== 'rpc' || d.serverIndex === undefined) return null;
  const w = workers.find((r) => d.key.startsWith(`${r.id}/`));
  const device = w?.info?.devices[d.serverIndex];
  const held = w?.info?.held_bytes;
  if (!device || device.type !== 'cpu' || held === undefined || held === null) return null;
  return Math.min(d.totalBytes, d.freeBytes + Number(held));
}

/** Where the draft model runs: a worker's first device, or this machine. */
export interface DraftHost {
  key: string;
  endpoint: string | null;
  where: string;
  note: string | null;
}

export class ClusterView {
  readonly #config: CoordinatorConfig;
  readonly #log: Logger;
  readonly #registry: WorkerRegistry;
  readonly #links: WorkerLinks;
  /** Control addresses of workers kept out of plans for now (see flaps.ts). */
  readonly #heldOut: (control: string) => boolean;
  #model: ModelFacts | null = null;
  /** The coordinator's own CPU, measured like a worker's devices (null: not measured or failed). */
  #localSpeed: DeviceSpeed | null = null;
  /** What the draft model will hold where it runs (weights, KV, compute); 0 without one. */
  #draftBytes = 0;

  constructor(config: CoordinatorConfig, log: Logger, registry: WorkerRegistry, links: WorkerLinks, heldOut: (control: string) => boolean = () => false) {
    this.#config = config;
    this.#log = log;
    this.#registry = registry;
    this.#links = links;
    this.#heldOut = heldOut;
  }

  get model(): ModelFacts | null {
    return this.#model;
  }

  get draftBytes(): number {
    return this.#draftBytes;
  }

  /** Reads the model's and the draft's headers and measures the local CPU: what planning needs before any worker. */
  async prepare(): Promise<ModelFacts> {
    if (!this.#config.model) throw new HearthError(ErrorCode.InvalidArgument, NO_MODEL);
    this.#model = await readModelFacts(this.#config.model);
    await this.#readDraft();
    await this.#measureLocalDevice();
    return this.#model;
  }

  /** Admitted workers that may be planned with now. */
  plannable(): WorkerRecord[] {
    return this.#registry.admitted().filter((w) => !this.#heldOut(w.control));
  }

  /** The candidate devices now: the plannable workers' and, when enabled, the coordinator's own. */
  candidates(workers: readonly WorkerRecord[] = this.plannable()): CandidateDevice[] {
    const host = hostMemory();
    return candidateDevices(
      workers,
      { enabled: this.#config.localDevice, freeBytes: host.availableBytes, totalBytes: host.totalBytes, speeds: this.#localSpeed },
      calibrationTypeOf(this.#model?.fileType ?? null),
    );
  }

  /**
   * The planner's input now. `held`: the running engine's plan, whose memory is free again once it is
   * replaced; `others`: the plans of the other models' engines, whose memory is not this model's;
   * `lent`: count what the workers' servers hold now as free (a plan of several models from scratch).
   */
  planInput(objective: PlacementObjective, held: Plan | null, others: readonly Plan[] = [], options: { lent?: boolean } = {}): PlanInput {
    const model = this.#model;
    if (!model) throw new HearthError(ErrorCode.FailedPrecondition, 'no model header read yet');
    const workers = this.plannable();
    const devices = this.candidates(workers);
    // Each worker's hop, priced from the kernel's round-trip time on its control connection; the
    // planner's default where there is none (a worker listed by name, or no `ss`).
    const rtts = minRtts();
    for (const d of devices) {
      const w = workers.find((r) => d.key.startsWith(`${r.id}/`));
      const rtt = w ? rtts.get(w.control) : undefined;
      if (rtt !== undefined) {
        d.hopSeconds = hopSecondsFromRtt(rtt);
        d.rttSeconds = rtt / 1000;
      }
    }
    for (const d of devices) {
      // `lent`: plan in what the machine lends in all, as if no engine held any of it (hearth plan).
      const lent = others.length > 0 || options.lent ? hostMemoryLent(d, workers) : null;
      if (lent !== null) {
        // Several models: what the machine lends in all, less what the other models' plans take on it
        // (this model's own engine, if it runs, is in `lent` already). Counted from plans, not from
        // what their servers hold now, so that every model's plan leaves the others theirs in full.
        const taken = others.reduce((sum, p) => sum + (p.devices.find((o) => o.key === d.key)?.totalBytes ?? 0), 0);
        d.freeBytes = Math.max(0, lent - taken);
        continue;
      }
      const h = held?.devices.find((p) => p.key === d.key);
      if (h) d.freeBytes = Math.min(d.totalBytes, d.freeBytes + h.totalBytes + (d.kind === 'local' ? held!.hostBytes : 0));
    }
    // The draft model's memory is not the layers' to take.
    const draft = this.draftHost();
    const host = draft && devices.find((d) => d.key === draft.key);
    if (host) host.freeBytes = Math.max(0, host.freeBytes - this.#draftBytes);
    const c = this.#config;
    return {
      model,
      devices,
      context: { ctxSize: c.ctxSize, parallel: c.parallel, typeK: c.cacheTypeK, typeV: c.cacheTypeV, nUbatch: c.ubatchSize, pipeline: c.pipeline },
      reserveBytes: c.reserveBytes,
      objective,
      split: c.split,
      rpcProtocol: rpcProtocolVersion(),
    };
  }

  /**
   * Where the draft model runs: the named worker's first device, or this machine (also when that worker
   * is not in the cluster now, with a note saying so).
   */
  draftHost(): DraftHost | null {
    const spec = this.#config.speculation;
    if (!spec?.draftModel) return null;
    if (spec.draftWorker) {
      const w = this.#registry.admitted().find((r) => r.name === spec.draftWorker && r.rpcEndpoint && r.info && r.info.devices.length > 0);
      if (w) return { key: `${w.id}/${w.info!.devices[0]!.name}`, endpoint: w.rpcEndpoint, where: `worker ${w.name} (${w.info!.devices[0]!.name})`, note: null };
      return { key: 'local/CPU', endpoint: null, where: 'this machine', note: `worker ${spec.draftWorker} is not in the cluster now, so the draft runs on this machine` };
    }
    return { key: 'local/CPU', endpoint: null, where: 'this machine', note: null };
  }

  /** Speculative decoding as it runs (`loaded`) or will: with what, how far; or off, and why when a draft was asked for. */
  speculation(loaded: LoadedInfo['speculation'] | null): string {
    const spec = this.#config.speculation;
    const host = this.draftHost();
    const note = loaded?.note ?? this.#config.speculationNote ?? host?.note ?? null;
    const ways: string[] = [];
    if (loaded?.draftModel) {
      const w = loaded.draftEndpoint ? this.#registry.byEndpoint(loaded.draftEndpoint) : undefined;
      const where = loaded.draftEndpoint ? `worker ${w?.name ?? '?'} (${loaded.draftDevice} at ${this.#links.remoteOf(loaded.draftEndpoint)})` : 'this machine';
      ways.push(`draft model ${basename(loaded.draftModel)} on ${where}`);
    } else if (!loaded && spec?.draftModel) {
      ways.push(`draft model ${basename(spec.draftModel)} on ${host?.where ?? 'this machine'}`);
    }
    if (spec && spec.ngram > 0) ways.push(`n-gram lookup (${spec.ngram} tokens)`);
    if (!spec || ways.length === 0) return note ? `off (${note})` : 'off';
    const how = `${ways.join(' and ')}: up to ${spec.draftMax} tokens per step, while at most ${spec.maxSequences} request(s) generate`;
    return note ? `${how}; ${note}` : how;
  }

  /** Measures the coordinator's own CPU once, as a worker measures its devices, so the planner weighs it like any other. */
  async #measureLocalDevice(): Promise<void> {
    if (!this.#config.localDevice || this.#localSpeed !== null) return;
    try {
      const [speed] = await calibrateDevices(['CPU'], this.#config.threads);
      this.#localSpeed = speed ?? null;
      this.#log.info({ speed: speed && `${(speed.bytesPerSecond / 1e9).toFixed(1)} GB/s`, threads: this.#config.threads }, 'local device calibrated');
    } catch (e) {
      this.#log.warn({ err: messageOf(e) }, "could not measure the coordinator's own CPU; the planner treats it as typical");
    }
  }

  /** Sizes the draft model from its header: its weights, its KV for every slot, a compute buffer. */
  async #readDraft(): Promise<void> {
    const path = this.#config.speculation?.draftModel;
    if (!path) return;
    try {
      const draft = await readModelFacts(path);
      const c = this.#config;
      const context = { ctxSize: c.ctxSize, parallel: c.parallel, typeK: 'f16' as const, typeV: 'f16' as const, nUbatch: c.ubatchSize };
      this.#draftBytes = draft.totalTensorBytes + kvLayerBytes(draft, context).reduce((a, b) => a + b, 0) + computeBufferBytes(draft, context) + logitsBufferBytes(draft, context);
    } catch {
      this.#draftBytes = 0; // the engine's load says what is wrong with it
    }
  }
}
