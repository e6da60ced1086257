// Drafting for speculative decoding. A sequence's next few tokens are guessed cheaply (by looking the
// last tokens up earlier in the prompt and reply, ngram-drafter.ts, or by a small draft model with the
// same vocabulary, draft-model.ts) and the target verifies the guess in one batch (Batch.verify): it
// samples each drafted position with the request's own sampler and keeps the draft up to the first token
// it would not have chosen. Every emitted token is the target's own choice, so the output is the
// target's (token for token when greedy), only sooner.

/**
 * What a sequence needs drafted: all its tokens so far (the last one not yet decoded), a budget, and
 * the probability below which a drafter that knows its confidence stops.
 */
export interface DraftRequest {
  seq: number;
  tokens: ArrayLike<number>;
  max: number;
  pMin: number;
}

/** A way of guessing tokens (node-llama-cpp calls these token predictors). */
export interface Drafter {
  /** A draft per requested sequence, at most its `max` tokens; a sequence may get none. */
  draft(requests: readonly DraftRequest[]): Promise<Map<number, number[]>>;
  /** Forgets what the drafter keeps for a sequence; its next draft starts from nothing. */
  reset(seq: number): void;
  /** Seconds per drafting step (one token for each drafting sequence), as recently measured; 0: free. */
  readonly stepSeconds: number;
}
