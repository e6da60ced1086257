// What a request's tokens become on the way out: text, cut at its stop strings (a stop string is never
// sent) and, for a chat, read by its template's parser into content, reasoning and tool calls, streamed
// as OpenAI-style deltas.
import { TextDecoder } from 'node:util';

import type { ChatParser, LlamaContext, LlamaModel } from '../../native/llama.js';
import { EMPTY_REPLY, replyDelta, withToolCallIds } from './chat-reply.js';
import type { ChatDelta, ChatReply, TokenLogprob } from './protocol.js';
import { StopStringFilter } from './stop-strings.js';

/** A streamed piece: text safe to send now and, for a chat, what changed in its reply. */
export interface OutputPiece {
  text: string;
  /** Present for a chat (empty when nothing changed), absent otherwise. */
  delta?: ChatDelta;
}

export class SlotOutput {
  /** Tokens may split a character: bytes wait here until it is whole. */
  readonly #decoder = new TextDecoder('utf-8');
  readonly #stops: StopStringFilter;
  readonly #parser: ChatParser | null;
  /** All the text sent so far. */
  #text = '';
  #reply: ChatReply = EMPTY_REPLY;

  constructor(stops: readonly string[], parser: ChatParser | null) {
    this.#stops = new StopStringFilter(stops);
    this.#parser = parser;
  }

  get text(): string {
    return this.#text;
  }

  /** The chat reply as last read; undefined for a request without a parser. */
  get reply(): ChatReply | undefined {
    return this.#parser ? this.#reply : undefined;
  }

  /** A generated token's bytes; `stopped` when a stop string ends the output (the piece ends right before it). */
  push(bytes: Uint8Array): OutputPiece & { stopped: boolean } {
    const scan = this.#stops.push(this.#decoder.decode(bytes, { stream: true }));
    this.#text += scan.emit;
    const delta = scan.emit ? this.#read(true) : this.#parser ? {} : undefined;
    return { text: scan.emit, stopped: scan.stopped, ...(delta ? { delta } : {}) };
  }

  /**
   * Output a resumed request had sent before its engine was lost, taken in without being sent again:
   * the stop strings' held-back text, a split character and the chat reply are where they were.
   */
  replay(bytes: Uint8Array): void {
    this.push(bytes);
  }

  /**
   * The end of the output: the text held back (unless `flush` is false: after a stop string, or a
   * cancellation) and the final reading of the reply; null when that adds nothing.
   */
  finish(flush: boolean): OutputPiece | null {
    let rest = '';
    if (flush) {
      rest = this.#stops.push(this.#decoder.decode()).emit + this.#stops.flush();
      this.#text += rest;
    }
    // The final reading: text held back as a possible marker is settled now.
    const delta = this.#read(false);
    return rest || (delta && Object.keys(delta).length > 0) ? { text: rest, ...(delta ? { delta } : {}) } : null;
  }

  /** Reads the text so far with the parser; returns what changed for the stream. */
  #read(partial: boolean): ChatDelta | undefined {
    if (!this.#parser) return undefined;
    const parsed = this.#parser.parse(this.#text, { partial });
    const next = withToolCallIds({ content: parsed.content, reasoningContent: parsed.reasoningContent, toolCalls: parsed.toolCalls }, this.#reply);
    const delta = replyDelta(this.#reply, next);
    this.#reply = next;
    return delta ?? {};
  }
}

/** Sample `i`'s log-probabilities of the last decode in OpenAI's terms: token text, bytes, alternatives. */
export function tokenLogprob(model: LlamaModel, ctx: LlamaContext, i: number): TokenLogprob | undefined {
  const l = ctx.logprobs(i);
  if (!l) return undefined;
  const piece = (token: number) => {
    const bytes = model.tokenToPiece(token);
    return { token: bytes.toString('utf8'), bytes: [...bytes] };
  };
  return { ...piece(l.token), logprob: l.logprob, top: l.top.map((t) => ({ ...piece(t.token), logprob: t.logprob })) };
}
