// Prompt lookup (node-llama-cpp's InputLookupTokenPredictor, llama.cpp's ngram-simple): text that
// quotes or repeats its context drafts itself.
import type { Drafter, DraftRequest } from './drafter.js';

/**
 * Finds the most recent earlier occurrence of the last `n` tokens and proposes the tokens that followed
 * it (up to `max`).
 */
export function ngramDraft(tokens: ArrayLike<number>, n: number, max: number): number[] {
  const len = tokens.length;
  if (n < 1 || max < 1 || len <= n) return [];
  const keyStart = len - n;
  for (let start = keyStart - 1; start >= 0; start--) {
    let j = 0;
    while (j < n && tokens[start + j] === tokens[keyStart + j]) j++;
    if (j < n) continue;
    const out: number[] = [];
    for (let k = start + n; k < len && out.length < max; k++) out.push(tokens[k]!);
    return out;
  }
  return [];
}

/** Looks up each sequence's last `n` tokens in its own tokens; keeps nothing between steps. */
export class NgramDrafter implements Drafter {
  readonly #n: number;
  readonly stepSeconds = 0;

  constructor(n: number) {
    this.#n = n;
  }

  async draft(requests: readonly DraftRequest[]): Promise<Map<number, number[]>> {
    return new Map(requests.map((r) => [r.seq, ngramDraft(r.tokens, this.#n, r.max)]));
  }

  reset(): void {}
}
