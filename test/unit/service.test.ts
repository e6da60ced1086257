// `hearth service`'s pure parts: the systemd unit (checked by systemd-analyze and read back as systemd
// reads it), the launchd plist (read by Python's plistlib), where files go, the environment a service
// gets, the flags checked by the commands' own parsers, the private-file rule for tokens, and the order
// of systemctl's calls (a fake runner).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { launchdPlist, systemdUnit, type ServiceDefinition } from '../../cli/service/definition.js';
import { servicePlace } from '../../cli/service/locations.js';
import { Systemd, systemdStateLine, type Runner, type SystemdHost } from '../../cli/service/manager.js';
import { privateFileRefusal } from '../../cli/service/private-file.js';
import { serviceArgs } from '../../cli/service/service-args.js';
import { SECRET_VARIABLES, serviceEnvironment } from '../../cli/service/service-environment.js';
import { newToken } from '../../link/token.js';
import { execStartArgv, haveSystemdAnalyze, unitEnvironment, unitValue, verifyUnit } from '../helpers/systemd.js';

const me = userInfo();
/** Words that systemd would split, expand or unescape if they were written as they are. */
const AWKWARD = ['--name', 'box with spaces', '--models', '/data/50% "quoted" $HOME \\ back', '--config', "/etc/it's.yaml", '--device', 'CUDA0,CPU'];

function definition(scope: 'system' | 'user', command: string[] = AWKWARD): ServiceDefinition {
  return {
    role: 'worker',
    scope,
    command: [process.execPath, '/opt/hearth/bin/hearth.js', 'worker', ...command],
    workingDirectory: me.homedir,
    environment: { HOME: me.homedir, HEARTH_MODELS: '/srv/models 100%', HF_ENDPOINT: 'https://mirror.example/$x' },
    user: me.username,
  };
}

describe('systemd unit', () => {
  for (const scope of ['system', 'user'] as const) {
    test(`a ${scope} unit passes systemd-analyze verify`, { skip: haveSystemdAnalyze ? false : 'systemd-analyze is not installed (Debian: systemd)' }, () => {
      const r = verifyUnit(systemdUnit(definition(scope)), 'hearth-worker.service', scope);
      assert.equal(r.output, '', 'systemd-analyze prints nothing for a valid unit');
      assert.equal(r.status, 0);
    });
  }

  test('systemd-analyze does find a broken unit (so the test above can fail)', { skip: haveSystemdAnalyze ? false : 'systemd-analyze is not installed' }, () => {
    const broken = systemdUnit(definition('system')).replace('ExecStart=', 'ExecStart="').replace('Restart=', 'Restrat=');
    const r = verifyUnit(broken, 'hearth-worker.service', 'system');
    assert.notEqual(r.output, '');
  });

  test('ExecStart read back as systemd splits it is the command, word for word', () => {
    const def = definition('system');
    const [exec] = unitValue(systemdUnit(def), 'Service', 'ExecStart');
    assert.deepEqual(execStartArgv(exec!), def.command);
  });

  test('the environment, the user, restarts and ordering', () => {
    const unit = systemdUnit(definition('system'));
    assert.deepEqual(unitEnvironment(unit), definition('system').environment);
    assert.deepEqual(unitValue(unit, 'Service', 'User'), [me.username]);
    assert.deepEqual(unitValue(unit, 'Service', 'Restart'), ['on-failure']);
    assert.deepEqual(unitValue(unit, 'Service', 'RestartSec'), ['5']);
    assert.deepEqual(unitValue(unit, 'Unit', 'After'), ['network-online.target']);
    assert.deepEqual(unitValue(unit, 'Unit', 'Wants'), ['network-online.target']);
    assert.deepEqual(unitValue(unit, 'Install', 'WantedBy'), ['multi-user.target']);
    const user = systemdUnit(definition('user'));
    assert.deepEqual(unitValue(user, 'Service', 'User'), [], 'a user unit runs as its user');
    assert.deepEqual(unitValue(user, 'Install', 'WantedBy'), ['default.target']);
  });

  test('an argument with a control character is refused, not written', () => {
    assert.throws(() => systemdUnit(definition('system', ['--name', 'a\nExecStartPre=/bin/evil'])), /control character/);
  });
});

const havePython = spawnSync('python3', ['-c', 'import plistlib'], { stdio: 'ignore' }).status === 0;

describe('launchd plist', () => {
  test('is a well-formed property list with the command and environment', { skip: havePython ? false : "python3 (plistlib) is not installed" }, () => {
    const def = { ...definition('system'), command: [...definition('system').command, '--memory', '<8GiB & more>'] };
    const text = launchdPlist(def, { label: 'hearth.worker', logFile: '/Library/Logs/hearth/worker.log' });
    const dir = mkdtempSync(join(tmpdir(), 'hearth-plist-'));
    try {
      writeFileSync(join(dir, 'hearth.worker.plist'), text);
      const r = spawnSync('python3', ['-c', 'import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], "rb"))))', join(dir, 'hearth.worker.plist')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const plist = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(plist.Label, 'hearth.worker');
      assert.deepEqual(plist.ProgramArguments, def.command);
      assert.deepEqual(plist.EnvironmentVariables, def.environment);
      assert.equal(plist.UserName, me.username);
      assert.equal(plist.RunAtLoad, true);
      assert.deepEqual(plist.KeepAlive, { SuccessfulExit: false });
      assert.equal(plist.ThrottleInterval, 5);
      assert.equal(plist.StandardErrorPath, '/Library/Logs/hearth/worker.log');
      assert.equal(plist.WorkingDirectory, me.homedir);
      const agent = launchdPlist(definition('user'), { label: 'hearth.worker', logFile: '/x.log' });
      assert.doesNotMatch(agent, /UserName/, 'an agent runs as its user');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('service places', () => {
  test('systemd and launchd, system and user, under HEARTH_SERVICE_ROOT', () => {
    const base = { role: 'worker', home: '/home/ann', root: null } as const;
    assert.equal(servicePlace({ ...base, platform: 'systemd', scope: 'system' }).file, '/etc/systemd/system/hearth-worker.service');
    assert.equal(servicePlace({ ...base, platform: 'systemd', scope: 'user' }).file, '/home/ann/.config/systemd/user/hearth-worker.service');
    assert.equal(servicePlace({ ...base, platform: 'systemd', scope: 'user', configHome: '/cfg' }).file, '/cfg/systemd/user/hearth-worker.service');
    assert.equal(servicePlace({ ...base, platform: 'systemd', scope: 'system', root: '/tmp/r' }).file, '/tmp/r/etc/systemd/system/hearth-worker.service');
    const daemon = servicePlace({ ...base, platform: 'launchd', scope: 'system', role: 'coordinator', root: '/tmp/r' });
    assert.equal(daemon.file, '/tmp/r/Library/LaunchDaemons/hearth.coordinator.plist');
    assert.equal(daemon.logFile, '/Library/Logs/hearth/coordinator.log', 'the plist names the real log path');
    assert.equal(servicePlace({ ...base, platform: 'launchd', scope: 'user' }).file, '/home/ann/Library/LaunchAgents/hearth.worker.plist');
  });
});

describe('service environment', () => {
  const ann = { name: 'ann', uid: 1000, home: '/home/ann' };
  const env = {
    HEARTH_TOKEN: 'hearth1_secret', HF_TOKEN: 'hf_secret', HEARTH_API_KEY: 'key', HUGGING_FACE_HUB_TOKEN: 'hf_old',
    HEARTH_MODELS: 'models', HF_ENDPOINT: 'https://mirror.example', XDG_CACHE_HOME: '/home/root-cache', PATH: '/usr/bin', HOME: '/root',
  };

  test('HOME is the service account\'s; secrets are never carried; paths become absolute', () => {
    const e = serviceEnvironment(env, ann, false, '/srv');
    assert.deepEqual(e, { HOME: '/home/ann', HEARTH_MODELS: '/srv/models', HF_ENDPOINT: 'https://mirror.example' });
    for (const secret of SECRET_VARIABLES) assert.equal(serviceEnvironment(env, ann, true, '/srv')[secret], undefined, secret);
  });

  test("the invoker's XDG folders only for a service that runs as the invoker", () => {
    assert.equal(serviceEnvironment(env, ann, true, '/srv').XDG_CACHE_HOME, '/home/root-cache');
    assert.equal(serviceEnvironment(env, ann, false, '/srv').XDG_CACHE_HOME, undefined);
  });
});

describe('token files', () => {
  const ann = { name: 'ann', uid: 1000, home: '/home/ann' };
  const stat = (uid: number, mode: number) => () => ({ uid, mode: 0o100000 | mode });

  test('private to the service user: accepted', () => {
    assert.equal(privateFileRefusal('the token file', '/t', ann, stat(1000, 0o600)), null);
    assert.equal(privateFileRefusal('the token file', '/t', ann, stat(1000, 0o400)), null);
  });

  test('readable by others, or owned by someone else: refused with the commands that fix it', () => {
    assert.equal(
      privateFileRefusal('the token file', '/t', ann, stat(1000, 0o644)),
      'the token file /t can be read by other users (mode 0644), and a service would keep it that way for good: run `chmod 600 /t`, then install again',
    );
    assert.match(privateFileRefusal('the token file', '/t', ann, stat(1000, 0o640))!, /mode 0640/);
    assert.match(privateFileRefusal('the token file', '/t', ann, stat(0, 0o600))!, /belongs to uid 0, not to ann \(uid 1000\).*`chown ann \/t` and `chmod 600 \/t`/);
    assert.match(privateFileRefusal('the token file', '/t', ann, stat(1000, 0o200))!, /cannot be read even by its owner/);
    assert.match(privateFileRefusal('the token file', '/nope', ann, () => { throw new Error('ENOENT: no such file or directory'); })!, /cannot read the token file \/nope: no such file/);
  });
});

describe('systemd manager', () => {
  function fake(booted: boolean, fail: string | null = null): { calls: string[]; runner: Runner; host: SystemdHost } {
    const calls: string[] = [];
    const runner: Runner = {
      run(cmd, args) {
        const line = [cmd, ...args].join(' ');
        calls.push(line);
        return fail && line.includes(fail) ? { status: 1, stdout: '', stderr: 'Failed to connect to bus\n', error: null } : { status: 0, stdout: '', stderr: '', error: null };
      },
      attached: async () => 0,
    };
    return { calls, runner, host: { booted: () => booted, pid1: () => 'process_api' } };
  }
  const place = servicePlace({ platform: 'systemd', scope: 'system', role: 'worker', home: '/root', root: null });

  test('a new service: reload, enable and start; a replaced one: reload, enable, restart', () => {
    const f = fake(true);
    new Systemd(place, f.runner, f.host).activate(false);
    new Systemd(place, f.runner, f.host).activate(true);
    assert.deepEqual(f.calls, [
      'systemctl daemon-reload', 'systemctl enable --now hearth-worker.service',
      'systemctl daemon-reload', 'systemctl enable hearth-worker.service', 'systemctl restart hearth-worker.service',
    ]);
    const u = fake(true);
    new Systemd({ ...place, scope: 'user' }, u.runner, u.host).deactivate();
    assert.deepEqual(u.calls, ['systemctl --user disable --now hearth-worker.service']);
  });

  test('without systemd as PID 1 it says so and asks nothing', () => {
    const f = fake(false);
    assert.match(new Systemd(place, f.runner, f.host).unavailable()!, /systemd is not running on this machine \(PID 1 is process_api/);
    assert.equal(new Systemd(place, fake(true).runner, fake(true).host).unavailable(), null);
    assert.deepEqual(f.calls, []);
  });

  test("a failing systemctl is an error with systemctl's words", () => {
    const f = fake(true, 'enable');
    assert.throws(() => new Systemd(place, f.runner, f.host).activate(false), /`systemctl enable --now hearth-worker.service` failed: Failed to connect to bus/);
  });

  test("systemctl show's properties in one line", () => {
    assert.equal(
      systemdStateLine('ActiveState=active\nSubState=running\nMainPID=42\nNRestarts=1\nUnitFileState=enabled\nActiveEnterTimestamp=Sat 2026-12-05 10:00:00 UTC\n'),
      'running (pid 42) since Sat 2026-12-05 10:00:00 UTC, 1 restarts after failures; starts at boot',
    );
    assert.equal(systemdStateLine('ActiveState=failed\nSubState=failed\nMainPID=0\nNRestarts=0\nUnitFileState=disabled\n'), 'failed (failed), 0 restarts after failures; does not start at boot (disabled)');
  });
});

describe('service flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-service-args-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const token = join(dir, 'cluster.token');
  writeFileSync(token, `${newToken()}\n`, { mode: 0o600 });
  const account = { name: me.username, uid: me.uid, home: me.homedir };
  const args = (role: 'worker' | 'coordinator', flags: string[], more: Partial<Parameters<typeof serviceArgs>[0]> = {}) =>
    serviceArgs({ role, args: flags, cwd: dir, env: { HOME: me.homedir }, invokerHasTokenEnv: false, account, ...more });

  mkdirSync(join(dir, 'models'));
  for (const model of ['m.gguf', 'd.gguf']) writeFileSync(join(dir, model), '');

  test('paths become absolute, other values stay as given', () => {
    assert.deepEqual(args('worker', ['--token-file', 'cluster.token', '--models=models', '--name', 'models', '--no-mdns']), {
      args: ['--token-file', token, `--models=${join(dir, 'models')}`, '--name', 'models', '--no-mdns'],
      tokenFile: token,
    });
    assert.deepEqual(args('coordinator', ['--model', 'm.gguf', '--draft-model', 'd.gguf', '--worker', 'a:1', 'b:2']).args, ['--model', join(dir, 'm.gguf'), '--draft-model', join(dir, 'd.gguf'), '--worker', 'a:1', 'b:2']);
    assert.deepEqual(args('coordinator', ['--model', 'hf:owner/repo:Q4_K_M']).args, ['--model', 'hf:owner/repo:Q4_K_M'], 'a hub name is not a path');
    assert.deepEqual(args('coordinator', ['-hf', 'owner/repo']).args, ['--hf-repo', 'owner/repo']);
  });

  test("the commands' own checks run: a models path that is no directory, a missing model", () => {
    writeFileSync(join(dir, 'file'), '');
    assert.throws(() => args('worker', ['--token-file', token, '--models', 'file']), /^HearthError: models: .*file is not a directory/);
    assert.throws(() => args('coordinator', ['--model', 'missing.gguf']), { message: `model file not found: ${join(dir, 'missing.gguf')}` });
  });

  test('secrets on the command line are refused with advice', () => {
    assert.throws(() => args('worker', ['--token', newToken()]), /--token: a service definition can be read by every user of this machine\. Keep the token in a file/);
    assert.throws(() => args('coordinator', ['--model', 'm.gguf', '--api-key', 'abcdefghijk']), /--api-key: .*Put the keys in cluster\.yaml \(apiKeys:\), `chmod 600` it/);
  });

  test('HEARTH_TOKEN does not reach a service: without --token-file the service is refused', () => {
    assert.throws(() => args('worker', [], { invokerHasTokenEnv: true }), /refusing to serve on 0\.0\.0\.0 without a cluster token.*HEARTH_TOKEN is set here, but a service does not get it/);
    assert.throws(() => args('coordinator', ['--model', 'm.gguf'], { invokerHasTokenEnv: true }), /HEARTH_TOKEN is set here.*or unset it for an open cluster/);
  });

  test('a token file (or a config holding a token) must belong to the account the service runs as', () => {
    const other = { name: 'nobody', uid: me.uid + 1, home: '/nonexistent' };
    assert.throws(() => args('worker', ['--token-file', token], { account: other }), new RegExp(`belongs to uid ${me.uid}, not to nobody .*\`chown nobody ${token}\``));
    const config = join(dir, 'worker.yaml');
    writeFileSync(config, `token: ${newToken()}\n`, { mode: 0o644 });
    chmodSync(config, 0o644);
    assert.throws(() => args('worker', ['--config', config]), /the config file \(it holds the cluster token\) .*worker\.yaml can be read by other users \(mode 0644\)/);
    chmodSync(config, 0o600);
    assert.deepEqual(args('worker', ['--config', 'worker.yaml']).args, ['--config', config]);
  });
});
