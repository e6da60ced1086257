// The cluster token: one printable line that every machine of a closed cluster is given. Nothing
// derived from it can lead back to it: the TLS pre-shared key and the public cluster id are separate
// HKDF outputs. The token itself never leaves this process: not in logs, errors, mDNS or status.
import { hkdfSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';

import { ErrorCode, HearthError, messageOf } from '../common/errors.js';

const PREFIX = 'hearth1_';
/** 32 random bytes in base64url: 256 bits. */
const BODY = /^[A-Za-z0-9_-]{43}$/;
const SALT = 'hearth cluster token v1';

/** A new token: 256 random bits, one printable line. */
export function newToken(): string {
  return PREFIX + randomBytes(32).toString('base64url');
}

/** Where a token came from, for messages that must not quote it. */
export type TokenSource = 'flag' | 'file' | 'env' | 'config';

/**
 * What a closed cluster's machines share. The token is held privately; printing or serialising this
 * object shows only the cluster id.
 */
export class ClusterSecret {
  /** Public: derived from the token, advertised over mDNS, not enough to derive the token or the key. */
  readonly clusterId: string;
  /** The TLS 1.3 external pre-shared key. */
  readonly psk: Buffer;
  readonly source: TokenSource;
  /** Set when the token was read from a file: the join command names the file instead of the token. */
  readonly file: string | null;
  readonly #token: string;

  private constructor(token: string, source: TokenSource, file: string | null) {
    this.#token = token;
    this.source = source;
    this.file = file;
    const ikm = Buffer.from(token, 'utf8');
    this.psk = Buffer.from(hkdfSync('sha256', ikm, SALT, 'tls13 external psk', 32));
    this.clusterId = Buffer.from(hkdfSync('sha256', ikm, SALT, 'public cluster id', 8)).toString('hex');
  }

  /** Checks the token's shape; the error says where it came from, never what it was. */
  static fromToken(text: string, source: TokenSource, file: string | null = null): ClusterSecret {
    const token = text.trim();
    const where = source === 'file' ? `the token file ${file}` : source === 'env' ? 'HEARTH_TOKEN' : source === 'config' ? 'token in the config file' : '--token';
    if (!token.startsWith(PREFIX) || !BODY.test(token.slice(PREFIX.length))) {
      throw new HearthError(
        ErrorCode.InvalidArgument,
        `${where} does not hold a hearth cluster token (expected '${PREFIX}' and 43 base64url characters, 256 bits); make one with \`hearth token\``,
      );
    }
    return new ClusterSecret(token, source, file);
  }

  static fromFile(path: string): ClusterSecret {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new HearthError(ErrorCode.InvalidArgument, `cannot read the token file ${path}: ${messageOf(e).replace(/^[A-Z]+: /, '')}`);
    }
    return ClusterSecret.fromToken(text, 'file', path);
  }

  /** The token, for the one place that prints it on purpose: the join command on a terminal. */
  revealForJoinCommand(): string {
    return this.#token;
  }

  toJSON(): string {
    return `[cluster ${this.clusterId}]`;
  }

  toString(): string {
    return this.toJSON();
  }

  [inspect.custom](): string {
    return this.toJSON();
  }
}

export interface TokenSources {
  flag?: string | undefined;
  file?: string | undefined;
  env?: string | undefined;
  /** From a YAML config: `token` and `tokenFile` (a path already resolved against the file). */
  config?: { token?: string | undefined; tokenFile?: string | undefined };
}

/**
 * The one token of this process, from the first source that has one: --token, --token-file,
 * HEARTH_TOKEN, then the config file. Giving two on the command line is an error.
 */
export function resolveSecret(s: TokenSources): ClusterSecret | null {
  if (s.flag !== undefined && s.file !== undefined) {
    throw new HearthError(ErrorCode.InvalidArgument, 'give either --token or --token-file, not both');
  }
  if (s.config?.token !== undefined && s.config.tokenFile !== undefined) {
    throw new HearthError(ErrorCode.InvalidArgument, 'the config file gives both token and tokenFile; keep one');
  }
  if (s.flag !== undefined) return ClusterSecret.fromToken(s.flag, 'flag');
  if (s.file !== undefined) return ClusterSecret.fromFile(s.file);
  if (s.env !== undefined && s.env !== '') return ClusterSecret.fromToken(s.env, 'env');
  if (s.config?.token !== undefined) return ClusterSecret.fromToken(s.config.token, 'config');
  if (s.config?.tokenFile !== undefined) return ClusterSecret.fromFile(s.config.tokenFile);
  return null;
}

/** Whether binding `host` keeps a server on this machine (the loopback range). */
export function isLoopback(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '::1' || host === 'localhost';
}
