// One structured logger for the process, a child per component. Log lines are JSON (pino); the CLI
// chooses the level once at start-up.
import { pino, type Logger } from 'pino';

export type { Logger };

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

let root: Logger = pino({ level: 'info', base: { pid: process.pid } }, pino.destination(2));

/** Replaces the process logger (call once at start-up, before components take children). */
export function configureLogger(options: { level: LogLevel; name?: string }): Logger {
  root = pino(
    { level: options.level, base: { pid: process.pid, ...(options.name ? { service: options.name } : {}) } },
    pino.destination(2),
  );
  return root;
}

export function logger(component: string): Logger {
  return root.child({ component });
}
