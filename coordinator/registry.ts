// The workers the coordinator knows of, and which of them it may plan with. A worker is admitted only
// after its control service answers GetInfo, its RPC protocol matches this build, and its RPC port
// answers a HELLO. Admitted workers are watched with Health heartbeats: one that stays silent past
// the timeout is lost, whether or not an mDNS goodbye arrived. A worker that says it is draining is
// leaving on purpose: it is no loss, only kept out of plans until the coordinator releases it.
import { EventEmitter } from 'node:events';

import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { formatVersion, isCompatible, parseVersion, type RpcVersion } from '../native/rpc-protocol.js';
import { LinkError } from '../link/relay.js';
import { normalizeEndpoint, probeRpcServer } from '../native/rpc-probe.js';
import { WorkerClient } from '../link/worker-client.js';
import type { WireWorkerInfo, WorkerId } from '../link/worker-wire.js';
import type { DiscoverySource } from './discovery/discovery.js';
import type { WorkerLinks } from './links.js';

/**
 * `leaving`: the worker is draining (it was stopped, or asked to leave): out of plans, watched until
 * released. `left`: released (or gone while leaving); found again, it is admitted as any other.
 */
export type WorkerRecordState = 'probing' | 'admitted' | 'refused' | 'lost' | 'suspect' | 'leaving' | 'left';

export interface WorkerRecord {
  control: string;
  source: DiscoverySource;
  state: WorkerRecordState;
  reason: string;
  id: WorkerId | null;
  name: string;
  info: WireWorkerInfo | null;
  /** Where the engine dials the worker's rpc server: the worker itself, or the local relay of a closed cluster. */
  rpcEndpoint: string | null;
  /** The worker's rpc address on the network. */
  rpcRemote: string | null;
  /** Order of (re)admission: later admissions get larger numbers. */
  admittedSeq: number;
  lastSeen: number;
  /** When `info` was last fetched. */
  infoAt: number;
  rpcPid: number;
  /** When the coordinator learnt that the worker is leaving (0: it is not). */
  leavingSince: number;
}

const INFO_REFRESH_MS = 5000;

export interface RegistryOptions {
  clientVersion: RpcVersion;
  heartbeatMs: number;
  workerTimeoutMs: number;
  /** RPC endpoints an engine is connected to: their servers serve one client, so never probe them. */
  busyEndpoints: () => ReadonlySet<string>;
  links: WorkerLinks;
  /**
   * Sent with every GetInfo and Health: "I call again within this long, and release you when you
   * leave", so that a draining worker waits for the release. 0 (a plan preview): no such promise.
   */
  watchMs: number;
}

export interface RegistryEvents {
  admitted: [WorkerRecord];
  lost: [WorkerRecord];
  /** An admitted worker's rpc server was restarted (its pid changed): an engine using it lost it. */
  restarted: [WorkerRecord];
  /** A worker said it is draining (found so, or admitted before): plan without it, then release() it. */
  leaving: [WorkerRecord];
  /** A leaving worker was released, or went away first (`released` false). */
  left: [WorkerRecord, { released: boolean }];
  changed: [];
}

/** Why a worker of this RPC protocol version cannot join, or null when it can. */
export function versionRefusal(client: RpcVersion, workerText: string): string | null {
  const worker = parseVersion(workerText);
  if (!worker) return `it reports an unreadable RPC protocol version '${workerText}'`;
  if (isCompatible(client, worker)) return null;
  return `its RPC protocol version is ${formatVersion(worker)}, this coordinator speaks ${formatVersion(client)}; run the same hearth build (llama.cpp release) on every machine`;
}

export class WorkerRegistry extends EventEmitter<RegistryEvents> {
  readonly #log: Logger;
  readonly #options: RegistryOptions;
  readonly #records = new Map<string, WorkerRecord>();
  readonly #clients = new Map<string, WorkerClient>();
  readonly #checking = new Map<string, Promise<void>>();
  readonly #releasing = new Set<WorkerRecord>();
  #timer: NodeJS.Timeout | null = null;
  #seq = 0;
  #stopped = false;

  constructor(log: Logger, options: RegistryOptions) {
    super();
    this.#log = log;
    this.#options = options;
  }

  start(): void {
    this.#timer = setInterval(() => this.#tick(), this.#options.heartbeatMs);
    this.#timer.unref();
  }

  /**
   * Stops watching. Workers that were promised a release get it (the coordinator uses them no more):
   * one that is draining, or drains later, then stops at once instead of waiting for a release.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#options.watchMs > 0) {
      const watched = this.all().filter((r) => r.state === 'admitted' || r.state === 'suspect' || r.state === 'leaving');
      await Promise.all(watched.map((r) => this.#client(r.control).release('the coordinator is stopping', { timeoutMs: 1000 }).catch(() => undefined)));
    }
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }

  /** A worker's control address, from a discovery source. Probed at once. */
  add(control: string, source: DiscoverySource): void {
    if (this.#records.has(control)) {
      const r = this.#records.get(control)!;
      if (r.state === 'lost' || r.state === 'left') void this.#check(r);
      return;
    }
    const record: WorkerRecord = {
      control,
      source,
      state: 'probing',
      reason: 'not contacted yet',
      id: null,
      name: control,
      info: null,
      rpcEndpoint: null,
      rpcRemote: null,
      admittedSeq: 0,
      lastSeen: 0,
      infoAt: 0,
      rpcPid: 0,
      leavingSince: 0,
    };
    this.#records.set(control, record);
    this.emit('changed');
    void this.#check(record);
  }

  /** A hint that a worker left (an mDNS goodbye): check it now instead of at the next heartbeat. */
  hintGone(control: string): void {
    const r = this.#records.get(control);
    if (r) void this.#check(r);
  }

  /** Keeps a worker out of plans until its rpc port answers again (it hung or crashed under an engine). */
  markSuspect(control: string, reason: string): void {
    const r = this.#records.get(control);
    if (!r || r.state !== 'admitted') return;
    this.#set(r, 'suspect', reason);
  }

  all(): WorkerRecord[] {
    return [...this.#records.values()];
  }

  /** Admitted workers, newest admission first (see the planner's device order). */
  admitted(): WorkerRecord[] {
    return this.all()
      .filter((r) => r.state === 'admitted')
      .sort((a, b) => b.admittedSeq - a.admittedSeq);
  }

  /**
   * Tells a leaving worker that the coordinator is done with it (it was re-planned without, or was
   * never in a plan): the worker stops. Once per leave; the record is `left` after.
   */
  async release(r: WorkerRecord, why: string): Promise<void> {
    if (r.state !== 'leaving' || this.#releasing.has(r)) return;
    this.#releasing.add(r);
    let missed: unknown = null;
    try {
      await this.#client(r.control).release(why, { timeoutMs: 2000 });
    } catch (e) {
      missed = e;
    } finally {
      this.#releasing.delete(r);
    }
    if (r.state !== 'leaving') return;
    if (missed) return this.#gone(r, missed); // its drain timed out, or it was killed: it has left all the same
    this.#set(r, 'left', `released ${((Date.now() - r.leavingSince) / 1000).toFixed(1)} s after it said it was leaving`);
    this.#log.info({ worker: r.name, control: r.control }, 'worker released');
    this.emit('left', r, { released: true });
  }

  #gone(r: WorkerRecord, e: unknown): void {
    this.#set(r, 'left', `gone before it was released (${messageOf(e)})`);
    this.#log.warn({ worker: r.name, control: r.control }, 'a leaving worker went away before it was released');
    this.emit('left', r, { released: false });
  }

  byEndpoint(endpoint: string): WorkerRecord | undefined {
    return this.all().find((r) => r.rpcEndpoint === endpoint);
  }

  /** Probes every known worker once now; resolves when all answered or timed out. */
  async checkAll(): Promise<void> {
    await Promise.all(this.all().map((r) => this.#check(r)));
  }

  /**
   * Fetches every admitted worker's devices and free memory now: a plan made right after another
   * model's engine loaded or left must see the memory it took or gave back, not a figure seconds old.
   */
  async refreshInfo(): Promise<void> {
    await Promise.all(
      this.admitted().map(async (r) => {
        r.info = await this.#client(r.control).getInfo({ timeoutMs: 2000, watchMs: this.#options.watchMs }).catch(() => r.info);
        r.infoAt = Date.now();
      }),
    );
  }

  /** Asks the worker at `control` where its rpc server dials to reach the rpc server at `remote` (a peer link). */
  async openPeerLink(control: string, remote: string, timeoutMs = 5000): Promise<string> {
    return (await this.#client(control).openPeerLink(remote, { timeoutMs })).address;
  }

  /** Health of one worker right now, bypassing the heartbeat schedule. */
  async health(control: string, timeoutMs = 1500) {
    return this.#client(control).health({ timeoutMs });
  }

  /** The control client of a worker; `dial` (where its link starts) is known once it was admitted. */
  #client(control: string, dial?: string): WorkerClient {
    let c = this.#clients.get(control);
    if (c && dial !== undefined && c.address !== dial) {
      c.close();
      c = undefined;
    }
    if (!c) {
      c = new WorkerClient(dial ?? control);
      this.#clients.set(control, c);
    }
    return c;
  }

  #tick(): void {
    for (const r of this.#records.values()) void this.#check(r);
  }

  /** One check per worker at a time; a caller arriving during one waits for it. */
  #check(r: WorkerRecord): Promise<void> {
    const running = this.#checking.get(r.control);
    if (running) return running;
    if (this.#stopped) return Promise.resolve();
    const check = (async () => {
      try {
        if (r.state === 'admitted') await this.#heartbeat(r);
        else if (r.state === 'suspect') await this.#recheckSuspect(r);
        else if (r.state === 'leaving') await this.#watchLeaving(r);
        else await this.#admit(r);
      } finally {
        this.#checking.delete(r.control);
      }
    })();
    this.#checking.set(r.control, check);
    return check;
  }

  async #admit(r: WorkerRecord): Promise<void> {
    const links = this.#options.links;
    let info: WireWorkerInfo;
    try {
      const dial = await links.dial('control', r.control);
      info = await this.#client(r.control, dial).getInfo({ timeoutMs: Math.min(3000, this.#options.workerTimeoutMs), watchMs: this.#options.watchMs });
    } catch (e) {
      if (e instanceof LinkError && e.kind !== 'network') {
        this.#refuse(r, e.message.replace(/^secure link to \S+: /, ''));
        return;
      }
      const hint = links.secure ? '' : ' (a worker started with a cluster token answers only a coordinator given the same token)';
      if (r.state !== 'lost' && r.state !== 'left') this.#set(r, 'probing', `control service ${r.control} unreachable: ${messageOf(e)}${hint}`);
      return;
    }
    r.info = info;
    r.infoAt = Date.now();
    r.name = info.name || r.control;
    r.rpcPid = 0;
    const duplicate = this.all().find((o) => o !== r && o.id === info.worker_id && o.state !== 'refused');
    if (duplicate) {
      // The same worker, found twice (listed by hand and over mDNS): keep the first record.
      this.#records.delete(r.control);
      this.#log.info({ worker: r.name, kept: duplicate.control, dropped: r.control }, 'same worker found twice; merged by id');
      this.emit('changed');
      return;
    }
    r.id = info.worker_id as WorkerId;
    if (info.draining) {
      // Leaving before it was admitted: in no plan, so it is released at once (it waits for that).
      r.leavingSince = r.lastSeen = Date.now();
      this.#set(r, 'leaving', info.drain_reason || 'drain requested');
      this.emit('leaving', r);
      return;
    }
    const refusal = versionRefusal(this.#options.clientVersion, info.build.rpc_protocol);
    if (refusal) {
      this.#refuse(r, refusal);
      return;
    }
    const host = info.rpc_host || r.control.slice(0, r.control.lastIndexOf(':'));
    let endpoint: string;
    let remote: string;
    try {
      remote = await normalizeEndpoint(`${host}:${info.rpc_port}`);
      endpoint = await links.dial('rpc', remote);
      if (!this.#options.busyEndpoints().has(endpoint)) {
        await probeRpcServer(endpoint, { timeoutMs: 2000, clientVersion: this.#options.clientVersion });
      }
    } catch (e) {
      if (e instanceof LinkError && e.kind !== 'network') {
        this.#refuse(r, `its rpc port: ${e.message.replace(/^secure link to \S+: /, '')}`);
        return;
      }
      this.#set(r, 'probing', `rpc server of ${r.name} not usable: ${messageOf(e)}`);
      return;
    }
    r.rpcRemote = remote;
    r.rpcEndpoint = endpoint;
    r.lastSeen = Date.now();
    r.admittedSeq = ++this.#seq;
    this.#set(r, 'admitted', '');
    this.#log.info({ worker: r.name, id: r.id, control: r.control, rpc: endpoint, devices: info.devices.map((d) => `${d.name} ${d.free_bytes}/${d.total_bytes}`) }, 'worker admitted');
    this.emit('admitted', r);
  }

  async #heartbeat(r: WorkerRecord): Promise<void> {
    try {
      const h = await this.#client(r.control).health({ timeoutMs: Math.min(2000, this.#options.workerTimeoutMs), watchMs: this.#options.watchMs });
      r.lastSeen = Date.now();
      if (r.rpcPid !== 0 && h.rpc_server_pid !== 0 && h.rpc_server_pid !== r.rpcPid) {
        this.#log.warn({ worker: r.name, before: r.rpcPid, now: h.rpc_server_pid }, 'worker restarted its rpc server');
        r.rpcPid = h.rpc_server_pid;
        this.emit('restarted', r);
      } else if (h.rpc_server_pid !== 0) {
        r.rpcPid = h.rpc_server_pid;
      }
      if (h.draining) {
        r.leavingSince = Date.now();
        this.#set(r, 'leaving', h.drain_reason || 'drain requested');
        this.#log.info({ worker: r.name, control: r.control, reason: r.reason }, 'worker is leaving');
        this.emit('leaving', r);
        return;
      }
      // Keep the memory figures fresh for the next plan; every few seconds is fresh enough, and spares
      // the worker's CPU (which it shares with the rpc server) a directory walk per heartbeat.
      if (r.info && Date.now() - r.infoAt >= INFO_REFRESH_MS) {
        r.info = await this.#client(r.control).getInfo({ timeoutMs: 2000, watchMs: this.#options.watchMs }).catch(() => r.info);
        r.infoAt = Date.now();
      }
    } catch (e) {
      if (Date.now() - r.lastSeen > this.#options.workerTimeoutMs) {
        this.#set(r, 'lost', `no heartbeat from ${r.name} (${r.control}) for ${Math.round((Date.now() - r.lastSeen) / 1000)} s: ${messageOf(e)}`);
        this.#log.warn({ worker: r.name, control: r.control }, 'worker lost');
        this.emit('lost', r);
      }
    }
  }

  /** Keeps a leaving worker watched (so it waits for its release); one that went away has left. */
  async #watchLeaving(r: WorkerRecord): Promise<void> {
    try {
      const h = await this.#client(r.control).health({ timeoutMs: Math.min(2000, this.#options.workerTimeoutMs), watchMs: this.#options.watchMs });
      r.lastSeen = Date.now();
      if (h.draining) return;
      // A new process on its address (it left and came back before this look): admit it afresh.
      this.#set(r, 'probing', 'back, no longer leaving');
      await this.#admit(r);
    } catch (e) {
      if (Date.now() - r.lastSeen <= this.#options.workerTimeoutMs || this.#releasing.has(r)) return;
      this.#gone(r, e);
    }
  }

  async #recheckSuspect(r: WorkerRecord): Promise<void> {
    if (!r.rpcEndpoint || this.#options.busyEndpoints().has(r.rpcEndpoint)) return;
    try {
      await probeRpcServer(r.rpcEndpoint, { timeoutMs: 1500, clientVersion: this.#options.clientVersion });
    } catch {
      return;
    }
    // It answers again: admit it afresh (new admission order, fresh info).
    this.#set(r, 'probing', 'answering again');
    await this.#admit(r);
  }

  /** Refuses a worker for good (until it changes): the reason shows in `hearth status`. */
  #refuse(r: WorkerRecord, why: string): void {
    if (r.state !== 'refused') this.#log.warn({ worker: r.name, control: r.control }, `worker refused: ${why}`);
    this.#set(r, 'refused', why);
  }

  #set(r: WorkerRecord, state: WorkerRecordState, reason: string): void {
    if (r.state === state && r.reason === reason) return;
    r.state = state;
    r.reason = reason;
    this.emit('changed');
  }
}
