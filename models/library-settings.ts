// Where the model library is and how it reaches the hub, from the environment, once at the edge:
// HEARTH_MODELS (default HEARTH_CACHE_DIR/models, else XDG_CACHE_HOME/hearth/models, else
// ~/.cache/hearth/models), the Hugging Face cache llama.cpp and huggingface_hub fill, the endpoint
// (MODEL_ENDPOINT, HF_ENDPOINT) and the token (HF_TOKEN, else the file `hf auth login` writes).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

import type { HubSettings } from './hub.js';

export interface LibrarySettings extends HubSettings {
  /** hearth's own library: hub models in Hugging Face's layout, URL downloads under urls/. */
  readonly dir: string;
  /** Hugging Face caches searched before anything is downloaded (llama.cpp's LLAMA_CACHE, then the hub cache). */
  readonly hfCaches: readonly string[];
  /** HF_HUB_OFFLINE: use what is on disk, never the network. */
  readonly offline: boolean;
}

export interface LibraryEnv {
  readonly [name: string]: string | undefined;
}

export const DEFAULT_ENDPOINT = 'https://huggingface.co/';

const set = (v: string | undefined): v is string => v !== undefined && v !== '';

/** huggingface_hub's cache directory rules (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME). */
export function hfHubCache(env: LibraryEnv, home = homedir()): string {
  if (set(env.HF_HUB_CACHE)) return resolve(env.HF_HUB_CACHE);
  if (set(env.HUGGINGFACE_HUB_CACHE)) return resolve(env.HUGGINGFACE_HUB_CACHE);
  return join(hfHome(env, home), 'hub');
}

function hfHome(env: LibraryEnv, home: string): string {
  if (set(env.HF_HOME)) return resolve(env.HF_HOME);
  return join(set(env.XDG_CACHE_HOME) ? resolve(env.XDG_CACHE_HOME) : join(home, '.cache'), 'huggingface');
}

export function libraryDir(env: LibraryEnv, home = homedir()): string {
  if (set(env.HEARTH_MODELS)) return resolve(env.HEARTH_MODELS);
  if (set(env.HEARTH_CACHE_DIR)) return join(resolve(env.HEARTH_CACHE_DIR), 'models');
  return join(set(env.XDG_CACHE_HOME) ? resolve(env.XDG_CACHE_HOME) : join(home, '.cache'), 'hearth', 'models');
}

/** llama.cpp's order: MODEL_ENDPOINT, then HF_ENDPOINT, then the public hub; always ending in '/'. */
export function hubEndpoint(env: LibraryEnv): string {
  const e = set(env.MODEL_ENDPOINT) ? env.MODEL_ENDPOINT : set(env.HF_ENDPOINT) ? env.HF_ENDPOINT : DEFAULT_ENDPOINT;
  return e.endsWith('/') ? e : `${e}/`;
}

/** HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the token file of `hf auth login`; null when none. */
export function hubToken(env: LibraryEnv, home = homedir()): string | null {
  if (set(env.HF_TOKEN)) return env.HF_TOKEN.trim();
  if (set(env.HUGGING_FACE_HUB_TOKEN)) return env.HUGGING_FACE_HUB_TOKEN.trim();
  const file = set(env.HF_TOKEN_PATH) ? resolve(env.HF_TOKEN_PATH) : join(hfHome(env, home), 'token');
  try {
    return readFileSync(file, 'utf8').trim() || null;
  } catch {
    return null;
  }
}

export function librarySettings(env: LibraryEnv, home = homedir()): LibrarySettings {
  const dir = libraryDir(env, home);
  const caches = [set(env.LLAMA_CACHE) ? resolve(env.LLAMA_CACHE) : null, hfHubCache(env, home)].filter((d): d is string => d !== null && d !== dir);
  return Object.freeze({
    dir,
    hfCaches: Object.freeze([...new Set(caches)]),
    endpoint: hubEndpoint(env),
    token: hubToken(env, home),
    offline: ['1', 'true', 'yes', 'on'].includes((env.HF_HUB_OFFLINE ?? '').toLowerCase()),
  });
}
