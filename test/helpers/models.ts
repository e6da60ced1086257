// Test models, made once per machine and reused by every test file (creation is deterministic).
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createTestModel, testModelFileName, type TestModelPreset, type TestModelQuant } from '../../models/test-models.js';

export const TEST_MODEL_DIR = join(tmpdir(), 'hearth-test-models');

export async function testModel(preset: TestModelPreset = 'tiny', quant: TestModelQuant = 'f16', seed = 1): Promise<string> {
  const path = join(TEST_MODEL_DIR, testModelFileName(preset, quant, seed));
  if (!existsSync(path)) await createTestModel({ out: path, preset, quant, seed });
  return path;
}
