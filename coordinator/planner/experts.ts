// MoE experts on a second device of the same worker (a worker serving CUDA0,CPU). A block's sparse
// expert tensors are most of its bytes, but a token reads only `used / count` of them: per byte of a
// fast device's memory, a block's dense part (attention, norms, router, shared experts) saves more time
// than its experts. So the fast device takes the dense parts of blocks whose experts stay on the slower
// device of the same machine (llama.cpp's tensor overrides put them there, and the activations cross
// inside the worker, not the network). llama-server's fit (common/fit.cpp) does the same towards the
// host CPU of one machine. A spilled block costs the worker a round trip per token (see time-model.ts),
// so blocks are spilled only while the predicted time per token drops, and within every device's memory.
import { blocksOf, loadsOf, type ExpertMove, type Layout } from './layout.js';
import { overflowOf, tierOf, type Seat } from './seats.js';
import { timeOf } from './time-model.js';

/** Counts after the spill, and whose experts went where. */
export interface Spill {
  counts: number[];
  moves: ExpertMove[];
}

/** Where the search stands: per seat, the seat of the same worker that holds the experts of its first `spilled[i]` blocks, or -1. */
interface SpillState {
  counts: number[];
  partner: number[];
  spilled: number[];
}

export function spillExperts(start: number[], seats: Seat[], layout: Layout): Spill | null {
  if (!layout.experts.some((e) => e > 0)) return null;
  const partner = seats.map((_, i) => partnerOf(seats, i));
  if (partner.every((p) => p < 0)) return null;
  let state: SpillState = { counts: [...start], partner, spilled: seats.map(() => 0) };
  let time = timeOf(state.counts, seats, layout, movesOf(state, layout));
  // One pair at a time, until no pair improves (a worker's devices rarely pair with another's).
  for (let round = 0; round < seats.length; round++) {
    let improved = false;
    for (const [i, p] of partner.entries()) {
      if (p < 0) continue;
      const best = bestSpill(state, i, p, seats, layout);
      if (best && best.time < time - 1e-12) {
        state = best.state;
        time = best.time;
        improved = true;
      }
    }
    if (!improved) break;
  }
  return state.spilled.some((n) => n > 0) ? { counts: state.counts, moves: movesOf(state, layout) } : null;
}

/**
 * The quickest split of the blocks of fast seat i and its partner p: every count of blocks on i, each
 * with the fewest spilled blocks that fit (one more spilled block only adds time: its experts are read
 * on the slower device, and it costs a round trip). A step-by-step search stops short here: making
 * room for more dense parts first means spilling experts, which alone costs time.
 */
function bestSpill(state: SpillState, i: number, p: number, seats: Seat[], layout: Layout): { state: SpillState; time: number } | null {
  const pair = state.counts[i]! + state.counts[p]!;
  let best: { state: SpillState; time: number } | null = null;
  for (let onFast = 1; onFast <= pair; onFast++) {
    const counts = [...state.counts];
    counts[i] = onFast;
    counts[p] = pair - onFast;
    const blocks = blocksOf(counts, i, layout).length;
    for (let k = 0; k <= blocks; k++) {
      const trial: SpillState = { counts, partner: state.partner, spilled: state.spilled.map((n, j) => (j === i ? k : n)) };
      if (!validSpill(trial, layout)) continue;
      const moves = movesOf(trial, layout);
      if (overflowOf(loadsOf(counts, layout, moves), seats) > 0) continue;
      const t = timeOf(counts, seats, layout, moves);
      if (!best || t < best.time - 1e-12) best = { state: trial, time: t };
      break;
    }
  }
  return best;
}

/** The slowest other device of the same worker, a speed tier or more below this one (the roomiest on a tie); -1 when there is none. */
function partnerOf(seats: Seat[], i: number): number {
  const me = seats[i]!;
  if (me.device.kind !== 'rpc') return -1;
  let best = -1;
  for (const [j, other] of seats.entries()) {
    if (j === i || other.device.endpoint !== me.device.endpoint || tierOf(other) >= tierOf(me)) continue;
    const current = best < 0 ? null : seats[best]!;
    if (!current || tierOf(other) < tierOf(current) || (tierOf(other) === tierOf(current) && other.usable > current.usable)) best = j;
  }
  return best;
}

/** The blocks each seat spills, as moves to its partner. */
function movesOf(s: SpillState, layout: Layout): ExpertMove[] {
  return s.partner.flatMap((to, from) => {
    const blocks = to < 0 ? [] : blocksOf(s.counts, from, layout).slice(0, s.spilled[from]!);
    return blocks.length > 0 ? [{ from, to, blocks }] : [];
  });
}

/**
 * Counts stay whole and positive, except that a partner may give away all its blocks and keep only
 * experts (not the last device: it holds the output head); a seat spills no more blocks than it has.
 */
function validSpill(s: SpillState, layout: Layout): boolean {
  const last = s.counts.length - 1;
  const holdsExperts = new Set(s.partner.filter((p, i) => p >= 0 && s.spilled[i]! > 0));
  return s.counts.every((c, i) => {
    if (c < 0 || s.spilled[i]! < 0) return false;
    if (c === 0 && (i === last || !holdsExperts.has(i))) return false;
    return s.spilled[i]! <= blocksOf(s.counts, i, layout).length;
  });
}
