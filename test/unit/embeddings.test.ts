// Embeddings and rerank logic without a model: the HTTP bodies in and out, base64 floats, what a model
// is for, how inputs are fitted and packed into decodes, the rerank prompt, and the ranking.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { checkEmbedRequest, checkRerankRequest, rankResults } from '../../coordinator/embeddings.js';
import { embedSteps, fitInput, inputLimit } from '../../coordinator/engine/embed-batches.js';
import { rerankTokens, type RerankVocabulary } from '../../coordinator/engine/rerank-prompt.js';
import { base64Floats, checkDimensions, embeddingsCall, embeddingsResponse, embedInputs, floatsOfBase64, rerankCall, rerankResponse } from '../../coordinator/http/embeddings.js';
import { toOpenAiError } from '../../coordinator/http/errors.js';
import { modelKind } from '../../coordinator/served-models.js';
import { summarizeGguf } from '../../models/gguf-info.js';
import type { RawGguf } from '../../native/binding.js';

/** Asserts a 400 whose message (and OpenAI `param`) names the field. */
function refuses(fn: () => unknown, message: RegExp, param: string | null = null): void {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof HearthError, `expected a refusal matching ${message}`);
  assert.equal(caught.code, ErrorCode.InvalidArgument);
  assert.match(caught.message, message);
  const { status, body } = toOpenAiError(caught);
  assert.equal(status, 400);
  if (param) assert.equal(body.error.param, param);
}

describe('POST /v1/embeddings bodies', () => {
  test("input in every shape OpenAI's API takes", () => {
    assert.deepEqual(embedInputs('a hearth'), ['a hearth']);
    assert.deepEqual(embedInputs(['a', 'b']), ['a', 'b']);
    assert.deepEqual(embedInputs([1, 2, 3]), [[1, 2, 3]], 'an array of token ids is one input');
    assert.deepEqual(embedInputs([[1, 2], [3]]), [[1, 2], [3]]);
    assert.deepEqual(embedInputs(['a', [7, 8]]), ['a', [7, 8]], 'mixed, as llama-server takes it');
  });

  test('bad input is a 400 naming the field', () => {
    refuses(() => embedInputs(''), /input: is empty/, 'input');
    refuses(() => embedInputs([]), /input: must not be an empty array/, 'input');
    refuses(() => embedInputs(['a', '']), /input\[1\]: is empty/, 'input[1]');
    refuses(() => embedInputs([[1], []]), /input\[1\]: is empty/, 'input[1]');
    refuses(() => embedInputs([1, -2]), /input\[1\]: a token id must be a whole number/, 'input[1]');
    refuses(() => embedInputs([[1, 2.5]]), /input\[0\]\[1\]: a token id/);
    refuses(() => embedInputs(['a', 3]), /input\[1\]: must be a string/, 'input[1]');
    refuses(() => embedInputs({ text: 'x' }), /input: required, a string or an array/, 'input');
    refuses(() => embeddingsCall({ model: 'm' }), /input: required/, 'input');
    refuses(() => embeddingsCall({ input: 'x', encoding_format: 'int8' }), /encoding_format: must be "float" or "base64"/, 'encoding_format');
    refuses(() => embeddingsCall({ input: 'x', dimensions: 0 }), /dimensions: must be a whole number of at least 1/, 'dimensions');
    refuses(() => embeddingsCall({ input: 'x', embd_normalize: 1 }), /embd_normalize: hearth supports -1/, 'embd_normalize');
    refuses(() => embeddingsCall({ input: 'x', model: 3 }), /model: must be a string/, 'model');
    refuses(() => embeddingsCall('x'), /must be a JSON object/);
  });

  test('defaults: floats, unit length, no truncation, the default model', () => {
    assert.deepEqual(embeddingsCall({ input: 'x' }), { request: { inputs: ['x'], normalize: true, truncate: false }, encoding: 'float', dimensions: null });
    const c = embeddingsCall({ input: ['x'], model: 'embed', encoding_format: 'base64', dimensions: 256, embd_normalize: -1, truncate: true, user: 'someone' });
    assert.deepEqual(c, { request: { model: 'embed', inputs: ['x'], normalize: false, truncate: true }, encoding: 'base64', dimensions: 256 });
  });

  test('base64 is little-endian float32, as the openai client decodes it', () => {
    assert.equal(Buffer.from(base64Floats([1]), 'base64').toString('hex'), '0000803f');
    const v = [0.1, -2.5, 3.4028234663852886e38, 1e-45, 0];
    const back = floatsOfBase64(base64Floats(v));
    assert.deepEqual(back, Array.from(Float32Array.from(v)), 'exactly the float32 values');
  });

  test("the response in OpenAI's shape; dimensions other than the model's refused", () => {
    const result = { model: 'embed', embeddings: [[0.5, -0.25], [1, 0]], promptTokens: 7 };
    assert.deepEqual(embeddingsResponse(result, 'float'), {
      object: 'list',
      data: [
        { object: 'embedding', index: 0, embedding: [0.5, -0.25] },
        { object: 'embedding', index: 1, embedding: [1, 0] },
      ],
      model: 'embed',
      usage: { prompt_tokens: 7, total_tokens: 7 },
    });
    const b64 = embeddingsResponse(result, 'base64');
    assert.deepEqual(floatsOfBase64(b64.data[0]!.embedding as string), [0.5, -0.25]);
    checkDimensions(null, result);
    checkDimensions(2, result);
    refuses(() => checkDimensions(64, result), /dimensions: embed gives 2-dimensional embeddings and cannot shorten them to 64/, 'dimensions');
  });
});

describe('POST /v1/rerank bodies', () => {
  test("llama-server's shape, TEI's texts and {text} documents", () => {
    assert.deepEqual(rerankCall({ query: 'q', documents: ['a', { text: 'b' }], top_n: 1 }), { request: { query: 'q', documents: ['a', 'b'], topN: 1 }, tei: false, returnText: false });
    const tei = rerankCall({ query: 'q', texts: ['a', 'b'], return_text: true, model: 'r' });
    assert.deepEqual(tei, { request: { model: 'r', query: 'q', documents: ['a', 'b'] }, tei: true, returnText: true });
    const result = { model: 'r', results: [{ index: 1, relevanceScore: 0.75 }, { index: 0, relevanceScore: 0.5 }], promptTokens: 12 };
    assert.deepEqual(rerankResponse(result, rerankCall({ query: 'q', documents: ['a', 'b'] })), {
      model: 'r',
      object: 'list',
      usage: { prompt_tokens: 12, total_tokens: 12 },
      results: [{ index: 1, relevance_score: 0.75 }, { index: 0, relevance_score: 0.5 }],
    });
    assert.deepEqual(rerankResponse(result, tei), [{ index: 1, score: 0.75, text: 'b' }, { index: 0, score: 0.5, text: 'a' }]);
  });

  test('bad bodies are a 400 naming the field', () => {
    refuses(() => rerankCall({ documents: ['a'] }), /query: required/, 'query');
    refuses(() => rerankCall({ query: '', documents: ['a'] }), /query: is empty/, 'query');
    refuses(() => rerankCall({ query: 'q' }), /documents: required, a non-empty array/, 'documents');
    refuses(() => rerankCall({ query: 'q', documents: [] }), /documents: required, a non-empty array/, 'documents');
    refuses(() => rerankCall({ query: 'q', documents: ['a', 5] }), /documents\[1\]: must be a string/, 'documents[1]');
    refuses(() => rerankCall({ query: 'q', documents: ['a'], top_n: -1 }), /top_n: must be a whole number/, 'top_n');
  });

  test('scores best first, ties in document order, top_n of them', () => {
    assert.deepEqual(rankResults([0.2, 0.9, 0.2, 0.5], undefined).map((r) => r.index), [1, 3, 0, 2]);
    assert.deepEqual(rankResults([0.2, 0.9, 0.2, 0.5], 2), [{ index: 1, relevanceScore: 0.9 }, { index: 3, relevanceScore: 0.5 }]);
    assert.deepEqual(rankResults([0.2], 0), []);
    assert.deepEqual(rankResults([0.2, 0.1], 10).length, 2);
  });

  test('the coordinator checks what every API sends', () => {
    refuses(() => checkEmbedRequest({ inputs: [], normalize: true, truncate: false }), /input: must be a non-empty/);
    refuses(() => checkEmbedRequest({ inputs: ['a', ''], normalize: true, truncate: false }), /input\[1\]: is empty/);
    refuses(() => checkRerankRequest({ query: 'q', documents: [] }), /documents: must be a non-empty array/);
    refuses(() => checkRerankRequest({ query: 'q', documents: ['a'], topN: 1.5 }), /top_n: must be a whole number/);
  });
});

describe('what a model is for', () => {
  test('from the pooling type: rank reranks, mean/cls/last embed, none or absent chat', () => {
    assert.equal(modelKind({ poolingType: 'rank' }), 'rerank');
    for (const p of ['mean', 'cls', 'last'] as const) assert.equal(modelKind({ poolingType: p }), 'embedding');
    assert.equal(modelKind({ poolingType: 'none' }), 'chat');
    assert.equal(modelKind({ poolingType: null }), 'chat');
    assert.equal(modelKind({}), 'chat');
    assert.equal(modelKind(null), 'chat');
  });

  test('the GGUF header gives <arch>.pooling_type', () => {
    const raw = (pooling: number | undefined): RawGguf => ({
      path: 'm.gguf', fileBytes: 1000, version: 3, alignment: 32, dataOffset: 0, tensors: [],
      metadata: {
        'general.architecture': 'qwen3', 'qwen3.block_count': 1, 'qwen3.embedding_length': 8, 'qwen3.context_length': 64, 'qwen3.vocab_size': 10,
        ...(pooling === undefined ? {} : { 'qwen3.pooling_type': pooling }),
      },
    });
    assert.equal(summarizeGguf(raw(undefined)).poolingType, null);
    assert.deepEqual([0, 1, 2, 3, 4].map((p) => summarizeGguf(raw(p)).poolingType), ['none', 'mean', 'cls', 'last', 'rank']);
    assert.equal(summarizeGguf(raw(9)).poolingType, null, 'a type this build does not know');
  });
});

describe('fitting inputs and packing them into decodes', () => {
  test('the limit per input: one decode unless last-token pooling, never more than the context', () => {
    assert.equal(inputLimit('mean', 512, 4096), 512);
    assert.equal(inputLimit('rank', 512, 256), 256);
    assert.equal(inputLimit('last', 512, 4096), 4096);
  });

  test('too long: refused with both sizes, or cut keeping an appended end token', () => {
    const tokens = [1, 5, 6, 7, 8, 2];
    assert.deepEqual(fitInput(tokens, 6, { truncate: false, what: 'input[0]', appendedEos: null }), tokens);
    refuses(() => fitInput(tokens, 4, { truncate: false, what: 'input[3]', appendedEos: null }), /input\[3\]: 6 tokens, more than the 4 this model takes per input/, 'input[3]');
    assert.deepEqual(fitInput(tokens, 4, { truncate: true, what: 'input[0]', appendedEos: null }), [1, 5, 6, 7]);
    assert.deepEqual(fitInput(tokens, 4, { truncate: true, what: 'input[0]', appendedEos: 2 }), [1, 5, 6, 2]);
    refuses(() => fitInput([], 4, { truncate: true, what: 'input[1]', appendedEos: null }), /input\[1\]: is empty/);
  });

  test('several inputs per decode, within nBatch tokens and nSeqMax sequences, each whole', () => {
    const steps = embedSteps([3, 4, 2, 5, 1], { nBatch: 8, nSeqMax: 4, splittable: false });
    assert.deepEqual(
      steps.map((s) => s.pieces.map((p) => [p.input, p.seq, p.from, p.to])),
      [[[0, 0, 0, 3], [1, 1, 0, 4]], [[2, 0, 0, 2], [3, 1, 0, 5], [4, 2, 0, 1]]],
    );
    assert.ok(steps.every((s) => s.fresh));
    assert.deepEqual(steps[1]!.done, [{ input: 2, seq: 0 }, { input: 3, seq: 1 }, { input: 4, seq: 2 }]);
    assert.deepEqual(embedSteps([1, 1, 1], { nBatch: 8, nSeqMax: 2, splittable: false }).map((s) => s.pieces.length), [2, 1]);
    assert.throws(() => embedSteps([9], { nBatch: 8, nSeqMax: 2, splittable: false }), /does not fit one decode/);
  });

  test('last-token pooling: a longer input takes decodes of its own, its cache kept between them', () => {
    const steps = embedSteps([2, 19, 3], { nBatch: 8, nSeqMax: 4, splittable: true });
    assert.deepEqual(
      steps.map((s) => [s.fresh, s.pieces.map((p) => [p.input, p.seq, p.from, p.to]), s.done.map((d) => d.input)]),
      [
        [true, [[0, 0, 0, 2]], [0]],
        [true, [[1, 0, 0, 8]], []],
        [false, [[1, 0, 8, 16]], []],
        [false, [[1, 0, 16, 19]], [1]],
        [true, [[2, 0, 0, 3]], [2]],
      ],
    );
  });
});

describe("the rerank prompt, as llama-server's format_prompt_rerank", () => {
  // A fake tokenizer: one token per character (its code), 1000 + code when special tokens are parsed, and
  // 999 (a BOS) first when special tokens are added.
  const tokenize = (text: string, addSpecial: boolean, parseSpecial: boolean) => [...(addSpecial ? [999] : []), ...[...text].map((c) => (parseSpecial ? 1000 : 0) + c.charCodeAt(0))];
  const vocab: RerankVocabulary = { rerankTemplate: null, bos: 1, eos: 2, sep: 3, addBos: true, addEos: true, addSep: true };

  test('with a rerank template: every {query}, then every {document}, replaced; special tokens parsed, none added', () => {
    const v = { ...vocab, rerankTemplate: 'Q={query};D={document};Q2={query}' };
    const tokens = rerankTokens(v, tokenize, 'a$&', '{query}b');
    assert.equal(String.fromCharCode(...tokens.map((t) => t - 1000)), 'Q=a$&;D={query}b;Q2=a$&', 'no $ patterns, no second pass over the query');
  });

  test('without: BOS, query, EOS and SEP as the tokenizer adds them, document, EOS', () => {
    assert.deepEqual(rerankTokens(vocab, tokenize, 'q', 'dd'), [1, 113, 2, 3, 100, 100, 2]);
    assert.deepEqual(rerankTokens({ ...vocab, addBos: false, addEos: false, addSep: false }, tokenize, 'q', 'd'), [113, 100]);
    assert.deepEqual(rerankTokens({ ...vocab, eos: -1, addSep: false }, tokenize, 'q', 'd'), [1, 113, 3, 100, 3], 'SEP when there is no EOS');
  });
});
