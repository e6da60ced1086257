// Sizes and speeds in the planner's messages (refusals, reasons a device sits out). They read as the
// CLI prints them (cli/format.ts), but the coordinator does not import the CLI, so they are here too.

export const GiB = 1024 ** 3;

export function gib(bytes: number): string {
  return `${(bytes / GiB).toFixed(2)} GiB`;
}

export function gbPerSecond(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e9).toFixed(1)} GB/s`;
}
