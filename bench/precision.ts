/**
 * `precision: 'bf16'` against the default fp32, on the same model in the same run. Not a test: it
 * writes JSON to bench/results/ and prints a table.
 *
 *   npm run bench:precision -- [--runs 5] [--model .cache/bench-model] [--lengths 32,128,512]
 *                              [--full-model .cache/bench-model-full] [--full-lengths 24,512,2048,8192]
 *
 * Kernel: the bf16 dense-layer kernel alone on one thread (`linearBf16KernelTimes`: timed in C++
 * over inputs allocated once) at the benchmark model's and BGE-M3's layer shapes (rows x in x out),
 * in GFLOP/s (2 x rows x in x out per call); the fused attention kernel in fp32 and bf16 (4 x heads x
 * length² x head dim per call).
 *
 * Encode: both precisions loaded in one process, their runs interleaved (32 texts per length and
 * the mixed corpus, 1 and 2 threads); tokens/s median and best. Agreement: the bf16 outputs
 * against the fp32 ones on the mixed corpus (dense cosine, ColBERT row cosine, lexical weights).
 *
 * Full shape (BGE-M3's 24 x 1024 from `scripts/gen-bench-model.sh full`, when present): each
 * precision and length in a child process of its own (its peak RSS is its own), 2 threads: one
 * short query per encode (the latency a server sees; 15 runs), 4 texts of 512 tokens, one text at
 * longer lengths (where attention is most of the work).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, capabilities, runtimeInfo, type EncodeOutput } from '../lib';
import { native } from '../lib/addon/native';
import { machineInfo, median, parseFlags, writeResult } from './common';
import { mixed, uniform, type Workload } from './workloads';

type Precision = 'fp32' | 'bf16';

interface KernelRow { rows: number; in: number; out: number; runs: number; gflopsMedian: number; gflopsBest: number; ofPeakMedian: number }
interface AttentionKernelRow { heads: number; length: number; headDim: number; runs: number;
  fp32GflopsMedian: number; bf16GflopsMedian: number; speedupMedian: number }
interface EncodeRow {
  workload: string; threads: number; texts: number; runs: number;
  fp32TokensPerSec: { median: number; best: number };
  bf16TokensPerSec: { median: number; best: number };
  speedupMedian: number;
}
interface Agreement {
  texts: number; denseCosineMin: number; denseCosineMedian: number; colbertCosineMin: number;
  sparseMaxAbsDiff: number; sparseMaxWeight: number;
}
interface FullRow { precision: Precision; bf16Layers: number; texts: number; length: number; runs: number;
  tokensPerSecMedian: number; tokensPerSecBest: number; msPerEncodeMedian: number; maxRssMiB: number }

function rowCosines(a: Float32Array, b: Float32Array, dim: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < a.length / dim; r++) {
    let ab = 0, aa = 0, bb = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) {
      ab += a[j] * b[j];
      aa += a[j] * a[j];
      bb += b[j] * b[j];
    }
    out.push(ab / Math.sqrt(aa * bb));
  }
  return out;
}

function agreement(fp: EncodeOutput, bf: EncodeOutput): Agreement {
  const dense = rowCosines(fp.dense!, bf.dense!, fp.dim);
  const colbert = rowCosines(fp.colbert!.data, bf.colbert!.data, fp.dim);
  let diff = 0, top = 0;
  for (let i = 0; i < fp.count; i++) {
    const a = fp.row(i).sparse!, b = bf.row(i).sparse!;
    const m = new Map<number, number>();
    a.ids.forEach((id, k) => { m.set(id, a.weights[k]); top = Math.max(top, a.weights[k]); });
    b.ids.forEach((id, k) => { diff = Math.max(diff, Math.abs((m.get(id) ?? 0) - b.weights[k])); m.delete(id); });
    for (const w of m.values()) diff = Math.max(diff, w);
  }
  return { texts: fp.count, denseCosineMin: Math.min(...dense), denseCosineMedian: median(dense),
    colbertCosineMin: Math.min(...colbert), sparseMaxAbsDiff: diff, sparseMaxWeight: top };
}

/** Child mode: load one precision, encode `texts` texts of `length` tokens `runs` times, print one JSON line. */
async function child(dir: string, precision: Precision, length: number, texts: number, threads: number, runs: number): Promise<void> {
  const model = await BGEM3.load(dir, { threads, precision });
  const w = uniform(length, texts, model.info().modelMaxLength);
  if (length <= 2048) await model.encode(w.texts.slice(0, 1), { maxLength: w.maxLength });
  const rates: number[] = [], ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    const out = await model.encode(w.texts, { maxLength: w.maxLength });
    ms.push(performance.now() - start);
    rates.push(out.tokenCount / (ms[r] / 1000));
  }
  const bf16Layers = model.info().bf16Layers;
  await model.dispose();
  console.log(JSON.stringify({ rates, ms, bf16Layers, length: w.maxLength, maxRssKiB: process.resourceUsage().maxRSS }));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const [dir, precision, length, texts, threads, runs] = argv.slice(1);
    await child(dir, precision as Precision, Number(length), Number(texts), Number(threads), Number(runs));
    return;
  }
  const flags = parseFlags(argv, {
    runs: '5', model: '.cache/bench-model', lengths: '32,128,512', 'full-model': '.cache/bench-model-full', 'full-lengths': '24,512,2048,8192',
    'kernel-shapes': '4096x384x1536,4096x1536x384,4096x384x384,512x1024x4096,512x4096x1024,512x1024x1024',
    'attention-shapes': '16x512x64,16x2048x64,1x8192x64',
  });
  const runs = Math.max(5, Number(flags.runs));
  const dir = path.resolve(flags.model);
  if (!fs.existsSync(path.join(dir, 'onnx', 'model.onnx'))) {
    console.error(`No benchmark model in ${dir}: run scripts/gen-bench-model.sh, or pass --model DIR.`);
    process.exit(2);
  }
  const caps = capabilities();
  if (!(caps.features.avx512bf16 && caps.active === 'avx512')) {
    console.error('this CPU (at the active tier) has no AVX-512 BF16: precision bf16 runs in fp32 here, nothing to compare');
    process.exit(2);
  }
  const bf16Peak = native().testing.bf16Peak(1);
  const fp32Peak = native().testing.fmaPeak('avx512', 1);
  console.log(`this core's peaks: bf16 ${bf16Peak.toFixed(0)} GFLOP/s (vdpbf16ps), fp32 ${fp32Peak.toFixed(0)} (FMA)`);
  const kernel: KernelRow[] = [];
  for (const shape of flags['kernel-shapes'].split(',').filter(Boolean)) {
    const [rows, inp, out] = shape.split('x').map(Number);
    const ms = Array.from(native().testing.linearBf16KernelTimes([rows, inp, out], runs));
    const gflops = ms.map((t) => (2 * rows * inp * out) / (t / 1000) / 1e9);
    const row: KernelRow = { rows, in: inp, out, runs, gflopsMedian: median(gflops), gflopsBest: Math.max(...gflops),
      ofPeakMedian: median(gflops) / bf16Peak };
    kernel.push(row);
    console.log(`kernel ${shape}: ${row.gflopsMedian.toFixed(0)} GFLOP/s (best ${row.gflopsBest.toFixed(0)}), ` +
      `${(100 * row.ofPeakMedian).toFixed(0)}% of the bf16 peak`);
  }

  const attention: AttentionKernelRow[] = [];
  for (const shape of flags['attention-shapes'].split(',').filter(Boolean)) {
    const [heads, length, headDim] = shape.split('x').map(Number);
    const dims = [1, heads, length, length, headDim, headDim];
    const flops = 4 * heads * length * length * headDim;
    const rate = (bf16: boolean) => Array.from(native().testing.attentionKernelTimes(dims, 'avx512', runs, bf16)).map((t) => flops / (t / 1000) / 1e9);
    const fp = rate(false), bf = rate(true);
    const row: AttentionKernelRow = { heads, length, headDim, runs, fp32GflopsMedian: median(fp), bf16GflopsMedian: median(bf),
      speedupMedian: median(bf) / median(fp) };
    attention.push(row);
    console.log(`attention kernel ${shape}: fp32 ${row.fp32GflopsMedian.toFixed(0)} GFLOP/s, bf16 ${row.bf16GflopsMedian.toFixed(0)}: ` +
      `${row.speedupMedian.toFixed(2)}x`);
  }

  const encode: EncodeRow[] = [];
  let agree: Agreement | null = null;
  for (const threads of [1, 2]) {
    const models: Record<Precision, BGEM3> = {
      fp32: await BGEM3.load(dir, { threads }),
      bf16: await BGEM3.load(dir, { threads, precision: 'bf16' }),
    };
    try {
      const maxLen = models.fp32.info().modelMaxLength;
      const loads: Workload[] = [...flags.lengths.split(',').map((l) => uniform(Number(l), 32, maxLen)), mixed(64, maxLen)];
      for (const w of loads) {
        const rates: Record<Precision, number[]> = { fp32: [], bf16: [] };
        for (const p of ['fp32', 'bf16'] as const) await models[p].encode(w.texts.slice(0, 4), { maxLength: w.maxLength });
        for (let r = 0; r < runs; r++) {
          for (const p of ['fp32', 'bf16'] as const) {
            const start = performance.now();
            const out = await models[p].encode(w.texts, { maxLength: w.maxLength });
            rates[p].push(out.tokenCount / ((performance.now() - start) / 1000));
          }
        }
        const row: EncodeRow = {
          workload: w.name, threads, texts: w.texts.length, runs,
          fp32TokensPerSec: { median: median(rates.fp32), best: Math.max(...rates.fp32) },
          bf16TokensPerSec: { median: median(rates.bf16), best: Math.max(...rates.bf16) },
          speedupMedian: median(rates.bf16) / median(rates.fp32),
        };
        encode.push(row);
        console.log(`${w.name}, ${threads} thread(s): fp32 ${row.fp32TokensPerSec.median.toFixed(0)} tok/s (best ` +
          `${row.fp32TokensPerSec.best.toFixed(0)}), bf16 ${row.bf16TokensPerSec.median.toFixed(0)} (best ` +
          `${row.bf16TokensPerSec.best.toFixed(0)}): ${row.speedupMedian.toFixed(2)}x`);
        if (!agree && w.name.startsWith('mixed')) {
          const opts = { maxLength: w.maxLength, dense: true, sparse: true, colbert: true };
          agree = agreement(await models.fp32.encode(w.texts, opts), await models.bf16.encode(w.texts, opts));
          console.log(`agreement on ${agree.texts} texts: dense cosine min ${agree.denseCosineMin.toFixed(6)}, median ` +
            `${agree.denseCosineMedian.toFixed(6)}; ColBERT row cosine min ${agree.colbertCosineMin.toFixed(6)}; lexical ` +
            `weights max |diff| ${agree.sparseMaxAbsDiff.toExponential(2)} (largest weight ${agree.sparseMaxWeight.toFixed(3)})`);
        }
      }
    } finally {
      await models.fp32.dispose();
      await models.bf16.dispose();
    }
  }

  const full: FullRow[] = [];
  const fullDir = path.resolve(flags['full-model']);
  if (fs.existsSync(path.join(fullDir, 'onnx', 'model.onnx'))) {
    for (const length of flags['full-lengths'].split(',').filter(Boolean).map(Number)) {
      // One short query (a server's latency), four 512-token passages, one long document.
      const texts = length < 512 || length > 512 ? 1 : 4;
      const lengthRuns = length < 512 ? Math.max(runs, 15) : runs;
      for (const precision of ['fp32', 'bf16'] as const) {
        const outText = execFileSync(process.execPath, [__filename, '--child', fullDir, precision, String(length), String(texts), '2', String(lengthRuns)],
          { encoding: 'utf8', maxBuffer: 1 << 20 });
        const r = JSON.parse(outText.trim().split('\n').pop()!);
        const row: FullRow = { precision, bf16Layers: r.bf16Layers, texts, length: r.length, runs: lengthRuns,
          tokensPerSecMedian: median(r.rates), tokensPerSecBest: Math.max(...r.rates), msPerEncodeMedian: median(r.ms),
          maxRssMiB: r.maxRssKiB / 1024 };
        full.push(row);
        console.log(`full shape, ${texts} x ${r.length} tokens, 2 threads, ${precision}: ${row.tokensPerSecMedian.toFixed(0)} tok/s ` +
          `(best ${row.tokensPerSecBest.toFixed(0)}), ${row.msPerEncodeMedian.toFixed(1)} ms per encode, peak RSS ${row.maxRssMiB.toFixed(0)} MiB`);
      }
    }
  } else {
    console.log(`no ${fullDir}: the full shape skipped (scripts/gen-bench-model.sh full)`);
  }
  const file = writeResult('precision', {
    benchmark: 'precision', model: dir, fullModel: full.length ? fullDir : null, machine: machineInfo(),
    onnxruntime: runtimeInfo().ortVersion, cpu: caps, peakGflopsPerCore: { bf16: bf16Peak, fp32: fp32Peak }, kernel, attention, encode, agreement: agree, full,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
