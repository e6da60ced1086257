// `hearth service` as a user runs it, with HEARTH_SERVICE_ROOT so that the files land in a temporary
// folder and no service manager is asked: a unit that systemd-analyze accepts and whose ExecStart is
// the command given, refusals in the command's own words, --force, status and uninstall.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { newToken } from '../../link/token.js';
import { childCommand } from '../helpers/child-command.js';
import { execStartArgv, haveSystemdAnalyze, unitEnvironment, unitValue, verifyUnit } from '../helpers/systemd.js';

const cli = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));
const entry = fileURLToPath(new URL('../../bin/hearth.js', import.meta.url));
// The commands run in a folder of their own (relative paths are part of the test): tsx by its path.
const tsx = import.meta.resolve('tsx');

describe('hearth service', { skip: process.platform === 'linux' ? false : 'the CLI test writes systemd units (Linux)' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-service-'));
  const root = join(dir, 'root');
  const unit = join(root, 'etc/systemd/system/hearth-worker.service');
  after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, HEARTH_SERVICE_ROOT: root, HEARTH_TOKEN: '', SUDO_USER: '', HEARTH_MODELS: 'library' };
  const hearth = (...args: string[]) => spawnSync(...childCommand(process.execPath, ['--import', tsx, cli, ...args]), { encoding: 'utf8', timeout: 60_000, cwd: dir, env });
  const token = join(dir, 'cluster.token');
  writeFileSync(token, `${newToken()}\n`, { mode: 0o644 });
  chmodSync(token, 0o644);

  test('a token file others can read is refused, with the fix', () => {
    const r = hearth('service', 'install', 'worker', '--token-file', 'cluster.token');
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr.trim(), `hearth: error: the token file ${token} can be read by other users (mode 0644), and a service would keep it that way for good: run \`chmod 600 ${token}\`, then install again`);
    assert.equal(existsSync(unit), false, 'nothing is written');
  });

  test('install writes a unit that systemd accepts and that runs the command given', () => {
    chmodSync(token, 0o600);
    const flags = ['--name', 'box one', '--no-mdns', '--threads', '2', '--models', 'models', '--force'];
    mkdirSync(join(dir, 'models'));
    const r = hearth('service', 'install', 'worker', '--token-file', 'cluster.token', ...flags);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /not started: HEARTH_SERVICE_ROOT=/);
    const text = readFileSync(unit, 'utf8');
    const [exec] = unitValue(text, 'Service', 'ExecStart');
    // --force is install's own; relative paths are made absolute, since the service runs in its user's home.
    assert.deepEqual(execStartArgv(exec!), [process.execPath, entry, 'worker', '--token-file', token, '--name', 'box one', '--no-mdns', '--threads', '2', '--models', join(dir, 'models')]);
    assert.doesNotMatch(text, /hearth1_/, 'the token itself is not in the unit');
    assert.deepEqual(unitValue(text, 'Service', 'User'), [userInfo().username]);
    assert.deepEqual(unitValue(text, 'Service', 'WorkingDirectory'), [userInfo().homedir]);
    assert.deepEqual(unitEnvironment(text), { HOME: userInfo().homedir, HEARTH_MODELS: join(dir, 'library') });
    if (haveSystemdAnalyze) {
      const verified = verifyUnit(text, 'hearth-worker.service', 'system');
      assert.equal(verified.output, '');
      assert.equal(verified.status, 0);
    }
  });

  test('an installed service is replaced only with --force', () => {
    const again = hearth('service', 'install', 'worker', '--token-file', token, '--threads', '1');
    assert.equal(again.status, 1);
    assert.match(again.stderr, /hearth-worker\.service is installed already \(.*hearth-worker\.service\): add --force to replace it/);
    assert.match(readFileSync(unit, 'utf8'), /--threads 2/, 'left as it was');
    const forced = hearth('service', 'install', '--force', 'worker', '--token-file', token, '--threads', '1');
    assert.equal(forced.status, 0, forced.stderr);
    assert.match(forced.stdout, /^replaced /);
    assert.deepEqual(execStartArgv(unitValue(readFileSync(unit, 'utf8'), 'Service', 'ExecStart')[0]!).slice(3), ['--token-file', token, '--threads', '1']);
  });

  test("a coordinator service is refused in the coordinator's own words", () => {
    const service = hearth('service', 'install', 'coordinator', '--no-mdns');
    const itself = hearth('coordinator', '--no-mdns');
    assert.equal(service.status, itself.status);
    assert.equal(service.stderr, itself.stderr);
    assert.match(service.stderr, /^hearth: error: no model: give --model/);
    const open = ['--model', 'm.gguf', '--host', '0.0.0.0'];
    const openService = hearth('service', 'install', 'coordinator', ...open);
    assert.equal(openService.status, 1);
    assert.match(openService.stderr, /^hearth: error: refusing to serve the APIs on 0\.0\.0\.0 without API keys/);
    assert.equal(existsSync(join(root, 'etc/systemd/system/hearth-coordinator.service')), false);
  });

  test('status and uninstall', () => {
    const s = hearth('service', 'status');
    assert.equal(s.status, 0, s.stderr);
    assert.match(s.stdout, /^worker: installed, .*hearth-worker\.service\n {2}state: unknown: HEARTH_SERVICE_ROOT is set/m);
    assert.match(s.stdout, /^coordinator: not installed/m);
    const u = hearth('service', 'uninstall', 'worker');
    assert.equal(u.status, 0, u.stderr);
    assert.equal(existsSync(unit), false);
    assert.equal(existsSync(token), true, 'the token file stays');
  });
});
