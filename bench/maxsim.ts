/**
 * MaxSim throughput: 32 query rows x 1024 dims against documents of 128 to 512 rows held in
 * DRAM (about 260 MB of fp32), on 1 and 2 threads, for the fp32, bf16 and int8 kernels; against
 * this core's measured FMA peak, numpy + OpenBLAS ("GEMM then max", in a Python process kept
 * up and timed in turn with the native kernel, call for call), a plain JS loop and the npm package
 * simsimd (which has no MaxSim and no batch API: one call per row pair, on views made before the
 * timing, with its per-call overhead measured and stated); and, where a CUDA device is visible, the
 * GPU kernels on the same documents (threads 0 in the JSON). Then the accuracy of bf16 and int8
 * storage on a retrieval-shaped corpus (documents around shared topics, queries near one
 * document's rows): the score error against fp32 and the top-10 agreement.
 * Not a test: writes JSON to bench/results/ and prints a table. Ratios are from the same run; the native
 * kernels are timed round-robin so that passing load hits them alike.
 *
 *   npm run bench:maxsim -- [--runs 7] [--docs 200]
 */
import * as path from 'node:path';
import * as readline from 'node:readline';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { capabilities, cudaInfo, DeviceMultiVectors, maxSim, maxSimSync, quantize, runtimeInfo } from '../lib';
import { native } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { machineInfo, median, parseFlags, timeInterleaved, writeResult } from './common';

const NQ = 32;
const DIM = 1024;

/** MaxSim of one document as a plain JS loop (float64 sums): the baseline the kernels are measured against. */
function jsMaxSim(query: Float32Array, doc: Float32Array): number {
  const nq = query.length / DIM;
  const nd = doc.length / DIM;
  if (nq === 0 || nd === 0) return 0;
  let total = 0;
  for (let a = 0; a < nq; a++) {
    let best = -Infinity;
    for (let j = 0; j < nd; j++) {
      let dot = 0;
      for (let k = 0; k < DIM; k++) dot += query[a * DIM + k] * doc[j * DIM + k];
      if (dot > best) best = dot;
    }
    total += best;
  }
  return total / nq;
}

function corpus(docs: number) {
  const rows: number[] = [];
  const next = mulberry32(99);
  for (let i = 0; i < docs; i++) rows.push(128 + Math.floor(next() * 385));
  const offsets = new Uint32Array(docs + 1);
  rows.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  const unit = (n: number) => {
    const out = new Float32Array(n * DIM);
    for (let r = 0; r < n; r++) {
      let norm = 0;
      for (let k = 0; k < DIM; k++) norm += (out[r * DIM + k] = next() - 0.5) ** 2;
      const inv = 1 / Math.sqrt(norm);
      for (let k = 0; k < DIM; k++) out[r * DIM + k] *= inv;
    }
    return out;
  };
  return { rows, query: unit(NQ), docs: { offsets, data: unit(offsets[docs]) } };
}

function time(fn: () => unknown, runs: number): number[] {
  fn();
  const out: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    fn();
    out.push((performance.now() - t) / 1000);
  }
  return out;
}

/** numpy's MaxSim in a Python process kept up, one timed call per `run()` (bench/maxsim_numpy.py). */
class NumpyPeer {
  private constructor(private child: ChildProcessWithoutNullStreams, private lines: AsyncIterator<string>,
    readonly numpy: string, readonly blas: string[]) {}

  static async start(rows: number[], threads: number): Promise<NumpyPeer | { error: string }> {
    for (const py of [process.env.PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
      const child = spawn(py, [path.join(__dirname, '..', '..', 'bench', 'maxsim_numpy.py')], {
        env: { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX', OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) },
      });
      child.on('error', () => undefined);
      const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      child.stdin.write(`${JSON.stringify({ nq: NQ, dim: DIM, rows, runs: 0 })}\n`);
      const first = await lines.next();
      if (!first.done) {
        const ready = JSON.parse(first.value) as { numpy: string; blas: string[] };
        return new NumpyPeer(child, lines, ready.numpy, ready.blas);
      }
      child.kill();
    }
    return { error: 'no python3 with numpy (apt-get install python3-numpy)' };
  }

  async run(): Promise<number> {
    this.child.stdin.write('run\n');
    const line = await this.lines.next();
    if (line.done) throw new Error('the numpy process ended');
    return (JSON.parse(line.value) as { seconds: number }).seconds;
  }

  close(): void {
    this.child.stdin.end('exit\n');
  }
}

/** A corpus around shared topics: `topics` x `perTopic` documents of 32 to 128 rows near their topic, and queries near one document's rows. */
function retrievalCorpus(topics: number, perTopic: number, queries: number) {
  const next = mulberry32(2024);
  const gauss = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  const unitNear = (out: Float32Array, at: number, center: Float32Array | null, c0: number, noise: number) => {
    let n = 0;
    for (let k = 0; k < DIM; k++) n += (out[at + k] = (center ? center[c0 + k] : 0) + noise * gauss()) ** 2;
    const inv = 1 / Math.sqrt(n);
    for (let k = 0; k < DIM; k++) out[at + k] *= inv;
  };
  const centers = new Float32Array(topics * DIM);
  for (let t = 0; t < topics; t++) unitNear(centers, t * DIM, null, 0, 1);
  const rows: number[] = [];
  for (let i = 0; i < topics * perTopic; i++) rows.push(32 + Math.floor(next() * 97));
  const offsets = new Uint32Array(rows.length + 1);
  rows.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  const data = new Float32Array(offsets[rows.length] * DIM);
  // Rows: their topic plus noise of about the same size, so documents of a topic differ in detail.
  for (let i = 0; i < rows.length; i++)
    for (let r = offsets[i]; r < offsets[i + 1]; r++) unitNear(data, r * DIM, centers, (i % topics) * DIM, 1 / Math.sqrt(DIM) * 1.2);
  const qs: Float32Array[] = [];
  for (let q = 0; q < queries; q++) {
    const doc = Math.floor(next() * rows.length);
    const out = new Float32Array(NQ * DIM);
    for (let a = 0; a < NQ; a++) unitNear(out, a * DIM, data, (offsets[doc] + Math.floor(next() * rows[doc])) * DIM, 1 / Math.sqrt(DIM) * 1.5);
    qs.push(out);
  }
  return { docs: { offsets, data }, queries: qs };
}

/** Score error and top-10 agreement of bf16 and int8 storage against fp32, on the retrieval-shaped corpus. */
function storageAccuracy() {
  const { docs, queries } = retrievalCorpus(20, 25, 40);
  const stores = { bf16: quantize(docs, DIM, 'bf16'), i8: quantize(docs, DIM, 'i8') };
  const top = (scores: ArrayLike<number>, k: number) => Array.from(scores, (s, i) => [s, i]).sort((a, b) => b[0] - a[0]).slice(0, k).map((x) => x[1]);
  const out: Record<string, unknown> = { documents: docs.offsets.length - 1, rows: docs.offsets[docs.offsets.length - 1], queries: queries.length, topics: 20 };
  for (const [name, store] of Object.entries(stores)) {
    let maxErr = 0, sumErr = 0, count = 0, overlap = 0, first = 0;
    for (const q of queries) {
      const exact = maxSimSync(q, docs, { dim: DIM });
      const approx = maxSimSync(q, store);
      for (let i = 0; i < exact.length; i++) {
        const e = Math.abs(exact[i] - approx[i]);
        maxErr = Math.max(maxErr, e);
        sumErr += e;
        count++;
      }
      const a = top(exact, 10), b = new Set(top(approx, 10));
      overlap += a.filter((i) => b.has(i)).length / 10;
      first += top(approx, 1)[0] === a[0] ? 1 : 0;
    }
    out[name] = { maxScoreError: maxErr, meanScoreError: sumErr / count, top10Agreement: overlap / queries.length, top1Agreement: first / queries.length };
    console.log(`${name} storage: score error max ${maxErr.toExponential(2)} mean ${(sumErr / count).toExponential(2)}; ` +
      `top-10 agreement with fp32 ${(100 * overlap / queries.length).toFixed(1)}%, top-1 ${(100 * first / queries.length).toFixed(1)}%`);
  }
  return out;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), { runs: '7', docs: '200' });
  const runs = Math.max(5, Number(flags.runs));
  const { rows, query, docs } = corpus(Number(flags.docs));
  const totalRows = docs.offsets[docs.offsets.length - 1];
  const flops = 2 * NQ * totalRows * DIM;
  const peak = native().testing.fmaPeak('avx512', 1.0);
  const peakAvx2 = native().testing.fmaPeak('avx2', 0.5);
  const bf16 = quantize(docs, DIM, 'bf16');
  const i8 = quantize(docs, DIM, 'i8');
  const result: Record<string, unknown>[] = [];
  const row = (name: string, threads: number, seconds: number[], docCount = rows.length, rowCount = totalRows) => {
    const med = median(seconds);
    const best = Math.min(...seconds);
    const f = 2 * NQ * rowCount * DIM;
    const entry = {
      name, threads, docsPerSecMedian: docCount / med, docsPerSecBest: docCount / best,
      gflopsMedian: f / med / 1e9, gflopsBest: f / best / 1e9, fractionOfPeakBest: threads > 0 ? f / best / 1e9 / (peak * threads) : null,
    };
    result.push(entry);
    console.log(`${name.padEnd(26)} ${threads > 0 ? `t${threads}` : 'gpu'}  ${entry.docsPerSecMedian.toFixed(0).padStart(8)} docs/s median  ` +
      `${entry.docsPerSecBest.toFixed(0).padStart(8)} best  ${entry.gflopsBest.toFixed(1).padStart(7)} GFLOP/s (equiv)  ` +
      (entry.fractionOfPeakBest === null ? 'GPU' : `${(100 * entry.fractionOfPeakBest).toFixed(1)}% of fp32 peak`));
    return entry;
  };
  console.log(`fp32 FMA peak: ${peak.toFixed(1)} GFLOP/s per core (AVX-512), ${peakAvx2.toFixed(1)} (AVX2); ` +
    `${rows.length} documents, ${totalRows} rows, ${(totalRows * DIM * 4 / 2 ** 20).toFixed(0)} MiB fp32`);
  const base: Record<string, number> = {};
  // The native kernels run in the same rounds (round-robin), so their ratios compare like with like.
  const kernels: Array<{ key: string; name: string; threads: number; fn: () => unknown }> = [];
  for (const threads of [1, 2]) {
    kernels.push({ key: `f32-${threads}`, name: 'native f32', threads, fn: () => maxSimSync(query, docs, { dim: DIM, threads }) });
    kernels.push({ key: `bf16-${threads}`, name: 'native bf16', threads, fn: () => maxSimSync(query, bf16, { threads }) });
    kernels.push({ key: `i8-${threads}`, name: 'native i8', threads, fn: () => maxSimSync(query, i8, { threads }) });
  }
  kernels.push({ key: 'f32-avx2-1', name: 'native f32 (forced avx2)', threads: 1, fn: () => maxSimSync(query, docs, { dim: DIM, isa: 'avx2' }) });
  const timed = await timeInterleaved(kernels, runs);
  kernels.forEach((k, i) => {
    const entry = row(k.name, k.threads, timed.seconds[i]);
    base[k.key] = entry.docsPerSecMedian;
    base[`${k.key}-best`] = entry.docsPerSecBest;
  });
  // numpy and the native kernel in turn, call for call, on each thread count.
  for (const threads of [1, 2]) {
    const np = await NumpyPeer.start(rows, threads);
    if ('error' in np) {
      console.log(`numpy: ${np.error}`);
      continue;
    }
    try {
      const openblas = np.blas.some((lib) => /openblas/i.test(lib));
      if (!openblas) console.log(`numpy uses ${np.blas.join(', ') || 'an unknown BLAS'}, not OpenBLAS: apt-get install libopenblas0-pthread`);
      maxSimSync(query, docs, { dim: DIM, threads });
      const nativeSeconds: number[] = [];
      const numpySeconds: number[] = [];
      for (let r = 0; r < runs; r++) {
        const t = performance.now();
        maxSimSync(query, docs, { dim: DIM, threads });
        nativeSeconds.push((performance.now() - t) / 1000);
        numpySeconds.push(await np.run());
      }
      base[`f32-${threads}-paired`] = row('native f32 (paired with numpy)', threads, nativeSeconds).docsPerSecMedian;
      base[`numpy-${threads}`] = row(`numpy ${np.numpy} + ${openblas ? 'OpenBLAS' : 'reference BLAS'}`, threads, numpySeconds).docsPerSecMedian;
    } finally {
      np.close();
    }
  }
  // The GPU, where one is visible: whole calls (query upload, kernels, score download) on the
  // documents uploaded once.
  const cuda = cudaInfo();
  if (cuda.devices > 0) {
    for (const format of ['bf16', 'f32'] as const) {
      const gpuDocs = await DeviceMultiVectors.upload(docs, { dim: DIM, format });
      try {
        await maxSim(query, gpuDocs);
        const seconds: number[] = [];
        for (let r = 0; r < runs; r++) {
          const t = performance.now();
          await maxSim(query, gpuDocs);
          seconds.push((performance.now() - t) / 1000);
        }
        base[`cuda-${format}`] = row(`cuda ${format} (${cuda.names[0]})`, 0, seconds).docsPerSecMedian;
      } finally {
        gpuDocs.dispose();
      }
    }
  } else {
    console.log(`cuda: not measured (${cuda.why || 'no device'})`);
  }
  // The slow baselines run on a few documents and are scaled to documents per second.
  const few = 40;
  const fewRows = docs.offsets[few];
  const jsSeconds = time(() => {
    for (let i = 0; i < few; i++) jsMaxSim(query, docs.data.subarray(docs.offsets[i] * DIM, docs.offsets[i + 1] * DIM));
  }, 5);
  base.js = row('plain JS loop', 1, jsSeconds, few, fewRows).docsPerSecMedian;
  let simsimdOverhead: Record<string, number> | undefined;
  try {
    const simsimd = require('simsimd') as { inner(a: Float32Array, b: Float32Array): number };
    // Every view made before the timing: what is timed is simsimd's calls and the max in JS.
    const qRows = Array.from({ length: NQ }, (_, i) => query.subarray(i * DIM, (i + 1) * DIM));
    const docRows = Array.from({ length: fewRows }, (_, j) => docs.data.subarray(j * DIM, (j + 1) * DIM));
    const pass = () => {
      for (let i = 0; i < few; i++) {
        let total = 0;
        for (const q of qRows) {
          let best = -Infinity;
          for (let j = docs.offsets[i]; j < docs.offsets[i + 1]; j++) {
            const s = simsimd.inner(q, docRows[j]);
            if (s > best) best = s;
          }
          total += best;
        }
        void total;
      }
    };
    pass();
    const simSeconds = time(pass, 5);
    base.simsimd = row('simsimd inner per row pair', 1, simSeconds, few, fewRows).docsPerSecMedian;
    // Its cost per call with almost no arithmetic: the N-API crossing the per-pair API pays.
    const one = Float32Array.of(1);
    const calls = 200000;
    const overheadSeconds = time(() => { for (let c = 0; c < calls; c++) simsimd.inner(one, one); }, 5);
    const perCall = median(overheadSeconds) / calls;
    simsimdOverhead = { nsPerCall: perCall * 1e9, shareOfTime: (perCall * NQ * fewRows) / median(simSeconds) };
    console.log(`simsimd: ${(perCall * 1e9).toFixed(0)} ns per call of overhead, ${(100 * simsimdOverhead.shareOfTime).toFixed(0)}% of its MaxSim time`);
  } catch (err) {
    console.log(`simsimd: not available (${(err as Error).message.split('\n')[0]})`);
  }
  const accuracy = storageAccuracy();
  const ratios = {
    f32OverNumpy1: base['f32-1-paired'] / base['numpy-1'], f32OverNumpy2: base['f32-2-paired'] / base['numpy-2'],
    bf16OverF32: base['bf16-1'] / base['f32-1'], i8OverF32: base['i8-1'] / base['f32-1'],
    twoThreadsOverOne: base['f32-2'] / base['f32-1'], twoThreadsOverOneBest: base['f32-2-best'] / base['f32-1-best'],
    f32OverJs: base['f32-1'] / base.js, f32OverSimsimd: base['f32-1'] / base.simsimd,
    ...(base['cuda-bf16'] ? { cudaBf16OverCpuBf16TwoThreads: base['cuda-bf16'] / base['bf16-2'] } : {}),
  };
  console.log('ratios (medians, same run):', Object.fromEntries(Object.entries(ratios).map(([k, v]) => [k, Number(v.toFixed(2))])));
  const file = writeResult('maxsim', {
    benchmark: 'maxsim', shape: { queryRows: NQ, dim: DIM, documents: rows.length, rows: totalRows, docRows: '128..512' },
    flopsPerCall: flops, fmaPeakGflopsPerCore: { avx512: peak, avx2: peakAvx2 }, machine: machineInfo(), cpu: capabilities(),
    onnxruntime: runtimeInfo().ortVersion, runs, results: result, ratios, simsimdOverhead, storageAccuracy: accuracy,
    notes: { numpy: 'timed call for call in turn with the native f32 kernel (rows "paired")', simsimd: 'one call per row pair on views made before the timing, on the first 40 documents' },
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
