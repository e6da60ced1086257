// The kernel's own TCP counters for this process's connections (`ss -tin`):
// - bytes sent to each RPC server (bytes_acked). llama.cpp's RPC client keeps one connection per server
//   for as long as a model is loaded, so after a load these are the bytes the load sent (weights, or
//   hashes when the worker's tensor cache already had them);
// - the round-trip time to each peer (minrtt: the smallest seen, so neither delayed ACKs nor queues
//   inflate it), from which the planner prices a hop to a worker.
import { execFileSync } from 'node:child_process';

/** Each socket of `pid` in `ss -Htinp` output: its peer address and its info line. */
function socketsOf(output: string, pid: number): { peer: string; info: string }[] {
  const sockets: { peer: string; info: string }[] = [];
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const entry = lines[i]!;
    if (entry.startsWith('\t') || entry.trim() === '') continue;
    const info = lines[i + 1]?.startsWith('\t') ? lines[i + 1]! : '';
    if (!new RegExp(`pid=${pid},`).test(entry)) continue;
    const peer = entry.trim().split(/\s+/)[3];
    if (peer) sockets.push({ peer, info });
  }
  return sockets;
}

/** Parses `ss -Htinp` output: bytes acked per peer address, for sockets owned by `pid`. */
export function parseSsBytes(output: string, pid: number): Map<string, number> {
  const totals = new Map<string, number>();
  for (const { peer, info } of socketsOf(output, pid)) {
    const acked = /bytes_acked:(\d+)/.exec(info);
    if (acked) totals.set(peer, (totals.get(peer) ?? 0) + Number(acked[1]));
  }
  return totals;
}

/** Parses `ss -Htinp` output: the smallest round trip (ms) seen to each peer address, for sockets owned by `pid`. */
export function parseSsMinRtt(output: string, pid: number): Map<string, number> {
  const rtts = new Map<string, number>();
  for (const { peer, info } of socketsOf(output, pid)) {
    const m = /\bminrtt:([\d.]+)/.exec(info);
    if (m) rtts.set(peer, Math.min(rtts.get(peer) ?? Infinity, Number(m[1])));
  }
  return rtts;
}

function ssEstablished(): string | null {
  try {
    return execFileSync('ss', ['-Htinp', 'state', 'established'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return null;
  }
}

/** The smallest round trip (ms) to each peer this process has a connection to; empty when `ss` is unavailable. */
export function minRtts(pid: number = process.pid): Map<string, number> {
  const output = ssEstablished();
  return output === null ? new Map() : parseSsMinRtt(output, pid);
}

/** Bytes sent to each endpoint, or null when `ss` is unavailable (not Linux, no iproute2). */
export function bytesSentTo(endpoints: readonly string[], pid: number = process.pid): Record<string, number> | null {
  const output = ssEstablished();
  if (output === null) return null;
  const totals = parseSsBytes(output, pid);
  return Object.fromEntries(endpoints.map((e) => [e, totals.get(e) ?? 0]));
}
