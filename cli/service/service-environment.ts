// The environment a service starts with. A service manager gives a service almost none of the
// variables a login shell has, so the ones hearth reads to find its files and its hub are written
// into the definition as they are set at install; secrets never are (a definition is readable by all).
import { isAbsolute, resolve } from 'node:path';

import { libraryDir } from '../../models/library-settings.js';
import type { Account } from './accounts.js';

/** Where hearth keeps and finds models, and which hub it asks: carried when set. */
const CARRIED = ['HEARTH_CACHE_DIR', 'HEARTH_MODELS', 'HF_HOME', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN_PATH', 'LLAMA_CACHE', 'HF_ENDPOINT', 'MODEL_ENDPOINT', 'HF_HUB_OFFLINE'];
/** One user's own folders: carried only into a service that runs as the user who installs it. */
const CARRIED_SAME_USER = ['XDG_CACHE_HOME', 'XDG_STATE_HOME'];
/** Never carried, whatever else changes above: the cluster token, API keys, hub tokens. */
export const SECRET_VARIABLES = ['HEARTH_TOKEN', 'HEARTH_API_KEY', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'];
const NOT_PATHS = new Set(['HF_ENDPOINT', 'MODEL_ENDPOINT', 'HF_HUB_OFFLINE']);

/**
 * HOME (the service account's, stated rather than left to the manager), then the carried variables
 * that are set, paths made absolute against `cwd`.
 */
export function serviceEnvironment(env: Readonly<Record<string, string | undefined>>, account: Account, sameUser: boolean, cwd: string): Record<string, string> {
  const out: Record<string, string> = { HOME: account.home };
  for (const name of [...(sameUser ? CARRIED_SAME_USER : []), ...CARRIED]) {
    const v = env[name];
    if (v === undefined || v === '' || SECRET_VARIABLES.includes(name)) continue;
    out[name] = NOT_PATHS.has(name) || isAbsolute(v) ? v : resolve(cwd, v);
  }
  return out;
}

/** The model library the service will use, as models/library-settings.ts finds it with that environment. */
export function serviceLibrary(environment: Readonly<Record<string, string>>): string {
  return libraryDir(environment, environment.HOME);
}
