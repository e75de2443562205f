/**
 * The fused attention against the graph's own attention ops (`fusedAttention: false`), on the
 * same model in the same run. Not a test: it writes JSON to bench/results/ and prints a table.
 *
 *   npm run bench:attention -- [--runs 5] [--model .cache/bench-model] [--lengths 128,512]
 *                              [--long-model .cache/bench-model-full] [--long-lengths 2048,8192]
 *
 * Kernel: the attention kernel alone on one thread (`attentionKernelTimes`: timed in C++ over
 * inputs allocated once), per tier, for `--kernel-shapes` (heads x length x head dim, one text), in GFLOP/s (4 x heads x
 * length² x dim per call).
 *
 * Short texts: both models loaded in one process, their runs interleaved (32 texts per length,
 * 1 and 2 threads); tokens/s median and best. At the longest of them, the fused model also runs
 * under each `--budgets` maxAttentionBytes (MiB; interleaved), which sets how many texts share
 * a batch. Long texts (one text per encode, 2 threads, BGE-M3's
 * full shape from `scripts/gen-bench-model.sh full`): each configuration in a child process of
 * its own, so its peak resident memory (maxRSS) is its own; `--long-runs` runs each (default 5;
 * on 2 cores the 8192-token rows take about 12 minutes, most of it unfused).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, capabilities, runtimeInfo } from '../lib';
import { native, type IsaTierName } from '../lib/addon/native';
import { machineInfo, median, parseFlags, writeResult } from './common';
import { uniform } from './workloads';

interface ShortRow {
  length: number; threads: number; texts: number; runs: number;
  fusedTokensPerSec: { median: number; best: number };
  graphTokensPerSec: { median: number; best: number };
  speedupMedian: number;
}

interface BudgetRow {
  length: number; threads: number; maxAttentionMiB: number; runs: number;
  tokensPerSec: { median: number; best: number };
}

interface KernelRow {
  tier: IsaTierName; heads: number; length: number; headDim: number; runs: number;
  gflopsMedian: number; gflopsBest: number;
}

interface LongRow {
  length: number; threads: number; attention: 'fused' | 'graph'; fusedBlocks: number; runs: number;
  secondsMedian: number; secondsBest: number; maxRssMiB: number;
}

/** Child mode: encode one long text `runs` times and print one JSON line. */
async function child(dir: string, fused: boolean, length: number, threads: number, runs: number): Promise<void> {
  const model = await BGEM3.load(dir, { threads, fusedAttention: fused });
  const [text] = uniform(length, 1, model.info().modelMaxLength).texts;
  const seconds: number[] = [];
  for (let r = 0; r < runs; r++) {
    const start = performance.now();
    const out = await model.encode([text], { dense: true, maxLength: length });
    seconds.push((performance.now() - start) / 1000);
    if (out.tokenCount !== length) throw new Error(`the text gave ${out.tokenCount} tokens, not ${length}`);
  }
  const fusedBlocks = model.info().fusedAttentionBlocks;
  await model.dispose();
  console.log(JSON.stringify({ seconds, fusedBlocks, maxRssKiB: process.resourceUsage().maxRSS }));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const [dir, fused, length, threads, runs] = argv.slice(1);
    await child(dir, fused === '1', Number(length), Number(threads), Number(runs));
    return;
  }
  const flags = parseFlags(argv, {
    runs: '5', model: '.cache/bench-model', lengths: '128,512', 'long-model': '.cache/bench-model-full',
    'long-lengths': '2048,8192', 'long-runs': '5', 'kernel-shapes': '16x512x64,16x2048x64,1x8192x64,12x512x32',
    budgets: '16,64,1024',
  });
  const runs = Math.max(5, Number(flags.runs));
  const dir = path.resolve(flags.model);
  if (!fs.existsSync(path.join(dir, 'onnx', 'model.onnx'))) {
    console.error(`No benchmark model in ${dir}: run scripts/gen-bench-model.sh, or pass --model DIR.`);
    process.exit(2);
  }
  const detected = capabilities().detected;
  if (detected === 'serial') console.warn('this CPU has neither AVX2 nor AVX-512: nothing is fused, both columns run the graph');
  const kernel: KernelRow[] = [];
  for (const shape of flags['kernel-shapes'].split(',').filter(Boolean)) {
    const [heads, length, headDim] = shape.split('x').map(Number);
    for (const tier of (['avx2', 'avx512'] as const).filter((t) => t === 'avx2' ? detected !== 'serial' : detected === 'avx512')) {
      const ms = Array.from(native().testing.attentionKernelTimes([1, heads, length, length, headDim, headDim], tier, runs));
      const gflops = ms.map((t) => (4 * heads * length * length * headDim) / (t / 1000) / 1e9);
      const row: KernelRow = { tier, heads, length, headDim, runs, gflopsMedian: median(gflops), gflopsBest: Math.max(...gflops) };
      kernel.push(row);
      console.log(`kernel ${tier}, ${heads} heads x ${length} x ${headDim}: ${row.gflopsMedian.toFixed(0)} GFLOP/s (best ${row.gflopsBest.toFixed(0)})`);
    }
  }
  const short: ShortRow[] = [];
  const budgetRows: BudgetRow[] = [];
  const lengths = flags.lengths.split(',').map(Number);
  for (const threads of [1, 2]) {
    const fused = await BGEM3.load(dir, { threads });
    const graph = await BGEM3.load(dir, { threads, fusedAttention: false });
    try {
      for (const length of lengths) {
        const w = uniform(length, 32, fused.info().modelMaxLength);
        const rates: Record<'fused' | 'graph', number[]> = { fused: [], graph: [] };
        await fused.encode(w.texts.slice(0, 4), { maxLength: w.maxLength });
        await graph.encode(w.texts.slice(0, 4), { maxLength: w.maxLength });
        for (let r = 0; r < runs; r++) {
          for (const [name, model] of [['fused', fused], ['graph', graph]] as const) {
            const start = performance.now();
            const out = await model.encode(w.texts, { maxLength: w.maxLength });
            rates[name].push(out.tokenCount / ((performance.now() - start) / 1000));
          }
        }
        const row: ShortRow = {
          length: w.maxLength, threads, texts: w.texts.length, runs,
          fusedTokensPerSec: { median: median(rates.fused), best: Math.max(...rates.fused) },
          graphTokensPerSec: { median: median(rates.graph), best: Math.max(...rates.graph) },
          speedupMedian: median(rates.fused) / median(rates.graph),
        };
        short.push(row);
        console.log(`${w.maxLength} tokens x ${row.texts}, ${threads} thread(s): fused ${row.fusedTokensPerSec.median.toFixed(0)} tok/s ` +
          `(best ${row.fusedTokensPerSec.best.toFixed(0)}), graph ${row.graphTokensPerSec.median.toFixed(0)} ` +
          `(best ${row.graphTokensPerSec.best.toFixed(0)}): ${row.speedupMedian.toFixed(2)}x`);
        if (length !== Math.max(...lengths)) continue;
        const budgets = flags.budgets.split(',').filter(Boolean).map(Number);
        const byBudget: number[][] = budgets.map(() => []);
        for (let r = 0; r < runs; r++) {
          for (const [i, mib] of budgets.entries()) {
            const start = performance.now();
            const out = await fused.encode(w.texts, { maxLength: w.maxLength, maxAttentionBytes: mib * 2 ** 20 });
            byBudget[i].push(out.tokenCount / ((performance.now() - start) / 1000));
          }
        }
        for (const [i, mib] of budgets.entries()) {
          const b: BudgetRow = { length: w.maxLength, threads, maxAttentionMiB: mib, runs,
            tokensPerSec: { median: median(byBudget[i]), best: Math.max(...byBudget[i]) } };
          budgetRows.push(b);
          console.log(`  fused, maxAttentionBytes ${mib} MiB: ${b.tokensPerSec.median.toFixed(0)} tok/s (best ${b.tokensPerSec.best.toFixed(0)})`);
        }
      }
    } finally {
      await fused.dispose();
      await graph.dispose();
    }
  }

  const long: LongRow[] = [];
  const longDir = path.resolve(flags['long-model']);
  if (fs.existsSync(path.join(longDir, 'onnx', 'model.onnx'))) {
    const longRuns = Math.max(1, Number(flags['long-runs']));
    for (const length of flags['long-lengths'].split(',').map(Number)) {
      for (const attention of ['fused', 'graph'] as const) {
        const outText = execFileSync(process.execPath, [__filename, '--child', longDir, attention === 'fused' ? '1' : '0',
          String(length), '2', String(longRuns)], { encoding: 'utf8', maxBuffer: 1 << 20 });
        const r = JSON.parse(outText.trim().split('\n').pop()!);
        const row: LongRow = {
          length, threads: 2, attention, fusedBlocks: r.fusedBlocks, runs: longRuns,
          secondsMedian: median(r.seconds), secondsBest: Math.min(...r.seconds), maxRssMiB: r.maxRssKiB / 1024,
        };
        long.push(row);
        console.log(`${length}-token text, 2 threads, ${attention}: ${row.secondsMedian.toFixed(1)} s (best ${row.secondsBest.toFixed(1)}), ` +
          `peak RSS ${row.maxRssMiB.toFixed(0)} MiB`);
      }
    }
  } else {
    console.log(`no ${longDir}: long texts skipped (scripts/gen-bench-model.sh full)`);
  }
  const file = writeResult('attention', {
    benchmark: 'attention', model: dir, longModel: long.length ? longDir : null, machine: machineInfo(),
    onnxruntime: runtimeInfo().ortVersion, cpu: capabilities(), kernel, short, budgets: budgetRows, long,
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
