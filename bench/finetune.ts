/**
 * Fine-tuning the heads, measured: on the synthetic task of bench/finetune_task.ts (held-out
 * rows never trained on), retrieval MRR@10 per mode before fine-tuning, after fine-tuning with
 * self-knowledge distillation and after fine-tuning without it (the paper's ablation in
 * miniature); and the cost: the one-time encoding of the texts into the hidden-state cache
 * against the training steps (examples/s at 1 and 2 threads, median and best of `--runs`).
 * Not a test: it writes JSON to bench/results/ and prints tables.
 *
 *   npm run bench:finetune -- [--model .cache/bench-model] [--train 2000] [--held-out 300]
 *                             [--epochs 3] [--lr 3e-4] [--runs 5] [--full-steps 5]
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
    lr: '3e-4', runs: '5', topics: '30', fillers: '30', seed: '7', 'full-steps': '5',
  });
  const generated = path.resolve(flags.model);
  if (!fs.existsSync(generated)) throw new Error(`no model at ${generated}; run scripts/gen-bench-model.sh first`);
  const probe = await BGEM3.load(generated);
  const info = probe.info();
  await probe.dispose();
  const task = syntheticTask(singlePieceWords(info.tokenizer), {
    trainRows: Number(flags.train), heldOutRows: Number(flags['held-out']), topics: Number(flags.topics), fillers: Number(flags.fillers),
    seed: Number(flags.seed),
  });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-finetune-'));
  const modelDir = path.join(work, 'start-model');
  await withLiveSparseHead(generated, modelDir, task.train.slice(0, 200).flatMap((r) => [r.query, ...r.pos, ...(r.neg ?? [])]));
  const trainFile = path.join(work, 'train.jsonl');
  const heldOutFile = path.join(work, 'held-out.jsonl');
  toJsonl(trainFile, task.train);
  toJsonl(heldOutFile, task.heldOut);
  const workDir = path.join(work, 'cache');
  const common = { model: modelDir, data: trainFile, epochs: Number(flags.epochs), lr: Number(flags.lr), workDir, keepWorkDir: true };
  try {
    process.stderr.write(`model ${generated} (hidden ${info.hidden}), ${task.train.length} training rows, ${task.heldOut.length} held-out rows\n`);
    const before = await evalModel(modelDir, task.heldOut);
    const runs: Record<string, { result: FinetuneResult; eval: EvaluateResult }> = {};
    for (const [name, selfDistill] of [['self-distill', true], ['no-self-distill', false]] as const) {
      const out = path.join(work, name);
      const result = await finetuneHeads({ ...common, out, selfDistill });
      runs[name] = { result, eval: await evalModel(out, task.heldOut) };
      process.stderr.write(`${name}: ${result.steps} steps, last epoch loss ${result.lastEpoch.loss.toFixed(4)}\n`);
    }

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
    const modes = ['dense', 'sparse', 'colbert', 'all'] as const;
    const table = [
      ['heads', ...modes.map((m) => `${m} MRR@10`)],
      ['original (random)', ...modes.map((m) => before.modes[m].mrr10.toFixed(3))],
      ['fine-tuned, self-distillation', ...modes.map((m) => runs['self-distill'].eval.modes[m].mrr10.toFixed(3))],
      ['fine-tuned, no self-distillation', ...modes.map((m) => runs['no-self-distill'].eval.modes[m].mrr10.toFixed(3))],
    ];
    const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
    process.stdout.write(`${table.map((r) => r.map((c, i) => c.padEnd(widths[i])).join(' | ')).join('\n')}\n\n`);
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
      mrr10: {
        before: Object.fromEntries(modes.map((m) => [m, before.modes[m].mrr10])),
        selfDistill: Object.fromEntries(modes.map((m) => [m, runs['self-distill'].eval.modes[m].mrr10])),
        noSelfDistill: Object.fromEntries(modes.map((m) => [m, runs['no-self-distill'].eval.modes[m].mrr10])),
      },
      evaluations: { before, selfDistill: runs['self-distill'].eval, noSelfDistill: runs['no-self-distill'].eval },
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
