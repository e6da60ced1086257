// Port helpers.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Below the kernel's ephemeral range (where it picks source ports for outgoing connections). */
const PICK_FROM = 20_000;

/** The first port of the kernel's ephemeral range (Linux's default when it cannot be read). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** A port the OS picks as free on `host` (in the ephemeral range). */
function osPickedPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A port that was free a moment ago on `host`, for another process to bind soon after. It is drawn
 * below the kernel's ephemeral range: a port from inside it can be taken in the meantime as the source
 * port of any outgoing connection on the machine, and was (a worker then found its port in use).
 */
export async function freePortOn(host: string): Promise<number> {
  const top = ephemeralLow();
  if (top - PICK_FROM >= 1000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = PICK_FROM + Math.floor(Math.random() * (top - PICK_FROM));
      if ((await portProbe(host, port)) === null) return port;
    }
  }
  return osPickedPort(host);
}

/** Tries to bind host:port exclusively and lets go at once: null when it is free, else the bind error. */
export async function portProbe(host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (e: NodeJS.ErrnoException) => resolve(e));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(null)));
  });
}
