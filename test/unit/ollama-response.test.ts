// hearth's results and models in Ollama's shapes: the final line's figures, tool calls with object
// arguments, model details and capabilities. Pure: no coordinator.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { capabilities, details, modelInfo, parameterSize, psEntry, quantizationLevel, showResponse, tagsEntries } from '../../coordinator/http/ollama-models.js';
import { embedVectors, figures, finalLine, loadLine, partLine, toolCalls } from '../../coordinator/http/ollama-response.js';
import type { GenerateResult } from '../../coordinator/engine/engine-process.js';
import type { ServedModel } from '../../coordinator/served-models.js';
import type { ModelFacts } from '../../models/gguf-info.js';

const USAGE = { promptTokens: 12, completionTokens: 5, cachedTokens: 0, draftTokens: 0, draftAcceptedTokens: 0 };
const AT = new Date('2025-01-02T03:04:05.678Z');
const TIMING = { received: 1000, started: 1250, firstToken: 1300, ended: 1500 };

const FACTS = {
  path: '/models/tiny.gguf',
  fileBytes: 123_456,
  shards: [{ path: '/models/tiny.gguf', bytes: 123_456, tensorCount: 10 }],
  architecture: 'llama',
  name: 'tiny',
  layerCount: 4,
  contextLength: 4096,
  embeddingLength: 256,
  feedForwardLength: 1024,
  headCount: 8,
  headCountKv: 4,
  headDimK: 32,
  headDimV: 32,
  vocabSize: 32000,
  fileType: 15,
  chatTemplate: "{%- if tools %}...{%- endif %}{%- if enable_thinking is defined %}<think>{%- endif %}",
  layerBytes: [1, 1, 1, 1],
  inputBytes: 1,
  outputBytes: 1,
  outputTied: false,
  otherBytes: 0,
  totalTensorBytes: 6,
  parameterCount: 1_134_592_000,
  tensorTypes: { q4_K: 10 },
} satisfies ModelFacts;

const MODEL: ServedModel = { id: 'tiny', aliases: ['tiny-chat'], kind: 'chat', status: 'loaded', policy: 'pinned', facts: FACTS, ctxSize: 512, loadedBytes: 9_000_000, expiresAt: null, lastUsedAt: null };
const STAMP = { digest: '0123456789abcdef', modifiedAt: new Date('2024-12-01T00:00:00.000Z') };

describe('chat and generate answers', () => {
  test('the final figures are nanoseconds: the wait, the prompt until the first token, the rest', () => {
    const result: GenerateResult = { finishReason: 'length', usage: USAGE, text: 'hello' };
    assert.deepEqual(figures(result, TIMING), {
      done_reason: 'length',
      total_duration: 500_000_000,
      load_duration: 250_000_000,
      prompt_eval_count: 12,
      prompt_eval_duration: 50_000_000,
      eval_count: 5,
      eval_duration: 200_000_000,
    });
    assert.equal(figures({ ...result, finishReason: 'tool_calls' }, TIMING).done_reason, 'stop', 'Ollama ends a tool call with stop');
    assert.equal(figures(result, { received: 0, started: null, firstToken: null, ended: 10 }).eval_duration, 0, 'no token: no eval time');
  });

  test('tool calls carry their arguments as objects (text only when the model wrote no JSON object)', () => {
    assert.deepEqual(toolCalls([{ id: 'c1', name: 'get_time', arguments: '{"zone":"UTC"}' }, { id: 'c2', name: 'noop', arguments: '' }, { id: 'c3', name: 'odd', arguments: 'not json' }]), [
      { id: 'c1', function: { index: 0, name: 'get_time', arguments: { zone: 'UTC' } } },
      { id: 'c2', function: { index: 1, name: 'noop', arguments: {} } },
      { id: 'c3', function: { index: 2, name: 'odd', arguments: 'not json' } },
    ]);
  });

  test('a whole chat answer: content, thinking, tool calls, figures, and how often it was resumed', () => {
    const result: GenerateResult = {
      finishReason: 'tool_calls',
      usage: USAGE,
      text: 'raw',
      reply: { content: '', reasoningContent: 'hmm', toolCalls: [{ id: 'c1', name: 'get_time', arguments: '{"zone":"UTC"}' }] },
      resumed: 1,
    };
    const line = finalLine('chat', 'tiny:latest', AT, result, TIMING, { logprobs: null });
    assert.deepEqual(line, {
      model: 'tiny:latest',
      created_at: '2025-01-02T03:04:05.678Z',
      message: { role: 'assistant', content: '', thinking: 'hmm', tool_calls: [{ id: 'c1', function: { index: 0, name: 'get_time', arguments: { zone: 'UTC' } } }] },
      done: true,
      ...figures(result, TIMING),
      hearth_resumed: 1,
    });
  });

  test('generate answers in response; a stream\'s last line carries no text; a load answers done_reason load', () => {
    const result: GenerateResult = { finishReason: 'stop', usage: USAGE, text: 'Once upon' };
    const whole: Record<string, unknown> = finalLine('generate', 'tiny', AT, result, TIMING, { logprobs: [] });
    assert.equal(whole.response, 'Once upon');
    assert.deepEqual(whole.logprobs, []);
    const last: Record<string, unknown> = finalLine('generate', 'tiny', AT, result, TIMING, null);
    assert.equal(last.response, '');
    assert.equal('logprobs' in last, false);
    assert.deepEqual(partLine('chat', 'tiny', AT, { content: 'He', thinking: '' }), { model: 'tiny', created_at: AT.toISOString(), message: { role: 'assistant', content: 'He' }, done: false });
    assert.deepEqual(loadLine('generate', 'tiny', AT), { model: 'tiny', created_at: AT.toISOString(), response: '', done: true, done_reason: 'load' });
    assert.deepEqual((loadLine('chat', 'tiny', AT) as Record<string, unknown>).message, { role: 'assistant', content: '' });
  });

  test('embed vectors cut to dimensions are unit length again', () => {
    const [v] = embedVectors([[0.6, 0.8, 0, 0]], 1);
    assert.deepEqual(v, [1]);
    assert.deepEqual(embedVectors([[3, 4]], null), [[3, 4]]);
    assert.deepEqual(embedVectors([[0.6, 0.8]], 8), [[0.6, 0.8]], 'more dimensions than the vector: as it is');
  });
});

describe('models as Ollama lists them', () => {
  test('parameter sizes and quantization levels read as Ollama writes them', () => {
    assert.equal(parameterSize(8_000_000_000), '8B');
    assert.equal(parameterSize(1_134_592_000), '1.1B');
    assert.equal(parameterSize(494_032_768), '494.03M');
    assert.equal(parameterSize(137_000_000), '137M');
    assert.equal(parameterSize(12_345), '12K');
    assert.equal(parameterSize(null), 'unknown');
    assert.equal(quantizationLevel(15), 'Q4_K_M');
    assert.equal(quantizationLevel(1), 'F16');
    assert.equal(quantizationLevel(7), 'Q8_0');
    assert.equal(quantizationLevel(null), 'unknown');
  });

  test('details and model_info come from the header facts', () => {
    assert.deepEqual(details(FACTS), { parent_model: '', format: 'gguf', family: 'llama', families: ['llama'], parameter_size: '1.1B', quantization_level: 'Q4_K_M' });
    const info = modelInfo(FACTS);
    assert.equal(info['general.architecture'], 'llama');
    assert.equal(info['general.parameter_count'], 1_134_592_000);
    assert.equal(info['llama.context_length'], 4096);
    assert.equal(info['llama.attention.head_count_kv'], 4);
    assert.equal('llama.expert_count' in info, false, 'a dense model has no expert keys');
    assert.deepEqual(details(null).family, '');
  });

  test('capabilities: tools and thinking from the template; embedding models embed', () => {
    assert.deepEqual(capabilities(MODEL), ['completion', 'tools', 'thinking']);
    assert.deepEqual(capabilities({ kind: 'chat', facts: { ...FACTS, chatTemplate: '{{ messages }}' } }), ['completion']);
    assert.deepEqual(capabilities({ kind: 'embedding', facts: FACTS }), ['embedding']);
  });

  test('tags list each name (id and aliases); ps a loaded model with its bytes, no VRAM, its context', () => {
    const tags = tagsEntries(MODEL, STAMP);
    assert.deepEqual(tags.map((t) => t.name), ['tiny', 'tiny-chat']);
    assert.deepEqual(tags[0], { name: 'tiny', model: 'tiny', modified_at: '2024-12-01T00:00:00.000Z', size: 123_456, digest: '0123456789abcdef', details: details(FACTS) });
    const ps = psEntry(MODEL, STAMP);
    assert.equal(ps.size, 9_000_000);
    assert.equal(ps.size_vram, 0);
    assert.equal(ps.context_length, 512);
    assert.match(ps.expires_at, /^2318-/, 'pinned: never');
    assert.equal(psEntry({ ...MODEL, expiresAt: Date.parse('2025-01-01T00:10:00Z') }, STAMP).expires_at, '2025-01-01T00:10:00.000Z');
  });

  test('show: the Jinja template, num_ctx, capabilities, a minimal Modelfile', () => {
    const s = showResponse(MODEL, STAMP);
    assert.equal(s.template, FACTS.chatTemplate);
    assert.match(s.parameters, /^num_ctx\s+512$/);
    assert.match(s.modelfile, /^FROM \/models\/tiny\.gguf$/m);
    assert.deepEqual(s.capabilities, ['completion', 'tools', 'thinking']);
    assert.equal(s.modified_at, '2024-12-01T00:00:00.000Z');
  });
});
