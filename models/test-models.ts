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
  'nLayer' | 'nEmbd' | 'nHead' | 'nHeadKv' | 'nFf' | 'nCtxTrain' | 'architecture' | 'nExpert' | 'nExpertUsed' | 'nFfExp' | 'nSwa' | 'swaPattern'
>;

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
  /** The shape of a 1B llama (16 blocks, 2048 wide, GQA 32/8, 8192 FFN): ~1.1 B parameters. */
  '1b': { nLayer: 16, nEmbd: 2048, nHead: 32, nHeadKv: 8, nFf: 8192, nCtxTrain: 4096 },
} as const satisfies Record<string, TestModelShape>;

export type TestModelPreset = keyof typeof TEST_MODEL_PRESETS;
export const TEST_MODEL_QUANTS = ['f16', 'q8_0', 'q4_k_m'] as const;
export type TestModelQuant = (typeof TEST_MODEL_QUANTS)[number];

/** A Llama-2 style template: llama.cpp recognises it ([INST], <<SYS>>) and the SPM vocabulary fits it. */
export const TEST_CHAT_TEMPLATE =
  "{% for message in messages %}{% if message['role'] == 'system' %}<<SYS>>\\n{{ message['content'] }}\\n<</SYS>>\\n\\n" +
  "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]{% else %} {{ message['content'] }} </s>{% endif %}{% endfor %}";

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
