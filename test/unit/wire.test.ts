// The coordinator's wire types (coordinator/wire.ts) are hand-written beside the proto. A status view
// sent through the real gRPC serializer and read back must come out unchanged: a field the proto does
// not know would be dropped, one the view does not fill would appear with its default, a wrong type
// would change.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { serviceDefinition } from '../../common/grpc.js';
import { plan } from '../../coordinator/planner/planner.js';
import type { CoordinatorSnapshot } from '../../coordinator/snapshot.js';
import { statusView } from '../../coordinator/views.js';
import type { WorkerId } from '../../link/worker-wire.js';
import { plannerModel } from '../helpers/planner.js';

const GiB = 1024 ** 3;

function roundTrip<T>(method: string, value: T): unknown {
  const m = serviceDefinition('CoordinatorService')[method]!;
  return m.responseDeserialize(m.responseSerialize(value));
}

describe('coordinator wire types', () => {
  const p = plan({
    model: plannerModel(),
    devices: [{ key: 'w1/CPU', kind: 'rpc', owner: 'alpha', deviceName: 'CPU', endpoint: '10.0.0.2:50052', serverIndex: 0, freeBytes: 8 * GiB, totalBytes: 8 * GiB, bytesPerSecond: 2e10 }],
    context: { ctxSize: 512, parallel: 2, typeK: 'f16', typeV: 'f16', nUbatch: 512, pipeline: 'auto' },
    reserveBytes: 0,
    objective: 'memory',
  });
  assert.ok(p.fits);
  const snapshot: CoordinatorSnapshot = {
    state: 'serving', reason: '', modelPath: '/models/tiny.gguf', modelName: 'tiny', contentId: 'abc',
    plan: { ...p, devices: p.devices.map((d) => ({ ...d, expertLayers: [1, 2] })) },
    load: { progress: 1, seconds: 1.5, phases: { connectSeconds: 0.25, weightsSeconds: 1, contextSeconds: 0.25 }, bytesSent: { '10.0.0.2:50052': 123 }, loads: 1, groups: 1 },
    inFlight: 1, waiting: 0, parallel: 2, ctxSize: 512,
    workers: [{
      control: '10.0.0.2:50051', source: 'static', state: 'admitted', reason: '', id: 'w1' as WorkerId, name: 'alpha', rpcEndpoint: '127.0.0.1:40000', rpcRemote: '10.0.0.2:50052',
      admittedSeq: 1, lastSeen: 0, infoAt: 0, rpcPid: 7, leavingSince: 0,
      info: {
        worker_id: 'w1', name: 'alpha', hostname: 'alpha', state: 'READY', build: { llama_cpp_release: 'v0.5.0', ggml_version: '0.25.1', ggml_commit: 'x', rpc_protocol: '7.0.0', backends: ['CPU'] },
        devices: [{ name: 'CPU', backend: 'CPU', type: 'cpu', description: 'cpu', free_bytes: String(8 * GiB), total_bytes: String(8 * GiB), bytes_per_second: 2e10, bytes_per_second_by_type: {} }],
        rpc_host: '10.0.0.2', rpc_port: 50052, control_port: 50051, host_total_bytes: '0', host_available_bytes: '0', cache: { enabled: true, dir: '/c', bytes: '42', files: 1 }, threads: 1, rpc_restarts: 0,
        started_at_ms: '0', link: { secure: false, cluster_id: '', accepted: 0, refused: 0, token_mismatches: 0 }, limits: { memory_cap_bytes: '0', cgroup_memory_bytes: '0', cpu_quota_cores: 0 },
        models: [{ content_id: 'abc', file: 'tiny.gguf', bytes: '1', state: 'seeding', progress: 0.5, error: '' }],
        draining: false, drain_reason: '',
      },
    }],
    secure: false, clusterId: null, lastReplan: '', speculation: 'off',
    events: [{ time: '2026-12-05T00:00:00.000Z', kind: 'state', message: 'serving' }],
    history: [{ t: 1, tokensPerSecond: 2.5, ttftMs: 10, inFlight: 1, waiting: 0 }],
    models: [],
  };
  snapshot.models = [
    {
      id: 'tiny', aliases: ['t'], kind: 'chat', policy: 'pinned', status: 'loaded', state: 'serving', reason: '', modelPath: '/models/tiny.gguf', modelName: 'tiny', contentId: 'abc',
      plan: snapshot.plan, load: snapshot.load, inFlight: 1, waiting: 0, parallel: 2, ctxSize: 512, loadedBytes: 1234, lastUsedAt: 1700000000000, expiresAt: null, speculation: 'off',
    },
    {
      id: 'embed', aliases: [], kind: 'embedding', policy: 'on-demand', status: 'on disk', state: 'unloaded', reason: 'idle for 10 min', modelPath: '/models/e.gguf', modelName: 'e', contentId: null,
      plan: null, load: { progress: 0, seconds: 0, phases: null, bytesSent: null, loads: 0, groups: 0 }, inFlight: 0, waiting: 0, parallel: 4, ctxSize: 512, loadedBytes: 0, lastUsedAt: null, expiresAt: null, speculation: 'off',
    },
  ];
  const build = { llamaCppRelease: 'v0.5.0', ggmlVersion: '0.25.1', ggmlCommit: 'x', rpcProtocol: '7.0.0', backends: ['CPU'] };

  test('GetStatus: the status view survives the proto unchanged', () => {
    const view = statusView(snapshot, build as Parameters<typeof statusView>[1]);
    assert.equal(view.workers[0]!.model_local, 'seeding 50%');
    assert.deepEqual(roundTrip('GetStatus', view), view);
  });

  test('GetPlan: a plan that does not fit survives too, its absent fields read as proto3 defaults', () => {
    const refused = statusView({ ...snapshot, plan: null }, build as Parameters<typeof statusView>[1]).plan;
    assert.deepEqual(roundTrip('GetPlan', refused), { objective: '', predicted_seconds_per_token: 0, groups: 0, ...refused });
  });
});
