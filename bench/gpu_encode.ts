/**
 * The encoder on a GPU against PyTorch on the same card (bench/torch_gpu_peer.py: transformers'
 * XLMRobertaModel, SDPA, fp16, batches of 32 sorted by length, as BGEM3FlagModel.encode runs it).
 * Both sides get the same token ids and return all three outputs to the host; tokenization is
 * not timed. Workloads:
 *   len512   texts of exactly 512 tokens
 *   mixed    a corpus of varied lengths (log-uniform, 16 to 2,048 tokens)
 *   long8192 one text of 8,192 tokens (a model with that many positions), with peak GPU memory
 * Each side runs `runs` times after a warm-up; median and best are reported, and the ratio of
 * medians. The peer's first dense vector is compared with ours (same weights: the generator's).
 * Not a test: JSON to bench/results/.
 *
 *   node dist/bench/gpu_encode.js [--model .cache/bench-model-full] [--runs 5] [--device cuda]
 *        [--precision fp16,fp32] [--peer python3|none] [--texts 512]
 * --device cpu runs the same comparison on the CPU, the peer in fp32 on every core (where the
 * machine's Python has transformers; --peer none leaves it out).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, runtimeInfo } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { machineInfo, median, parseFlags, writeResult } from './common';

interface Workload { name: string; ids: number[][] }
interface Row {
  engine: string;
  precision: string;
  workload: string;
  texts: number;
  tokens: number;
  runs: number;
  tokensPerSecMedian: number;
  tokensPerSecBest: number;
  msMedian: number;
  peakGpuBytes: number | null;
}

const BOS = 0, EOS = 2, FIRST_ID = 4;

/** `count` texts of the given lengths (special tokens included) with ids drawn from the vocabulary. */
function makeIds(lengths: number[], vocab: number, seed: number): number[][] {
  const next = mulberry32(seed);
  return lengths.map((n) => {
    const ids = [BOS];
    for (let i = 0; i < n - 2; i++) ids.push(FIRST_ID + Math.floor(next() * (vocab - FIRST_ID)));
    ids.push(EOS);
    return ids;
  });
}

function workloads(texts: number, vocab: number, positions: number): Workload[] {
  const next = mulberry32(7);
  const maxLen = Math.min(2048, positions - 2);
  const mixed = Array.from({ length: texts * 2 }, () => Math.round(16 * Math.pow(maxLen / 16, next())));
  const out: Workload[] = [
    { name: 'len512', ids: makeIds(Array(texts).fill(Math.min(512, positions - 2)), vocab, 1) },
    { name: 'mixed', ids: makeIds(mixed, vocab, 2) },
  ];
  if (positions - 2 >= 8192) out.push({ name: 'long8192', ids: makeIds([8192], vocab, 3) });
  return out;
}

/** Device memory in use (bytes) on GPU `id`, from nvidia-smi; null where it cannot say. */
function gpuUsedBytes(id: number): number | null {
  const r = spawnSync('nvidia-smi', [`--id=${id}`, '--query-gpu=memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8' });
  const mib = Number(r.stdout?.trim());
  return r.status === 0 && Number.isFinite(mib) ? mib * 2 ** 20 : null;
}

/** The highest device memory use while `fn` runs, polled every 20 ms. */
async function peakDuring<T>(device: string, fn: () => Promise<T>): Promise<{ value: T; peak: number | null }> {
  if (device !== 'cuda' || gpuUsedBytes(0) === null) return { value: await fn(), peak: null };
  let peak = 0;
  let done = false;
  const poll = (async () => {
    while (!done) {
      peak = Math.max(peak, gpuUsedBytes(0) ?? 0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const value = await fn();
  done = true;
  await poll;
  return { value, peak: Math.max(peak, gpuUsedBytes(0) ?? 0) };
}

function row(engine: string, precision: string, w: Workload, seconds: number[], peak: number | null): Row {
  const tokens = w.ids.reduce((s, t) => s + t.length, 0);
  return {
    engine, precision, workload: w.name, texts: w.ids.length, tokens, runs: seconds.length,
    tokensPerSecMedian: tokens / median(seconds), tokensPerSecBest: tokens / Math.min(...seconds),
    msMedian: 1000 * median(seconds), peakGpuBytes: peak,
  };
}

async function runPeer(python: string, model: string, runs: number, ws: Workload[], device: string): Promise<{ rows: Row[]; info: Record<string, unknown>; firstDense: Record<string, number[]> }> {
  const script = path.resolve(__dirname, '..', '..', 'bench', 'torch_gpu_peer.py');
  const child = spawn(python, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stdin.end(JSON.stringify({ model, runs, batchSize: 32, device, workloads: ws }));
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  if (code !== 0) throw new Error(`the PyTorch peer exited with ${code}`);
  const out = JSON.parse(stdout) as { rows: Array<{ name: string; seconds: number[]; peakBytes: number; firstDense: number[] }> } & Record<string, unknown>;
  const rows = out.rows.map((r) => row('pytorch', device === 'cuda' ? 'fp16' : 'fp32', ws.find((w) => w.name === r.name)!, r.seconds, r.peakBytes));
  const firstDense = Object.fromEntries(out.rows.map((r) => [r.name, r.firstDense]));
  const { rows: _rows, ...info } = out;
  return { rows, info, firstDense };
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return ab / Math.sqrt(aa * bb);
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    model: '.cache/bench-model-full', runs: '5', device: 'cuda', precision: 'fp16,fp32', peer: 'python3', texts: '512',
  });
  const dir = path.resolve(flags.model);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const runs = Math.max(5, Number(flags.runs));
  const device = flags.device as 'cpu' | 'cuda';
  const ws = workloads(Number(flags.texts), config.vocab_size, config.max_position_embeddings);
  const rows: Row[] = [];
  const ourFirst: Record<string, Record<string, number[]>> = {};
  for (const precision of flags.precision.split(',') as Array<'fp16' | 'fp32'>) {
    const before = device === 'cuda' ? gpuUsedBytes(0) : null;
    const model = await BGEM3.load(dir, { device, precision });
    const info = model.info();
    console.log(`ours ${precision}: precision ${info.precision}, heads on ${info.headsDevice}${info.precisionNote ? ` (${info.precisionNote})` : ''}`);
    ourFirst[precision] = {};
    try {
      for (const w of ws) {
        const offsets = new Uint32Array(w.ids.length + 1);
        w.ids.forEach((t, i) => { offsets[i + 1] = offsets[i] + t.length; });
        const tokens = { ids: Int32Array.from(w.ids.flat()), offsets };
        const all = { dense: true, sparse: true, colbert: true };
        await model.encodeTokens({ ids: tokens.ids.subarray(0, offsets[Math.min(32, w.ids.length)]), offsets: offsets.subarray(0, Math.min(32, w.ids.length) + 1) }, all);
        const seconds: number[] = [];
        const { peak } = await peakDuring(device, async () => {
          for (let r = 0; r < runs; r++) {
            const start = performance.now();
            const out = await model.encodeTokens(tokens, all);
            seconds.push((performance.now() - start) / 1000);
            if (r === 0) ourFirst[precision][w.name] = Array.from(out.row(0).dense!);
          }
        });
        const result = row('bge-m3', precision, w, seconds, peak === null || before === null ? null : peak - before);
        rows.push(result);
        console.log(`ours ${precision} ${w.name.padEnd(9)} ${result.tokensPerSecMedian.toFixed(0).padStart(9)} tok/s median ` +
          `${result.tokensPerSecBest.toFixed(0).padStart(9)} best` + (result.peakGpuBytes === null ? '' : `  peak +${(result.peakGpuBytes / 2 ** 30).toFixed(2)} GiB`));
      }
    } finally {
      await model.dispose();
    }
  }
  let peer: Awaited<ReturnType<typeof runPeer>> | null = null;
  const agreement: Record<string, number> = {};
  if (flags.peer !== 'none') {
    try {
      peer = await runPeer(flags.peer, dir, runs, ws, device);
      rows.push(...peer.rows);
      for (const r of peer.rows) console.log(`pytorch ${r.precision} ${r.workload.padEnd(9)} ${r.tokensPerSecMedian.toFixed(0).padStart(9)} tok/s median ` +
        `${r.tokensPerSecBest.toFixed(0).padStart(9)} best` + (r.peakGpuBytes ? `  peak ${(r.peakGpuBytes / 2 ** 30).toFixed(2)} GiB` : ''));
      for (const [precision, firsts] of Object.entries(ourFirst))
        for (const [name, dense] of Object.entries(firsts)) agreement[`${precision}/${name}`] = cosine(dense, peer.firstDense[name]);
      console.log('first dense vector, cosine to the peer\'s:', JSON.stringify(agreement));
    } catch (err) {
      console.error(`PyTorch peer: ${(err as Error).message}`);
    }
  }
  const ratios: Record<string, number> = {};
  for (const r of rows.filter((x) => x.engine === 'bge-m3')) {
    const p = rows.find((x) => x.engine === 'pytorch' && x.workload === r.workload);
    // On the CPU the peer runs fp32: compare like with like.
    if (p && device === 'cpu' && r.precision !== 'fp32') continue;
    if (p) ratios[`${r.precision}/${r.workload}`] = r.tokensPerSecMedian / p.tokensPerSecMedian;
  }
  if (Object.keys(ratios).length) console.log('ours / pytorch (medians):', JSON.stringify(ratios));
  const file = writeResult('gpu-encode', {
    benchmark: 'gpu-encode', model: dir, config, machine: machineInfo(), device, onnxruntime: runtimeInfo().ortVersion,
    gpu: device === 'cuda' ? spawnSync('nvidia-smi', ['--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'], { encoding: 'utf8' }).stdout?.trim() : null,
    peer: peer?.info ?? null, agreement, ratios, rows,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
