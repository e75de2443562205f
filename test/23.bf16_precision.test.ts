/**
 * precision: 'bf16': the dense-layer kernel against a float64 product of the bf16-rounded inputs,
 * and whole models against PyTorch's reference with its Linears computed the same way
 * (scripts/gen_bf16_golden.py -> fixtures/bf16-golden.json), which fp32 outputs miss by far more.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3, capabilities, setIsa, type EncodeOutput, type LoadOptions } from '../lib';
import { native } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { DEMO_MODEL, FIXTURES, ROOT, attentionReference } from './helpers';

const BF16 = capabilities().features.avx512bf16 === true && capabilities().detected === 'avx512';
const skipNoBf16 = BF16 ? false : 'this CPU has no AVX-512 BF16';

interface Reference { dense: number[]; sparse: Record<string, number>; colbert: number[][] }
interface Bf16Case { name: string; ids: number[]; snapshot: Reference; graphAttention: Reference; baked: Reference }
const reference: { cases: Bf16Case[] } = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'bf16-golden.json'), 'utf8'));

/** The reference cases' token ids as one batch for encodeTokens. */
function referenceTokens(): { ids: Int32Array; offsets: Uint32Array } {
  const ids = reference.cases.map((c) => c.ids);
  const offsets = new Uint32Array(ids.length + 1);
  ids.forEach((t, i) => { offsets[i + 1] = offsets[i] + t.length; });
  return { ids: Int32Array.from(ids.flat()), offsets };
}

/** Each float's bf16 value: round to nearest even on the upper 16 bits (finite inputs). */
function bf16(x: Float32Array): Float32Array {
  const f = Float32Array.from(x);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < u.length; i++) u[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f;
}

function random(n: number, seed: number, scale = 1): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (next() * 2 - 1) * scale);
}

describe('the bf16 dense-layer kernel', () => {
  // Shapes around the kernel's blocking: 6-row tiles, 64-column panels, 512-input passes, odd inputs.
  // 800 rows: 9 row blocks, so each unit takes 4 panels (fewer take one each).
  const shapes: Array<[number, number, number]> = [[1, 1, 1], [7, 33, 70], [13, 64, 64], [100, 513, 129], [97, 1030, 65], [6, 2, 200], [800, 40, 300]];

  for (const vector of [false, true]) {
    it(`${vector ? 'AVX-512 BF16' : 'serial'}: x · W + b of the bf16-rounded inputs, summed in fp32`, { skip: vector && skipNoBf16 }, () => {
      for (const [rows, inp, out] of shapes) {
        const x = random(rows * inp, rows + inp, 3), w = random(inp * out, inp * 7 + out, 0.5), b = random(out, out, 2);
        const xr = bf16(x), wr = bf16(w);
        const slack = 2 ** -22 * (1 + Math.log2(inp));
        for (const bias of [b, null]) {
          const got = native().testing.linearBf16Forward(w, bias, inp, out, x, rows, vector);
          assert.equal(got.length, rows * out);
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < out; c++) {
              let want = bias ? bias[c] : 0, size = Math.abs(want);
              for (let k = 0; k < inp; k++) {
                const p = xr[r * inp + k] * wr[k * out + c];
                want += p;
                size += Math.abs(p);
              }
              // fp32 accumulation of exact products: a few ulps of the sum of magnitudes.
              assert.ok(Math.abs(got[r * out + c] - want) <= slack * size,
                `${rows}x${inp}x${out} bias ${bias !== null}: y[${r}][${c}] ${got[r * out + c]} vs ${want}`);
            }
          }
        }
      }
    });
  }

  it('rounds inputs to bf16 (not fp32 math): a product fp32 keeps and bf16 cannot', () => {
    // 1 + 2^-10 is exact in fp32 and rounds to 1 in bf16 (8 significand bits).
    assert.equal(bf16(new Float32Array([1 + 2 ** -10]))[0], 1);
    const got = native().testing.linearBf16Forward(new Float32Array([1 + 2 ** -10]), null, 1, 1, new Float32Array([1 + 2 ** -10]), 1, false);
    assert.equal(got[0], 1);
    if (BF16) assert.equal(native().testing.linearBf16Forward(new Float32Array([1 + 2 ** -10]), null, 1, 1, new Float32Array([1 + 2 ** -10]), 1, true)[0], 1);
  });

  it('rejects sizes that do not match', () => {
    assert.throws(() => native().testing.linearBf16Forward(new Float32Array(6), null, 2, 3, new Float32Array(5), 2, false), /sizes do not match/);
    assert.throws(() => native().testing.linearBf16Forward(new Float32Array(6), new Float32Array(2), 2, 3, new Float32Array(4), 2, false), /sizes do not match/);
  });
});

describe('the bf16 attention kernel', () => {
  const FLOAT_MIN = -3.4028234663852886e38;
  const tiers = BF16 ? ['serial', 'avx512'] as const : ['serial'] as const;
  // [batch, heads, qLen, kvLen, headDim, vDim]: odd head and value widths (pairs padded), tile
  // tails, and rows longer than one key chunk (the online softmax).
  const shapes = [[2, 3, 37, 37, 13, 21], [1, 2, 70, 1100, 64, 64], [1, 1, 5, 600, 33, 80], [1, 4, 7, 7, 8, 8]];

  for (const tier of tiers) {
    it(`${tier}: within the weights' bf16 rounding (2^-9 of max |v|) of softmax(bf16 q · bf16 k) · bf16 v`, () => {
      for (const dims of shapes) {
        const [B, H, Sq, Skv, d, dv] = dims;
        const q = random(B * H * Sq * d, Sq + d), kt = random(B * H * d * Skv, Skv), v = random(B * H * Skv * dv, dv + 1);
        const padding = new Float32Array(B * Skv);
        for (let j = 0; j < Skv; j++) if (j % 7 === 3) padding[j] = FLOAT_MIN;
        const got = native().testing.attentionForward(q, kt, v, padding, dims, [Skv, 0, 0], 0.4, tier, true);
        const vr = bf16(v);
        const want = attentionReference(bf16(q), bf16(kt), vr, padding, dims, [Skv, 0, 0], 0.4);
        let vmax = 0;
        for (const x of vr) vmax = Math.max(vmax, Math.abs(x));
        const tol = 2 ** -9 * vmax + 2e-6 * (1 + Math.sqrt(Skv));
        for (let i = 0; i < want.length; i++) {
          assert.ok(Math.abs(got[i] - want[i]) <= tol, `${tier} ${JSON.stringify(dims)}: out[${i}] ${got[i]} vs ${want[i]}`);
        }
      }
    });
  }

  it('a row whose keys are all masked but one gives that value row rounded to bf16, exactly', () => {
    const dims = [1, 1, 3, 40, 8, 20];
    const q = random(3 * 8, 5), kt = random(8 * 40, 6), v = random(40 * 20, 7);
    const mask = new Float32Array(40).fill(FLOAT_MIN);
    mask[17] = 0;
    const want = bf16(v.slice(17 * 20, 18 * 20));
    assert.notDeepEqual(want, v.slice(17 * 20, 18 * 20));  // the rounding is visible
    for (const tier of tiers) {
      const got = native().testing.attentionForward(q, kt, v, mask, dims, [0, 0, 0], 1, tier, true);
      for (let i = 0; i < 3; i++) assert.deepEqual(got.slice(i * 20, i * 20 + 20), want, `${tier} row ${i}`);
    }
  });
});

function closeness(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length);
  let m = 0;
  for (let i = 0; i < got.length; i++) m = Math.max(m, Math.abs(got[i] - want[i]));
  return m;
}

function sparseDiff(out: EncodeOutput, i: number, want: Record<string, number>): number {
  const row = out.row(i).sparse!;
  const got = new Map<string, number>();
  row.ids.forEach((id, k) => got.set(String(id), row.weights[k]));
  let m = 0;
  for (const key of new Set([...got.keys(), ...Object.keys(want)])) m = Math.max(m, Math.abs((got.get(key) ?? 0) - (want[key] ?? 0)));
  return m;
}

describe("precision: 'bf16' on whole models", { skip: skipNoBf16 }, () => {
  // [label, model, load options, reference, bf16 layers, fused attention blocks]. Each encoder
  // layer has 6 Linears (q, k, v, o, two feed-forward); the snapshot layout's heads run natively in
  // fp32, a heads-baked graph's heads are Linears too.
  //
  // Two summation orders of the same bf16 values differ by about 1e-7, and now and then that moves
  // a value across a bf16 rounding boundary: it rounds a bf16 step (2^-8) the other way, which
  // moves that text's outputs by up to about 1e-3 (fp32 outputs are 1e-3 to 4e-3 away in every
  // case). So: at least 9 of the 11 cases within 1e-5 (most are within 1e-7), none over 2e-3, and
  // the fp32 outputs within 1e-5 in none.
  const models: Array<[string, string, LoadOptions, 'snapshot' | 'graphAttention' | 'baked', number, number]> = [
    ['snapshot (.pt heads)', DEMO_MODEL, {}, 'snapshot', 12, 2],
    ['snapshot, graph attention', DEMO_MODEL, { fusedAttention: false }, 'graphAttention', 12, 0],
    ['heads-baked', path.join(FIXTURES, 'tiny-m3-baked'), {}, 'baked', 14, 2],
    ['MatMul(x, Transpose(W)) and Gemm(transB) dense layers', path.join(FIXTURES, 'tiny-m3-linear-variants'), {}, 'snapshot', 12, 2],
  ];
  for (const [label, dir, options, kind, layers, blocks] of models) {
    it(`${label}: the bf16 reference to 1e-5 (a rounding flip aside), where fp32 is 1e-3 away`, async () => {
      const bf = await BGEM3.load(dir, { ...options, precision: 'bf16' });
      const fp = await BGEM3.load(dir, options);
      try {
        const info = bf.info();
        assert.equal(info.precision, 'bf16');
        assert.equal(info.bf16Layers, layers);
        assert.equal(info.fusedAttentionBlocks, blocks);
        assert.equal(info.precisionNote, '');
        assert.equal(fp.info().precision, 'fp32');
        assert.equal(fp.info().bf16Layers, 0);
        const got = await bf.encodeTokens(referenceTokens(), { colbert: true });
        const f32 = await fp.encodeTokens(referenceTokens(), { colbert: true });
        const worst = (out: EncodeOutput, i: number, want: Reference): number => Math.max(
          closeness(out.row(i).dense!, want.dense), closeness(out.row(i).colbert!, want.colbert.flat()), sparseDiff(out, i, want.sparse));
        const bfWorst = reference.cases.map((c, i) => worst(got, i, c[kind]));
        const fpWorst = reference.cases.map((c, i) => worst(f32, i, c[kind]));
        const report = bfWorst.map((d, i) => `${reference.cases[i].name} ${d.toExponential(1)}`).join(', ');
        assert.ok(bfWorst.filter((d) => d < 1e-5).length >= 9, `cases within 1e-5: ${report}`);
        assert.ok(Math.max(...bfWorst) < 2e-3, `a case over 2e-3: ${report}`);
        assert.equal(fpWorst.filter((d) => d < 1e-5).length, 0, 'fp32 outputs match the bf16 reference: the test cannot tell them apart');
      } finally {
        await bf.dispose();
        await fp.dispose();
      }
    });
  }

  it('SDPA-style attention (q and k pre-scaled, so rounded after scaling): rewritten, within bf16 noise', async () => {
    const m = await BGEM3.load(path.join(FIXTURES, 'tiny-m3-attention-sdpa'), { precision: 'bf16' });
    try {
      assert.equal(m.info().bf16Layers, 12);
      assert.equal(m.info().fusedAttentionBlocks, 2);
      const got = await m.encodeTokens(referenceTokens(), { colbert: true });
      reference.cases.forEach((c, i) => assert.ok(closeness(got.row(i).dense!, c.snapshot.dense) < 1e-2, c.name));
    } finally {
      await m.dispose();
    }
  });

  it('gives the same results on 1 and 2 threads', async () => {
    const a = await BGEM3.load(DEMO_MODEL, { precision: 'bf16', threads: 1 });
    const b = await BGEM3.load(DEMO_MODEL, { precision: 'bf16', threads: 2 });
    try {
      const texts = ['What is BGE M3?', 'a much longer text about lexical matching and dense retrieval '.repeat(3)];
      const x = await a.encode(texts, { colbert: true }), y = await b.encode(texts, { colbert: true });
      assert.deepEqual(x.dense, y.dense);
      assert.deepEqual(x.colbert!.data, y.colbert!.data);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  it('a graph with fp16 outputs (fp32 weights) is rewritten too and gives the reference rounded to fp16', async () => {
    const m = await BGEM3.load(path.join(FIXTURES, 'tiny-m3-fp16-hidden'), { precision: 'bf16' });
    try {
      assert.equal(m.info().bf16Layers, 12);
      const c = reference.cases.find((x) => x.name === 'readme_passage')!;
      const out = await m.encodeTokens({ ids: Int32Array.from(c.ids), offsets: Uint32Array.from([0, c.ids.length]) }, { colbert: true });
      assert.ok(closeness(out.row(0).dense!, c.snapshot.dense) < 2e-3);
    } finally {
      await m.dispose();
    }
  });

  it('below the avx512 tier the model loads in fp32 and precisionNote says why', async () => {
    const detected = capabilities().detected;
    setIsa('avx2');
    try {
      const m = await BGEM3.load(DEMO_MODEL, { precision: 'bf16' });
      try {
        assert.equal(m.info().precision, 'fp32');
        assert.equal(m.info().bf16Layers, 0);
        assert.match(m.info().precisionNote, /AVX-512 BF16/);
      } finally {
        await m.dispose();
      }
    } finally {
      setIsa(detected);
    }
  });
});

describe('precision option and flag', () => {
  it('rejects anything but fp32, bf16 or fp16', async () => {
    await assert.rejects(BGEM3.load(DEMO_MODEL, { precision: 'int8' as 'bf16' }),
      (e: { code?: string; message: string }) => e.code === 'ERR_INPUT' && /precision/.test(e.message) && /'bf16'/.test(e.message));
  });

  it('bge-m3 info --precision bf16 reports the precision; a bad value is a usage error', () => {
    const cli = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
    const ok = spawnSync(process.execPath, [cli, 'info', '--precision', 'bf16'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    const info = JSON.parse(ok.stdout);
    assert.equal(info.model.precision, BF16 ? 'bf16' : 'fp32');
    assert.equal(info.model.bf16Layers, BF16 ? 12 : 0);
    const bad = spawnSync(process.execPath, [cli, 'info', '--precision', 'int4'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /'fp32', 'bf16' or 'fp16'/);
  });
});
