// API keys for the coordinator's client APIs (HTTP and gRPC): one check, in constant time, that
// never echoes the key it was given.
import { timingSafeEqual } from 'node:crypto';

export function keyMatches(given: string, keys: readonly string[]): boolean {
  const g = Buffer.from(given);
  return keys.some((k) => {
    const kb = Buffer.from(k);
    return kb.length === g.length && timingSafeEqual(kb, g);
  });
}

/** The key in an `Authorization: Bearer KEY` value (or a bare `x-api-key` value), or null. */
export function presentedKey(authorization: unknown, apiKeyHeader: unknown): string | null {
  if (typeof authorization === 'string' && /^Bearer\s+/i.test(authorization)) return authorization.replace(/^Bearer\s+/i, '').trim();
  return typeof apiKeyHeader === 'string' ? apiKeyHeader : null;
}

/** Why a request with `given` may not pass, or null when it may. */
export function keyRefusal(given: string | null, keys: readonly string[]): string | null {
  if (keys.length === 0) return null;
  if (given === null) return 'missing API key: send it as "Authorization: Bearer <key>"';
  return keyMatches(given, keys) ? null : 'invalid API key';
}
