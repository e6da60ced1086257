// Seats: the worker's rpc port serves several engines at once. llama.cpp's rpc server takes one client
// at a time (a second client's HELLO waits until the first leaves), and a coordinator that serves
// several models runs an engine per model. So each connection to the rpc port gets a server of its
// own: the first free one (the primary, which the supervisor keeps running), or another started for
// it on a loopback port, stopped when its connection ends (its buffers are freed then anyway; the
// process would only hold memory the cluster could use).
import { createServer, type Server, type Socket } from 'node:net';

import { ErrorCode, HearthError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { freePortOn } from '../common/ports.js';
import type { RpcRouter } from './rpc-router.js';
import { RpcServerProcess, type RpcServerOptions } from './rpc-server-process.js';
import { residentBytes } from './devices.js';
import type { RpcServerSupervisor } from './supervisor.js';

/** How long a connection waits for the primary server to be released before another is started for it. */
const PRIMARY_WAIT_MS = 100;
/** How long a further server that its connection left waits for another before it stops. */
const IDLE_SERVER_MS = 5000;
/** How long a connection waits for a crashed primary server to be restarted (the supervisor's back-off is at most 10 s). */
const RESTART_WAIT_MS = 12_000;

/** A connection's own server, until `release`. */
export interface Seat {
  endpoint: { host: string; port: number };
  release(): void;
}

export class SeatPool {
  readonly #primary: RpcServerSupervisor;
  readonly #options: RpcServerOptions;
  readonly #log: Logger;
  #primaryTaken = false;
  /** Connections waiting a moment for the primary to be released. */
  #primaryFree: (() => void)[] = [];
  /** Further servers no connection uses now, each stopped when its timer runs out. */
  #idle: { server: RpcServerProcess; timer: NodeJS.Timeout }[] = [];
  readonly #extras = new Set<RpcServerProcess>();
  #closed = false;

  /** `options`: how a further server is started (its port is chosen each time, on loopback). */
  constructor(primary: RpcServerSupervisor, options: RpcServerOptions, log: Logger) {
    this.#primary = primary;
    this.#options = options;
    this.#log = log;
  }

  /** Servers serving a connection now. */
  get inUse(): number {
    return (this.#primaryTaken ? 1 : 0) + this.#extras.size - this.#idle.length;
  }

  /** Memory every server holds (resident): what the worker lends counts it against its cap. */
  heldBytes(): number {
    let bytes = residentBytes(this.#primary.pid);
    for (const s of this.#extras) bytes += residentBytes(s.pid);
    return bytes;
  }

  /**
   * A server no other connection uses: the primary when it is free and running; else a further server
   * that a connection left a moment ago; else a new one. llama.cpp's client opens several short
   * connections per worker before the one that carries a load (device count, memory, buffer types),
   * one after another: each finds the server the last one left instead of starting its own.
   */
  async take(): Promise<Seat> {
    if (this.#closed) throw new HearthError(ErrorCode.Unavailable, 'the worker is stopping');
    // A connection that is about to end (an engine that just stopped) leaves the primary to the next
    // one: wait a moment for it before taking another server, so that one engine keeps the server
    // whose pid the worker reports.
    if (this.#primaryTaken && this.#idle.length === 0) await Promise.race([new Promise<void>((resolve) => this.#primaryFree.push(resolve)), new Promise((r) => setTimeout(r, PRIMARY_WAIT_MS))]);
    // A free primary that is being restarted (it crashed) is waited for, not replaced: the engine that
    // connects now must be on the server whose pid and restarts the worker reports.
    if (!this.#primaryTaken && this.#primary.state !== 'READY' && this.#primary.state !== 'STOPPING') await this.#primaryReady(RESTART_WAIT_MS);
    const primary = this.#primary.endpoint;
    if (!this.#primaryTaken && primary && this.#primary.state === 'READY') {
      this.#primaryTaken = true;
      let released = false;
      return {
        endpoint: hostPort(primary),
        release: () => {
          if (released) return;
          released = true;
          this.#primaryTaken = false;
          this.#primaryFree.splice(0).forEach((f) => f());
        },
      };
    }
    const server = this.#takeIdle() ?? (await this.#start());
    let released = false;
    return {
      endpoint: hostPort(server.endpoint),
      release: () => {
        if (released) return;
        released = true;
        this.#leaveIdle(server);
      },
    };
  }

  #takeIdle(): RpcServerProcess | null {
    for (let entry = this.#idle.shift(); entry; entry = this.#idle.shift()) {
      clearTimeout(entry.timer);
      if (entry.server.running) return entry.server;
    }
    return null;
  }

  async #start(): Promise<RpcServerProcess> {
    const port = await freePortOn('127.0.0.1');
    const started = Date.now();
    const server = await RpcServerProcess.start({ ...this.#options, host: '127.0.0.1', port }, {
      onLine: (stream, line) => this.#log.debug({ stream, rpcServer: true, port }, line),
    });
    this.#extras.add(server);
    void server.exited.then(() => {
      this.#extras.delete(server);
      this.#idle = this.#idle.filter((e) => e.server !== server);
    });
    if (this.#closed) void server.stop();
    this.#log.info({ port, pid: server.pid, ms: Date.now() - started, servers: this.#extras.size + 1 }, 'another engine connected: started an rpc server for it');
    return server;
  }

  /** A further server its connection left waits a moment for the next one (its buffers are freed already), then stops. */
  #leaveIdle(server: RpcServerProcess): void {
    if (this.#closed || !server.running) {
      void server.stop();
      return;
    }
    const timer = setTimeout(() => {
      this.#idle = this.#idle.filter((e) => e.server !== server);
      this.#extras.delete(server);
      void server.stop().then(() => this.#log.info({ port: server.endpoint, servers: this.#extras.size + 1 }, 'an engine left: stopped its rpc server'));
    }, IDLE_SERVER_MS);
    timer.unref();
    this.#idle.push({ server, timer });
  }

  /** Resolves once the primary is ready again, or after `ms`. */
  #primaryReady(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#primary.off('state', onState);
        resolve();
      };
      const onState = (state: string) => {
        if (state === 'READY' || state === 'STOPPING') done();
      };
      const timer = setTimeout(done, ms);
      this.#primary.on('state', onState);
    });
  }

  /** The loopback ports of the servers running now (the primary and every further one): a peer link may reach any of them. */
  serverPorts(): Set<number> {
    const ports = new Set<number>();
    const primary = this.#primary.endpoint;
    if (primary && this.#primary.pid !== null) ports.add(hostPort(primary).port);
    for (const s of this.#extras) if (s.running) ports.add(hostPort(s.endpoint).port);
    return ports;
  }

  /** Stops the further servers (the supervisor stops the primary). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const e of this.#idle) clearTimeout(e.timer);
    this.#idle = [];
    await Promise.all([...this.#extras].map((s) => s.stop()));
    this.#extras.clear();
  }
}

/** The rpc port for open clusters: a plain TCP listener that gives each connection a seat, or joins a peer link to its server (rpc-router.ts). */
export class SeatListener {
  readonly #server: Server;
  readonly #open = new Set<Socket>();

  constructor(router: RpcRouter) {
    this.#server = createServer({ pauseOnConnect: true }, (socket) => {
      this.#open.add(socket);
      socket.once('close', () => this.#open.delete(socket));
      socket.on('error', () => undefined);
      void router.join(socket);
    });
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) =>
        reject(new HearthError(ErrorCode.FailedPrecondition, e.code === 'EADDRINUSE' ? `rpc port ${port} on ${host} is already in use; choose another with --rpc-port` : `cannot listen on ${host}:${port} for the rpc port: ${e.message}`));
      this.#server.once('error', onError);
      this.#server.listen({ host, port, exclusive: true }, () => {
        this.#server.off('error', onError);
        const addr = this.#server.address();
        resolve(typeof addr === 'object' && addr ? addr.port : port);
      });
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#open) s.destroy();
    this.#open.clear();
    await closed;
  }
}

function hostPort(endpoint: string): { host: string; port: number } {
  const i = endpoint.lastIndexOf(':');
  return { host: endpoint.slice(0, i), port: Number(endpoint.slice(i + 1)) };
}
