// A chat reply as its template's format reads it (content, reasoning, tool calls), and the changes
// between two readings of a growing reply: what a stream sends, in OpenAI's delta shape.
import { randomBytes } from 'node:crypto';

import type { ChatDelta, ChatReply } from './protocol.js';

export const EMPTY_REPLY: ChatReply = Object.freeze({ content: '', reasoningContent: '', toolCalls: [] }) as ChatReply;

/** OpenAI-style call ids: `call_` and 24 random characters. */
export function newToolCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

/**
 * Gives every tool call an id, stable from one reading to the next: a call keeps the id it had at its
 * index, or the parser's own when the template wrote one.
 */
export function withToolCallIds(reply: ChatReply, previous: ChatReply): ChatReply {
  const toolCalls = reply.toolCalls.map((c, i) => ({ ...c, id: c.id || previous.toolCalls[i]?.id || newToolCallId() }));
  return { ...reply, toolCalls };
}

/** The part of `next` after `prev`; '' when `next` does not extend it (a reading that was revised). */
function suffix(prev: string, next: string): string {
  return next.length > prev.length && next.startsWith(prev) ? next.slice(prev.length) : '';
}

/**
 * What changed from `prev` to `next`, as llama-server streams it: text appended to content and
 * reasoning, and per tool call its id and name once (when it first appears) and argument fragments.
 * Returns null when nothing changed.
 */
export function replyDelta(prev: ChatReply, next: ChatReply): ChatDelta | null {
  const delta: ChatDelta = {};
  const content = suffix(prev.content, next.content);
  if (content) delta.content = content;
  const reasoning = suffix(prev.reasoningContent, next.reasoningContent);
  if (reasoning) delta.reasoningContent = reasoning;
  const calls: NonNullable<ChatDelta['toolCalls']> = [];
  next.toolCalls.forEach((c, index) => {
    const before = prev.toolCalls[index];
    if (!before) {
      calls.push({ index, id: c.id, name: c.name, arguments: c.arguments });
      return;
    }
    const args = suffix(before.arguments, c.arguments);
    if (args) calls.push({ index, arguments: args });
  });
  if (calls.length > 0) delta.toolCalls = calls;
  return Object.keys(delta).length > 0 ? delta : null;
}
