// A benchmark's coordinator log: pino's JSON lines from the process, copied to the run's log file and
// kept as parsed lines, so a bench can say where a pause or a switch went on the client's clock.
import type { ChildProcess } from 'node:child_process';
import { writeSync } from 'node:fs';
import { createInterface } from 'node:readline';

/** The fields of a coordinator log line the benches read (each line has more). */
export interface LogLine {
  time: number;
  level?: number;
  msg: string;
  model?: string;
  engine?: boolean;
  layers?: string[];
  seconds?: number;
  phases?: { connectSeconds: number; weightsSeconds: number; contextSeconds: number };
  bytesSent?: Record<string, number>;
}

/** Copies `child`'s stdout and stderr to `logFd`, line by line, and pushes each JSON log line onto `lines`. */
export function followCoordinatorLog(child: ChildProcess, logFd: number, lines: LogLine[]): void {
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      writeSync(logFd, `${line}\n`);
      try {
        const parsed = JSON.parse(line) as LogLine;
        if (typeof parsed.time === 'number' && typeof parsed.msg === 'string') lines.push(parsed);
      } catch {
        // not a log line
      }
    });
  }
}
