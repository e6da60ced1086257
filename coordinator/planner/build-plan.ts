// The plan: from seats and layer counts to what each device holds, what llama.cpp is given, and the
// predicted time per token (null unless every device that takes part was measured).
import { kvBytesPerToken } from './kv.js';
import type { ExpertMove, Layout } from './layout.js';
import type { Seat } from './seats.js';
import { sum } from './sum.js';
import { hopOf, secondsOf, workOf, type DeviceWork } from './time-model.js';
import type { ExcludedDevice, ModelFacts, Plan, PlannedDevice, PlanInput } from './types.js';

export function buildPlan(input: PlanInput, layout: Layout, seats: Seat[], counts: number[], excluded: ExcludedDevice[], moves: readonly ExpertMove[] = []): Plan {
  const work = workOf(counts, layout, moves);
  let first = 0;
  const devices = seats.map((seat, i) => {
    const planned = plannedDevice(input.model, layout, seat, first, work[i]!);
    first += counts[i]!;
    return planned;
  });
  for (const { from, to, blocks } of moves) {
    const moved = sum(blocks.map((b) => layout.experts[b]!));
    devices[from] = withExperts(devices[from]!, -moved, []);
    devices[to] = withExperts(devices[to]!, moved, blocks);
  }
  const measured = devices.every((d) => d.secondsPerToken !== null);
  const rpc = devices.filter((d) => d.kind === 'rpc');
  const expertOverrides = devices.flatMap((d) => (d.expertLayers.length > 0 ? [{ layers: d.expertLayers, device: rpc.indexOf(d) }] : []));
  const hostBytes = input.model.inputBytes;
  return {
    fits: true,
    split: 'layer',
    splitChoice: { setting: 'layer', layer: { mode: 'layer', secondsPerToken: null, refusal: null, parts: null }, tensor: { mode: 'tensor', secondsPerToken: null, refusal: 'not planned', parts: null }, reason: '' },
    tensor: null,
    devices,
    excluded,
    rpcEndpoints: rpc.map((d) => d.endpoint ?? ''),
    rpcDevices: rpc.map((d) => seats.find((s) => s.device.key === d.key)!.device.serverIndex ?? 0),
    tensorSplit: rpc.map((d) => d.layers),
    expertOverrides,
    nGpuLayers: sum(rpc.map((d) => d.layers)),
    hostBytes,
    kvBytesPerToken: kvBytesPerToken(input.model, input.context.typeK, input.context.typeV),
    // Everything the cluster holds for this model, the coordinator's input embedding included.
    totalBytes: sum(devices.map((d) => d.totalBytes)) + hostBytes,
    context: { ...input.context },
    objective: input.objective ?? 'memory',
    predictedSecondsPerToken: measured ? sum(devices.map((d) => d.secondsPerToken!)) : null,
    groups: layout.groups,
  };
}

/** The device holding `work.layers` slots from `firstLayer`, before any experts move. */
function plannedDevice(model: ModelFacts, layout: Layout, seat: Seat, firstLayer: number, work: DeviceWork): PlannedDevice {
  const end = firstLayer + work.layers;
  const blocks = Math.max(0, Math.min(end, model.layerCount) - firstLayer);
  const holdsOutput = end > model.layerCount;
  const weightBytes = sum(model.layerBytes.slice(firstLayer, firstLayer + blocks)) + (holdsOutput ? model.outputBytes : 0);
  const kvBytes = sum(layout.kv.slice(firstLayer, firstLayer + blocks));
  const computeBytes = layout.computeBase + (holdsOutput ? layout.logits : 0);
  const { key, kind, owner, deviceName, endpoint, freeBytes } = seat.device;
  const bytesPerSecond = seat.device.bytesPerSecond && seat.device.bytesPerSecond > 0 ? seat.device.bytesPerSecond : null;
  const hopSeconds = hopOf(seat.device);
  return {
    key,
    kind,
    owner,
    deviceName,
    endpoint,
    firstLayer,
    layers: work.layers,
    holdsOutput,
    weightBytes,
    readBytes: work.readBytes,
    expertLayers: [],
    kvBytes,
    computeBytes,
    totalBytes: weightBytes + kvBytes + computeBytes,
    freeBytes,
    usableBytes: seat.usable,
    bytesPerSecond,
    secondsPerToken: bytesPerSecond === null ? null : secondsOf(work, bytesPerSecond, hopSeconds),
    hopSeconds,
  };
}

/** A planned device that gives (negative bytes) or takes the expert tensors of some blocks. */
function withExperts(d: PlannedDevice, bytes: number, blocks: number[]): PlannedDevice {
  const weightBytes = d.weightBytes + bytes;
  const expertLayers = d.expertLayers.length > 0 ? [...d.expertLayers, ...blocks].sort((a, b) => a - b) : blocks;
  return { ...d, weightBytes, expertLayers, totalBytes: weightBytes + d.kvBytes + d.computeBytes };
}
