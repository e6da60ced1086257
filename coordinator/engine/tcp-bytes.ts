// How many bytes this process has sent to each RPC server, from the kernel's own TCP counters
// (`ss -tin`, bytes_acked). llama.cpp's RPC client keeps one connection per server for as long as a
// model is loaded, so after a load these are the bytes the load sent (weights, or hashes when the
// worker's tensor cache already had them).
import { execFileSync } from 'node:child_process';

/** Parses `ss -Htinp` output: bytes acked per peer address, for sockets owned by `pid`. */
export function parseSsBytes(output: string, pid: number): Map<string, number> {
  const totals = new Map<string, number>();
  const lines = output.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const entry = lines[i]!;
    if (entry.startsWith('\t') || entry.trim() === '') continue;
    const info = lines[i + 1]?.startsWith('\t') ? lines[i + 1]! : '';
    if (!new RegExp(`pid=${pid},`).test(entry)) continue;
    const peer = entry.trim().split(/\s+/)[3];
    const acked = /bytes_acked:(\d+)/.exec(info);
    if (!peer || !acked) continue;
    totals.set(peer, (totals.get(peer) ?? 0) + Number(acked[1]));
  }
  return totals;
}

/** Bytes sent to each endpoint, or null when `ss` is unavailable (not Linux, no iproute2). */
export function bytesSentTo(endpoints: readonly string[], pid: number = process.pid): Record<string, number> | null {
  let output: string;
  try {
    output = execFileSync('ss', ['-Htinp', 'state', 'established'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return null;
  }
  const totals = parseSsBytes(output, pid);
  return Object.fromEntries(endpoints.map((e) => [e, totals.get(e) ?? 0]));
}
