// TLS 1.3 with an external pre-shared key derived from the cluster token: both ends prove that they
// know the key (the handshake cannot finish otherwise), the session keys come from an X25519 exchange
// (forward secrecy: psk_dhe_ke), and no certificate is involved. All of it is Node's own `tls`.
import type { ConnectionOptions, TLSSocket, TlsOptions } from 'node:tls';

import type { ClusterSecret } from './token.js';

/** What a secured connection carries, negotiated with ALPN so a port cannot be used for the other. */
export const ALPN = Object.freeze({ rpc: 'hearth-rpc/1', control: 'hearth-control/1' });
export type LinkKind = keyof typeof ALPN;

const CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384';

/** Server side: answers only a client that names this cluster and proves the key. */
export function serverTlsOptions(secret: ClusterSecret, kind: LinkKind, handshakeTimeoutMs: number): TlsOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERS,
    ALPNProtocols: [ALPN[kind]],
    handshakeTimeout: handshakeTimeoutMs,
    // The identity is the public cluster id; a client of another cluster gets a handshake failure.
    pskCallback: (_socket, identity) => (identity === secret.clusterId ? secret.psk : null),
  };
}

/** Client side: offers the cluster id and the key; refuses anything but a PSK handshake. */
export function clientTlsOptions(secret: ClusterSecret, kind: LinkKind): ConnectionOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: CIPHERS,
    ALPNProtocols: [ALPN[kind]],
    pskCallback: () => ({ psk: secret.psk, identity: secret.clusterId }),
    // No certificates: the PSK authenticates the server. A server that presented one instead would
    // fail certificate verification (rejectUnauthorized stays on), and afterPskHandshake checks again.
    checkServerIdentity: () => undefined,
  };
}

/** After 'secureConnect': null when the link is what we asked for, else why not. */
export function afterPskHandshake(socket: TLSSocket, kind: LinkKind): string | null {
  if (socket.getProtocol() !== 'TLSv1.3') return `the peer negotiated ${socket.getProtocol() ?? 'no TLS version'}, not TLS 1.3`;
  if (socket.alpnProtocol !== ALPN[kind]) return `the peer does not serve ${ALPN[kind]}`;
  const cert = socket.getPeerCertificate();
  if (cert && Object.keys(cert).length > 0) return 'the peer authenticated with a certificate instead of the cluster key';
  return null;
}

/** The user's words for a failed client handshake or connection. */
export function describeLinkError(e: NodeJS.ErrnoException): { kind: 'token' | 'protocol' | 'network'; message: string } {
  const code = e.code ?? '';
  if (/ALERT_(HANDSHAKE_FAILURE|ILLEGAL_PARAMETER|DECRYPT_ERROR|BAD_RECORD_MAC)|BINDER|BAD_DECRYPT/.test(code)) {
    return { kind: 'token', message: 'token mismatch: the worker belongs to another cluster, or was given another token' };
  }
  if (/NO_APPLICATION_PROTOCOL/.test(code)) {
    return { kind: 'protocol', message: 'the port serves another kind of hearth link (rpc and control ports swapped?)' };
  }
  if (/^ERR_SSL_|WRONG_VERSION|ECONNRESET|EPIPE|ERR_TLS/.test(code) || /socket disconnected before secure TLS connection/i.test(e.message)) {
    return { kind: 'protocol', message: 'the worker does not speak hearth\'s secure link (is it running without a token, or an older hearth?)' };
  }
  if (code === 'ECONNREFUSED') return { kind: 'network', message: 'connection refused: nothing listens there' };
  if (code === 'ETIMEDOUT' || code === 'LINK_TIMEOUT') return { kind: 'network', message: 'no answer (the host is down or the network is cut)' };
  return { kind: 'network', message: e.message };
}
