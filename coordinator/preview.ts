// `hearth plan`: discover and probe the workers for a moment, then plan as the coordinator would,
// without loading anything, and show the other objective's prediction beside the chosen one.
import type { Logger } from '../common/logger.js';
import type { RpcVersion } from '../native/rpc-protocol.js';
import { ClusterView } from './cluster-view.js';
import type { CoordinatorConfig } from './config.js';
import type { Discovery } from './discovery/discovery.js';
import { linksFor, remotePlan } from './links.js';
import { plan as makePlan } from './planner/planner.js';
import type { PlacementObjective, PlanResult } from './planner/types.js';
import { WorkerRegistry, type WorkerRecord } from './registry.js';

/** A plan for `hearth plan`: the chosen one, and what the other objective would predict beside it. */
export type PlanPreview = PlanResult & {
  alternative?: { objective: PlacementObjective; predictedSecondsPerToken: number | null; fits: boolean };
  /** The draft model for speculative decoding: where it runs and what it holds there (taken off that device's free memory). */
  draft?: { where: string; bytes: number; note: string | null };
};

/** Plans with the workers found within `waitMs`; `workers` are all that were found, admitted or not. */
export async function previewPlan(
  config: CoordinatorConfig,
  log: Logger,
  discoveries: Discovery[],
  clientVersion: RpcVersion,
  waitMs: number,
): Promise<{ preview: PlanPreview; workers: WorkerRecord[] }> {
  const links = linksFor(config.secret, log);
  const registry = new WorkerRegistry(log.child({ part: 'registry' }), {
    links,
    clientVersion,
    heartbeatMs: config.heartbeatMs,
    workerTimeoutMs: config.workerTimeoutMs,
    busyEndpoints: () => new Set(),
    // A look, not a use: a worker that drains meanwhile need not wait for a release from it.
    watchMs: 0,
  });
  const cluster = new ClusterView(config, log, registry, links);
  try {
    await cluster.prepare();
    for (const d of discoveries) d.start({ found: (c, s) => registry.add(c, s), gone: () => undefined });
    await new Promise((r) => setTimeout(r, waitMs));
    await registry.checkAll();
    // One reading of the cluster (and one `ss` call) for both objectives.
    const input = cluster.planInput(config.placement, null);
    const plan = makePlan(input);
    if (!plan.fits) return { preview: plan, workers: registry.all() };
    const otherObjective = config.placement === 'speed' ? 'memory' : 'speed';
    const other = makePlan({ ...input, objective: otherObjective });
    const alternative = { objective: otherObjective, fits: other.fits, predictedSecondsPerToken: other.fits ? other.predictedSecondsPerToken : null } as const;
    const host = cluster.draftHost();
    const draft = host && cluster.draftBytes > 0 ? { where: host.where, bytes: cluster.draftBytes, note: host.note } : undefined;
    const preview = { ...remotePlan(plan, links), alternative, ...(draft ? { draft } : {}) };
    return { preview, workers: registry.all() };
  } finally {
    await registry.stop();
    await Promise.all(discoveries.map((d) => d.stop()));
    await links.close();
  }
}
