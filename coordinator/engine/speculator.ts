// Speculative decoding in the scheduler: before a step, each generating sequence may get a draft of its
// next tokens (drafter.ts); the step then decodes its pending token and the draft together and keeps
// what the target's own sampling confirms. Speculation steps aside while more sequences generate than it
// is set for: their batch is compute-bound already.
import { messageOf } from '../../common/errors.js';
import type { Drafter, DraftRequest } from './drafter.js';
import type { DraftTuner } from './draft-tuner.js';
import type { GenerateParams, SpeculationSettings } from './protocol.js';
import type { DraftLimits, Slot } from './slot.js';

/** A scheduler's drafters, asked in order, and the tuner that prices their drafts. */
export interface Speculation {
  settings: SpeculationSettings;
  drafters: readonly Drafter[];
  tuner: DraftTuner | null;
}

export const NO_DRAFTS: DraftLimits = Object.freeze({ max: 0, min: 0, pMin: 0 });

export class Speculator {
  readonly #settings: SpeculationSettings;
  readonly #drafters: readonly Drafter[];
  readonly #tuner: DraftTuner | null;
  readonly #warn: (msg: string) => void;

  constructor(speculation: Speculation, warn: (msg: string) => void) {
    this.#settings = speculation.settings;
    this.#drafters = speculation.drafters;
    this.#tuner = speculation.tuner;
    this.#warn = warn;
  }

  /** A request's draft settings: its own where it gives them, the engine's otherwise. */
  limitsFor(params: GenerateParams): DraftLimits {
    const s = params.speculative;
    return { max: s?.nMax ?? this.#settings.draftMax, min: s?.nMin ?? this.#settings.draftMin, pMin: s?.pMin ?? this.#settings.pMin };
  }

  /**
   * This step's drafts for the generating slots (none while more of them generate than speculation is
   * set for), each within the room left in its token budget and context (`nCtxSeq` per sequence). A draft
   * shorter than the slot's minimum is dropped: that sequence decodes one token as usual.
   */
  async drafts(generating: readonly Slot[], nCtxSeq: number): Promise<Map<Slot, number[]>> {
    const out = new Map<Slot, number[]>();
    if (generating.length === 0 || generating.length > this.#settings.maxSequences) return out;
    // Room for the drafted tokens in the token budget (the pending token counts) and in the context.
    const room = (slot: Slot) => Math.min(slot.draft.max, slot.maxTokens - slot.usage.completionTokens - 1, nCtxSeq - 2 - slot.pos);
    // As long as pays on this cluster now (the tuner's choice), within each request's own maximum.
    const longest = Math.max(...generating.map(room));
    const stepSeconds = this.#drafters.reduce((s, d) => s + d.stepSeconds, 0);
    const chosen = this.#tuner ? this.#tuner.choose(generating.length, longest, stepSeconds) : longest;
    if (chosen <= 0) return out;
    let wanted: { slot: Slot; request: DraftRequest }[] = [];
    for (const slot of generating) {
      const max = Math.min(room(slot), chosen);
      if (max < minimum(slot)) continue;
      wanted.push({ slot, request: { seq: slot.seq, tokens: [...slot.prompt, ...slot.emitted], max, pMin: slot.draft.pMin } });
    }
    // The cheapest drafter first; the next one only for the sequences whose draft fell short.
    for (const drafter of this.#drafters) {
      if (wanted.length === 0) break;
      let drafted: Map<number, number[]>;
      try {
        drafted = await drafter.draft(wanted.map((w) => w.request));
      } catch (e) {
        // A failed draft costs only its speed-up: these sequences decode one token this step, and what
        // the drafter keeps for them starts over.
        for (const { slot } of wanted) drafter.reset(slot.seq);
        this.#warn(`drafting failed, this step decodes without a draft: ${messageOf(e)}`);
        return out;
      }
      wanted = wanted.filter(({ slot }) => {
        const d = drafted.get(slot.seq) ?? [];
        if (d.length < minimum(slot)) return true;
        // Cancelled while the drafter ran: it goes at the next step, undrafted.
        if (slot.phase.kind === 'generating' && !slot.cancelled) out.set(slot, d);
        return false;
      });
    }
    return out;
  }

  /** A verified draft of `drafted` tokens, of which the target kept the first `accepted`. */
  recordDraft(slot: Slot, drafted: number, accepted: number): void {
    slot.usage.draftTokens += drafted;
    slot.usage.draftAcceptedTokens += accepted;
    this.#tuner?.recordAcceptance(drafted, accepted);
  }

  /** A step that decoded only generating rows (no prompt chunks): its time prices verifications of `rows`. */
  recordStep(rows: number, seconds: number): void {
    this.#tuner?.recordVerify(rows, seconds);
  }
}

/** The shortest draft worth verifying for a slot. */
function minimum(slot: Slot): number {
  return Math.max(1, slot.draft.min);
}
