// Bad inputs to the native layer end in thrown, typed errors with clear messages, and this process
// lives on: llama.cpp would abort on an unreachable RPC server, so hearth probes before it connects.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ErrorCode, HearthError } from '../../common/errors.js';
import { loadBinding, toHearthError } from '../../native/binding.js';
import { connectRpcServers, LlamaModel } from '../../native/llama.js';
import { probeRpcServer } from '../../native/rpc-probe.js';
import { testModel } from '../helpers/models.js';
import { freePort, heldClient, startRpcServer, type RpcServerHandle } from '../helpers/rpc-server.js';

function rejectsWith(code: ErrorCode, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof HearthError, `a HearthError, got ${String(e)}`);
    assert.equal(e.code, code, `code of: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  };
}

describe('load errors', () => {
  let dir: string;
  let modelPath: string;
  let server: RpcServerHandle;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hearth-errors-'));
    modelPath = await testModel('tiny');
    server = await startRpcServer();
  });
  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a missing file names the path', async () => {
    const missing = join(dir, 'nope.gguf');
    await assert.rejects(LlamaModel.load(missing), rejectsWith(ErrorCode.NotFound, /model file not found: .*nope\.gguf/));
  });

  test('a file that is not GGUF is refused', async () => {
    const junk = join(dir, 'junk.gguf');
    writeFileSync(junk, 'this is not a model, just some text that is long enough to have a header\n'.repeat(10));
    await assert.rejects(LlamaModel.load(junk), rejectsWith(ErrorCode.InvalidModel, /not a valid GGUF file/));
  });

  test('a truncated GGUF is refused before llama.cpp reads the weights', async () => {
    const cut = join(dir, 'cut.gguf');
    copyFileSync(modelPath, cut);
    const fd = openSync(cut, 'r+');
    ftruncateSync(fd, Math.floor(readFileSync(modelPath).length / 2));
    closeSync(fd);
    await assert.rejects(LlamaModel.load(cut), rejectsWith(ErrorCode.InvalidModel, /truncated/));
  });

  test('an unreachable RPC endpoint is an error naming it, and this process survives', async () => {
    const port = await freePort();
    await assert.rejects(connectRpcServers([`127.0.0.1:${port}`], { timeoutMs: 2000 }), rejectsWith(ErrorCode.Unavailable, new RegExp(`127\\.0\\.0\\.1:${port}.*unreachable`)));
    await assert.rejects(connectRpcServers(['not-an-endpoint']), rejectsWith(ErrorCode.InvalidArgument, /not an RPC endpoint/));
  });

  test('a server that accepts but never answers times out instead of hanging', async () => {
    // ggml-rpc-server serves one client at a time: hold it with a client that said HELLO, and probe again
    // (a connection that says nothing holds nothing: the server reads each connection's first command on
    // the side, to tell a peer server's link from a client).
    const holder = await heldClient(server.port);
    try {
      const started = Date.now();
      await assert.rejects(probeRpcServer(server.endpoint, { timeoutMs: 500 }), rejectsWith(ErrorCode.Unavailable, /did not answer within 500 ms/));
      assert.ok(Date.now() - started < 3000);
    } finally {
      holder.destroy();
    }
  });

  test('impossible splits are refused with the reason', async () => {
    const [device] = await connectRpcServers([server.endpoint]);
    assert.ok(device);
    await assert.rejects(
      LlamaModel.load(modelPath, { devices: [device.name], tensorSplit: [1, 1, 1] }),
      rejectsWith(ErrorCode.InvalidArgument, /tensorSplit: 3 entries for 1 devices/),
    );
    await assert.rejects(LlamaModel.load(modelPath, { devices: [device.name], tensorSplit: [-1] }), rejectsWith(ErrorCode.InvalidArgument, /finite and >= 0/));
    await assert.rejects(LlamaModel.load(modelPath, { devices: [device.name], tensorSplit: [0] }), rejectsWith(ErrorCode.InvalidArgument, /every share is 0/));
    await assert.rejects(LlamaModel.load(modelPath, { devices: ['RPC99'] }), rejectsWith(ErrorCode.InvalidArgument, /no device named 'RPC99'/));
    // Row split needs split buffers, which RPC devices lack: llama.cpp refuses, and says why.
    await assert.rejects(LlamaModel.load(modelPath, { devices: [device.name], splitMode: 'row' }), rejectsWith(ErrorCode.InvalidModel, /failed to load .*split/i));
  });

  test('a load can be cancelled', async () => {
    // Native path: the abort flag is read by llama.cpp's progress callback, which stops the load.
    const b = loadBinding();
    const m = new b.AddonModel(modelPath, { devices: [], splitMode: 'layer', tensorSplit: null, nGpuLayers: 0, mainGpu: 0, loadMode: 'auto' });
    const load = m.load(null);
    m.abortLoad();
    await assert.rejects(load, (e: unknown) => toHearthError(e).code === ErrorCode.Cancelled && /model load cancelled/.test(String(e)));
    // Through an AbortSignal that fired before the load started.
    await assert.rejects(
      LlamaModel.load(modelPath, { devices: [], nGpuLayers: 0, signal: AbortSignal.abort() }),
      rejectsWith(ErrorCode.Cancelled, /cancelled/),
    );
    // And a fresh load after them works.
    const model = await LlamaModel.load(modelPath, { devices: [], nGpuLayers: 0 });
    assert.equal(model.info.nLayer, 4);
    model.dispose();
  });
});
