// Running a daemon until a signal: SIGINT/SIGTERM stop it gracefully and exit 0; a second signal
// exits at once; a start that fails stops whatever it had started and rethrows. A daemon that can end
// by itself (a worker asked to leave over its control service) passes `ended`: the process exits 0 then too.
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';

export async function runUntilSignal(
  log: Logger,
  start: () => Promise<void>,
  stop: (signal: NodeJS.Signals | null) => Promise<void>,
  options: { ended?: Promise<void> } = {},
): Promise<void> {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    log.info({ signal }, 'stopping');
    stop(signal).then(
      () => process.exit(0),
      (e: unknown) => {
        log.error({ err: messageOf(e) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await start();
  } catch (e) {
    // Nothing may keep the process alive after a failed start (a missing model, a taken port).
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stop(null);
    throw e;
  }
  void options.ended?.then(() => process.exit(0));
  // From here the servers keep the event loop alive until a signal arrives.
}
