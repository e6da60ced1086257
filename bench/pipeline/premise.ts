// The premise of pipelined decode, without the coordinator: NSEQ sequences decoding greedy steps in G
// contexts on one model split over two 1-thread rpc servers, each context in its own thread; prints
// tokens/s, each process's CPU use, and whether the tokens equal G=1's. Run with graph reuse off, as
// the engine does with several contexts:
//   LLAMA_GRAPH_REUSE_DISABLE=1 node --import tsx bench/pipeline/premise.ts [model] [nseq] [steps] [G list]
// e.g. "" 8 24 1,2,1,2 (an empty model: the bench's 1b Q8_0 test model).
import { performance } from 'node:perf_hooks';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Batch, connectRpcServers, LlamaModel, type LlamaContext, type Sampler } from '../../native/llama.js';
import { freePortOn } from '../../common/ports.js';
import { RpcServerProcess } from '../../worker/rpc-server-process.js';
import { readFileSync, readdirSync } from 'node:fs';
function cpuOf(pid: number): number { let t = 0; for (const tid of readdirSync(`/proc/${pid}/task`)) { const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' '); t += Number(f[11]) + Number(f[12]); } return t / 100; }

const model = process.argv[2] || join(homedir(), '.cache/hearth/models/1b-q8_0-seed1-r2.gguf');
const NSEQ = Number(process.argv[3] ?? 8);
const STEPS = Number(process.argv[4] ?? 24);
const startServer = async () => RpcServerProcess.start({ host: '127.0.0.1', port: await freePortOn('127.0.0.1'), threads: 1, cacheDir: null, devices: null });
const servers = [await startServer(), await startServer()];
try {
  const devs = await connectRpcServers(servers.map((s) => s.endpoint));
  const m = await LlamaModel.load(model, { devices: devs.map((d) => d.name), tensorSplit: [9, 8], nGpuLayers: -1 });
  const sampler = () => m.createSampler({ greedy: true, ignoreEos: true });
  async function run(G: number): Promise<{ tps: number; tokens: number[][] }> {
    const per = NSEQ / G;
    const ctxs: LlamaContext[] = [];
    for (let g = 0; g < G; g++) ctxs.push(await m.createContext({ nCtx: 256 * per, nSeqMax: per, nBatch: 512, nUbatch: 512, nThreads: 1 }));
    const out: number[][] = Array.from({ length: NSEQ }, () => []);
    const groupRun = async (g: number, timed: { t0?: number }) => {
      const ctx = ctxs[g]!;
      const samplers: Sampler[] = Array.from({ length: per }, sampler);
      const b = new Batch();
      for (let s = 0; s < per; s++) { const r = b.addSequence(m.tokenize(`prompt number ${g * per + s} says hello`), 0, s, true); b.sample(r, samplers[s]!); }
      let toks = await ctx.decode(b);
      let pos = b.positions.length / per; // approx, fine: all same length? use per-seq pos
      const posOf = Array.from({ length: per }, (_, s) => b.seqIds.filter((x) => x === s).length);
      return async () => {
        for (let step = 0; step < STEPS; step++) {
          const sb = new Batch();
          for (let s = 0; s < per; s++) { out[g * per + s]!.push(toks[s]!); sb.sample(sb.add(toks[s]!, posOf[s]!++, s, true), samplers[s]!); }
          toks = await ctx.decode(sb);
        }
        void pos;
      };
    };
    const steppers = await Promise.all(ctxs.map((_, g) => groupRun(g, {})));
    const pids = [process.pid, ...servers.map((s) => s.pid!)];
    const c0 = pids.map(cpuOf);
    const t0 = performance.now();
    await Promise.all(steppers.map((f) => f()));
    const dt = (performance.now() - t0) / 1000;
    const c1 = pids.map(cpuOf);
    console.log('  cpu util self/A/B:', c1.map((c, i) => ((c - c0[i]!) / dt).toFixed(2)).join(' '), 'ms/step', (dt * 1000 / STEPS).toFixed(1));
    for (const c of ctxs) c.dispose();
    return { tps: (NSEQ * STEPS) / dt, tokens: out };
  }
  const order = (process.argv[5] ?? '1,2,1,2,1,2').split(',').map(Number);
  const ref = new Map<number, number[][]>();
  for (const G of order) {
    const r = await run(G);
    const same = ref.has(1) ? JSON.stringify(ref.get(1)) === JSON.stringify(r.tokens) : null;
    if (!ref.has(G)) ref.set(G, r.tokens);
    console.log(`G=${G} ${r.tps.toFixed(2)} tok/s  same-as-G1=${same}`);
  }
  m.dispose();
} finally {
  for (const s of servers) await s.stop();
}
