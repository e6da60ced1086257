// The Containerfile read as a builder reads it: its stages, what it copies, what it exposes, what it
// runs, and that no secret can go into the image. test/integration/container.test.ts builds and runs it.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { compileCoordinatorConfig } from '../../coordinator/config.js';
import { compileWorkerConfig } from '../../worker/config.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const text = readFileSync(`${repo}Containerfile`, 'utf8');
const ignored = readFileSync(`${repo}.containerignore`, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Instructions by stage (the global ARGs under ''), continuation lines joined, comments dropped. */
function stages(file: string): Map<string, Instruction[]> {
  const out = new Map<string, Instruction[]>([['', []]]);
  let current = out.get('')!;
  const logical = file.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const line of logical) {
    const [op, ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    if (op === 'FROM') {
      const name = /\bAS\s+(\S+)$/i.exec(args)?.[1];
      assert.ok(name, `every stage is named: ${line}`);
      current = [{ op, args }];
      out.set(name, current);
    } else {
      current.push({ op: op!, args });
    }
  }
  return out;
}

const parsed = stages(text);
const stage = (name: string) => parsed.get(name) ?? assert.fail(`no stage ${name}`);
const args = (name: string, op: string) => stage(name).filter((i) => i.op === op).map((i) => i.args);

describe('Containerfile', () => {
  test('stages: node, a build stage, and the runtime stage last', () => {
    assert.deepEqual([...parsed.keys()], ['', 'node', 'build', 'runtime-base', 'runtime']);
    assert.equal(stage('runtime')[0]!.args, 'runtime-base AS runtime');
    assert.match(args('runtime-base', 'RUN').join('\n'), /apt-get install .*\biproute2\b/, '`ss`, for round-trip times and byte counts');
    assert.deepEqual(args('', 'ARG').map((a) => a.split('=')[0]), ['NODE_IMAGE', 'BUILD_IMAGE', 'RUNTIME_IMAGE'], 'the base images are build args');
    assert.match(args('build', 'ARG').join(), /HEARTH_GPU/, 'the GPU backend is a build arg');
    assert.match(args('build', 'RUN').join('\n'), /HEARTH_GPU="\$HEARTH_GPU" HEARTH_PORTABLE=1 node native\/scripts\/build\.mjs/);
  });

  test('the entrypoint is hearth, run by the node the image carries', () => {
    const [entrypoint] = args('runtime', 'ENTRYPOINT');
    const argv = JSON.parse(entrypoint!) as string[];
    assert.equal(argv.length, 2);
    assert.match(args('runtime-base', 'COPY').join('\n'), new RegExp(`--from=node ${argv[0]} `), 'node is copied where the entrypoint runs it');
    const [work] = args('build', 'WORKDIR');
    assert.equal(argv[1], `${work}/bin/hearth.js`);
    assert.ok(existsSync(`${repo}bin/hearth.js`));
    assert.match(args('runtime', 'COPY').join('\n'), new RegExp(`--from=build ${work} ${work}$`, 'm'), 'the runtime takes the build stage\'s installation whole');
  });

  test("it exposes hearth's default ports", () => {
    const worker = compileWorkerConfig({ file: null, flags: { insecure: true }, env: {} });
    const coordinator = compileCoordinatorConfig({ file: null, flags: {} });
    const exposed = args('runtime', 'EXPOSE').join(' ').split(/\s+/).map(Number).sort();
    assert.deepEqual(exposed, [worker.controlPort, worker.rpcPort, coordinator.grpcPort, coordinator.httpPort].sort());
  });

  test('caches and state live in the volume', () => {
    const [volume] = args('runtime', 'VOLUME');
    const env = args('runtime', 'ENV').join(' ');
    for (const name of ['XDG_CACHE_HOME', 'XDG_STATE_HOME']) assert.match(env, new RegExp(`${name}=${volume}/`), name);
  });

  test('what it copies from the context exists, and is not left out of the context', () => {
    const sources = args('build', 'COPY').filter((a) => !a.startsWith('--from')).flatMap((a) => a.split(/\s+/).slice(0, -1));
    assert.ok(sources.length >= 3);
    for (const s of sources) {
      if (s === '.') continue;
      assert.ok(existsSync(`${repo}${s}`), `${s} exists`);
      assert.ok(!ignored.some((i) => s === i || s.startsWith(`${i}/`)), `${s} is not in .containerignore`);
    }
  });

  test('no secret goes into the image', () => {
    for (const i of [...parsed.values()].flat()) {
      if (i.op === 'ARG' || i.op === 'ENV') assert.doesNotMatch(i.args, /TOKEN|KEY|PASSWORD|SECRET/i, `${i.op} ${i.args}`);
    }
    assert.doesNotMatch(text, /hearth1_/);
    // `COPY . .` takes the checkout: a token or cluster file a user keeps there must stay out.
    for (const pattern of ['**/*.token', '**/cluster.yaml', '.git', 'node_modules']) assert.ok(ignored.includes(pattern), `.containerignore leaves out ${pattern}`);
  });
});
