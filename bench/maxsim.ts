/**
 * MaxSim throughput: 32 query rows x 1024 dims against documents of 128 to 512 rows held in
 * DRAM (about 260 MB of fp32), on 1 and 2 threads, for the fp32, bf16 and int8 kernels; against
 * this core's measured FMA peak, numpy + OpenBLAS ("GEMM then max"), a plain JS loop and the
 * npm package simsimd (which has no MaxSim: its inner product per row pair, max in JS); and, where a
 * CUDA device is visible, the GPU kernels on the same documents (threads 0 in the JSON).
 * Not a test: writes JSON to bench/results/ and prints a table. Ratios are from the same run; the native
 * kernels are timed round-robin so that passing load hits them alike.
 *
 *   npm run bench:maxsim -- [--runs 7] [--docs 200]
 */
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
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

function numpyBaseline(rows: number[], threads: number, runs: number): { seconds: number[]; numpy: string; blas: string[] } | { error: string } {
  for (const py of [process.env.PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
    const r = spawnSync(py, [path.join(__dirname, '..', '..', 'bench', 'maxsim_numpy.py')], {
      input: JSON.stringify({ nq: NQ, dim: DIM, rows, runs }), encoding: 'utf8', maxBuffer: 1 << 20,
      env: { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX', OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) },
    });
    if (r.status === 0) return JSON.parse(r.stdout);
  }
  return { error: 'no python3 with numpy (apt-get install python3-numpy)' };
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
  for (const threads of [1, 2]) {
    const np = numpyBaseline(rows, threads, runs);
    if ('seconds' in np) {
      const openblas = np.blas.some((lib) => /openblas/i.test(lib));
      if (!openblas) console.log(`numpy uses ${np.blas.join(', ') || 'an unknown BLAS'}, not OpenBLAS: apt-get install libopenblas0-pthread`);
      base[`numpy-${threads}`] = row(`numpy ${np.numpy} + ${openblas ? 'OpenBLAS' : 'reference BLAS'}`, threads, np.seconds).docsPerSecMedian;
    } else {
      console.log(`numpy: ${np.error}`);
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
  const few = 6;
  const fewRows = docs.offsets[few];
  const jsSeconds = time(() => {
    for (let i = 0; i < few; i++) jsMaxSim(query, docs.data.subarray(docs.offsets[i] * DIM, docs.offsets[i + 1] * DIM));
  }, 5);
  base.js = row('plain JS loop', 1, jsSeconds, few, fewRows).docsPerSecMedian;
  try {
    const simsimd = require('simsimd') as { inner(a: Float32Array, b: Float32Array): number };
    const qRows = Array.from({ length: NQ }, (_, i) => query.subarray(i * DIM, (i + 1) * DIM));
    const simSeconds = time(() => {
      for (let i = 0; i < few; i++) {
        let total = 0;
        for (const q of qRows) {
          let best = -Infinity;
          for (let j = docs.offsets[i]; j < docs.offsets[i + 1]; j++) best = Math.max(best, simsimd.inner(q, docs.data.subarray(j * DIM, (j + 1) * DIM)));
          total += best;
        }
        void total;
      }
    }, 5);
    base.simsimd = row('simsimd inner + JS max', 1, simSeconds, few, fewRows).docsPerSecMedian;
  } catch (err) {
    console.log(`simsimd: not available (${(err as Error).message.split('\n')[0]})`);
  }
  const ratios = {
    f32OverNumpy1: base['f32-1'] / base['numpy-1'], f32OverNumpy2: base['f32-2'] / base['numpy-2'],
    bf16OverF32: base['bf16-1'] / base['f32-1'], i8OverF32: base['i8-1'] / base['f32-1'],
    twoThreadsOverOne: base['f32-2'] / base['f32-1'], twoThreadsOverOneBest: base['f32-2-best'] / base['f32-1-best'],
    f32OverJs: base['f32-1'] / base.js, f32OverSimsimd: base['f32-1'] / base.simsimd,
    ...(base['cuda-bf16'] ? { cudaBf16OverCpuBf16TwoThreads: base['cuda-bf16'] / base['bf16-2'] } : {}),
  };
  console.log('ratios (medians, same run):', Object.fromEntries(Object.entries(ratios).map(([k, v]) => [k, Number(v.toFixed(2))])));
  const file = writeResult('maxsim', {
    benchmark: 'maxsim', shape: { queryRows: NQ, dim: DIM, documents: rows.length, rows: totalRows, docRows: '128..512' },
    flopsPerCall: flops, fmaPeakGflopsPerCore: { avx512: peak, avx2: peakAvx2 }, machine: machineInfo(), cpu: capabilities(),
    onnxruntime: runtimeInfo().ortVersion, runs, results: result, ratios,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
