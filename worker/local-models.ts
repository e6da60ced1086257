// Models on this machine's disk (`--models DIR`): each GGUF there, or each whole set of a split
// model's shards (grouped by their names, as llama.cpp finds them), is indexed by content id and its
// large tensors are written into the rpc server's tensor cache ahead of time (ggml-rpc-server
// --hearth-seed, native/src/rpc-server/seed.cpp), so a coordinator loading one of them sends hashes
// instead of weights. Seeding runs in a child process at low priority, one model at a time, with
// progress in the log; it never blocks serving, and a load that starts before it finishes simply
// sends what is not cached yet.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { setPriority } from 'node:os';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';

import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { modelContentId } from '../models/content-id.js';
import { groupModelFiles } from '../models/split.js';
import { requireNativeBuild } from '../native/binding.js';

export type LocalModelState = 'queued' | 'seeding' | 'ready' | 'failed';

export interface LocalModel {
  contentId: string;
  /** The model's file, or shard 1 of a split model. */
  file: string;
  /** Every file of the model, shard 1 first. */
  files: string[];
  bytes: number;
  state: LocalModelState;
  /** 0..1 of the bytes to seed. */
  progress: number;
  error: string;
}

/** The GGUF files directly in `dir`, by name. */
export function ggufFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => (e.isFile() || e.isSymbolicLink()) && e.name.toLowerCase().endsWith('.gguf'))
    .map((e) => join(dir, e.name))
    .sort();
}

export class LocalModels {
  readonly #models: LocalModel[] = [];
  readonly #cacheDir: string;
  readonly #log: Logger;
  #child: ChildProcess | null = null;
  #stopped = false;
  #done: Promise<void> = Promise.resolve();

  constructor(dir: string, cacheDir: string, log: Logger) {
    this.#cacheDir = cacheDir;
    this.#log = log;
    for (const { files, missing } of groupModelFiles(ggufFiles(dir))) {
      if (missing.length > 0) {
        this.#log.warn({ files: files.map((f) => basename(f)), missing: missing.map((f) => basename(f)) }, 'a split model in the models directory lacks shards; skipping it');
        continue;
      }
      try {
        const bytes = files.reduce((sum, f) => sum + statSync(f).size, 0);
        this.#models.push({ contentId: modelContentId(files), file: files[0]!, files, bytes, state: 'queued', progress: 0, error: '' });
      } catch (e) {
        this.#log.warn({ file: files[0], err: messageOf(e) }, 'cannot read a model in the models directory; skipping it');
      }
    }
    this.#log.info({ dir, models: this.#models.map((m) => ({ file: basename(m.file), contentId: m.contentId })) }, `${this.#models.length} local model(s) found`);
  }

  get models(): readonly LocalModel[] {
    return this.#models;
  }

  /** Seeds every model in turn, in the background; `whenDone` settles when all are seeded or failed. */
  start(): void {
    this.#done = (async () => {
      for (const m of this.#models) {
        if (this.#stopped) return;
        await this.#seed(m);
      }
    })();
  }

  whenDone(): Promise<void> {
    return this.#done;
  }

  stop(): void {
    this.#stopped = true;
    this.#child?.kill('SIGKILL');
  }

  async #seed(m: LocalModel): Promise<void> {
    const { rpcServer } = requireNativeBuild();
    m.state = 'seeding';
    const started = Date.now();
    const child = spawn(rpcServer, ['--hearth-seed', ...m.files, this.#cacheDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HEARTH_PARENT_PID: String(process.pid) },
    });
    this.#child = child;
    try {
      if (child.pid) setPriority(child.pid, 10); // serving comes first
    } catch {
      // not permitted: it only runs at normal priority
    }
    let lastLogged = -1;
    let result: { files: number; written: number; bytes: number } | null = null;
    const errors: string[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const r = JSON.parse(line) as { progress?: number; total?: number; done?: boolean; files?: number; written?: number; bytes?: number };
        if (r.done) result = { files: r.files ?? 0, written: r.written ?? 0, bytes: r.bytes ?? 0 };
        else if (r.total) {
          m.progress = (r.progress ?? 0) / r.total;
          const tenth = Math.floor(m.progress * 10);
          if (tenth > lastLogged) {
            lastLogged = tenth;
            this.#log.info({ file: basename(m.file), progress: `${tenth * 10}%` }, 'seeding the tensor cache');
          }
        }
      } catch {
        // not a JSON line
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => errors.push(line));
    const code = await new Promise<number | null>((resolve) => {
      child.once('error', (e) => {
        errors.push(e.message);
        resolve(null);
      });
      child.once('close', (c) => resolve(c));
    });
    this.#child = null;
    if (code === 0 && result) {
      const r: { files: number; written: number; bytes: number } = result;
      m.state = 'ready';
      m.progress = 1;
      this.#log.info({ file: basename(m.file), contentId: m.contentId, tensors: r.files, written: r.written, bytes: r.bytes, ms: Date.now() - started }, 'model seeded: loads of it send hashes instead of weights');
    } else if (!this.#stopped) {
      m.state = 'failed';
      m.error = errors.join(' | ') || `seeding exited with code ${code}`;
      this.#log.warn({ file: basename(m.file), err: m.error }, 'seeding the tensor cache failed; loads of this model send its weights');
    }
  }
}
