/**
 * Fine-tuning the heads: the native trainer's gradients and Adam against PyTorch
 * (scripts/gen_head_grad_golden.py -> test/fixtures/head-grad-golden.json) and against finite
 * differences on the tiny model's real hidden states; finetuneHeads end to end on the synthetic
 * task (held-out MRR@10 improves, the output loads, the source is untouched); interruption and
 * resume give the same heads as an uninterrupted run; bad input; the CLI with Ctrl-C.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, evaluate, type EvalRow } from '../lib';
import { finetuneHeads, type FinetuneEvent } from '../lib/training/finetune';
import { native, type NativeHeadTrainer } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { singlePieceWords, syntheticTask, withLiveSparseHead } from '../bench/finetune_task';
import { FIXTURES, ROOT, rejectsWith } from './helpers';

const TINY = path.join(FIXTURES, 'tiny-m3-safetensors');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

interface GradCase {
  hidden: number; dim: number; options: Record<string, unknown>;
  ids: number[][]; rows: number[][]; queries: number[]; passages: number[]; target: number[];
  params: number[]; loss: number; terms: Record<string, number>; grad: number[];
  adam: { lr: number; eps: number; steps: number; params: number[] };
}

function trainerFor(dir: string, hidden: number, ids: number[][], rows: Float32Array, dim: number, params: Float32Array): NativeHeadTrainer {
  const file = path.join(dir, `hidden-${crypto.randomUUID()}.f32`);
  fs.writeFileSync(file, Buffer.from(rows.buffer, rows.byteOffset, rows.byteLength));
  const offsets = [0];
  for (const t of ids) offsets.push(offsets[offsets.length - 1] + t.length);
  return new (native().HeadTrainerNative)(file, hidden, Int32Array.from(ids.flat()), Uint32Array.from(offsets), dim, params, 2);
}

function lossOptions(o: Record<string, unknown>): Record<string, number | boolean> {
  const out: Record<string, number | boolean> = {};
  if (typeof o.temperature === 'number') out.temperature = o.temperature;
  if (typeof o.selfDistill === 'boolean') out.selfDistill = o.selfDistill;
  if (Array.isArray(o.weights)) [out.wDense, out.wLex, out.wColbert] = o.weights as number[];
  return out;
}

function hashDir(dir: string): string {
  const h = crypto.createHash('sha256');
  for (const f of (fs.readdirSync(dir, { recursive: true }) as string[]).sort()) {
    const p = path.join(dir, f);
    h.update(f);
    if (fs.statSync(p).isFile()) h.update(fs.readFileSync(p));
  }
  return h.digest('hex');
}

function writeJsonl(file: string, rows: unknown[]): string {
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

async function mrr(dir: string, rows: EvalRow[]): Promise<Record<string, number>> {
  const model = await BGEM3.load(dir);
  try {
    const r = await evaluate(model, rows);
    return Object.fromEntries(Object.entries(r.modes).map(([k, v]) => [k, v.mrr10]));
  } finally {
    await model.dispose();
  }
}

let tmp: string;
let start: string;  // the tiny model with a live sparse head
let task: ReturnType<typeof syntheticTask>;
let trainFile: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-finetune-test-'));
  const probe = await BGEM3.load(TINY);
  const tokenizer = probe.info().tokenizer;
  await probe.dispose();
  task = syntheticTask(singlePieceWords(tokenizer), { trainRows: 400, heldOutRows: 60, topics: 30, fillers: 30, seed: 3 });
  start = path.join(tmp, 'start');
  await withLiveSparseHead(TINY, start, task.train.slice(0, 100).flatMap((r) => [r.query, ...r.pos, ...(r.neg ?? [])]));
  trainFile = writeJsonl(path.join(tmp, 'train.jsonl'), task.train);
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('HeadTrainerNative', () => {
  const golden: { cases: GradCase[] } = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'head-grad-golden.json'), 'utf8'));

  it('computes the loss and every parameter gradient as PyTorch autograd does', async () => {
    for (const [i, c] of golden.cases.entries()) {
      const t = trainerFor(tmp, c.hidden, c.ids, Float32Array.from(c.rows.flat()), c.dim, Float32Array.from(c.params));
      const r = await t.step(Int32Array.from(c.queries), Int32Array.from(c.passages), Int32Array.from(c.target),
        { ...lossOptions(c.options), update: false });
      assert.ok(Math.abs(r.loss - c.loss) <= 1e-5 * Math.max(1, c.loss), `case ${i} loss ${r.loss} vs ${c.loss}`);
      for (const k of ['dense', 'lex', 'colbert', 'inter'] as const) {
        assert.ok(Math.abs(r[k] - c.terms[k]) <= 1e-5 * Math.max(1, Math.abs(c.terms[k])), `case ${i} ${k}`);
      }
      const scale = Math.max(...c.grad.map(Math.abs));
      assert.ok(scale > 0.1, 'the reference gradient is not trivial');
      c.grad.forEach((g, j) => assert.ok(Math.abs(r.grad![j] - g) <= 2e-6 * Math.max(1, scale), `case ${i} grad[${j}]: ${r.grad![j]} vs ${g}`));
    }
  });

  it('takes Adam steps as torch.optim.Adam does', async () => {
    for (const [i, c] of golden.cases.entries()) {
      const t = trainerFor(tmp, c.hidden, c.ids, Float32Array.from(c.rows.flat()), c.dim, Float32Array.from(c.params));
      for (let s = 0; s < c.adam.steps; s++) {
        await t.step(Int32Array.from(c.queries), Int32Array.from(c.passages), Int32Array.from(c.target),
          { ...lossOptions(c.options), lr: c.adam.lr, eps: c.adam.eps });
      }
      const st = t.state();
      assert.equal(st.t, c.adam.steps);
      let moved = 0;
      c.adam.params.forEach((p, j) => {
        assert.ok(Math.abs(st.params[j] - p) <= 1e-5, `case ${i} param[${j}]: ${st.params[j]} vs ${p}`);
        if (Math.abs(p - c.params[j]) > 1e-3) moved++;
      });
      assert.ok(moved > c.params.length / 2, 'Adam moved most parameters');
    }
  });

  it('matches finite differences on the tiny model\'s hidden states', async () => {
    const model = await BGEM3.load(start);
    const texts = [...task.train.slice(0, 3).map((r) => r.query), ...task.train.slice(0, 3).flatMap((r) => [r.pos[0], r.neg![0], r.neg![1]])];
    const tokens = await model.tokenize(texts);
    const { rows, hidden } = await model.hiddenStates(tokens);
    const info = model.info();
    await model.dispose();
    const ids: number[][] = [];
    for (let i = 0; i < texts.length; i++) ids.push(Array.from(tokens.ids.subarray(tokens.offsets[i], tokens.offsets[i + 1])));
    const read = (f: string) => native().readTensorFile(f);
    const sp = read(info.sparseHead), cb = read(info.colbertHead);
    const params = new Float32Array([...sp.weight.data, ...sp.bias.data, ...cb.weight.data, ...cb.bias.data]);
    const t = trainerFor(tmp, hidden, ids, rows, info.dim, params);
    const group = [Int32Array.of(0, 1, 2), Int32Array.from({ length: 9 }, (_, k) => 3 + k), Int32Array.of(0, 3, 6)] as const;
    const lossAt = async (p: Float32Array) => {
      t.setState(p, new Float32Array(p.length), new Float32Array(p.length), 0);
      return (await t.step(...group, options)).loss;
    };
    // Without self-distillation the gradient is the loss's derivative; with it, the teacher's
    // distribution is held constant (detached), which the PyTorch golden values cover.
    const options = { update: false, temperature: 0.05, selfDistill: false };
    const base = await t.step(...group, options);
    const g = base.grad!;
    // Directional derivatives: along the gradient, and along random directions in each head.
    const sparseEnd = hidden + 1;
    const next = mulberry32(11);
    const random = () => next() - 0.5;
    const directions: [string, Float32Array][] = [
      ['gradient', Float32Array.from(g)],
      ['sparse head', Float32Array.from(g, (_, j) => (j < sparseEnd ? random() : 0))],
      ['colbert head', Float32Array.from(g, (_, j) => (j >= sparseEnd ? random() : 0))],
    ];
    for (const [name, d] of directions) {
      const norm = Math.sqrt(d.reduce((s, x) => s + x * x, 0));
      d.forEach((x, j) => { d[j] = x / norm; });
      const analytic = d.reduce((s, x, j) => s + x * g[j], 0);
      const eps = 1e-3;
      const plus = await lossAt(Float32Array.from(params, (p, j) => p + eps * d[j]));
      const minus = await lossAt(Float32Array.from(params, (p, j) => p - eps * d[j]));
      const numeric = (plus - minus) / (2 * eps);
      assert.ok(Math.abs(analytic) > 1e-3, `${name}: a non-trivial slope (${analytic})`);
      assert.ok(Math.abs(numeric - analytic) <= 0.01 * Math.abs(analytic) + 1e-4, `${name}: finite difference ${numeric} vs analytic ${analytic}`);
    }
  });

  it('rejects use after close, and a step while another runs', async () => {
    const t = trainerFor(tmp, 4, [[0, 5, 2], [0, 6, 2]], Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), 4, new Float32Array(25).fill(0.1));
    const running = t.step(Int32Array.of(0), Int32Array.of(1), Int32Array.of(0), {});
    const second = t.step(Int32Array.of(0), Int32Array.of(1), Int32Array.of(0), {});
    const outcomes = await Promise.allSettled([running, second]);
    assert.ok(outcomes.some((o) => o.status === 'fulfilled'));
    for (const o of outcomes) if (o.status === 'rejected') assert.match(String(o.reason), /a training step is running/);
    t.close();
    assert.throws(() => t.state(), /closed/);
    assert.throws(() => t.step(Int32Array.of(0), Int32Array.of(1), Int32Array.of(0), {}), /closed/);
  });

  it('refuses a cache that does not match its index, and out-of-range texts', async () => {
    const file = path.join(tmp, 'short.f32');
    fs.writeFileSync(file, Buffer.alloc(40));
    assert.throws(() => new (native().HeadTrainerNative)(file, 4, Int32Array.of(0, 5, 2), Uint32Array.of(0, 3), 4, new Float32Array(4 + 1 + 16 + 4), 1),
      /holds 40 bytes, not the 48/);
    const t = trainerFor(tmp, 4, [[0, 5, 2]], new Float32Array(12), 4, new Float32Array(25));
    await assert.rejects(t.step(Int32Array.of(0), Int32Array.of(1), Int32Array.of(0), {}), /passage text index 1 is out of range/);
  });
});

describe('finetuneHeads', () => {
  it('improves held-out sparse and ColBERT MRR@10 on the synthetic task, and writes a loadable model', async () => {
    const sourceHash = hashDir(start);
    const out = path.join(tmp, 'tuned');
    const events: FinetuneEvent[] = [];
    const result = await finetuneHeads({ model: start, data: trainFile, out, epochs: 3, lr: 3e-3, threads: 2, onProgress: (e) => events.push(e) });
    assert.equal(result.steps, 3 * Math.ceil(400 / 8));
    assert.ok(result.examplesPerSecond > 0 && result.encodedTexts > 0);
    assert.ok(events.some((e) => e.phase === 'encode') && events.some((e) => e.phase === 'checkpoint') && events.at(-1)!.phase === 'done');
    const trainEvents = events.filter((e): e is Extract<FinetuneEvent, { phase: 'train' }> => e.phase === 'train');
    const mean = (list: typeof trainEvents) => list.reduce((s, e) => s + e.losses.loss, 0) / list.length;
    assert.ok(mean(trainEvents.slice(-50)) < 0.95 * mean(trainEvents.slice(0, 20)), 'the loss fell');

    const beforeMrr = await mrr(start, task.heldOut);
    const afterMrr = await mrr(out, task.heldOut);
    assert.ok(afterMrr.sparse > beforeMrr.sparse + 0.2, `sparse MRR@10 ${beforeMrr.sparse} -> ${afterMrr.sparse}`);
    assert.ok(afterMrr.colbert > beforeMrr.colbert + 0.07, `colbert MRR@10 ${beforeMrr.colbert} -> ${afterMrr.colbert}`);
    assert.ok(Math.abs(afterMrr.dense - beforeMrr.dense) < 1e-9, 'the dense path (frozen encoder) is unchanged');

    // The output: fp32 safetensors heads beside the encoder's files; the source untouched.
    assert.equal(hashDir(start), sourceHash);
    const colbert = native().readTensorFile(path.join(out, 'colbert_linear.safetensors'));
    assert.deepEqual(colbert.weight.shape, [32, 32]);
    const header = fs.readFileSync(path.join(out, 'sparse_linear.safetensors'));
    assert.match(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString(), /"dtype":"F32","shape":\[1,32\]/);
    assert.ok(fs.existsSync(path.join(out, 'onnx', 'model.onnx')) && fs.existsSync(path.join(out, 'tokenizer.json')));
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'finetune.json'), 'utf8')).steps, result.steps);
    assert.ok(!fs.existsSync(`${out}.partial`), 'the work directory is removed');
  });

  it('resumes an interrupted run to exactly the heads of an uninterrupted one', async () => {
    const rows = task.train.slice(0, 96);
    const common = { model: start, data: rows, epochs: 2, batchSize: 8, lr: 1e-3, checkpointEvery: 5, threads: 2 };
    const whole = path.join(tmp, 'whole');
    await finetuneHeads({ ...common, out: whole });

    const parts = path.join(tmp, 'parts');
    const controller = new AbortController();
    await rejectsWith(finetuneHeads({ ...common, out: parts, signal: controller.signal,
      onProgress: (e) => { if (e.phase === 'train' && e.step === 17) controller.abort(); } }), 'ERR_ABORTED', /interrupted at step 17 of 24/);
    assert.ok(fs.existsSync(path.join(`${parts}.partial`, 'checkpoint', 'state.json')));
    assert.ok(!fs.existsSync(parts));
    await rejectsWith(finetuneHeads({ ...common, out: parts }), 'ERR_INPUT', /holds a checkpoint.*--resume/);
    await rejectsWith(finetuneHeads({ ...common, lr: 2e-3, out: parts, resume: true }), 'ERR_INPUT', /different lr/);
    const events: FinetuneEvent[] = [];
    const r = await finetuneHeads({ ...common, out: parts, resume: true, onProgress: (e) => events.push(e) });
    assert.equal(r.steps, 24);
    assert.equal(r.encodedTexts, 0, 'the cache is reused');
    assert.equal(events.filter((e) => e.phase === 'train').length, 7);
    for (const head of ['colbert_linear.safetensors', 'sparse_linear.safetensors']) {
      assert.ok(fs.readFileSync(path.join(parts, head)).equals(fs.readFileSync(path.join(whole, head))), `${head} equals the uninterrupted run's`);
    }
  });

  it('stops without a checkpoint when interrupted while encoding', async () => {
    const out = path.join(tmp, 'interrupted-early');
    await rejectsWith(finetuneHeads({ model: TINY, data: task.train.slice(0, 20), out, signal: AbortSignal.abort() }),
      'ERR_ABORTED', /while encoding the texts, before any training/);
    assert.ok(!fs.existsSync(out) && !fs.existsSync(path.join(`${out}.partial`, 'checkpoint')));
  });

  it('refuses bad input with errors that name the problem', async () => {
    const file = (name: string, text: string) => {
      const f = path.join(tmp, name);
      fs.writeFileSync(f, text);
      return f;
    };
    const out = path.join(tmp, 'bad-out');
    const ok = JSON.stringify({ query: 'a b', pos: ['a'], neg: ['b'] });
    await rejectsWith(finetuneHeads({ model: TINY, data: file('bad1.jsonl', `${ok}\n${ok}\n{"query": oops}\n`), out }), 'ERR_INPUT', /bad1\.jsonl:3: not valid JSON/);
    await rejectsWith(finetuneHeads({ model: TINY, data: file('bad2.jsonl', `${ok}\n{"query": "q", "neg": ["x"]}\n`), out }), 'ERR_INPUT', /bad2\.jsonl:2: expected/);
    await rejectsWith(finetuneHeads({ model: TINY, data: file('bad3.jsonl', `\n${ok}\n{"query": "q", "pos": [], "neg": ["x"]}\n`), out }), 'ERR_INPUT', /bad3\.jsonl:3: "pos" is empty/);
    await rejectsWith(finetuneHeads({ model: TINY, data: path.join(tmp, 'missing.jsonl'), out }), 'ERR_INPUT', /Data file '.*missing.jsonl' does not exist/);
    await rejectsWith(finetuneHeads({ model: TINY, data: [{ query: 'q', pos: ['p'] }], out, batchSize: 1 }), 'ERR_INPUT', /no negatives/);
    await rejectsWith(finetuneHeads({ model: path.join(FIXTURES, 'tiny-m3-baked'), data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out }),
      'ERR_MODEL_LAYOUT', /heads baked into the graph/);
    const headless = path.join(tmp, 'headless');
    fs.cpSync(TINY, headless, { recursive: true });
    fs.rmSync(path.join(headless, 'sparse_linear.safetensors'));
    await rejectsWith(finetuneHeads({ model: headless, data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out }), 'ERR_MODEL_FILES', /sparse_linear/);
    fs.mkdirSync(out, { recursive: true });
    await rejectsWith(finetuneHeads({ model: TINY, data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out }), 'ERR_INPUT', /already exists.*--force/);
    await rejectsWith(finetuneHeads({ model: TINY, data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out: path.join(TINY, 'x') }), 'ERR_INPUT', /inside the source model/);
    await rejectsWith(finetuneHeads({ model: TINY, data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out: path.join(tmp, 'r'), resume: true }), 'ERR_INPUT', /nothing to resume/);
    await rejectsWith(finetuneHeads({ model: TINY, data: [{ query: 'q', pos: ['p'], neg: ['n'] }], out, force: true, lr: -1 }), 'ERR_INPUT', /lr/);
  });

  it('never lets the output or work directory be or contain the source, symlinks included', async () => {
    const parent = path.join(tmp, 'models');
    const source = path.join(parent, 'bge-m3');
    fs.mkdirSync(parent, { recursive: true });
    fs.cpSync(TINY, source, { recursive: true });
    fs.symlinkSync(source, path.join(tmp, 'alias'));
    const data = [{ query: 'q', pos: ['p'], neg: ['n'] }];
    const before = hashDir(source);
    await rejectsWith(finetuneHeads({ model: source, data, out: parent, force: true }), 'ERR_INPUT', /contains the source model/);
    await rejectsWith(finetuneHeads({ model: source, data, out: path.join(tmp, 'alias'), force: true }), 'ERR_INPUT', /is or lies inside the source/);
    await rejectsWith(finetuneHeads({ model: path.join(tmp, 'alias'), data, out: path.join(source, 'onnx'), force: true }), 'ERR_INPUT', /inside the source/);
    await rejectsWith(finetuneHeads({ model: source, data, out: path.join(tmp, 'elsewhere'), workDir: tmp, force: true }), 'ERR_INPUT', /work directory .* contains the source/);
    assert.equal(hashDir(source), before);
  });

  it('follows symlinked model files (a Hugging Face cache snapshot) into real files', async () => {
    const blobs = path.join(tmp, 'hub', 'blobs');
    const snapshot = path.join(tmp, 'hub', 'snapshots', 'abc');
    fs.mkdirSync(path.join(snapshot, 'onnx'), { recursive: true });
    fs.mkdirSync(blobs, { recursive: true });
    for (const f of ['config.json', 'tokenizer.json', 'colbert_linear.safetensors', 'sparse_linear.safetensors', 'onnx/model.onnx', 'onnx/model.onnx_data']) {
      const blob = path.join(blobs, f.replace('/', '_'));
      fs.copyFileSync(path.join(TINY, f), blob);
      fs.symlinkSync(path.relative(path.dirname(path.join(snapshot, f)), blob), path.join(snapshot, f));
    }
    const out = path.join(tmp, 'from-snapshot');
    await finetuneHeads({ model: snapshot, data: task.train.slice(0, 16), out, epochs: 1 });
    assert.ok(!fs.lstatSync(path.join(out, 'onnx', 'model.onnx')).isSymbolicLink());
    const model = await BGEM3.load(out);
    assert.equal((await model.encode(['a b c'])).dense!.length, 32);
    await model.dispose();
  });

  it('starts over with force past a damaged checkpoint, and resumes from checkpoint.old after a cut-off save', async () => {
    const rows = task.train.slice(0, 40);
    const out = path.join(tmp, 'damaged');
    const controller = new AbortController();
    const common = { model: start, data: rows, batchSize: 8, epochs: 2, threads: 1 };
    await rejectsWith(finetuneHeads({ ...common, out, signal: controller.signal,
      onProgress: (e) => { if (e.phase === 'train' && e.step === 3) controller.abort(); } }), 'ERR_ABORTED');
    const work = `${out}.partial`;
    // A save cut off between its renames leaves only checkpoint.old: resume uses it.
    fs.renameSync(path.join(work, 'checkpoint'), path.join(work, 'checkpoint.old'));
    const resumed = await finetuneHeads({ ...common, out, resume: true, keepWorkDir: true });
    assert.equal(resumed.steps, 10);
    fs.rmSync(out, { recursive: true });
    // A damaged checkpoint: resume names it; force starts over.
    fs.mkdirSync(path.join(work, 'checkpoint'), { recursive: true });
    fs.writeFileSync(path.join(work, 'checkpoint', 'state.json'), '');
    await rejectsWith(finetuneHeads({ ...common, out, resume: true }), 'ERR_INPUT', /cannot be used \(state\.json/);
    const fresh = await finetuneHeads({ ...common, out, force: true });
    assert.equal(fresh.steps, 10);
  });

  it('trains on rows without negatives (in-batch negatives), truncates long texts and replaces an output with force', async () => {
    const long = Array.from({ length: 300 }, (_, i) => task.fillerWords[i % task.fillerWords.length]).join(' ');
    const rows = [...task.train.slice(0, 15).map((r) => ({ query: r.query, pos: r.pos })), { query: long, pos: [long], neg: [] }];
    const out = path.join(tmp, 'in-batch');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'stale'), 'x');
    const r = await finetuneHeads({ model: TINY, data: rows, out, batchSize: 4, force: true, encoderFiles: 'copy' });
    assert.equal(r.steps, 4);
    assert.ok(Number.isFinite(r.lastEpoch.loss) && r.lastEpoch.loss > 0);
    assert.ok(!fs.existsSync(path.join(out, 'stale')));
    assert.equal(fs.statSync(path.join(out, 'onnx', 'model.onnx_data')).nlink, 1, 'copied, not linked');
    const model = await BGEM3.load(out);
    assert.equal((await model.encode([long])).tokenCount, 64);
    await model.dispose();
  });
});

describe('bge-m3 finetune-heads', () => {
  it('prints JSON lines, saves a checkpoint on SIGINT (exit 130) and resumes with --resume', async () => {
    const data = writeJsonl(path.join(tmp, 'cli.jsonl'), task.train.slice(0, 400));
    const out = path.join(tmp, 'cli-out');
    const args = [CLI, 'finetune-heads', '-m', start, '-d', data, '-o', out, '--epochs', '40', '--batch-size', '4', '--train-threads', '1', '--json'];
    const first = await new Promise<{ code: number | null; lines: string[]; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let buffer = '';
      let stderr = '';
      let sent = false;
      child.stdout.on('data', (d) => {
        buffer += d;
        if (!sent && buffer.includes('"phase":"train"')) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('close', (code) => resolve({ code, lines: buffer.trim().split('\n'), stderr }));
    });
    assert.equal(first.code, 130, first.stderr);
    assert.match(first.stderr, /interrupted at step \d+ of 4000.*--resume/s);
    const events = first.lines.map((l) => JSON.parse(l));
    assert.ok(events.some((e) => e.phase === 'encode'));
    assert.equal(events.at(-1).phase, 'checkpoint');
    assert.ok(!fs.existsSync(out));

    const resumed = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [...args.slice(0, 8), '--epochs', '1', ...args.slice(10), '--resume'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => { stdout += d; });
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.equal(resumed.code, 0, resumed.stderr);
    const last = JSON.parse(resumed.stdout.trim().split('\n').at(-1)!);
    assert.equal(last.phase, 'result');
    assert.equal(last.steps, 100);
    assert.ok(fs.existsSync(path.join(out, 'colbert_linear.safetensors')));
  });
});
