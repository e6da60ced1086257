// Joining two sockets into one link: bytes flow both ways with backpressure and no Nagle delay (the
// RPC protocol is request/response, so a held-back small write costs a round trip), and when either
// side ends, the other is ended once its writes are flushed; when one fails, both are cut. `onEnd`
// says which side went first.
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

export type LinkSide = 'outer' | 'inner';

export function joinSockets(
  outer: Socket,
  inner: Socket,
  onEnd: (first: LinkSide, error: Error | null) => void,
  counters?: { toInner?: (n: number) => void; toOuter?: (n: number) => void },
): void {
  outer.setNoDelay(true);
  inner.setNoDelay(true);
  let ended = false;
  const end = (side: LinkSide, error: Error | null) => {
    if (!ended) {
      ended = true;
      onEnd(side, error);
    }
    if (error) {
      outer.destroy();
      inner.destroy();
      return;
    }
    // A clean end: let what was already written reach the other side, then close it (bounded).
    const other = side === 'outer' ? inner : outer;
    other.end();
    setTimeout(() => other.destroy(), 2000).unref();
  };
  forward(outer, inner, counters?.toInner);
  forward(inner, outer, counters?.toOuter);
  for (const [socket, side] of [[outer, 'outer'], [inner, 'inner']] as const) {
    socket.on('error', (e) => end(side, e));
    socket.on('end', () => end(side, null));
    socket.on('close', () => end(side, null));
  }
}

/** `from` → `to` with backpressure (pipe() would also end `to` on its own terms; we end both ourselves). */
function forward(from: Duplex, to: Duplex, count?: (n: number) => void): void {
  from.on('data', (chunk: Buffer) => {
    count?.(chunk.length);
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
}
