// Parsing of CLI option values, with errors that name the option.
import { ErrorCode, HearthError } from '../common/errors.js';

export function parseInteger(text: string, option: string, range: { min?: number; max?: number } = {}): number {
  const v = /^-?\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(v) || (range.min !== undefined && v < range.min) || (range.max !== undefined && v > range.max)) {
    const bounds = range.min !== undefined && range.max !== undefined ? ` from ${range.min} to ${range.max}` : range.min !== undefined ? ` >= ${range.min}` : '';
    throw new HearthError(ErrorCode.InvalidArgument, `${option}: '${text}' is not a whole number${bounds}`);
  }
  return v;
}

/** The arguments with the value of --token replaced, for the process title. */
export function withoutToken(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--token') {
      out.push(a, '***');
      i++;
    } else {
      out.push(a.startsWith('--token=') ? '--token=***' : a);
    }
  }
  return out;
}

/** llama-server's multi-letter short flags, which commander cannot declare: `-hf` and `-hfr` are `--hf-repo`. */
export function llamaServerFlags(argv: readonly string[]): string[] {
  return argv.map((a) => (a === '-hf' || a === '-hfr' ? '--hf-repo' : a));
}
