// The worker daemon: a supervised ggml-rpc-server, a gRPC control service and an mDNS advert, with an
// explicit lifecycle (running, draining, stopped). Everything it serves comes from the WorkerConfig it
// was given.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, join } from 'node:path';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { freePortOn, portProbe } from '../common/ports.js';
import { PeerActivity, SecureGateway } from '../link/gateway.js';
import type { DeviceInfo } from '../native/binding.js';
import { readBuildInfo } from '../native/binding.js';
import type { WorkerConfig } from './config.js';
import { ControlServer } from './control-server.js';
import { CoordinatorWatch, Drain } from './leave.js';
import { calibrateDevices, medianSpeeds, type DeviceSpeed } from '../host/calibration.js';
import { cpuQuota } from '../host/cgroup.js';
import { LocalModels } from './local-models.js';
import { describeServer, withReport, type MemoryReport } from './server-devices.js';
import { measureDevices, type ServedDevice } from './devices.js';
import { SeatListener, SeatPool } from './seats.js';
import { PeerLinks } from './peer-links.js';
import { RpcRouter } from './rpc-router.js';
import { hostMemory } from '../host/host-memory.js';
import { loadOrCreateWorkerId } from './identity.js';
import { materialChange, MdnsAdvertiser, type AdvertFacts } from './mdns.js';
import { RpcServerSupervisor } from './supervisor.js';
import { cacheUsage, prepareCacheDir } from './tensor-cache.js';
import type {
  WireBuildInfo, WireDrain, WireDrainRequest, WireHealth, WireLink, WireOpenPeerLink, WireOpenPeerLinkRequest, WireRelease, WireReleaseRequest, WireWatch, WireWorkerInfo, WorkerId,
} from '../link/worker-wire.js';

const MEMORY_POLL_MS = 5000;
/** How often the worker looks whether its rpc server is idle and a new calibration is due. */
const RECALIBRATE_LOOK_MS = 5000;
/** Speeds reported are the median of this many last measurements: a change shows after two agree. */
const SPEED_HISTORY = 3;

/** utime + stime of a process, in clock ticks, from /proc/PID/stat; -1 when unknown. */
export function processCpuTicks(pid: number | null): number {
  if (!pid) return -1;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return -1;
  }
}

/**
 * An rpc link whose coordinator sent nothing on it or on its control link for this long is dead (a
 * coordinator heartbeats every second and its control channel pings every 2 s).
 */
const STALE_LINK_MS = 8000;

/** How long the gateways let their links finish sending (the control service's last replies) when the worker stops. */
const GATEWAY_GRACE_MS = 1000;

/** Fails with a clear message when something already listens on host:port. */
async function assertPortFree(host: string, port: number, what: string, flag: string): Promise<void> {
  const e = await portProbe(host, port);
  if (!e) return;
  throw new HearthError(
    ErrorCode.FailedPrecondition,
    e.code === 'EADDRINUSE'
      ? `${what} port ${port} on ${host} is already in use (another worker or ggml-rpc-server?); choose another with ${flag}`
      : `cannot use ${what} port ${port} on ${host}: ${e.message}`,
  );
}

export class WorkerDaemon {
  readonly config: WorkerConfig;
  readonly #log: Logger;
  #id: WorkerId | null = null;
  #build: WireBuildInfo | null = null;
  #devices: ServedDevice[] = [];
  /** The machine's devices as the rpc server's executable described them at start. */
  #machine: DeviceInfo[] = [];
  /** The newest memory figures of the serving process. */
  #report: MemoryReport | null = null;
  /** Each device's measured decode speed (empty when calibration is off or failed): the median of the last measurements. */
  #speeds: DeviceSpeed[] = [];
  /** The last few measurements, so that one noisy run does not move the figure (nor the coordinator's plan). */
  #history: DeviceSpeed[][] = [];
  #localModels: LocalModels | null = null;
  #recalibrateTimer: NodeJS.Timeout | null = null;
  #calibrating = false;
  #calibratedAt = 0;
  /** The rpc server's CPU time at the last look: unchanged means nobody is decoding on it. */
  #serverCpu = -1;
  #supervisor: RpcServerSupervisor | null = null;
  #control: ControlServer | null = null;
  #mdns: MdnsAdvertiser | null = null;
  /** With a token: the authenticated entrances on the public ports. */
  #gateways: SecureGateway[] = [];
  /** The servers engines are joined to, one per connection; the open cluster's listener for them. */
  #seats: SeatPool | null = null;
  #seatListener: SeatListener | null = null;
  /** The relays this worker's rpc servers dial to reach other workers' (tensor mode's peer links; none without a token). */
  #peerLinks: PeerLinks | null = null;
  #memoryTimer: NodeJS.Timeout | null = null;
  #startedAt = Date.now();
  /** Who counts on this worker (a coordinator's heartbeats): a drain waits for its release. */
  readonly #watch = new CoordinatorWatch();
  /** Set once the worker leaves the cluster (a signal, or a Drain call). */
  #drain: Drain | null = null;
  #leaving: Promise<void> | null = null;
  /** The advert's withdrawal, once a drain began. */
  #advertGone: Promise<void> | null = null;
  #stopping: Promise<void> | null = null;
  #stoppedResolve!: () => void;
  /** Resolves once the worker has stopped, however that came about (a signal, a Drain call, stop()). */
  readonly stopped = new Promise<void>((resolve) => (this.#stoppedResolve = resolve));

  constructor(config: WorkerConfig, log: Logger) {
    this.config = config;
    this.#log = log;
  }

  get id(): WorkerId | null {
    return this.#id;
  }

  /** Checks everything that can be checked, then starts the rpc server, the control service and the advert. */
  async start(): Promise<void> {
    const c = this.config;
    // The build and the devices come from the rpc server's executable: the daemon never opens a GPU
    // backend itself (requireNativeBuild, inside, throws the "build it with ..." error when it is missing).
    const described = await describeServer();
    const buildInfo = readBuildInfo();
    this.#build = {
      llama_cpp_release: buildInfo.llamaCppRelease,
      ggml_version: described.system.ggmlVersion,
      ggml_commit: buildInfo.llamaCppCommit ?? described.system.ggmlCommit,
      rpc_protocol: described.system.rpcProtocol,
      backends: described.system.backends,
    };
    this.#machine = described.devices;
    this.#devices = this.#measure();
    this.#id = loadOrCreateWorkerId(c.stateDir, c.controlPort);
    if (c.cacheDir) prepareCacheDir(c.cacheDir);
    await assertPortFree(c.host, c.rpcPort, 'rpc', '--rpc-port');
    await assertPortFree(c.host, c.controlPort, 'control', '--control-port');

    if (!c.secret && c.host !== '127.0.0.1') {
      this.#log.warn(
        { host: c.host, rpcPort: c.rpcPort, insecure: c.insecure },
        `the llama.cpp RPC port ${c.host}:${c.rpcPort} has no authentication: anyone who can reach it can use this machine's devices; give the cluster a token (\`hearth token\`), bind --host 127.0.0.1, or firewall it to your cluster`,
      );
    }
    if (c.calibrate) await this.#calibrate();
    // With a token, llama.cpp's server and the control service listen on loopback only; the public
    // ports are the gateways, which join a connection to them only after the TLS-PSK handshake.
    // llama.cpp's server always listens on loopback: the public rpc port gives each connection (each
    // coordinator engine, one per model it serves) a server of its own (seats.ts).
    const inner = { rpcPort: await freePortOn('127.0.0.1'), controlPort: c.secret ? 0 : c.controlPort };
    const serverOptions = { host: '127.0.0.1', port: inner.rpcPort, threads: c.threads, cacheDir: c.cacheDir, devices: this.#devices.map((d) => d.name) };
    this.#supervisor = new RpcServerSupervisor(serverOptions, this.#log.child({ part: 'rpc-server' }));
    this.#seats = new SeatPool(this.#supervisor, serverOptions, this.#log.child({ part: 'rpc-server' }));
    const seats = this.#seats;
    // An engine's connection gets a seat; another worker's peer link goes to the server it names.
    const router = new RpcRouter(seats, this.#log.child({ part: 'rpc-router' }));
    this.#peerLinks = new PeerLinks({ secret: c.secret, enginesConnected: () => seats.inUse, log: this.#log.child({ part: 'peer-link' }) });
    this.#supervisor.on('state', (state) => this.#log.info({ state }, `worker state ${state}`));
    this.#supervisor.on('memory', (report) => (this.#report = report));
    await this.#supervisor.start();

    try {
      this.#control = new ControlServer({
        info: (r) => this.info(r),
        health: (r) => this.health(r),
        drain: (r) => this.#onDrain(r),
        release: (r) => this.#onRelease(r),
        openPeerLink: (r) => this.#onOpenPeerLink(r),
      });
      const controlPort = await this.#control.listen(c.secret ? '127.0.0.1' : c.host, inner.controlPort);
      if (!c.secret) {
        this.#seatListener = new SeatListener(router);
        await this.#seatListener.listen(c.host, c.rpcPort);
      }
      if (c.secret) {
        const log = this.#log.child({ part: 'link' });
        const activity = new PeerActivity();
        const rpc = new SecureGateway({ secret: c.secret, kind: 'rpc', target: router, log, activity: { watch: activity, staleAfterMs: STALE_LINK_MS } });
        const control = new SecureGateway({ secret: c.secret, kind: 'control', target: { host: '127.0.0.1', port: controlPort }, log, activity: { record: activity } });
        this.#gateways = [rpc, control];
        await rpc.listen(c.host, c.rpcPort);
        await control.listen(c.host, c.controlPort);
      }
      if (c.mdns) {
        this.#mdns = new MdnsAdvertiser(this.#advertFacts(), this.#log.child({ part: 'mdns' }));
        this.#mdns.start();
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    if (c.modelsDir && c.cacheDir) {
      this.#localModels = new LocalModels(c.modelsDir, join(c.cacheDir, 'rpc'), this.#log.child({ part: 'models' }));
      this.#localModels.start();
    }
    if (c.calibrate && c.recalibrateMs > 0) {
      this.#recalibrateTimer = setInterval(() => void this.#maybeRecalibrate(), Math.min(c.recalibrateMs, RECALIBRATE_LOOK_MS));
      this.#recalibrateTimer.unref();
    }
    this.#memoryTimer = setInterval(() => this.#refreshMemory(), MEMORY_POLL_MS);
    this.#memoryTimer.unref();
    const cache = c.cacheDir ? cacheUsage(c.cacheDir) : null;
    this.#log.info(
      {
        workerId: this.#id,
        name: c.name,
        rpc: `${c.host}:${c.rpcPort}`,
        control: `${c.host}:${c.controlPort}`,
        devices: this.#devices.map((d) => `${d.name} (${d.backend}, ${(d.freeBytes / 2 ** 30).toFixed(1)}/${(d.totalBytes / 2 ** 30).toFixed(1)} GiB free${this.#speedText(d.name)})`),
        threads: c.threads,
        memoryCap: c.memoryBytes,
        build: this.#build,
        cache: c.cacheDir ? { dir: c.cacheDir, ...cache } : 'off',
        link: c.secret ? { secure: true, clusterId: c.secret.clusterId } : { secure: false, insecure: c.insecure },
      },
      'worker ready',
    );
  }

  /** `request`: a coordinator's watch (see leave.ts). */
  info(request: WireWatch = { watch_ms: 0 }): WireWorkerInfo {
    this.#watch.note(request.watch_ms, Date.now());
    // Measured at each ask: a coordinator that just loaded or unloaded a model plans with what is free now.
    try {
      if (this.#machine.length > 0) this.#devices = this.#measure();
    } catch {
      // the figures of the last look stand
    }
    const c = this.config;
    const host = hostMemory();
    const cache = c.cacheDir ? cacheUsage(c.cacheDir) : { bytes: 0, files: 0 };
    return {
      worker_id: this.#id ?? '',
      name: c.name,
      hostname: hostname(),
      state: this.#supervisor?.state ?? 'STARTING',
      build: this.#build!,
      devices: this.#devices.map((d) => ({
        name: d.name,
        backend: d.backend,
        type: d.type,
        description: d.description,
        free_bytes: String(d.freeBytes),
        total_bytes: String(d.totalBytes),
        bytes_per_second: this.#speeds.find((x) => x.device === d.name)?.bytesPerSecond ?? 0,
        bytes_per_second_by_type: { ...this.#speeds.find((x) => x.device === d.name)?.byType },
      })),
      rpc_host: c.host === '0.0.0.0' ? '' : c.host,
      rpc_port: c.rpcPort,
      control_port: this.#publicControlPort(),
      host_total_bytes: String(host.totalBytes),
      host_available_bytes: String(host.availableBytes),
      cache: { enabled: c.cacheDir !== null, dir: c.cacheDir ?? '', bytes: String(cache.bytes), files: cache.files },
      threads: c.threads,
      rpc_restarts: this.#supervisor?.restarts ?? 0,
      started_at_ms: String(this.#startedAt),
      link: this.#linkView(),
      limits: {
        memory_cap_bytes: String(c.memoryBytes ?? 0),
        cgroup_memory_bytes: String(host.cgroup?.limitBytes ?? 0),
        cpu_quota_cores: cpuQuota()?.cores ?? 0,
      },
      models: (this.#localModels?.models ?? []).map((m) => ({
        content_id: m.contentId,
        file: basename(m.file),
        bytes: String(m.bytes),
        state: m.state,
        progress: m.progress,
        error: m.error,
      })),
      draining: this.#drain !== null,
      drain_reason: this.#drain?.reason ?? '',
      held_bytes: String(this.#seats?.heldBytes() ?? 0),
    };
  }

  /** Devices with memory as the host, its cgroup and the --memory cap allow; the rpc server's holdings count against the cap. */
  #measure(): ServedDevice[] {
    return measureDevices(withReport(this.#machine, this.#report), this.config.devices, {
      capBytes: this.config.memoryBytes,
      heldBytes: this.#seats?.heldBytes() ?? 0,
    });
  }

  /** Measures each device before the rpc server starts (so nothing competes with it); a failure only loses the figures. */
  async #calibrate(): Promise<void> {
    this.#calibrating = true;
    try {
      const started = Date.now();
      const before = this.#speeds;
      this.#history = [...this.#history, await calibrateDevices(this.#devices.map((d) => d.name), this.config.threads)].slice(-SPEED_HISTORY);
      this.#speeds = medianSpeeds(this.#history);
      const speeds = Object.fromEntries(this.#speeds.map((s) => [s.device, `${(s.bytesPerSecond / 1e9).toFixed(1)} GB/s`]));
      const moved = this.#speeds.some((s) => {
        const then = before.find((b) => b.device === s.device)?.bytesPerSecond;
        return then !== undefined && Math.abs(s.bytesPerSecond / then - 1) >= 0.1;
      });
      if (before.length === 0) this.#log.info({ speeds, threads: this.config.threads, ms: Date.now() - started }, 'devices calibrated');
      else if (moved) this.#log.info({ speeds, before: Object.fromEntries(before.map((s) => [s.device, `${(s.bytesPerSecond / 1e9).toFixed(1)} GB/s`])) }, 'device speeds changed');
    } catch (e) {
      this.#log.warn({ err: messageOf(e) }, 'device calibration failed; the coordinator will treat these devices as typical');
    } finally {
      this.#calibratedAt = Date.now();
      this.#calibrating = false;
    }
  }

  /**
   * Measures again when it is time and the rpc server has been idle since the last look (its CPU time
   * did not move), so a machine that got busy, or freed up, shows in GetInfo without taking cycles
   * from a decode in progress.
   */
  async #maybeRecalibrate(): Promise<void> {
    if (this.#calibrating || this.#drain || this.#stopping) return;
    const cpu = processCpuTicks(this.#supervisor?.pid ?? null);
    // A further server in use computes for another engine: not idle.
    const idle = cpu >= 0 && cpu === this.#serverCpu && (this.#seats?.inUse ?? 0) <= 1;
    this.#serverCpu = cpu;
    if (!idle || Date.now() - this.#calibratedAt < this.config.recalibrateMs) return;
    await this.#calibrate();
  }

  #speedText(device: string): string {
    const speed = this.#speeds.find((x) => x.device === device);
    return speed ? `, ${(speed.bytesPerSecond / 1e9).toFixed(1)} GB/s` : '';
  }

  #publicControlPort(): number {
    return this.config.secret ? this.config.controlPort : (this.#control?.port ?? this.config.controlPort);
  }

  #linkView(): WireLink {
    const sum = (k: 'accepted' | 'refused' | 'tokenMismatches') => this.#gateways.reduce((n, g) => n + g.stats[k], 0);
    return {
      secure: this.config.secret !== null,
      cluster_id: this.config.secret?.clusterId ?? '',
      accepted: sum('accepted'),
      refused: sum('refused'),
      token_mismatches: sum('tokenMismatches'),
    };
  }

  /** `request`: a coordinator's watch (see leave.ts). */
  health(request: WireWatch = { watch_ms: 0 }): WireHealth {
    this.#watch.note(request.watch_ms, Date.now());
    const state = this.#supervisor?.state ?? 'STARTING';
    return {
      state,
      ready: state === 'READY',
      rpc_server_pid: this.#supervisor?.pid ?? 0,
      rpc_restarts: this.#supervisor?.restarts ?? 0,
      uptime_ms: String(Date.now() - this.#startedAt),
      draining: this.#drain !== null,
      drain_reason: this.#drain?.reason ?? '',
    };
  }

  /**
   * Leaves the cluster: says it is draining and withdraws the advert, waits until the coordinator
   * using this worker has re-planned without it and released it (at once when none uses it; at most
   * the drain timeout), then stops. Idempotent: the first reason stays.
   */
  leave(reason: string): Promise<void> {
    this.#leaving ??= (async () => {
      if (this.#stopping) return this.#stopping;
      const drain = this.#beginDrain(reason);
      const end = await drain.ended;
      // A drain nobody watched ended as it began, which #beginDrain said.
      if (drain.watched) {
        const log = end.outcome === 'released' ? this.#log.info.bind(this.#log) : this.#log.warn.bind(this.#log);
        log({ reason, outcome: end.outcome, ms: Date.now() - drain.startedAt }, end.message);
      }
      await this.stop();
    })();
    return this.#leaving;
  }

  #beginDrain(reason: string): Drain {
    if (this.#drain) return this.#drain;
    const drain = new Drain(reason, this.config.drainTimeoutMs, this.#watch);
    this.#drain = drain;
    this.#log.info(
      { reason, timeoutMs: drain.timeoutMs },
      drain.watched
        ? `leaving (${reason}): waiting for the coordinator to re-plan without this worker and release it (at most ${drain.timeoutMs / 1000} s)`
        : `leaving (${reason}): no coordinator uses this worker`,
    );
    // Withdrawn now (a goodbye), so that no coordinator finds it anew; with mDNS, the goodbye also
    // makes the coordinator look at once instead of at its next heartbeat.
    const mdns = this.#mdns;
    this.#mdns = null;
    this.#advertGone = mdns?.stop().catch((e: unknown) => this.#log.warn({ err: messageOf(e) }, 'could not withdraw the mDNS advert')) ?? null;
    return drain;
  }

  async #onDrain(request: WireDrainRequest): Promise<WireDrain> {
    const reason = request.reason.trim() || 'drain requested';
    void this.leave(reason);
    // #beginDrain ran synchronously inside leave(), unless the worker was stopping already.
    const drain = this.#drain;
    if (!drain) throw new HearthError(ErrorCode.Unavailable, 'the worker is stopping');
    const end = request.wait ? await drain.ended : null;
    return {
      reason: drain.reason,
      watched: drain.watched,
      timeout_ms: drain.timeoutMs,
      started_at_ms: String(drain.startedAt),
      outcome: end?.outcome ?? '',
      message: end?.message ?? '',
    };
  }

  async #onOpenPeerLink(request: WireOpenPeerLinkRequest): Promise<WireOpenPeerLink> {
    if (!this.#peerLinks) throw new HearthError(ErrorCode.Unavailable, 'the worker is not serving yet');
    return { address: await this.#peerLinks.open(request.endpoint) };
  }

  #onRelease(request: WireReleaseRequest): WireRelease {
    this.#watch.clear();
    if (!this.#drain) return { leaving: false };
    this.#drain.release(request.reason);
    return { leaving: true };
  }

  /**
   * Stops advert (goodbye), rpc server, control service and the secure gateways, in that order: a
   * reply in flight (a Release, a Drain) still leaves through its gateway. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      if (this.#memoryTimer) clearInterval(this.#memoryTimer);
      if (this.#recalibrateTimer) clearInterval(this.#recalibrateTimer);
      this.#localModels?.stop();
      const steps: [string, () => Promise<void>][] = [
        ['mdns', async () => this.#advertGone ?? this.#mdns?.stop()],
        ['rpc-server', async () => void (await Promise.all([this.#seatListener?.close(), this.#seats?.close(), this.#supervisor?.stop(), this.#peerLinks?.close()]))],
        ['control', async () => this.#control?.close()],
        ['link', async () => void (await Promise.all(this.#gateways.map((g) => g.close(GATEWAY_GRACE_MS))))],
      ];
      for (const [part, step] of steps) {
        try {
          await step();
        } catch (e) {
          this.#log.error({ part, err: messageOf(e) }, 'error while stopping');
        }
      }
      this.#log.info('worker stopped');
      this.#stoppedResolve();
    })();
    return this.#stopping;
  }

  #advertFacts(): AdvertFacts {
    return {
      workerId: this.#id!,
      name: this.config.name,
      controlPort: this.#publicControlPort(),
      rpcPort: this.config.rpcPort,
      clusterId: this.config.secret?.clusterId ?? null,
      rpcProtocol: this.#build!.rpc_protocol,
      backend: [...new Set(this.#devices.map((d) => d.backend))].join('+'),
      memTotalBytes: this.#devices.reduce((s, d) => s + d.totalBytes, 0),
      memFreeBytes: this.#devices.reduce((s, d) => s + d.freeBytes, 0),
    };
  }

  #refreshMemory(): void {
    try {
      this.#devices = this.#measure();
      if (!this.#mdns) return;
      const before = this.#mdns.facts;
      const now = this.#advertFacts();
      if (materialChange(before.memFreeBytes, now.memFreeBytes, now.memTotalBytes)) {
        this.#log.info({ before: before.memFreeBytes, now: now.memFreeBytes }, 'free memory changed; re-announcing');
        this.#mdns.update(now);
      }
    } catch (e) {
      this.#log.warn({ err: messageOf(e) }, 'could not measure device memory');
    }
  }
}
