/**
 * The benchmark harness: runs scenarios, each measurement in a fresh child process, and writes
 * one JSON per scenario (plus a run summary) with the environment it ran in.
 *
 *   npm run bench -- [scenario...] [--quick] [--model DIR] [--full-model DIR] [--threads 1,2] [--runs 5]
 *
 * Scenarios (default: all that can run here):
 *   encode      this package against onnxruntime-node from JS (the naive way and a careful user's),
 *               @huggingface/transformers and the hand-written PyTorch model on the same weights,
 *               thread counts and texts: uniform 32 / 128 / 512 tokens and a shuffled mixed-length
 *               corpus; dense only and all three outputs; batch sizes; load time, time to first
 *               result, peak RSS. Every peer's outputs (dense, lexical, ColBERT) are compared with
 *               this package's on every workload (bench/agreement.ts); one that disagrees is left
 *               out of the ratios, with the reason. Every engine's tokenizer gets as many threads
 *               as its session (RAYON_NUM_THREADS).
 *   full-shape  this package on BGE-M3's own shape (24 x 1024) at 512 tokens against this
 *               machine's fp32 ceiling per core (needs scripts/gen-bench-model.sh full)
 *   maxsim, lexical, index, serve   the kernel, index and server benchmarks (bench/*.ts)
 *
 * --quick: few texts and runs, small corpora, short load phases (what CI runs on the tiny demo
 * model). Environment: BGE_M3_BENCH_RESULTS=DIR writes results there instead of bench/results/;
 * PYTHON=/path/to/python3 picks the interpreter for the PyTorch and numpy peers.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3, capabilities, runtimeInfo } from '../lib';
import { native } from '../lib/addon/native';
import { machineInfo, parseFlags, resultsDir, writeResult } from './common';
import { workloads } from './workloads';
import { type Agreement, type RecordedOutputs, compareOutputs } from './agreement';

const ROOT = path.resolve(__dirname, '..', '..');
const NODE_SCRIPTS = path.join(ROOT, 'dist', 'bench');
const SCENARIOS = ['encode', 'full-shape', 'maxsim', 'lexical', 'index', 'serve', 'finetune'];
const ENGINES = ['bge-m3', 'ort-js', 'ort-js-careful', 'transformers'];
const PEERS = ['ort-js', 'ort-js-careful', 'transformers', 'torch'];

interface ChildResult {
  ok: boolean;
  seconds: number;
  file?: string;
  error?: string;
}

/** Runs a node script in a fresh process; its JSON lands in `out` (or the results folder). */
function runNode(script: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildResult {
  const start = performance.now();
  const r = spawnSync(process.execPath, [path.join(NODE_SCRIPTS, script), ...args], {
    encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20,
  });
  const seconds = (performance.now() - start) / 1000;
  process.stdout.write(r.stdout ?? '');
  if (r.status !== 0) return { ok: false, seconds, error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n').slice(-5).join('\n') };
  const wrote = /wrote (\S+\.json)/.exec(r.stdout ?? '');
  return { ok: true, seconds, file: wrote?.[1] };
}

function python(): string | undefined {
  for (const py of [process.env.PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
    const r = spawnSync(py, ['-c', 'import torch, numpy, onnx'], { encoding: 'utf8' });
    if (r.status === 0) return py;
  }
  return undefined;
}

function environment(threads: number[]): Record<string, unknown> {
  const rt = runtimeInfo();
  return {
    machine: { ...machineInfo(), cpuFlagsAll: (fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags')) ?? '').split(':')[1]?.trim() },
    simd: capabilities(), onnxruntime: { version: rt.ortVersion, providers: rt.providers }, threads, node: process.version,
    fp32PeakGflopsPerCore: native().testing.fmaPeak('avx512', 0.5),
  };
}

async function tokenizedJob(model: string, mode: 'quick' | 'full', threads: number, runs: number) {
  const m = await BGEM3.load(model);
  try {
    const list = [];
    for (const w of workloads(mode, m.modelMaxLength)) {
      const t = await m.tokenize(w.texts, { maxLength: w.maxLength });
      const ids: number[][] = [];
      for (let i = 0; i < w.texts.length; i++) ids.push(Array.from(t.ids.subarray(t.offsets[i], t.offsets[i + 1])));
      list.push({ name: w.name, maxLength: w.maxLength, ids });
    }
    return { model, threads, runs, batchSize: 32, workloads: list };
  } finally {
    await m.dispose();
  }
}

type EngineResult = Record<string, unknown> & {
  engine: string; threads: number; rows?: Array<Record<string, unknown>>; skipped?: string; outputs?: Record<string, RecordedOutputs>;
};

/** Each peer's outputs against this package's, per thread count and workload; the recorded outputs are dropped. */
function agreements(results: EngineResult[]): Array<{ peer: string; threads: number; workload: string } & Agreement> {
  const out: Array<{ peer: string; threads: number; workload: string } & Agreement> = [];
  for (const r of results) {
    if (r.engine === 'bge-m3' || !r.outputs) continue;
    const ours = results.find((x) => x.engine === 'bge-m3' && x.threads === r.threads)?.outputs;
    for (const [workload, theirs] of Object.entries(r.outputs)) {
      const mine = ours?.[workload];
      out.push({ peer: r.engine, threads: r.threads, workload,
        ...(mine ? compareOutputs(mine, theirs) : { dense: NaN, sparse: null, colbert: null, problem: 'this package recorded no outputs' }) });
    }
  }
  for (const r of results) delete r.outputs;
  return out;
}

/** Ratios of this package against each peer that agrees with it, from the same run. */
function encodeRatios(results: EngineResult[], agreed: ReturnType<typeof agreements>): Record<string, unknown>[] {
  const find = (engine: string, threads: number, workload: string, outputs: string) =>
    results.find((r) => r.engine === engine && r.threads === threads)?.rows?.find((x) => x.workload === workload && x.outputs === outputs && x.batchSize === 32) as
      { tokensPerSecMedian: number; secondsMedian: number } | undefined;
  const out: Record<string, unknown>[] = [];
  for (const threads of [...new Set(results.map((r) => r.threads))]) {
    for (const workload of ['uniform-32', 'uniform-128', 'uniform-512', 'mixed']) {
      const dense = find('bge-m3', threads, workload, 'dense');
      const all = find('bge-m3', threads, workload, 'all');
      if (!dense) continue;
      const row: Record<string, unknown> = { threads, workload };
      if (all) row.allOverDenseTime = all.secondsMedian / dense.secondsMedian;
      for (const peer of PEERS) {
        const p = find(peer, threads, workload, 'dense');
        if (!p) continue;
        // The same weights and texts must give the same outputs, or the speeds are not comparable.
        const a = agreed.find((x) => x.peer === peer && x.threads === threads && x.workload === workload);
        if (!a || a.problem) {
          row[`excluded_${peer}`] = a ? a.problem : 'recorded no outputs';
          continue;
        }
        row[`denseMaxDiff_${peer}`] = a.dense;
        if (a.sparse !== null) row[`sparseMaxDiff_${peer}`] = a.sparse;
        if (a.colbert !== null) row[`colbertMaxDiff_${peer}`] = a.colbert;
        row[`denseVs_${peer}`] = dense.tokensPerSecMedian / p.tokensPerSecMedian;
        const pa = find(peer, threads, workload, 'all');
        if (pa && all) row[`allVs_${peer}`] = all.tokensPerSecMedian / pa.tokensPerSecMedian;
      }
      out.push(row);
    }
  }
  return out;
}

async function scenarioEncode(o: Options): Promise<string> {
  const results: EngineResult[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-bench-'));
  const py = python();
  for (const threads of o.threads) {
    for (const engine of ENGINES) {
      const out = path.join(tmp, `${engine}-${threads}.json`);
      const args = ['--engine', engine, '--model', o.model, '--threads', String(threads), '--mode', o.mode, '--runs', String(o.runs), '--out', out, '--outputs', '1'];
      if (engine === 'bge-m3') args.push('--batch-sizes', o.quick ? '8,32' : '8,32,128');
      const r = runNode('encode_peers.js', args, { RAYON_NUM_THREADS: String(threads) });
      results.push(r.ok ? JSON.parse(fs.readFileSync(out, 'utf8')) : { engine, threads, skipped: r.error });
    }
    if (!py) {
      results.push({ engine: 'torch', threads, skipped: 'no python3 with torch, numpy and onnx (Debian: apt-get install python3-torch python3-numpy python3-onnx)' });
      continue;
    }
    const job = await tokenizedJob(o.model, o.mode, threads, o.runs);
    const r = spawnSync(py, [path.join(ROOT, 'bench', 'torch_peer.py')], {
      input: JSON.stringify(job), encoding: 'utf8', maxBuffer: 64 << 20,
      // Debian's OpenBLAS misreads this CPU family as Haswell and runs at half speed otherwise.
      env: { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX', OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) },
    });
    process.stdout.write(r.stderr ?? '');
    results.push(r.status === 0 ? JSON.parse(r.stdout) : { engine: 'torch', threads, skipped: (r.stderr || '').trim().split('\n').slice(-3).join('\n') });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  const agreement = agreements(results);
  for (const a of agreement) {
    const fmt = (x: number | null) => (x === null ? '-' : x.toExponential(1));
    console.log(`agreement ${a.peer.padEnd(14)} t${a.threads} ${a.workload.padEnd(11)} dense ${fmt(a.dense)} lexical ${fmt(a.sparse)} colbert ${fmt(a.colbert)}` +
      (a.problem ? `  DISAGREES: ${a.problem} (left out of the ratios)` : ''));
  }
  const ratios = encodeRatios(results, agreement);
  for (const r of ratios) console.log(JSON.stringify(r));
  return writeResult('encode-peers', {
    benchmark: 'encode-peers', mode: o.mode, environment: environment(o.threads), model: o.model, results, agreement, ratios,
    tokenizerThreads: 'RAYON_NUM_THREADS = the thread count, for every engine that uses the tokenizers package (transformers.js tokenizes in JS on one thread; the PyTorch peer gets token ids)',
    targets: { allOverDenseTime: '<= 1.1', denseVs_ortJs_uniform: '>= 1.0', denseVs_ortJs_mixed: '>= 2.0', denseVs_transformers: '>= 1.2', denseVs_torch: '>= 2.0' },
  });
}

function flopsPerToken(cfg: { num_hidden_layers: number; hidden_size: number; intermediate_size: number }, length: number): number {
  const { num_hidden_layers: l, hidden_size: h, intermediate_size: i } = cfg;
  // Per token and layer: Q, K, V, O (4 h^2) and the feed-forward (2 h i) multiply-adds, plus
  // attention scores and their weighted sum (2 L h); 2 FLOPs per multiply-add.
  return 2 * l * (4 * h * h + 2 * h * i + 2 * length * h);
}

async function scenarioFullShape(o: Options): Promise<string | undefined> {
  if (!fs.existsSync(path.join(o.fullModel, 'config.json'))) {
    console.log(`full-shape: no model in ${o.fullModel}; generate it with scripts/gen-bench-model.sh full`);
    return undefined;
  }
  const cfg = JSON.parse(fs.readFileSync(path.join(o.fullModel, 'config.json'), 'utf8'));
  const peak = native().testing.fmaPeak('avx512', 0.5);
  const perToken = flopsPerToken(cfg, 512);
  const ceiling = (peak * 1e9) / perToken;
  const rows: Record<string, unknown>[] = [];
  for (const threads of o.threads) {
    const tmp = path.join(os.tmpdir(), `bge-m3-full-${process.pid}-${threads}.json`);
    const r = runNode('encode_peers.js', ['--engine', 'bge-m3', '--model', o.fullModel, '--threads', String(threads), '--mode', 'full',
      '--runs', String(o.runs), '--workloads', 'uniform-512', '--texts', o.quick ? '2' : '8', '--out', tmp]);
    if (!r.ok) {
      rows.push({ threads, skipped: r.error });
      continue;
    }
    const res = JSON.parse(fs.readFileSync(tmp, 'utf8'));
    fs.rmSync(tmp);
    for (const row of res.rows as Array<Record<string, number | string>>) {
      const perCore = Number(row.tokensPerSecMedian) / threads;
      rows.push({ threads, outputs: row.outputs, tokensPerSecMedian: row.tokensPerSecMedian, tokensPerSecBest: row.tokensPerSecBest,
        tokensPerSecPerCore: perCore, fractionOfCeiling: perCore / ceiling, loadMs: res.loadMs, peakRssMiB: res.peakRssMiB });
      console.log(`full-shape t${threads} ${row.outputs}: ${perCore.toFixed(1)} tokens/s per core, ${(100 * perCore / ceiling).toFixed(1)}% of the ${ceiling.toFixed(0)} tokens/s fp32 ceiling`);
    }
  }
  return writeResult('full-shape', {
    benchmark: 'full-shape', environment: environment(o.threads), model: { dir: o.fullModel, ...cfg },
    ceiling: { gflopsPerCore: peak, gflopPerToken: perToken / 1e9, tokensPerSecPerCore: ceiling, length: 512 }, rows,
    target: 'at least 60% of the fp32 ceiling per core',
  });
}

interface Options {
  quick: boolean;
  mode: 'quick' | 'full';
  model: string;
  fullModel: string;
  threads: number[];
  runs: number;
}

async function main(): Promise<void> {
  const names: string[] = [];
  const rest: string[] = [];
  let quick = false;
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') quick = true;
    else if (argv[i].startsWith('--')) rest.push(argv[i], argv[++i]);
    else names.push(argv[i]);
  }
  const flags = parseFlags(rest, { model: '.cache/bench-model', 'full-model': '.cache/bench-model-full', threads: '1,2', runs: '5' });
  for (const n of names) if (!SCENARIOS.includes(n)) throw new Error(`unknown scenario ${n}; known: ${SCENARIOS.join(', ')}`);
  const o: Options = {
    quick, mode: quick ? 'quick' : 'full', model: path.resolve(flags.model), fullModel: path.resolve(flags['full-model']),
    threads: flags.threads.split(',').map(Number), runs: Math.max(5, Number(flags.runs)),
  };
  if (!fs.existsSync(path.join(o.model, 'config.json'))) {
    throw new Error(`No model in ${o.model}: generate it with scripts/gen-bench-model.sh, or pass --model DIR (the demo model works for --quick)`);
  }
  const selected = names.length > 0 ? names : SCENARIOS;
  const files: Record<string, string | undefined> = {};
  const failures: Record<string, string> = {};
  const env = { BGE_M3_BENCH_RESULTS: resultsDir() };
  for (const s of selected) {
    console.log(`\n== ${s} ==`);
    let r: ChildResult | undefined;
    if (s === 'encode') files[s] = await scenarioEncode(o);
    else if (s === 'full-shape') files[s] = await scenarioFullShape(o);
    else if (s === 'maxsim') r = runNode('maxsim.js', quick ? ['--docs', '6', '--runs', '5'] : [], env);
    else if (s === 'lexical') r = runNode('lexical.js', quick ? ['--docs', '2000', '--runs', '5'] : [], env);
    else if (s === 'index') r = runNode('index.js', quick ? ['--sizes', '2000', '--clustered-sizes', '2000', '--queries', '20', '--colbert-docs', '200'] : [], env);
    else if (s === 'finetune') {
      r = runNode('finetune.js', ['--model', o.model,
        ...(quick ? ['--train', '120', '--held-out', '30', '--epochs', '1', '--runs', '1', '--full-steps', '1', '--seeds', '7,8'] : [])], env);
    } else if (s === 'serve') {
      r = runNode('serve.js', ['--model', o.model, ...(quick ? ['--seconds', '1', '--concurrency', '1,4', '--overload', '0'] : [])], env);
    }
    if (r) {
      if (r.ok) files[s] = r.file;
      else failures[s] = r.error ?? 'failed';
    }
  }
  const summary = writeResult('run', { benchmark: 'run', quick, scenarios: selected, files, failures, environment: environment(o.threads) });
  console.log(`\nwrote ${summary}`);
  if (Object.keys(failures).length > 0) {
    console.error(`failed: ${Object.entries(failures).map(([k, v]) => `${k}: ${v}`).join('\n')}`);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
