// How people name a model: a local file, a Hugging Face repository with a quantisation tag (as
// llama-server's -hf takes it), or a URL. Parsing is pure; models/library.ts turns a reference into files.
import { ErrorCode, HearthError } from '../common/errors.js';

export type ModelRef =
  | { readonly kind: 'file'; readonly path: string }
  /** `tag`: the quantisation ("Q4_K_M"), matched case-insensitively against file names; null: llama-server's default. */
  | { readonly kind: 'hub'; readonly repo: string; readonly tag: string | null }
  | { readonly kind: 'url'; readonly url: string };

export const HUB_PREFIX = 'hf:';

/**
 * A repository id as llama.cpp accepts it (common/hf-cache.cpp is_valid_repo_id): word characters, with
 * `/ . -` only between them and exactly one `/`.
 */
export function isValidRepoId(repo: string): boolean {
  return repo.length <= 256 && /^[A-Za-z0-9_]+([.-][A-Za-z0-9_]+)*\/[A-Za-z0-9_]+([.-][A-Za-z0-9_]+)*$/.test(repo);
}

/** `OWNER/REPO[:QUANT]`, what -hf takes; `where` names the option or key in errors. */
export function parseHubRef(text: string, where = '--model'): ModelRef & { kind: 'hub' } {
  const colon = text.lastIndexOf(':');
  const repo = colon < 0 ? text : text.slice(0, colon);
  const tag = colon < 0 ? null : text.slice(colon + 1);
  if (!isValidRepoId(repo)) {
    throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${text}' is not a Hugging Face repository; expected OWNER/REPO[:QUANT], such as bartowski/Llama-3.3-70B-Instruct-GGUF:Q4_K_M`);
  }
  // Tags are matched inside file names; unsloth's "UD-Q4_K_XL" has a dash, nothing has more than these.
  if (tag !== null && !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(tag)) {
    throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${tag}' in '${text}' is not a quantisation tag (such as Q4_K_M, Q8_0, F16)`);
  }
  return { kind: 'hub', repo, tag };
}

/** A model reference from `--model` or cluster.yaml's `model:`: `hf:OWNER/REPO[:QUANT]`, `http(s)://…`, or a path. */
export function parseModelRef(text: string, where = '--model'): ModelRef {
  if (text.startsWith(HUB_PREFIX)) return parseHubRef(text.slice(HUB_PREFIX.length), where);
  if (/^https?:\/\//i.test(text)) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new HearthError(ErrorCode.InvalidArgument, `${where}: '${text}' is not a valid URL`);
    }
    if (url.pathname.endsWith('/') || url.pathname === '') {
      throw new HearthError(ErrorCode.InvalidArgument, `${where}: ${text} names no file; give the URL of the .gguf file itself`);
    }
    return { kind: 'url', url: url.href };
  }
  return { kind: 'file', path: text };
}

/** The reference as a person writes it, for messages and `hearth model list`. */
export function formatModelRef(ref: ModelRef): string {
  switch (ref.kind) {
    case 'file':
      return ref.path;
    case 'hub':
      return `${HUB_PREFIX}${ref.repo}${ref.tag === null ? '' : `:${ref.tag}`}`;
    case 'url':
      return ref.url;
  }
}
