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
