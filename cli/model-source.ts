// Model references resolved once, at the edge: the CLI turns hf:OWNER/REPO:QUANT or a URL into local
// files (from the library, a Hugging Face cache, or a download) before anything else reads the config.
import type { CoordinatorConfig } from '../coordinator/config.js';
import type { Logger } from '../common/logger.js';
import { ModelLibrary, type ResolvedModel } from '../models/library.js';
import { librarySettings } from '../models/library-settings.js';
import { formatModelRef, type ModelRef } from '../models/model-ref.js';
import { downloadProgress } from './download-progress.js';

export function openLibrary(log: Logger, env: NodeJS.ProcessEnv = process.env): ModelLibrary {
  return new ModelLibrary(librarySettings(env), { log, progress: downloadProgress(log) });
}

/**
 * Runs `fn` with a signal that SIGINT or SIGTERM aborts (a download stops and keeps its bytes for the
 * next run); a second signal exits at once.
 */
export async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const stop = new AbortController();
  const onSignal = () => {
    if (stop.signal.aborted) process.exit(130);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(stop.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export async function resolveModel(ref: ModelRef, log: Logger, options: { refresh?: boolean } = {}): Promise<ResolvedModel> {
  const library = openLibrary(log);
  const resolved = await interruptible((signal) => library.resolve(ref, { signal, ...options }));
  log.info({ model: formatModelRef(ref), path: resolved.path, files: resolved.files.length, origin: resolved.origin }, 'model resolved');
  return resolved;
}

/** The config with every model reference resolved into a local path (fetched now, in order); as it is when the models are files. */
export async function withLocalModel(config: CoordinatorConfig, log: Logger): Promise<CoordinatorConfig> {
  if (!config.modelRef && config.models.every((m) => m.modelRef === null)) return config;
  const models = [];
  for (const m of config.models) {
    models.push(m.modelRef ? Object.freeze({ ...m, model: (await resolveModel(m.modelRef, log)).path, modelRef: null }) : m);
  }
  const first = models[0];
  const model = first ? first.model : config.modelRef ? (await resolveModel(config.modelRef, log)).path : config.model;
  return Object.freeze({ ...config, model, modelRef: null, models: Object.freeze(models) });
}
