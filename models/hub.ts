// The Hugging Face hub's API, the calls llama.cpp's -hf makes (common/hf-cache.cpp): a repository's
// refs for the commit its main branch points at, the commit's recursive file tree with sizes and LFS
// sha256s, and each file at {repo}/resolve/{commit}/{path}. HF_ENDPOINT (or MODEL_ENDPOINT) moves it to
// a mirror; the token is sent to the endpoint only.
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import { httpFetch, HttpStatusError, isNetworkError } from './http.js';

export interface HubSettings {
  /** Ends with '/': "https://huggingface.co/". */
  readonly endpoint: string;
  /** HF_TOKEN; never logged. */
  readonly token: string | null;
}

/** A file of a commit as the tree lists it. */
export interface HubFile {
  readonly path: string;
  readonly size: number;
  /** The LFS oid (the bytes' sha256), for files in LFS: every GGUF on the public hub. */
  readonly sha256: string | null;
  /** The git blob id, for files outside LFS. */
  readonly gitOid: string | null;
}

export interface HubRevision {
  readonly branch: string;
  readonly commit: string;
}

interface TreeEntry {
  type?: unknown;
  path?: unknown;
  size?: unknown;
  oid?: unknown;
  lfs?: { oid?: unknown; size?: unknown } | null;
}

const COMMIT = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
export const USER_AGENT = 'hearth/0.1 (llama.cpp compatible)';

export class HubClient {
  constructor(readonly settings: HubSettings) {}

  /** The URL of a file of a commit, which redirects to where its bytes are. */
  fileUrl(repo: string, commit: string, path: string): string {
    return `${this.settings.endpoint}${repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** The commit of the main branch (else of the first branch listed), as llama.cpp's get_repo_commit. */
  async revision(repo: string, signal?: AbortSignal): Promise<HubRevision> {
    const json = (await this.#get(`api/models/${repo}/refs`, repo, signal)) as { branches?: { name?: unknown; targetCommit?: unknown }[] };
    const branches = (Array.isArray(json?.branches) ? json.branches : []).filter(
      (b): b is { name: string; targetCommit: string } => typeof b.name === 'string' && typeof b.targetCommit === 'string' && COMMIT.test(b.targetCommit) && !/(^|\/)\.\.?(\/|$)/.test(b.name),
    );
    const branch = branches.find((b) => b.name === 'main') ?? branches[0];
    if (!branch) throw new HearthError(ErrorCode.NotFound, `${this.#where(repo)} lists no branch with a commit`);
    return { branch: branch.name, commit: branch.targetCommit };
  }

  /** Every file of the commit, following the listing's pages. */
  async files(repo: string, commit: string, signal?: AbortSignal): Promise<HubFile[]> {
    const out: HubFile[] = [];
    let next: string | null = `${this.settings.endpoint}api/models/${repo}/tree/${commit}?recursive=true`;
    while (next) {
      const { json, link } = await this.#getJson(next, repo, signal);
      if (!Array.isArray(json)) throw new HearthError(ErrorCode.Unavailable, `${this.#where(repo)}: the file listing of ${commit} is not a list`);
      for (const entry of json as TreeEntry[]) {
        const file = hubFileOf(entry);
        if (file) out.push(file);
      }
      next = link;
    }
    return out;
  }

  /** A hub failure as a message that says what to do (a token for a gated repository, a mirror when unreachable). */
  describe(e: unknown, repo: string, what = `${repo}`): HearthError {
    if (e instanceof HearthError) return e;
    const token = this.settings.token !== null;
    const page = `${this.settings.endpoint}${repo}`;
    if (e instanceof HttpStatusError) {
      const said = e.serverMessage ? ` (the hub says: ${e.serverMessage})` : '';
      if (e.errorCode === 'RepoNotFound' || (e.status === 404 && e.errorCode !== 'EntryNotFound' && e.errorCode !== 'RevisionNotFound')) {
        return new HearthError(ErrorCode.NotFound, `no repository ${repo} on ${this.settings.endpoint} (HTTP ${e.status})${token ? '' : ', or it is private (set HF_TOKEN)'}; check the OWNER/REPO spelling`);
      }
      if (e.status === 404) return new HearthError(ErrorCode.NotFound, `${what}: not found on ${this.settings.endpoint} (HTTP 404)${said}`);
      // A CDN's 401 or 403 (an expired signed link) says nothing about the repository or the token.
      const fromHub = new URL(e.url).origin === new URL(this.settings.endpoint).origin;
      if (!fromHub) return new HearthError(ErrorCode.Unavailable, `${what}: HTTP ${e.status} from ${new URL(e.url).origin}, where the hub sent the download${said}; try again`);
      if (e.errorCode === 'GatedRepo' || e.status === 403) {
        return new HearthError(
          ErrorCode.Unauthenticated,
          token
            ? `${repo} is gated and the token in HF_TOKEN has no access to it (HTTP ${e.status}): accept its conditions on ${page} with the token's account`
            : `${repo} is gated (HTTP ${e.status}): accept its conditions on ${page}, then set HF_TOKEN to an access token of that account (https://huggingface.co/settings/tokens)`,
        );
      }
      if (e.status === 401) {
        return new HearthError(
          ErrorCode.Unauthenticated,
          token
            ? `the hub refused the token in HF_TOKEN for ${repo} (HTTP 401): check that it is valid and can read the repository`
            : `${repo} needs a Hugging Face token (HTTP 401: the repository is gated or private): set HF_TOKEN to an access token that can read it (https://huggingface.co/settings/tokens)`,
        );
      }
      if (e.status === 429) return new HearthError(ErrorCode.Unavailable, `the hub is rate-limiting requests for ${what} (HTTP 429)${token ? '' : '; a token in HF_TOKEN raises the limit'}; try again later`);
      return new HearthError(e.transient ? ErrorCode.Unavailable : ErrorCode.Internal, `${what}: HTTP ${e.status} from ${e.url}${said}`);
    }
    if (isNetworkError(e)) {
      const cause = e instanceof Error && e.cause ? messageOf(e.cause) : messageOf(e);
      return new HearthError(ErrorCode.Unavailable, `cannot reach the hub at ${this.settings.endpoint} for ${what} (${cause}); check the network, or set HF_ENDPOINT to a mirror`, { cause: e });
    }
    return new HearthError(ErrorCode.Internal, `${what}: ${messageOf(e)}`, { cause: e });
  }

  #where(repo: string): string {
    return `${this.settings.endpoint}${repo}`;
  }

  async #get(path: string, repo: string, signal?: AbortSignal): Promise<unknown> {
    return (await this.#getJson(`${this.settings.endpoint}${path}`, repo, signal)).json;
  }

  async #getJson(url: string, repo: string, signal?: AbortSignal): Promise<{ json: unknown; link: string | null }> {
    try {
      const { response } = await httpFetch(url, { headers: { accept: 'application/json', 'user-agent': USER_AGENT }, token: this.settings.token, signal });
      const json: unknown = await response.json();
      return { json, link: nextLink(response.headers.get('link'), url) };
    } catch (e) {
      if (e instanceof SyntaxError) throw new HearthError(ErrorCode.Unavailable, `${url} did not answer JSON; is HF_ENDPOINT (${this.settings.endpoint}) a Hugging Face hub?`);
      throw this.describe(e, repo);
    }
  }
}

function hubFileOf(entry: TreeEntry): HubFile | null {
  if (entry.type !== 'file' || typeof entry.path !== 'string') return null;
  // Paths from the listing become paths on disk: nothing absolute, nothing that climbs out.
  if (entry.path.startsWith('/') || entry.path.split('/').some((p) => p === '..' || p === '.' || p === '')) return null;
  const lfs = entry.lfs && typeof entry.lfs === 'object' ? entry.lfs : null;
  const sha256 = typeof lfs?.oid === 'string' && SHA256.test(lfs.oid) ? lfs.oid : null;
  const size = typeof lfs?.size === 'number' ? lfs.size : typeof entry.size === 'number' ? entry.size : null;
  if (size === null || (lfs && sha256 === null)) return null;
  const gitOid = !lfs && typeof entry.oid === 'string' && /^[0-9a-f]{40}$/.test(entry.oid) ? entry.oid : null;
  return { path: entry.path, size, sha256, gitOid };
}

/** The next page from a Link header (`<url>; rel="next"`), as the hub paginates long listings. */
function nextLink(header: string | null, base: string): string | null {
  for (const part of header?.split(',') ?? []) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part);
    if (m) return new URL(m[1]!, base).href;
  }
  return null;
}
