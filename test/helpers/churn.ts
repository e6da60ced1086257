// Worker churn for tests: a steady load of streamed and plain requests through the HTTP API, and
// faults of the kinds a home cluster lives through (an rpc server killed, a worker killed or stopped
// and started again on its ports, a worker frozen and thawed), each tallied so a test can say what
// every request got.
import { PROMPTS } from './generate.js';
import { startWorker, type WorkerHandle } from './worker.js';

export interface LoadTally {
  /** Complete answers: every token asked for (or a stop). */
  ok: number;
  /** Answers that came back without an error but cut short. */
  incomplete: string[];
  /** Answers that went on after their engine was lost (resumed at least once). */
  resumed: number;
  /** Failed requests whose error said what happened, by message. */
  clearErrors: Map<string, number>;
  /** Failed requests without a clear error: a cut stream, a reset connection, an unreadable body. */
  unclear: string[];
  /** Requests that did not finish within the hang limit. */
  hung: number;
}

/** What a clear error names: a worker, the engine, or why the cluster does not serve. */
const CLEAR = /worker|engine|not serving|shutting down|re-plan|does not fit|model load failed/i;

/** `clients` loops, each sending one request at a time, alternating streamed and plain completions. */
export function startLoad(http: string, options: { clients: number; maxTokens: number; hangMs: number }): { stop: () => Promise<LoadTally> } {
  const tally: LoadTally = { ok: 0, incomplete: [], resumed: 0, clearErrors: new Map(), unclear: [], hung: 0 };
  let running = true;
  /** `status`: the HTTP status, or 200 for an error chunk in an event stream (its headers were sent already). */
  const clearError = (status: number, message: unknown) => {
    if (typeof message === 'string' && CLEAR.test(message)) {
      const key = `${status} ${message.replace(/\d+(\.\d+)? s\b/g, 'N s').slice(0, 160)}`;
      tally.clearErrors.set(key, (tally.clearErrors.get(key) ?? 0) + 1);
    } else {
      tally.unclear.push(`${status}: ${String(message)}`);
    }
  };
  /** An answer that ran to its end: every token asked for, or a stop of its own. */
  const answered = (finish: string | null | undefined, tokens: number | undefined, resumed: number, what: string) => {
    if (finish === 'stop' || (finish === 'length' && tokens === options.maxTokens)) tally.ok++;
    else tally.incomplete.push(`${what}: finish ${finish}, ${tokens} of ${options.maxTokens} tokens`);
    if (resumed > 0) tally.resumed++;
  };
  const one = async (i: number, stream: boolean) => {
    const body = { model: 'x', prompt: PROMPTS[i % PROMPTS.length], max_tokens: options.maxTokens, temperature: 0, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
    let res: Response;
    try {
      res = await fetch(`${http}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(options.hangMs) });
      if (!stream || res.status !== 200) {
        const json = (await res.json()) as { choices?: { text: string; finish_reason: string }[]; usage?: { completion_tokens: number }; error?: { message?: string } };
        if (res.status === 200 && typeof json.choices?.[0]?.text === 'string') answered(json.choices[0].finish_reason, json.usage?.completion_tokens, Number(res.headers.get('x-hearth-resumed')), 'plain');
        else if (res.status >= 400) clearError(res.status, json.error?.message);
        else tally.unclear.push(`${res.status} without a completion: ${JSON.stringify(json).slice(0, 200)}`);
        return;
      }
      const text = await res.text();
      const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
      const error = events.find((e) => e.startsWith('{"error"'));
      if (error) clearError(200, (JSON.parse(error) as { error: { message?: string } }).error.message);
      else if (events.at(-1) === '[DONE]') {
        const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { choices: { finish_reason: string | null }[]; usage?: { completion_tokens: number }; hearth_resumed?: number });
        const final = chunks.find((c) => c.choices[0]?.finish_reason);
        answered(final?.choices[0]?.finish_reason, chunks.find((c) => c.usage)?.usage?.completion_tokens, final?.hearth_resumed ?? 0, 'streamed');
      } else tally.unclear.push(`stream ended without [DONE]: ${text.slice(-200)}`);
    } catch (e) {
      if ((e as Error).name === 'TimeoutError') tally.hung++;
      else tally.unclear.push(`request failed: ${String(e)}`);
    }
  };
  const loops = Array.from({ length: options.clients }, async (_, c) => {
    for (let n = 0; running; n++) await one(c * 7 + n, (c + n) % 2 === 0);
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return tally;
    },
  };
}

export type FaultKind = 'kill-rpc-server' | 'kill-worker' | 'freeze-worker' | 'term-worker';
export const FAULT_KINDS: readonly FaultKind[] = ['kill-rpc-server', 'kill-worker', 'freeze-worker', 'term-worker'];

/** A worker that can be killed and started again on the same ports, under the same name. */
export class ChurnWorker {
  readonly name: string;
  handle: WorkerHandle;
  readonly #token: string | undefined;
  readonly #extra: string[];
  #thaw: Promise<void> = Promise.resolve();
  /** The fault being carried out. */
  #busy: Promise<void> = Promise.resolve();

  private constructor(name: string, handle: WorkerHandle, token: string | undefined, extra: string[]) {
    this.name = name;
    this.handle = handle;
    this.#token = token;
    this.#extra = extra;
  }

  /** `extra`: more of `hearth worker`'s flags, kept when the worker is started again. */
  static async start(name: string, token?: string, extra: string[] = []): Promise<ChurnWorker> {
    return new ChurnWorker(name, await startWorker(['--name', name, ...extra], token ? { token } : {}), token, extra);
  }

  /** Carries out one fault; a frozen worker thaws by itself after `freezeMs`. */
  fault(kind: FaultKind, freezeMs = 10_000): Promise<void> {
    const run = this.#fault(kind, freezeMs);
    // A stop waits for it: a worker being started again must not outlive the test.
    this.#busy = run.catch(() => undefined);
    return run;
  }

  async #fault(kind: FaultKind, freezeMs: number): Promise<void> {
    await this.#thaw;
    switch (kind) {
      case 'kill-rpc-server': {
        const pid = (await this.handle.client.health({ timeoutMs: 2000 })).rpc_server_pid;
        if (pid > 0) process.kill(pid, 'SIGKILL');
        return;
      }
      case 'kill-worker':
      case 'term-worker':
        await this.handle.stop(kind === 'kill-worker' ? 'SIGKILL' : 'SIGTERM');
        await this.restart();
        return;
      case 'freeze-worker': {
        const pids = await this.#pids();
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        this.#thaw = new Promise((resolve) =>
          setTimeout(() => {
            for (const pid of pids) {
              try {
                process.kill(pid, 'SIGCONT');
              } catch {
                // gone already
              }
            }
            resolve();
          }, freezeMs),
        );
        return;
      }
    }
  }

  /** Waits for a frozen worker to thaw. */
  thawed(): Promise<void> {
    return this.#thaw;
  }

  async stop(): Promise<void> {
    await this.#busy;
    await this.#thaw;
    await this.handle.stop();
  }

  /** The worker's process and its rpc server's. */
  async #pids(): Promise<number[]> {
    const rpc = await this.handle.client.health({ timeoutMs: 2000 }).then((h) => h.rpc_server_pid, () => 0);
    return [this.handle.process.pid!, ...(rpc > 0 ? [rpc] : [])];
  }

  /** Starts the worker again on its ports (after a stop of its handle). */
  async restart(): Promise<void> {
    const { rpcPort, controlPort } = this.handle;
    // The ports are free once the old processes are gone; a restarted worker may need a moment.
    for (let attempt = 1; ; attempt++) {
      try {
        this.handle = await startWorker(['--name', this.name, ...this.#extra], { rpcPort, controlPort, ...(this.#token ? { token: this.#token } : {}) });
        return;
      } catch (e) {
        if (attempt >= 5) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}
