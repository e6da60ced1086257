// The worker daemon as users run it: a real `hearth worker` process with its real ggml-rpc-server.
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, type Server } from 'node:net';
import { describe, test } from 'node:test';

import { loadBinding } from '../../native/binding.js';
import { Batch, connectRpcServers, LlamaModel } from '../../native/llama.js';
import { parseMemAvailable } from '../../host/host-memory.js';
import { spawnChild } from '../helpers/children.js';
import { testModel } from '../helpers/models.js';
import { freePort } from '../helpers/rpc-server.js';
import { isAlive, readyHealth, runCli, startWorker, waitFor } from '../helpers/worker.js';

describe('hearth worker', () => {
  test('GetInfo reports real device memory, versions and the rpc endpoint; a llama.cpp client loads a model onto it', async () => {
    const w = await startWorker();
    try {
      const info = await w.client.getInfo();
      const sys = loadBinding().systemInfo();
      assert.match(info.worker_id, /^[0-9a-f-]{36}$/);
      assert.equal(info.state, 'READY');
      assert.deepEqual(
        { release: info.build.llama_cpp_release, ggml: info.build.ggml_version, rpc: info.build.rpc_protocol },
        { release: 'v0.5.0', ggml: sys.ggmlVersion, rpc: '7.1.0' },
      );
      assert.equal(info.rpc_host, '127.0.0.1');
      assert.equal(info.rpc_port, w.rpcPort);
      assert.equal(info.control_port, w.controlPort);
      assert.equal(info.devices.length, 1);
      const cpu = info.devices[0]!;
      assert.equal(cpu.name, 'CPU');
      assert.equal(cpu.backend, 'CPU');
      // ggml would say free == total; the worker reports the kernel's MemAvailable instead.
      const available = parseMemAvailable(readFileSync('/proc/meminfo', 'utf8'))!;
      const free = Number(cpu.free_bytes);
      assert.ok(free < Number(cpu.total_bytes), `free ${free} < total ${cpu.total_bytes}`);
      assert.ok(Math.abs(free - available) < 512 * 2 ** 20, `free ${free} close to MemAvailable ${available}`);
      assert.equal(Number(info.host_total_bytes), Number(cpu.total_bytes));
      assert.equal(info.cache.enabled, true);
      assert.equal(info.cache.files, 0);
      // The devices and their memory come from the rpc server's executable: the worker daemon never
      // loads the addon (nor, on a GPU build, a GPU backend of its own).
      const maps = readFileSync(`/proc/${w.process.pid}/maps`, 'utf8');
      assert.ok(!maps.includes('hearth.node'), 'the worker process has the addon mapped');
      assert.ok(!maps.includes('libggml'), 'the worker process has ggml mapped');

      // The advertised endpoint serves llama.cpp's own RPC client.
      const devices = await connectRpcServers([`${info.rpc_host}:${info.rpc_port}`]);
      const model = await LlamaModel.load(await testModel('tiny'), { devices: devices.map((d) => d.name), nGpuLayers: -1 });
      try {
        assert.equal(model.layersByDevice().get(devices[0]!.name), 5, 'every block and the output head on the worker');
        const ctx = await model.createContext({ nCtx: 256, nThreads: 1 });
        const sampler = model.createSampler();
        const batch = new Batch();
        batch.sample(batch.addSequence(model.tokenize('hello worker'), 0, 0, true), sampler);
        const [token] = await ctx.decode(batch);
        assert.ok(token !== undefined && token >= 0 && token < model.info.nVocab);
        sampler.dispose();
        ctx.dispose();
      } finally {
        model.dispose();
      }
      // The 16 MB output tensor went into the worker's tensor cache, and GetInfo reports its size.
      const after = await waitFor('the tensor cache to fill', async () => {
        const i = await w.client.getInfo();
        return i.cache.files > 0 ? i : null;
      });
      assert.ok(Number(after.cache.bytes) > 10 * 2 ** 20, `cache holds ${after.cache.bytes} bytes`);
    } finally {
      const exit = await w.stop();
      assert.equal(exit.code, 0, w.logs());
    }
  });

  test('a SIGKILLed rpc server is restarted and the worker lives on', async () => {
    const w = await startWorker();
    try {
      const before = await readyHealth(w.client);
      assert.ok(before.rpc_server_pid > 0);
      process.kill(before.rpc_server_pid, 'SIGKILL');
      const after = await waitFor('a new rpc server', async () => {
        const h = await w.client.health({ timeoutMs: 1000 });
        return h.ready && h.rpc_server_pid !== before.rpc_server_pid ? h : null;
      });
      assert.equal(after.rpc_restarts, 1);
      assert.equal(w.process.exitCode, null, 'the worker process is alive');
      // The log is written asynchronously: wait for the lines rather than race them.
      await waitFor('the restart to be logged', async () => /ggml-rpc-server exited \(SIGKILL\); restarting/.test(w.logs()) && /restarted and ready/.test(w.logs()));
      // And the new server answers llama.cpp's handshake.
      await connectRpcServers([`127.0.0.1:${w.rpcPort}`]);
    } finally {
      await w.stop();
    }
  });

  test('SIGTERM stops the worker and leaves no ggml-rpc-server behind', async () => {
    const w = await startWorker();
    const { rpc_server_pid: child } = await readyHealth(w.client);
    assert.ok(isAlive(child));
    const exit = await w.stop('SIGTERM');
    assert.equal(exit.code, 0, w.logs());
    assert.equal(isAlive(child), false, `rpc server ${child} is gone`);
  });

  test('SIGKILL of the worker itself takes its rpc server down too', async () => {
    const w = await startWorker();
    const { rpc_server_pid: child } = await readyHealth(w.client);
    await w.stop('SIGKILL');
    await waitFor('the orphaned rpc server to die', async () => !isAlive(child), 5000);
  });

  describe('refuses to start, saying why', () => {
    const run = async (args: string[]) => {
      const child = runCli(['worker', '--no-mdns', '--threads', '1', ...args]);
      let out = '';
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      return { code, out };
    };

    test('when its rpc port is taken', async () => {
      const port = await freePort();
      const blocker: Server = createServer();
      await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
      try {
        const r = await run(['--host', '127.0.0.1', '--rpc-port', String(port), '--control-port', String(await freePort())]);
        assert.equal(r.code, 1);
        assert.match(r.out, new RegExp(`rpc port ${port} on 127.0.0.1 is already in use.*--rpc-port`));
      } finally {
        blocker.close();
      }
    });

    test('when a device does not exist', async () => {
      const r = await run(['--host', '127.0.0.1', '--rpc-port', String(await freePort()), '--control-port', String(await freePort()), '--device', 'CUDA7']);
      assert.equal(r.code, 2);
      assert.match(r.out, /--device: no device named 'CUDA7' on this machine \(known: CPU\)/);
    });

    test('when the native build is missing, saying how to build it', async () => {
      // A copy of the sources without native/build.
      const root = mkdtempSync(join(tmpdir(), 'hearth-nobuild-'));
      try {
        const src = fileURLToPath(new URL('../../', import.meta.url));
        const skip = new Set(['native', 'node_modules', 'dist', 'test', '.git', '.ci', 'bin']);
        for (const entry of readdirSync(src, { withFileTypes: true })) {
          if (entry.isDirectory() && !skip.has(entry.name)) cpSync(join(src, entry.name), join(root, entry.name), { recursive: true });
        }
        mkdirSync(join(root, 'native'));
        for (const f of readdirSync(join(src, 'native'))) if (f.endsWith('.ts') || f === 'CMakeLists.txt' || f === 'package.json') cpSync(join(src, 'native', f), join(root, 'native', f));
        cpSync(join(src, 'package.json'), join(root, 'package.json'));
        symlinkSync(join(src, 'node_modules'), join(root, 'node_modules'));
        const child = spawnChild(process.execPath, ['--import', 'tsx', join(root, 'cli', 'main.ts'), 'worker', '--host', '127.0.0.1', '--no-mdns'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
        assert.equal(code, 1, out);
        // A copy without .git is not a checkout: the hint is the build script itself, as for an installed hearth.
        assert.match(out, /the native build is missing \(addon not found at .*hearth\.node\); build it with `(npm run build:native|node \S+\/native\/scripts\/build\.mjs)`/);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    test('when an address or port is malformed', async () => {
      const host = await run(['--host', 'not-an-ip']);
      assert.equal(host.code, 2);
      assert.match(host.out, /host: 'not-an-ip' is not an IPv4 address/);
      const port = await run(['--rpc-port', '70000']);
      assert.equal(port.code, 2);
      assert.match(port.out, /--rpc-port: '70000' is not a whole number from 1 to 65535/);
      const same = await run(['--rpc-port', '50999', '--control-port', '50999']);
      assert.equal(same.code, 2);
      assert.match(same.out, /rpcPort and controlPort are both 50999/);
    });
  });
});
