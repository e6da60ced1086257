// Pipelined decode: the engine's sequences split into groups, one Scheduler and one llama context per
// group, each context decoding in its own thread. While one group's batch is on worker B, the next
// group's is on worker A (planner/pipeline.ts decides how many groups there are).
//
// A request runs in one group from start to end (its KV lives in that group's context). The router
// prepares it once, then gives it to the least loaded group, unless a group at most one request busier
// has a free sequence holding a long part of its prompt (a chat's next turn goes back to its
// conversation). One request alone therefore decodes in one context, as it would without groups. (With
// one group the engine uses its Scheduler directly.)
import { ErrorCode, HearthError, messageOf } from '../../common/errors.js';
import type { LlamaContext, LlamaModel } from '../../native/llama.js';
import { groupShares } from '../planner/pipeline.js';
import type { EngineLoadSpec, FromEngine, GenerateParams, LoadedInfo, PromptInput } from './protocol.js';
import { cancelledBeforeStart, type PreparedRequest } from './prepare-request.js';
import type { Scheduler } from './scheduler.js';

/** What the engine asks of its schedulers, whether one or several. */
export interface RequestSink {
  submit(id: string, prompt: PromptInput, params: GenerateParams): void;
  cancel(id: string): void;
  readonly active: number;
}

/** The part of a Scheduler the router uses (a fake stands in for it in unit tests). */
export type GroupScheduler = Pick<Scheduler, 'prepare' | 'enqueue' | 'cachedPrefix' | 'cancel' | 'active' | 'capacity'>;

/**
 * Prompt tokens a cache must spare before a request may go to a busier group for it: below this, the
 * balance between the groups (what keeps every stage of the pipeline busy) matters more.
 */
export const WORTH_FOLLOWING = 64;

/**
 * The group for a prepared prompt. Groups with a free sequence are candidates; among those at most one
 * request busier than the least loaded, the one whose cache spares the most prompt tokens wins if it
 * spares at least WORTH_FOLLOWING; otherwise the least loaded group, lowest index first. With no free
 * sequence anywhere, the least loaded group queues it.
 */
export function pickGroup(groups: readonly GroupScheduler[], prompt: Int32Array, reuse: boolean, split: number | null = null): number {
  const indices = groups.map((_, i) => i);
  const open = indices.filter((i) => groups[i]!.active < groups[i]!.capacity);
  const pool = open.length > 0 ? open : indices;
  const least = pool.reduce((a, b) => (groups[b]!.active < groups[a]!.active ? b : a));
  if (open.length === 0) return least;
  const near = open.filter((i) => groups[i]!.active <= groups[least]!.active + 1);
  let best = least;
  let bestSaved = 0;
  for (const i of near) {
    const saved = groups[i]!.cachedPrefix(prompt, reuse, split);
    if (saved > bestSaved || (saved === bestSaved && groups[i]!.active < groups[best]!.active)) {
      best = i;
      bestSaved = saved;
    }
  }
  return bestSaved >= WORTH_FOLLOWING ? best : least;
}

export class SchedulerGroups implements RequestSink {
  readonly #groups: readonly GroupScheduler[];
  readonly #send: (m: FromEngine) => void;
  /** Requests being rendered and tokenized, not yet in a group. */
  readonly #preparing = new Set<string>();
  /** The group each queued or running request is in, until it is done. */
  readonly #owner = new Map<string, GroupScheduler>();

  /**
   * `make(send)` builds one group's scheduler around `send`; the router watches the messages to learn
   * when a request leaves its group.
   */
  constructor(count: number, make: (group: number, send: (m: FromEngine) => void) => GroupScheduler, send: (m: FromEngine) => void) {
    this.#send = send;
    const watch = (m: FromEngine) => {
      if (m.type === 'done' || m.type === 'request-error') this.#owner.delete(m.id);
      send(m);
    };
    this.#groups = Array.from({ length: count }, (_, g) => make(g, watch));
  }

  get size(): number {
    return this.#groups.length;
  }

  get active(): number {
    return this.#preparing.size + this.#groups.reduce((n, g) => n + g.active, 0);
  }

  submit(id: string, prompt: PromptInput, params: GenerateParams): void {
    this.#preparing.add(id);
    // Any group can prepare it: rendering and tokenizing use only the model.
    this.#groups[0]!.prepare(id, prompt, params).then(
      (w) => {
        if (!this.#preparing.delete(id)) {
          this.#send(cancelledBeforeStart(w));
          return;
        }
        this.#enqueue(w);
      },
      (e: unknown) => {
        this.#preparing.delete(id);
        const code = e instanceof HearthError ? e.code : ErrorCode.Internal;
        this.#send({ type: 'request-error', id, code, message: messageOf(e) });
      },
    );
  }

  #enqueue(w: PreparedRequest): void {
    const group = this.#groups[pickGroup(this.#groups, w.prompt, w.params.cachePrompt, w.split)]!;
    this.#owner.set(w.id, group);
    group.enqueue(w);
  }

  cancel(id: string): void {
    // Still rendering: answered as cancelled when the rendering ends.
    if (this.#preparing.delete(id)) return;
    this.#owner.get(id)?.cancel(id);
  }
}

/**
 * The contexts the sequences decode in: one, or one per pipeline group, each with its share of the
 * sequences (and so of the KV cache) and compute buffers of its own.
 */
export async function createContexts(m: LlamaModel, spec: EngineLoadSpec): Promise<LlamaContext[]> {
  const groups = Math.max(1, Math.min(spec.groups, spec.parallel));
  if (groups > 1) {
    // The contexts share each worker's RPC connection, and ggml-rpc's client keeps the last graph sent
    // per device unlocked: two contexts reusing their graphs race, and a worker can recompute the other
    // context's graph. With reuse off every graph is sent whole (contexts that take turns on a device
    // could not reuse theirs anyway). llama.cpp reads this when a context is created.
    process.env.LLAMA_GRAPH_REUSE_DISABLE = '1';
  }
  const out: LlamaContext[] = [];
  for (const share of groupShares(spec.parallel, groups)) {
    out.push(
      await m.createContext({
        nCtx: spec.ctxSize * share,
        nSeqMax: share,
        nBatch: spec.nBatch,
        nUbatch: spec.nUbatch,
        typeK: spec.typeK,
        typeV: spec.typeV,
        nThreads: spec.threads,
      }),
    );
  }
  return out;
}

/** The contexts' memory together: the weights once, every context's KV and compute buffers. */
export function memoryOf(all: LlamaContext[]): LoadedInfo['memory'] {
  const out = all[0]!.memoryBreakdown().map((e) => ({ ...e }));
  for (const c of all.slice(1)) {
    for (const e of c.memoryBreakdown()) {
      const same = out.find((o) => o.buffer === e.buffer && o.device === e.device);
      if (!same) out.push({ ...e, modelBytes: 0 });
      else {
        same.contextBytes += e.contextBytes;
        same.computeBytes += e.computeBytes;
      }
    }
  }
  return out;
}
