// How a download shows its progress: a line redrawn in place on a terminal, log lines otherwise.
import type { Logger } from '../common/logger.js';
import type { DownloadProgress, ProgressSink } from '../models/download.js';
import { formatBytes } from './format.js';

/** "1m05s", "2h03m", "12s". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export interface ProgressFigures {
  readonly percent: number | null;
  /** Bytes per second over this run (resumed bytes do not count), or null before there is a rate. */
  readonly rate: number | null;
  readonly etaSeconds: number | null;
}

export function progressFigures(p: DownloadProgress, elapsedMs: number): ProgressFigures {
  const fresh = p.received - p.resumedFrom;
  const rate = elapsedMs > 0 && fresh > 0 ? (fresh * 1000) / elapsedMs : null;
  const percent = p.total ? (100 * p.received) / p.total : null;
  const etaSeconds = rate && p.total !== null ? Math.max(0, p.total - p.received) / rate : null;
  return { percent, rate, etaSeconds };
}

/** "model-Q4_K_M.gguf  1.20 GiB / 4.50 GiB  27%  35.2 MiB/s  ETA 1m36s" */
export function progressLine(p: DownloadProgress, elapsedMs: number): string {
  const f = progressFigures(p, elapsedMs);
  const parts = [p.file, p.total === null ? formatBytes(p.received) : `${formatBytes(p.received)} / ${formatBytes(p.total)}`];
  if (f.percent !== null) parts.push(`${Math.floor(f.percent)}%`);
  if (f.rate !== null) parts.push(`${formatBytes(f.rate)}/s`);
  if (f.etaSeconds !== null && p.received !== p.total) parts.push(`ETA ${formatDuration(f.etaSeconds)}`);
  return parts.join('  ');
}

/**
 * Progress for people: on a terminal (stderr is one) a line redrawn ten times a second; elsewhere a
 * log line every `logEveryMs` and one when a file is complete.
 */
export function downloadProgress(log: Logger, stream: NodeJS.WriteStream = process.stderr, logEveryMs = 5000): ProgressSink {
  let file: string | null = null;
  let started = 0;
  let shown = 0;
  return (p) => {
    const now = Date.now();
    if (p.file !== file) {
      file = p.file;
      started = now;
      shown = 0;
    }
    const done = p.total !== null && p.received >= p.total;
    if (stream.isTTY) {
      if (!done && now - shown < 100) return;
      shown = now;
      stream.write(`\r${progressLine(p, now - started)}\x1b[K${done ? '\n' : ''}`);
      return;
    }
    if (!done && now - shown < logEveryMs) return;
    if (shown === 0 && !done) {
      shown = now; // the first line waits until there is a rate to tell
      return;
    }
    shown = now;
    const f = progressFigures(p, now - started);
    log.info(
      {
        file: p.file,
        bytes: p.received,
        total: p.total,
        percent: f.percent === null ? null : Math.floor(f.percent),
        bytesPerSecond: f.rate === null ? null : Math.round(f.rate),
        etaSeconds: f.etaSeconds === null ? null : Math.round(f.etaSeconds),
      },
      done ? `downloaded ${p.file}` : `downloading ${progressLine(p, now - started)}`,
    );
  };
}
