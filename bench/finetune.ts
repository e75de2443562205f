/**
 * Fine-tuning the heads, measured: on the synthetic task of bench/finetune_task.ts (held-out
 * rows never trained on), retrieval MRR@10 per mode before fine-tuning, after fine-tuning with
 * self-knowledge distillation and after fine-tuning without it (the paper's ablation in
 * miniature), over several seeds (each a new task and a new sampling order): the mean and standard
 * deviation of each, and the paired difference of the two fine-tunings with its 95% interval; and the cost: the one-time encoding of the texts into the hidden-state cache
 * against the training steps (examples/s at 1 and 2 threads, median and best of `--runs`).
 * Not a test: it writes JSON to bench/results/ and prints tables.
 *
 *   npm run bench:finetune -- [--model .cache/bench-model] [--train 2000] [--held-out 300]
 *                             [--epochs 3] [--lr 3e-4] [--runs 5] [--full-steps 5] [--seeds 7,8,9,10,11]
 *
 * The starting model is the generated one with its sparse head made live (bench/finetune_task.ts,
 * withLiveSparseHead): every token weighted positively, on the published model's scale.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, evaluate, type EvaluateResult } from '../lib';
import { finetuneHeads, type FinetuneResult } from '../lib/training/finetune';
import { native } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { machineInfo, median, parseFlags, writeResult } from './common';
import { singlePieceWords, syntheticTask, withLiveSparseHead } from './finetune_task';

async function evalModel(dir: string, rows: Parameters<typeof evaluate>[1]): Promise<EvaluateResult> {
  const model = await BGEM3.load(dir);
  try {
    return await evaluate(model, rows);
  } finally {
    await model.dispose();
  }
}

/**
 * The training step alone at BGE-M3's own shape (hidden 1024, ColBERT 1024 -> 1024): random
 * hidden states of 16-token queries and 96-token passages (about MS MARCO's lengths), 8 queries
 * x (1 positive + 7 negatives) per step. Examples/s per thread count, `runs` rounds of `steps`.
 */
async function fullShapeStep(work: string, runs: number, steps: number): Promise<Record<string, number[]>> {
  const hidden = 1024, queryLen = 16, passageLen = 96, queries = 8, passages = 64;
  const lengths = [...Array(queries).fill(queryLen), ...Array(passages).fill(passageLen)] as number[];
  const offsets = Uint32Array.from([0, ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  const tokens = offsets[offsets.length - 1];
  const next = mulberry32(5);
  const random = () => next() - 0.5;
  const file = path.join(work, 'full-shape.f32');
  fs.writeFileSync(file, Buffer.from(Float32Array.from({ length: tokens * hidden }, random).buffer));
  const ids = Int32Array.from({ length: tokens }, (_, t) => 4 + Math.floor((random() + 0.5) * 5000));
  for (let i = 0; i < lengths.length; i++) {
    ids[offsets[i]] = 0;
    ids[offsets[i + 1] - 1] = 2;
  }
  const params = Float32Array.from({ length: hidden + 1 + hidden * hidden + hidden }, () => random() * 0.06);
  const q = Int32Array.from({ length: queries }, (_, i) => i);
  const p = Int32Array.from({ length: passages }, (_, i) => queries + i);
  const target = Int32Array.from({ length: queries }, (_, i) => i * 8);
  const out: Record<string, number[]> = { '1': [], '2': [] };
  for (let r = 0; r < runs; r++) {
    for (const threads of [1, 2]) {
      const trainer = new (native().HeadTrainerNative)(file, hidden, ids, offsets, hidden, params, threads);
      await trainer.step(q, p, target, {});
      const t0 = performance.now();
      for (let s = 0; s < steps; s++) await trainer.step(q, p, target, {});
      out[String(threads)].push((steps * queries) / ((performance.now() - t0) / 1000));
    }
  }
  return out;
}

function toJsonl(file: string, rows: unknown[]): void {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    model: path.resolve(__dirname, '..', '..', '.cache', 'bench-model'), train: '2000', 'held-out': '300', epochs: '3',
    lr: '3e-4', runs: '5', topics: '30', fillers: '30', seeds: '7,8,9,10,11', 'full-steps': '5',
  });
  const seeds = flags.seeds.split(',').map(Number);
  if (seeds.length < 2 || seeds.some((x) => !Number.isInteger(x))) throw new Error('--seeds takes at least two integers, e.g. 7,8,9,10,11');
  const generated = path.resolve(flags.model);
  if (!fs.existsSync(generated)) throw new Error(`no model at ${generated}; run scripts/gen-bench-model.sh first`);
  const probe = await BGEM3.load(generated);
  const info = probe.info();
  await probe.dispose();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-finetune-'));
  const modes = ['dense', 'sparse', 'colbert', 'all'] as const;
  type Mrr = Record<(typeof modes)[number], number>;
  const mrr = (e: EvaluateResult): Mrr => Object.fromEntries(modes.map((m) => [m, e.modes[m].mrr10])) as Mrr;
  const perSeed: Array<{ seed: number; before: Mrr; selfDistill: Mrr; noSelfDistill: Mrr }> = [];
  let first: { common: Omit<Parameters<typeof finetuneHeads>[0], 'out'>; task: ReturnType<typeof syntheticTask>; before: EvaluateResult;
    runs: Record<string, { result: FinetuneResult; eval: EvaluateResult }> } | undefined;
  try {
    for (const seed of seeds) {
      const task = syntheticTask(singlePieceWords(info.tokenizer), {
        trainRows: Number(flags.train), heldOutRows: Number(flags['held-out']), topics: Number(flags.topics), fillers: Number(flags.fillers), seed,
      });
      const dir = path.join(work, `seed-${seed}`);
      const modelDir = path.join(dir, 'start-model');
      await withLiveSparseHead(generated, modelDir, task.train.slice(0, 200).flatMap((r) => [r.query, ...r.pos, ...(r.neg ?? [])]));
      const trainFile = path.join(dir, 'train.jsonl');
      toJsonl(trainFile, task.train);
      const common = { model: modelDir, data: trainFile, epochs: Number(flags.epochs), lr: Number(flags.lr), workDir: path.join(dir, 'cache'), keepWorkDir: true, seed };
      process.stderr.write(`seed ${seed}: model ${generated} (hidden ${info.hidden}), ${task.train.length} training rows, ${task.heldOut.length} held-out rows\n`);
      const before = await evalModel(modelDir, task.heldOut);
      const runs: Record<string, { result: FinetuneResult; eval: EvaluateResult }> = {};
      for (const [name, selfDistill] of [['self-distill', true], ['no-self-distill', false]] as const) {
        const out = path.join(dir, name);
        const result = await finetuneHeads({ ...common, out, selfDistill });
        runs[name] = { result, eval: await evalModel(out, task.heldOut) };
        process.stderr.write(`  ${name}: ${result.steps} steps, last epoch loss ${result.lastEpoch.loss.toFixed(4)}, ` +
          `MRR@10 ${modes.map((m) => `${m} ${runs[name].eval.modes[m].mrr10.toFixed(3)}`).join(' ')}\n`);
      }
      perSeed.push({ seed, before: mrr(before), selfDistill: mrr(runs['self-distill'].eval), noSelfDistill: mrr(runs['no-self-distill'].eval) });
      first ??= { common, task, before, runs };
    }
    const { common, task, before, runs } = first!;
    // Cost: encoding (done once, above) against training steps at 1 and 2 threads.
    const encode = runs['self-distill'].result;
    const speed: Record<string, number[]> = { '1': [], '2': [] };
    for (let r = 0; r < Number(flags.runs); r++) {
      for (const threads of ['1', '2']) {
        const out = path.join(work, `speed-${threads}`);
        const result = await finetuneHeads({ ...common, epochs: 1, out, threads: Number(threads), force: true });
        speed[threads].push(result.examplesPerSecond);
      }
    }
    const fullShape = await fullShapeStep(work, Number(flags.runs), Number(flags['full-steps']));
    // Mean and spread over the seeds; the paired difference of the two fine-tunings per seed,
    // with a 95% interval for its mean (Student's t).
    const stats = (values: number[]) => {
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      const sd = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1));
      return { mean, sd, n: values.length };
    };
    const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262][Math.min(seeds.length - 2, 8)];
    const summaryOf = (key: 'before' | 'selfDistill' | 'noSelfDistill') => Object.fromEntries(modes.map((m) => [m, stats(perSeed.map((r) => r[key][m]))]));
    const ablation = {
      before: summaryOf('before'), selfDistill: summaryOf('selfDistill'), noSelfDistill: summaryOf('noSelfDistill'),
      difference: Object.fromEntries(modes.map((m) => {
        const d = stats(perSeed.map((r) => r.selfDistill[m] - r.noSelfDistill[m]));
        const half = (T975 * d.sd) / Math.sqrt(d.n);
        return [m, { ...d, ci95: [d.mean - half, d.mean + half], beyondNoise: d.mean - half > 0 || d.mean + half < 0 }];
      })),
    };
    const pm = (x: { mean: number; sd: number }) => `${x.mean.toFixed(3)} ± ${x.sd.toFixed(3)}`;
    const table = [
      ['heads', ...modes.map((m) => `${m} MRR@10`)],
      ['original (random)', ...modes.map((m) => pm(ablation.before[m]))],
      ['fine-tuned, self-distillation', ...modes.map((m) => pm(ablation.selfDistill[m]))],
      ['fine-tuned, no self-distillation', ...modes.map((m) => pm(ablation.noSelfDistill[m]))],
      ['difference (95% interval)', ...modes.map((m) => {
        const d = ablation.difference[m];
        return `${d.mean >= 0 ? '+' : ''}${d.mean.toFixed(3)} [${d.ci95[0].toFixed(3)}, ${d.ci95[1].toFixed(3)}]${d.beyondNoise ? '' : ' (within noise)'}`;
      })],
    ];
    const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
    process.stdout.write(`MRR@10, mean ± standard deviation over ${seeds.length} seeds (${seeds.join(', ')}):\n` +
      `${table.map((r) => r.map((c, i) => c.padEnd(widths[i])).join(' | ')).join('\n')}\n\n`);
    const encodePerExample = encode.encodeSeconds / task.train.length;
    const summary = Object.fromEntries(Object.entries(speed).map(([t, v]) => [t, { median: median(v), best: Math.max(...v), runs: v }]));
    for (const [t, s] of Object.entries(summary)) {
      process.stdout.write(`training step, ${t} thread(s): ${s.median.toFixed(0)} examples/s median, ${s.best.toFixed(0)} best ` +
        `(${(1000 / s.median).toFixed(3)} ms per example)\n`);
    }
    const fullSummary = Object.fromEntries(Object.entries(fullShape).map(([t, v]) => [t, { median: median(v), best: Math.max(...v), runs: v }]));
    for (const [t, s] of Object.entries(fullSummary)) {
      process.stdout.write(`training step at BGE-M3's shape (hidden 1024; 16-token queries, 96-token passages), ${t} thread(s): ` +
        `${s.median.toFixed(1)} examples/s median, ${s.best.toFixed(1)} best\n`);
    }
    process.stdout.write(`one-time encoding into the cache: ${encode.encodedTexts} texts in ${encode.encodeSeconds.toFixed(1)} s ` +
      `(${(encodePerExample * 1000).toFixed(2)} ms per training row, ${(encodePerExample * summary['2'].median).toFixed(1)}x a training step's cost per row at 2 threads)\n`);
    const file = writeResult('finetune', {
      machine: machineInfo(), model: generated, hidden: info.hidden, flags,
      task: { train: task.train.length, heldOut: task.heldOut.length, topics: task.topicWords.length, fillers: task.fillerWords.length },
      seeds, ablation, perSeed,
      mrr10: {
        before: Object.fromEntries(modes.map((m) => [m, ablation.before[m].mean])),
        selfDistill: Object.fromEntries(modes.map((m) => [m, ablation.selfDistill[m].mean])),
        noSelfDistill: Object.fromEntries(modes.map((m) => [m, ablation.noSelfDistill[m].mean])),
      },
      evaluationsFirstSeed: { before, selfDistill: runs['self-distill'].eval, noSelfDistill: runs['no-self-distill'].eval },
      training: { selfDistill: runs['self-distill'].result, noSelfDistill: runs['no-self-distill'].result },
      cost: { encodeSeconds: encode.encodeSeconds, encodedTexts: encode.encodedTexts, encodeMsPerRow: encodePerExample * 1000, examplesPerSecond: summary, fullShapeExamplesPerSecond: fullSummary,
        encodeOverStep2Threads: encodePerExample * summary['2'].median },
    });
    process.stdout.write(`\nwrote ${file}\n`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
