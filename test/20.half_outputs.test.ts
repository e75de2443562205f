/**
 * Models whose graph outputs are 16-bit floats (fp16 / bf16 exports): the encoder widens them
 * and applies the heads as for fp32 outputs. The fixtures are the fp32 fixtures with a Cast at
 * each output (scripts/m3_fixture_export.py, write_half_outputs), so the expected values derive
 * from the fp32 models: hidden states rounded to fp16 here, with BGE-M3's heads computed here
 * from the head files (docs/semantics.md); baked outputs rounded to bf16 here.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3 } from '../lib';
import { FIXTURES } from './helpers';

const TEXTS = [
  'What is BGE M3?',
  'BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.',
  'retrieval retrieval retrieval',
  'x',
];
const SPECIAL_IDS = new Set([0, 1, 2, 3]);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** x rounded to the nearest bfloat16 (ties to even), as a float. */
function roundBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  u32[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16;
  return f32[0];
}

/** x (a float32 value of moderate size) rounded to the nearest binary16 (ties to even), as a float. */
function roundF16(x: number): number {
  if (x === 0) return x;
  f32[0] = x;
  const exponent = Math.max(((u32[0] >>> 23) & 0xff) - 127, -14);  // binary16's smallest normal exponent
  const quantum = 2 ** (exponent - 10);
  const q = x / quantum;  // exact: at most 24 significant bits
  let r = Math.round(q);
  if (Math.abs(q - Math.trunc(q)) === 0.5) r = 2 * Math.round(q / 2);
  return r * quantum;
}

/** binary16 bits as a number. */
function halfToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return exponent === 0 ? sign * mantissa * 2 ** -24 : sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/** The tensors of a .safetensors file (F32, F16 or BF16) as floats. */
function readSafetensors(file: string): Record<string, { shape: number[]; data: Float32Array }> {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(header as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>)) {
    if (name === '__metadata__') continue;
    const [a, b] = t.data_offsets;
    const slice = bytes.subarray(8 + headerLength + a, 8 + headerLength + b);
    let data: Float32Array;
    if (t.dtype === 'F32') {
      data = new Float32Array(slice.buffer.slice(slice.byteOffset, slice.byteOffset + slice.byteLength));
    } else {
      assert.ok(t.dtype === 'F16' || t.dtype === 'BF16', `${name}: dtype ${t.dtype}`);
      data = new Float32Array(slice.length / 2);
      for (let i = 0; i < data.length; i++) {
        const bits = slice.readUInt16LE(2 * i);
        if (t.dtype === 'F16') data[i] = halfToNumber(bits);
        else { u32[0] = bits << 16; data[i] = f32[0]; }
      }
    }
    out[name] = { shape: t.shape, data };
  }
  return out;
}

function normalised(v: Float64Array | number[]): number[] {
  const norm = Math.max(Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0)), 1e-12);
  return Array.from(v, (x) => x / norm);
}

function assertNear(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

describe('fp16 last_hidden_state (BAAI layout)', () => {
  const fp32Dir = path.join(FIXTURES, 'tiny-m3-safetensors');
  const fp16Dir = path.join(FIXTURES, 'tiny-m3-fp16-hidden');
  let fp32: BGEM3;
  let fp16: BGEM3;
  before(async () => {
    fp32 = await BGEM3.load(fp32Dir);
    fp16 = await BGEM3.load(fp16Dir);
  });
  after(async () => {
    await fp32.dispose();
    await fp16.dispose();
  });

  it('widens the hidden states exactly: the fp32 model\'s, rounded to fp16', async () => {
    const tokens = await fp32.tokenize(TEXTS);
    const wide = await fp32.hiddenStates(tokens);
    const half = await fp16.hiddenStates(tokens);
    assert.equal(half.hidden, wide.hidden);
    assert.equal(half.rows.length, wide.rows.length);
    let rounded = 0;
    for (let i = 0; i < wide.rows.length; i++) {
      const expected = roundF16(wide.rows[i]);
      assert.equal(half.rows[i], expected, `element ${i}: ${half.rows[i]} vs fp16(${wide.rows[i]}) = ${expected}`);
      if (expected !== wide.rows[i]) rounded++;
    }
    assert.ok(rounded > wide.rows.length / 2, 'the fp16 model really rounds');
  });

  it('applies the heads to the widened states', async () => {
    const colbertHead = readSafetensors(path.join(fp16Dir, 'colbert_linear.safetensors'));
    const sparseHead = readSafetensors(path.join(fp16Dir, 'sparse_linear.safetensors'));
    const W = colbertHead.weight.data;
    const bias = colbertHead.bias.data;
    const [dim, hidden] = colbertHead.weight.shape;
    const tokens = await fp16.tokenize(TEXTS);
    const { rows } = await fp16.hiddenStates(tokens);
    const out = await fp16.encode(TEXTS, { dense: true, sparse: true, colbert: true });
    for (let i = 0; i < TEXTS.length; i++) {
      const begin = tokens.offsets[i];
      const n = tokens.offsets[i + 1] - begin;
      const h = (t: number) => rows.subarray((begin + t) * hidden, (begin + t + 1) * hidden);
      const row = out.row(i);
      assertNear(row.dense!, normalised(Array.from(h(0))), 1e-6, `text ${i} dense`);
      const lexical = new Map<number, number>();
      for (let t = 0; t < n; t++) {
        const id = tokens.ids[begin + t];
        let w = sparseHead.bias.data[0];
        for (let k = 0; k < hidden; k++) w += h(t)[k] * sparseHead.weight.data[k];
        if (SPECIAL_IDS.has(id) || w <= 0) continue;
        lexical.set(id, Math.max(lexical.get(id) ?? 0, w));
      }
      const ids = [...lexical.keys()].sort((a, b) => a - b);
      assert.deepEqual(Array.from(row.sparse!.ids), ids, `text ${i} sparse ids`);
      assertNear(row.sparse!.weights, ids.map((id) => lexical.get(id)!), 1e-5, `text ${i} sparse weights`);
      const colbert: number[] = [];
      for (let t = 1; t < n; t++) {
        const c = new Float64Array(dim);
        for (let d = 0; d < dim; d++) {
          let s = bias[d];
          for (let k = 0; k < hidden; k++) s += W[d * hidden + k] * h(t)[k];
          c[d] = s;
        }
        colbert.push(...normalised(c));
      }
      assertNear(row.colbert!, colbert, 1e-5, `text ${i} colbert`);
    }
  });
});

describe('bf16 outputs (heads baked into the graph)', () => {
  let fp32: BGEM3;
  let bf16: BGEM3;
  before(async () => {
    fp32 = await BGEM3.load(path.join(FIXTURES, 'tiny-m3-baked'));
    bf16 = await BGEM3.load(path.join(FIXTURES, 'tiny-m3-baked-bf16'));
  });
  after(async () => {
    await fp32.dispose();
    await bf16.dispose();
  });

  it('reads them as the fp32 outputs rounded to bf16', async () => {
    const options = { dense: true, sparse: true, colbert: true };
    const wide = await fp32.encode(TEXTS, options);
    const half = await bf16.encode(TEXTS, options);
    assert.equal(bf16.info().layout, 'heads-baked');
    for (let i = 0; i < TEXTS.length; i++) {
      const w = wide.row(i);
      const h = half.row(i);
      assert.deepEqual(Array.from(h.dense!), Array.from(w.dense!, roundBf16), `text ${i} dense`);
      // Rounding keeps order and sign, so the per-id maxima and the ids kept are the same.
      assert.deepEqual(Array.from(h.sparse!.ids), Array.from(w.sparse!.ids), `text ${i} sparse ids`);
      assert.deepEqual(Array.from(h.sparse!.weights), Array.from(w.sparse!.weights, roundBf16), `text ${i} sparse weights`);
      assert.deepEqual(Array.from(h.colbert!), Array.from(w.colbert!, roundBf16), `text ${i} colbert`);
    }
  });
});
