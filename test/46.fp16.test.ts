/**
 * precision: 'fp16': the graph converted at load to fp16 weights and activations, with LayerNorm
 * statistics and squared norms kept in fp32. Its outputs against PyTorch's fp32 reference
 * (golden.json) within a stated bound, a model whose residual stream squares past fp16's range,
 * the converted graph's shape (what ONNX Runtime fuses), and the option's errors. The same file
 * runs on the GPU with BGE_M3_TEST_DEVICE=cuda (scripts/device-node-check.sh); here on the CPU,
 * where ONNX Runtime runs the ops without fp16 kernels through casts.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, type EncodeOutput } from '../lib';
import { native } from '../lib/addon/native';
import { FIXTURES, MODEL_DIRS, ROOT, golden, rejectsWith } from './helpers';

interface ProtoField { number: number; wire: number; start: number; end: number; value: number }
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { fields, opCounts } = require(path.join(ROOT, 'scripts', 'ort-fusions.js')) as {
  fields(buf: Buffer, start: number, end: number): ProtoField[];
  opCounts(file: string): Record<string, number>;
};

interface GraphNode { op: string; inputs: string[]; outputs: string[]; to?: number }
/** A serialized model's nodes, initializers' element types and sizes, and float outputs' names. */
function readGraph(buf: Buffer) {
  const text = (f: ProtoField) => buf.toString('utf8', f.start, f.end);
  const graph = fields(buf, 0, buf.length).find((f) => f.number === 7)!;
  const nodes: GraphNode[] = [];
  const initializers = new Map<string, { type: number; elements: number }>();
  const outputs: string[] = [];
  for (const f of fields(buf, graph.start, graph.end)) {
    if (f.number === 1) {
      const n: GraphNode = { op: '', inputs: [], outputs: [] };
      for (const g of fields(buf, f.start, f.end)) {
        if (g.number === 1) n.inputs.push(text(g));
        if (g.number === 2) n.outputs.push(text(g));
        if (g.number === 4) n.op = text(g);
        if (g.number === 5) {
          const a = fields(buf, g.start, g.end);
          if (text(a.find((x) => x.number === 1)!) === 'to') n.to = a.find((x) => x.number === 3)!.value;
        }
      }
      nodes.push(n);
    } else if (f.number === 5) {
      let name = '', type = 0, elements = 1;
      for (const g of fields(buf, f.start, f.end)) {
        if (g.number === 8) name = text(g);
        if (g.number === 2) type = g.value;
        if (g.number === 1 && g.wire === 0) elements *= g.value;
        if (g.number === 1 && g.wire === 2) for (let i = g.start; i < g.end; i++) if (buf[i] < 0x80) elements *= buf[i];  // packed one-byte dims
      }
      initializers.set(name, { type, elements });
    } else if (f.number === 12) {
      outputs.push(text(fields(buf, f.start, f.end).find((x) => x.number === 1)!));
    }
  }
  const producer = new Map(nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const readers = (v: string) => nodes.filter((n) => n.inputs.includes(v));
  return { nodes, initializers, outputs, producer, readers };
}

const DEVICE = (process.env.BGE_M3_TEST_DEVICE ?? 'cpu') as 'cpu' | 'cuda';
/**
 * The stated bound: every dense and ColBERT component (unit vectors) and every lexical weight of
 * an fp16 model lies within 2e-3 of the fp32 reference's. fp16 keeps 11 significant bits (a
 * relative step of 4.9e-4), so a few roundings through the layers stay well inside it.
 */
const FP16_BOUND = 2e-3;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, what: string): number {
  assert.equal(a.length, b.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    assert.ok(Number.isFinite(d), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
    worst = Math.max(worst, d);
  }
  return worst;
}

/** The largest difference between two lexical rows, a weight one of them lacks counting as 0. */
function sparseDiff(ids: ArrayLike<number>, weights: ArrayLike<number>, want: Record<string, number>): number {
  const got = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) got.set(ids[i], weights[i]);
  let worst = 0;
  for (const id of new Set([...got.keys(), ...Object.keys(want).map(Number)]))
    worst = Math.max(worst, Math.abs((got.get(id) ?? 0) - (want[String(id)] ?? 0)));
  return worst;
}

/** Every output of `out` against `ref` (rows in the same order): the largest difference of each kind. */
function compare(out: EncodeOutput, ref: EncodeOutput): { dense: number; sparse: number; colbert: number } {
  const sparse = Array.from({ length: out.count }, (_, i) => {
    const r = ref.row(i).sparse!;
    const want: Record<string, number> = {};
    r.ids.forEach((id, k) => { want[String(id)] = r.weights[k]; });
    return sparseDiff(out.row(i).sparse!.ids, out.row(i).sparse!.weights, want);
  });
  assert.deepEqual(Array.from(out.colbert!.offsets), Array.from(ref.colbert!.offsets), 'ColBERT rows');
  return {
    dense: maxDiff(out.dense!, ref.dense!, 'dense'),
    sparse: Math.max(...sparse),
    colbert: maxDiff(out.colbert!.data, ref.colbert!.data, 'colbert'),
  };
}

/** A copy of a model folder with one float initializer of its (inline) graph scaled in place. */
function scaledCopy(dir: string, initializer: string, factor: number): string {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fp16-'));
  fs.cpSync(dir, copy, { recursive: true });
  const file = path.join(copy, 'model.onnx');
  const buf = fs.readFileSync(file);
  // ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto.name (8), raw_data (9).
  let scaled = 0;
  const graph = fields(buf, 0, buf.length).find((f) => f.number === 7)!;
  for (const t of fields(buf, graph.start, graph.end).filter((f) => f.number === 5)) {
    const parts = fields(buf, t.start, t.end);
    const name = parts.find((f) => f.number === 8);
    const raw = parts.find((f) => f.number === 9);
    if (!name || !raw || buf.toString('utf8', name.start, name.end) !== initializer) continue;
    for (let p = raw.start; p < raw.end; p += 4) buf.writeFloatLE(buf.readFloatLE(p) * factor, p);
    scaled++;
  }
  assert.equal(scaled, 1, `${initializer} found once with raw data`);
  fs.writeFileSync(file, buf);
  return copy;
}

const layers = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).num_hidden_layers as number;

describe(`precision 'fp16' (device ${DEVICE})`, () => {
  // Snapshot layouts (hidden states into the native heads), heads baked into the graph (ReduceL2
  // normalisations), external weights (Transpose / Gemm dense layers) and SDPA-style attention.
  const layouts = ['snapshot (.pt heads)', 'heads-baked', 'snapshot (Transpose / Gemm dense layers)', 'snapshot (SDPA-style attention)'];
  for (const layout of layouts) {
    it(`${layout}: within ${FP16_BOUND} of PyTorch's fp32 outputs on every golden case`, async () => {
      const dir = MODEL_DIRS[layout];
      const model = await BGEM3.load(dir, { device: DEVICE, precision: 'fp16' });
      try {
        const info = model.info();
        assert.equal(info.precision, 'fp16', info.precisionNote);
        // Each layer's two LayerNorms and the embeddings' keep fp32 statistics.
        assert.equal(info.fp16!.layerNorms, 2 * layers(dir) + 1);
        assert.equal(info.fp16!.fp32Nodes >= 7 * info.fp16!.layerNorms, true);
        assert.ok(info.fp16!.tensors > 10);
        for (const c of golden.cases) {
          const out = await model.encode([c.text], { dense: true, sparse: true, colbert: true, maxLength: c.maxLength ?? undefined });
          const row = out.row(0);
          const dense = maxDiff(row.dense!, c.dense, `${c.name} dense`);
          const colbert = maxDiff(row.colbert!, c.colbert.flat(), `${c.name} colbert`);
          const sparse = sparseDiff(row.sparse!.ids, row.sparse!.weights, c.sparse);
          assert.ok(dense <= FP16_BOUND && colbert <= FP16_BOUND && sparse <= FP16_BOUND,
            `${c.name}: dense ${dense.toExponential(2)}, colbert ${colbert.toExponential(2)}, sparse ${sparse.toExponential(2)}`);
          // ...and not the fp32 model's 1e-6: the weights really are rounded to fp16.
          if (c.ids.length > 4) assert.ok(dense > 1e-6, `${c.name}: dense differs by only ${dense}`);
        }
      } finally {
        await model.dispose();
      }
    });
  }

  for (const graphOptimization of ['all', 'disabled'] as const) {
    // With ONNX Runtime's optimizations off, no LayerNorm is fused: the fp32 statistics are the conversion's alone.
    it(`a residual stream whose squares pass 65504 keeps its LayerNorm statistics (fp32 there; optimizations ${graphOptimization})`, async () => {
      // Word embeddings (about N(0, 1)) scaled by 300: the embedding LayerNorm's input is in the
      // hundreds, its mean square near 90,000, which fp16 would hold only as infinity; the largest
      // weight (about 1,200) still fits, so nothing but the mask constant is clamped.
      const dir = scaledCopy(MODEL_DIRS['heads-baked'], 'encoder.word.weight', 300);
      try {
        const texts = golden.cases.filter((c) => c.maxLength === null).map((c) => c.text);
        const reference = await BGEM3.load(dir);
        const fp32 = await reference.encode(texts, { colbert: true });
        await reference.dispose();
        const model = await BGEM3.load(dir, { device: DEVICE, precision: 'fp16', graphOptimization });
        assert.equal(model.info().fp16!.clamped, 1);
        const out = await model.encode(texts, { colbert: true });
        await model.dispose();
        const diff = compare(out, fp32);
        assert.ok(diff.dense <= 4 * FP16_BOUND && diff.colbert <= 4 * FP16_BOUND && diff.sparse <= 4 * FP16_BOUND, JSON.stringify(diff));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('the conversion: fp16 weights, fp32 LayerNorm statistics and squared norms between casts, outputs cast back', { skip: DEVICE !== 'cpu' && 'CPU only' }, () => {
    for (const layout of ['heads-baked', 'snapshot (.pt heads)']) {
      const dir = MODEL_DIRS[layout];
      const file = fs.existsSync(path.join(dir, 'onnx', 'model.onnx')) ? path.join(dir, 'onnx', 'model.onnx') : path.join(dir, 'model.onnx');
      const r = native().testing.fp16Graph(file);
      assert.equal(r.problem, '');
      const g = readGraph(r.model);
      const castTo = (v: string, to: number) => { const p = g.producer.get(v); return p?.op === 'Cast' && p.to === to; };
      // Weights (more than one element) are all fp16; the only fp32 initializers are scalars read by fp32 nodes.
      for (const [name, t] of g.initializers) {
        if (t.type === 1) assert.ok(t.elements === 1 && g.readers(name).every((n) => ['Pow', 'Add'].includes(n.op)), `${layout}: ${name} left fp32`);
        else if (t.elements > 1) assert.ok(t.type === 10 || t.type === 7, `${layout}: ${name} has type ${t.type}`);
      }
      const pows = g.nodes.filter((n) => n.op === 'Pow');
      assert.equal(pows.length, r.layerNorms);
      for (const pow of pows) {
        // X -> Cast(fp32) -> ReduceMean, Sub -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Cast(fp16) -> Mul:
        // the input is cast once for both its readers, the pattern ONNX Runtime fuses.
        const sub = g.producer.get(pow.inputs[0])!;
        assert.equal(sub.op, 'Sub');
        assert.ok(castTo(sub.inputs[0], 1), 'the LayerNorm reads its input cast to fp32');
        assert.deepEqual(g.readers(sub.inputs[0]).map((n) => n.op).sort(), ['ReduceMean', 'Sub']);
        const div = g.readers(sub.outputs[0]).find((n) => n.op === 'Div')!;
        assert.equal(g.producer.get(div.inputs[1])?.op, 'Sqrt');
        const after = g.readers(div.outputs[0]);
        assert.deepEqual(after.map((n) => [n.op, n.to]), [['Cast', 10]]);
        assert.equal(g.readers(after[0].outputs[0])[0].op, 'Mul');
      }
      for (const norm of g.nodes.filter((n) => n.op === 'ReduceL2')) assert.ok(castTo(norm.inputs[0], 1), 'ReduceL2 reads fp32');
      for (const out of g.outputs) assert.ok(castTo(out, 1), `${layout}: output ${out} is cast back to fp32`);
      const exported = g.nodes.filter((n) => n.op === 'Cast' && n.to === 1 && !n.outputs[0].endsWith('/to_fp32') && !g.outputs.includes(n.outputs[0]));
      assert.deepEqual(exported, [], 'no Cast to fp32 left from the export');
    }
  });

  it('the converted graph keeps every node, adds the casts, and ONNX Runtime fuses each LayerNorm', async () => {
    const dir = MODEL_DIRS['heads-baked'];
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-fp16-graph-'));
    try {
      const before = opCounts(path.join(dir, 'model.onnx'));
      const asLoaded = path.join(tmp, 'loaded.onnx');
      const m1 = await BGEM3.load(dir, { device: DEVICE, precision: 'fp16', graphOptimization: 'disabled', optimizedGraphPath: asLoaded });
      const facts = m1.info().fp16!;
      await m1.dispose();
      const converted = opCounts(asLoaded);
      // Every node is there with the casts added. (ONNX Runtime turns Constant nodes into
      // initializers as it loads, and on the CPU expands an fp16 Softmax it has no kernel for.)
      for (const [op, count] of Object.entries(before)) {
        if (op === 'Constant' || op === 'Softmax') continue;
        if (op === 'Pow' || op === 'ReduceMean' || op === 'Sqrt') assert.equal(converted[op], count, op);
        else assert.ok(converted[op] >= (op === 'Cast' ? count + facts.casts : count), `${op}: ${converted[op]} of ${count}`);
      }
      const optimized = path.join(tmp, 'optimized.onnx');
      const m2 = await BGEM3.load(dir, { device: DEVICE, precision: 'fp16', optimizedGraphPath: optimized });
      await m2.dispose();
      const fused = opCounts(optimized);
      assert.equal(fused.LayerNormalization, facts.layerNorms, JSON.stringify(fused));
      assert.equal(fused.Pow ?? 0, 0, 'no LayerNorm left decomposed');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('the bench model: within the bound of its own fp32 outputs', { skip: !fs.existsSync(path.join(ROOT, '.cache', 'bench-model')) && 'no .cache/bench-model (scripts/gen-bench-model.sh)' }, async () => {
    const dir = path.join(ROOT, '.cache', 'bench-model');
    const texts = golden.cases.filter((c) => c.maxLength === null).map((c) => c.text);
    const reference = await BGEM3.load(dir);
    const fp32 = await reference.encode(texts, { colbert: true });
    await reference.dispose();
    const model = await BGEM3.load(dir, { device: DEVICE, precision: 'fp16' });
    assert.equal(model.info().fp16!.layerNorms, 2 * layers(dir) + 1);
    const diff = compare(await model.encode(texts, { colbert: true }), fp32);
    await model.dispose();
    assert.ok(diff.dense <= FP16_BOUND && diff.colbert <= FP16_BOUND && diff.sparse <= FP16_BOUND, JSON.stringify(diff));
  });

  it('says what runs: fp32 by default, the CPU note, and a clear error for an unknown precision', { skip: DEVICE !== 'cpu' && 'CPU only' }, async () => {
    const plain = await BGEM3.load(MODEL_DIRS['heads-baked']);
    assert.equal(plain.info().precision, 'fp32');
    assert.equal(plain.info().fp16, undefined);
    await plain.dispose();
    const half = await BGEM3.load(MODEL_DIRS['heads-baked'], { precision: 'fp16' });
    assert.match(half.info().precisionNote, /GPU's path.*bf16 is the CPU's fast path/);
    await half.dispose();
    await rejectsWith(BGEM3.load(FIXTURES, { precision: 'fp8' as 'fp16' }), 'ERR_INPUT', /'fp16' for precision/);
    await rejectsWith(BGEM3.load(MODEL_DIRS['heads-baked'], { optimizedGraphPath: '' }), 'ERR_INPUT', /optimizedGraphPath/);
  });
});
