// Test models: GGUFs of the llama, qwen3, qwen3moe and gemma3 architectures with deterministic random
// weights and llama.cpp's real SPM tokenizer. The text they produce is gibberish, but the computation is real, so a model split across
// workers must give the same greedy tokens as the same model in one process.
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { ErrorCode, HearthError } from '../common/errors.js';
import { loadBinding, nativeAsync, requireNativeBuild, type TestModelSpec } from '../native/binding.js';

/** A test model's shape: the architecture and sizes the native writer takes (native/binding.ts). */
export type TestModelShape = Pick<
  TestModelSpec,
  'nLayer' | 'nEmbd' | 'nHead' | 'nHeadKv' | 'nFf' | 'nCtxTrain' | 'architecture' | 'nExpert' | 'nExpertUsed' | 'nFfExp' | 'nSwa' | 'swaPattern' | 'residualScale' | 'outputStdev'
  | 'poolingType' | 'classifierLabels' | 'rerankTemplate' | 'tiedOutput' | 'addBos' | 'addEos'
>;

/**
 * The rerank prompt llama.cpp's converter writes into a Qwen3-Reranker GGUF (tokenizer.chat_template.rerank,
 * conversion/qwen.py); llama-server fills in {query} and {document}.
 */
export const QWEN3_RERANK_TEMPLATE =
  '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n' +
  '<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n' +
  '<|im_start|>assistant\n<think>\n\n</think>\n\n';

export const TEST_MODEL_PRESETS = {
  /** 4 blocks, 37 MB in F16: loads in well under a second; output.weight is over the RPC cache threshold. */
  tiny: { nLayer: 4, nEmbd: 256, nHead: 4, nHeadKv: 2, nFf: 512, nCtxTrain: 4096 },
  /** 8 blocks, ~140 MB in F16. */
  small: { nLayer: 8, nEmbd: 512, nHead: 8, nHeadKv: 4, nFf: 1536, nCtxTrain: 4096 },
  /**
   * 2 blocks, 1024 wide with a 6144 FFN, ~220 MB in F16: most of its bytes are in tensors over the RPC
   * tensor cache's 10 MiB threshold, so it shows what the cache saves.
   */
  wide: { nLayer: 2, nEmbd: 1024, nHead: 8, nHeadKv: 8, nFf: 6144, nCtxTrain: 4096 },
  /** Qwen3-style dense: Q/K norms, GQA 8/2, 6 blocks. */
  qwen3: { architecture: 'qwen3', nLayer: 6, nEmbd: 256, nHead: 8, nHeadKv: 2, nFf: 768, nCtxTrain: 4096 },
  /**
   * Qwen3-MoE-style: 8 experts of 384 wide, 2 used per token, a router per layer, 4 blocks. (llama.cpp's
   * qwen3moe takes one expert width for all layers.)
   */
  'qwen3-moe': {
    architecture: 'qwen3moe', nLayer: 4, nEmbd: 256, nHead: 8, nHeadKv: 2, nFf: 768, nCtxTrain: 4096,
    nExpert: 8, nExpertUsed: 2, nFfExp: [384, 384, 384, 384],
  },
  /**
   * Gemma3-style: sliding-window attention (a 128-token window, every 3rd layer global) whose KV cache is
   * smaller, post-norms, and the output head tied to the token embedding; 6 blocks.
   */
  gemma3: { architecture: 'gemma3', nLayer: 6, nEmbd: 256, nHead: 4, nHeadKv: 1, nFf: 768, nCtxTrain: 4096, nSwa: 128, swaPattern: 3 },
  /**
   * A pair for speculative decoding, made with the same seed: the draft is the target's first block
   * alone (same embeddings, block 0 and output head, bit for bit); the target's 23 further blocks add
   * 1 % of their usual output to the residual stream, so the two agree on most greedy tokens but not all
   * (about 0.8 of positions on English prose). The output head's wider spread keeps the top token clear.
   * Per token the draft costs about a sixth of the target (~265 MB in F16).
   */
  target: { nLayer: 24, nEmbd: 512, nHead: 8, nHeadKv: 4, nFf: 2048, nCtxTrain: 4096, residualScale: 0.01, outputStdev: 0.4 },
  draft: { nLayer: 1, nEmbd: 512, nHead: 8, nHeadKv: 4, nFf: 2048, nCtxTrain: 4096, residualScale: 0.01, outputStdev: 0.4 },
  /**
   * Qwen3-Embedding-style: qwen3 with last-token pooling (qwen3.pooling_type = last) of the end-of-text
   * token the tokenizer appends, and the output head tied to the token embedding, 4 blocks; it serves
   * /v1/embeddings, not chat.
   */
  embed: { architecture: 'qwen3', nLayer: 4, nEmbd: 256, nHead: 8, nHeadKv: 2, nFf: 768, nCtxTrain: 4096, poolingType: 'last', addEos: true, tiedOutput: true },
  /**
   * Qwen3-Reranker-style, as llama.cpp's converter writes one: rank pooling, a two-row rank head
   * (cls.output: "yes", "no"; llama.cpp takes the softmax, and the score is P(yes)), the rerank prompt,
   * no BOS (Qwen's tokenizer adds none), no output.weight; 4 blocks. It serves /v1/rerank.
   */
  rerank: {
    architecture: 'qwen3', nLayer: 4, nEmbd: 256, nHead: 8, nHeadKv: 2, nFf: 768, nCtxTrain: 4096,
    poolingType: 'rank', classifierLabels: ['yes', 'no'], rerankTemplate: QWEN3_RERANK_TEMPLATE, addBos: false, tiedOutput: true,
  },
  /** The shape of a 1B llama (16 blocks, 2048 wide, GQA 32/8, 8192 FFN): ~1.1 B parameters. */
  '1b': { nLayer: 16, nEmbd: 2048, nHead: 32, nHeadKv: 8, nFf: 8192, nCtxTrain: 4096 },
} as const satisfies Record<string, TestModelShape>;

export type TestModelPreset = keyof typeof TEST_MODEL_PRESETS;
export const TEST_MODEL_QUANTS = ['f16', 'q8_0', 'q4_k_m'] as const;
export type TestModelQuant = (typeof TEST_MODEL_QUANTS)[number];

/**
 * A Qwen3-style ChatML template with tools (Hermes <tool_call> JSON) and <think> reasoning, so llama.cpp's
 * chat code gives the test models a real tool-call format and reasoning parser. The SPM vocabulary has
 * no ChatML special tokens: the markers tokenize into ordinary pieces, which is fine for tests.
 */
export const TEST_CHAT_TEMPLATE = [
  "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}",
  "{{- '# Tools\\n\\nYou may call one or more functions. Their signatures are within <tools></tools>:\\n<tools>' }}",
  "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}",
  "{{- '\\n</tools>\\n\\nFor each function call, return a JSON object with the function name and arguments within <tool_call></tool_call> tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}",
  "{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}",
  '{%- for message in messages %}',
  "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}",
  "{%- if message.reasoning_content %}{{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' }}{%- endif %}",
  '{%- if message.content %}{{- message.content }}{%- endif %}',
  '{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}',
  "{%- if (loop.first and message.content) or (not loop.first) %}{{- '\\n' }}{%- endif %}",
  '{%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}',
  "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}",
  '{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}',
  "{{- '}\\n</tool_call>' }}{%- endfor %}{%- endif %}",
  "{{- '<|im_end|>\\n' }}",
  "{%- elif message.role == 'tool' %}",
  "{%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}",
  "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}",
  "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}",
  '{%- endif %}{%- endfor %}',
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}",
  "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}",
].join('');

/** Bumped whenever what createTestModel writes changes, so caches keyed by it never serve a stale model. */
export const TEST_MODEL_REVISION = 2;

/** The file name a cache of test models keeps one under: what it is, and which revision wrote it. */
export function testModelFileName(preset: TestModelPreset, quant: TestModelQuant = 'f16', seed = 1): string {
  return `${preset}-${quant}-seed${seed}-r${TEST_MODEL_REVISION}.gguf`;
}

export interface CreateTestModelOptions {
  out: string;
  preset?: TestModelPreset;
  quant?: TestModelQuant;
  seed?: number;
  threads?: number;
}

export function isTestModelPreset(v: string): v is TestModelPreset {
  return Object.hasOwn(TEST_MODEL_PRESETS, v);
}

export function isTestModelQuant(v: string): v is TestModelQuant {
  return (TEST_MODEL_QUANTS as readonly string[]).includes(v);
}

/**
 * Writes the model to `out` atomically (a temporary file renamed into place), so an interrupted run
 * never leaves a half-written model behind. Same preset, quant and seed: same bytes.
 */
export async function createTestModel(options: CreateTestModelOptions): Promise<string> {
  const preset = options.preset ?? 'tiny';
  const quant = options.quant ?? 'f16';
  const seed = options.seed ?? 1;
  if (!isTestModelPreset(preset)) {
    throw new HearthError(ErrorCode.InvalidArgument, `--preset: '${preset}' is not one of ${Object.keys(TEST_MODEL_PRESETS).join(', ')}`);
  }
  if (!isTestModelQuant(quant)) throw new HearthError(ErrorCode.InvalidArgument, `--quant: '${quant}' is not one of ${TEST_MODEL_QUANTS.join(', ')}`);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new HearthError(ErrorCode.InvalidArgument, `--seed: '${seed}' must be a non-negative integer`);

  const out = resolve(options.out);
  mkdirSync(dirname(out), { recursive: true });
  const { vocab } = requireNativeBuild();
  const b = loadBinding();
  const tag = randomBytes(4).toString('hex');
  const f16 = `${out}.${tag}.f16.tmp`;
  const quantized = `${out}.${tag}.${quant}.tmp`;
  try {
    await nativeAsync(() =>
      b.createTestModel({
        out: f16,
        vocab,
        name: `hearth-test-${preset}-${quant}-seed${seed}`,
        chatTemplate: TEST_CHAT_TEMPLATE,
        weightType: 'f16',
        seed,
        stdev: 0.02,
        ...TEST_MODEL_PRESETS[preset],
      }),
    );
    if (quant === 'f16') {
      renameSync(f16, out);
    } else {
      await nativeAsync(() => b.quantize(f16, quantized, quant, options.threads ?? 0));
      renameSync(quantized, out);
    }
    return out;
  } finally {
    rmSync(f16, { force: true });
    rmSync(quantized, { force: true });
  }
}
