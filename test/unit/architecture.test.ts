// The architecture rules of .dependency-cruiser.mjs, checked on every import of the source: one
// test per rule, failing with the rule's name and each import that breaks it.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { cruise, type ICruiseResult, type IViolation } from 'dependency-cruiser';
import extractDepcruiseConfig from 'dependency-cruiser/config-utl/extract-depcruise-config';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const config = await extractDepcruiseConfig(join(root, '.dependency-cruiser.mjs'));
const rules = config.forbidden ?? [];
/** The folders the layer rules place (`layers/<folder>`), host/ among them before it exists. */
const layered = rules.flatMap((r) => (r.name?.startsWith('layers/') ? [r.name.slice('layers/'.length)] : []));

/** Top-level folders holding no code of ours. */
const NOT_CODE = new Set(['node_modules', 'dist', 'docs', 'examples', 'proto']);

function hasCode(dir: string): boolean {
  return readdirSync(dir, { withFileTypes: true }).some((e) =>
    e.isDirectory() ? e.name !== 'build' && hasCode(join(dir, e.name)) : /\.(ts|js|mjs|cjs)$/.test(e.name),
  );
}

function describeViolation(v: IViolation): string {
  if (v.cycle?.length) return [v.from, ...v.cycle.map((c) => c.name)].join(' → ');
  return `${v.from} → ${v.to}`;
}

describe('architecture (.dependency-cruiser.mjs)', () => {
  let violations: IViolation[] = [];

  before(async () => {
    const folders = [...layered, 'test'].filter((f) => existsSync(join(root, f)));
    const { output } = await cruise(
      folders,
      { validate: true, ruleSet: config, baseDir: root, outputType: 'json' },
      {},
      { tsConfig: extractTSConfig(join(root, 'tsconfig.test.json')) },
    );
    const result = (typeof output === 'string' ? JSON.parse(output) : output) as ICruiseResult;
    violations = result.summary.violations;
  });

  test('every folder with code is a layer (or test/)', () => {
    const folders = readdirSync(root, { withFileTypes: true })
      .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !NOT_CODE.has(e.name))
      .map((e) => e.name)
      .filter((f) => hasCode(join(root, f)));
    const unplaced = folders.filter((f) => f !== 'test' && !layered.includes(f));
    assert.deepEqual(unplaced, [], `give ${unplaced.join(', ')} a place in LAYERS in .dependency-cruiser.mjs`);
  });

  for (const rule of rules) {
    const name = rule.name ?? '(unnamed rule)';
    test(name, () => {
      const broken = violations.filter((v) => v.rule.name === name);
      assert.ok(
        broken.length === 0,
        `${name}: ${rule.comment ?? ''}\n${broken.map((v) => `  ${describeViolation(v)}`).join('\n')}`,
      );
    });
  }
});
