// Pipelined decode: with several requests in flight, the sequences are split into groups, each in a
// llama context of its own decoding in its own thread, so that while one group's batch is on one
// worker, the next group's is on another. This module decides how many groups there are; it is pure.
//
// Every context holds its own compute buffers on every device (the KV cache is only partitioned), and
// the contexts share each worker's one RPC connection, so the contexts' steps run in lock-step: the
// overlap is best with one group per pipeline stage.
import { ErrorCode, HearthError } from '../../common/errors.js';

/** `--pipeline`: 'auto' (one group per stage when there are enough sequences), 'off', or a group count. */
export type PipelineSetting = 'auto' | 'off' | number;

export const PIPELINE_HELP = 'auto (one context per pipeline stage when --parallel allows), off, or a number of contexts';

/** A pipeline stage is one host that computes layers: a worker's RPC server, or the coordinator itself. */
export function stageCount(devices: readonly { endpoint: string | null; layers?: number }[]): number {
  return new Set(devices.filter((d) => d.layers === undefined || d.layers > 0).map((d) => d.endpoint ?? 'local')).size;
}

/**
 * How many contexts (groups of sequences) to decode in. A group holds at least one sequence; with one
 * stage there is nothing to overlap, so 'auto' stays at one context.
 */
export function pipelineGroups(setting: PipelineSetting, stages: number, parallel: number): number {
  if (setting === 'off') return 1;
  if (setting === 'auto') return stages >= 2 && parallel >= stages ? stages : 1;
  return Math.max(1, Math.min(setting, parallel));
}

/** Sequences of each group: `parallel` split as evenly as it goes, the larger shares first. */
export function groupShares(parallel: number, groups: number): number[] {
  return Array.from({ length: groups }, (_, g) => Math.floor(parallel / groups) + (g < parallel % groups ? 1 : 0));
}

/** 'auto' | 'off' | a whole number from 1 to 64, as a flag or a cluster.yaml value gives it. */
export function parsePipelineSetting(value: string | number, field: string): PipelineSetting {
  if (value === 'auto' || value === 'off') return value;
  const n = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new HearthError(ErrorCode.InvalidArgument, `${field}: '${value}' must be ${PIPELINE_HELP} from 1 to 64`);
  return n === 1 ? 'off' : n;
}
