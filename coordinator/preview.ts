// `hearth plan`: discover and probe the workers for a moment, then plan as the coordinator would,
// without loading anything, and show the other objective's prediction beside the chosen one.
import type { Logger } from '../common/logger.js';
import type { RpcVersion } from '../native/rpc-protocol.js';
import { ClusterView } from './cluster-view.js';
import { configFor, type CoordinatorConfig } from './config.js';
import type { Discovery } from './discovery/discovery.js';
import { linksFor, remotePlan } from './links.js';
import { plan as makePlan } from './planner/planner.js';
import type { Plan, PlacementObjective, PlanResult } from './planner/types.js';
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

/** One served model's plan in `hearth plan` for several models, with what it shares memory with. */
export interface ModelPreview {
  id: string;
  policy: 'pinned' | 'on-demand';
  /** Its plan beside the pinned models (a pinned one: beside the pinned ones before it). */
  plan: PlanResult;
  /** On-demand models it cannot be in memory with (beside the pinned ones): loading it unloads them, least recently used first. */
  excludes: string[];
}

/**
 * Every model's plan as the coordinator would make them: the pinned ones in order, each in the memory
 * the ones before left; each on-demand one beside the pinned ones, and which other on-demand models it
 * cannot be loaded beside.
 */
export async function previewPlans(
  config: CoordinatorConfig,
  log: Logger,
  discoveries: Discovery[],
  clientVersion: RpcVersion,
  waitMs: number,
): Promise<{ models: ModelPreview[]; workers: WorkerRecord[] }> {
  const links = linksFor(config.secret, log);
  const registry = new WorkerRegistry(log.child({ part: 'registry' }), { links, clientVersion, heartbeatMs: config.heartbeatMs, workerTimeoutMs: config.workerTimeoutMs, busyEndpoints: () => new Set(), watchMs: 0 });
  try {
    const views = config.models.map((m) => ({ m, view: new ClusterView(configFor(config, m), log, registry, links) }));
    for (const { view } of views) await view.prepare();
    for (const d of discoveries) d.start({ found: (c, s) => registry.add(c, s), gone: () => undefined });
    await new Promise((r) => setTimeout(r, waitMs));
    await registry.checkAll();
    const planBeside = (i: number, others: Plan[]) => makePlan(views[i]!.view.planInput(config.placement, null, others, { lent: true }));
    const pinned: Plan[] = [];
    const out: ModelPreview[] = views.map(({ m }, i) => {
      if (m.policy !== 'pinned') return { id: m.id, policy: m.policy, plan: planBeside(i, pinned), excludes: [] };
      const plan = planBeside(i, pinned);
      if (plan.fits) pinned.push(plan);
      return { id: m.id, policy: m.policy, plan, excludes: [] };
    });
    for (const [i, a] of out.entries()) {
      if (a.policy !== 'on-demand' || !a.plan.fits) continue;
      for (const [j, b] of out.entries()) {
        if (j === i || b.policy !== 'on-demand' || !b.plan.fits) continue;
        if (!planBeside(i, [...pinned, b.plan as Plan]).fits) a.excludes.push(b.id);
      }
    }
    return { models: out.map((x) => ({ ...x, plan: remotePlan(x.plan, links) })), workers: registry.all() };
  } finally {
    await registry.stop();
    await Promise.all(discoveries.map((d) => d.stop()));
    await links.close();
  }
}
