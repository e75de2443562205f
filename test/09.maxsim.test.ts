/**
 * MaxSim on every tier (forced through `isa`) against a float64 reference on random shapes, the
 * quantized formats within their documented bounds, threads and async equal to sync, real
 * encode() output, and every validation error.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, capabilities, colbertScore, maxSim, maxSimSync, quantize } from '../lib';
import type { IsaTierName } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { DEMO_MODEL, colbertReference, golden, maxSimReference } from './helpers';

const ORDER: IsaTierName[] = ['serial', 'avx2', 'avx512'];
const TIERS = ORDER.slice(0, ORDER.indexOf(capabilities().detected) + 1);

/** Deterministic generator of normal-ish values. */
function rng(seed: number) {
  const next = mulberry32(seed);
  return { next, normal: () => next() + next() + next() - 1.5, int: (n: number) => Math.floor(next() * n) };
}

function unitRows(rows: number, dim: number, r: ReturnType<typeof rng>): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let i = 0; i < rows; i++) {
    let norm = 0;
    for (let k = 0; k < dim; k++) norm += (out[i * dim + k] = r.normal()) ** 2;
    for (let k = 0; k < dim; k++) out[i * dim + k] /= Math.sqrt(norm);
  }
  return out;
}

function corpus(seed: number, dim: number, nq: number, docRows: number[]) {
  const r = rng(seed);
  const offsets = new Uint32Array(docRows.length + 1);
  docRows.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  return { q: unitRows(nq, dim, r), docs: { offsets, data: unitRows(offsets[docRows.length], dim, r) } };
}

describe('maxSim', () => {
  const shapes: Array<[number, number, number[]]> = [
    [1, 1, [3, 0, 1]], [7, 5, [0, 9, 2]], [15, 16, [17, 1]], [16, 17, [600, 5, 0, 33]],
    [17, 33, [64, 1, 250]], [127, 64, [40, 0, 7]], [1023, 32, [20, 3]], [1024, 32, [12, 0, 5]],
  ];

  for (const tier of TIERS) {
    it(`${tier}: fp32 equals the float64 reference; bf16 and int8 within their bounds`, () => {
      shapes.forEach(([dim, nq, rows], n) => {
        const { q, docs } = corpus(100 + n, dim, nq, rows);
        const ref = maxSimReference(q, docs.data, docs.offsets, dim);
        const f32 = maxSimSync(q, docs, { dim, isa: tier });
        ref.forEach((v, i) => assert.ok(Math.abs(f32[i] - v) <= 1e-5, `f32 dim ${dim} nq ${nq} doc ${i}: ${f32[i]} vs ${v}`));
        const bf16 = maxSimSync(q, quantize(docs, dim, 'bf16'), { isa: tier });
        ref.forEach((v, i) => assert.ok(Math.abs(bf16[i] - v) <= 3.93e-3, `bf16 doc ${i}: ${bf16[i]} vs ${v}`));
        const i8docs = quantize(docs, dim, 'i8');
        let sq = 0;
        for (const x of q) sq = Math.max(sq, Math.abs(x) / 127);
        let sd = 0;
        for (const x of i8docs.scales!) sd = Math.max(sd, x);
        const bound = Math.sqrt(dim) * (sq + sd) / 2 + (dim * sq * sd) / 4 + 1e-5;
        const i8 = maxSimSync(q, i8docs, { isa: tier });
        ref.forEach((v, i) => assert.ok(Math.abs(i8[i] - v) <= bound, `i8 doc ${i}: ${i8[i]} vs ${v} (bound ${bound})`));
        assert.deepEqual(i8, maxSimSync(q, i8docs, { isa: 'serial' }), 'int8 agrees bitwise with the serial oracle');
      });
    });
  }

  it('int8 documents built by hand (any values, -128 included) score exactly on every tier', () => {
    // The query is quantized inside the call (per row: scale max|x| / 127, values rounded), so
    // the reference quantizes it the same way and sums integer products exactly.
    for (const dim of [5, 64, 100, 1024]) {
      const r = rng(dim);
      const nq = 3;
      const q = unitRows(nq, dim, r);
      const offsets = Uint32Array.of(0, 2, 2, 9);
      const rows = offsets[3];
      const data = new Int8Array(rows * dim);
      for (let i = 0; i < data.length; i++) data[i] = i % 7 === 0 ? -128 : i % 11 === 0 ? 127 : r.int(256) - 128;
      const scales = Float32Array.from({ length: rows }, (_, i) => 0.001 * (i + 1));
      const expected: number[] = [];
      for (let d = 0; d < 3; d++) {
        if (offsets[d + 1] === offsets[d]) { expected.push(0); continue; }
        let total = 0;
        for (let a = 0; a < nq; a++) {
          let peak = 0;
          for (let k = 0; k < dim; k++) peak = Math.max(peak, Math.abs(q[a * dim + k]));
          const sq = Math.fround(peak / 127);
          const qi = Array.from({ length: dim }, (_, k) => Math.max(-127, Math.min(127, Math.round(q[a * dim + k] / sq))));
          let best = -Infinity;
          for (let j = offsets[d]; j < offsets[d + 1]; j++) {
            let dot = 0;
            for (let k = 0; k < dim; k++) dot += qi[k] * data[j * dim + k];
            best = Math.max(best, dot * sq * scales[j]);
          }
          total += best;
        }
        expected.push(total / nq);
      }
      const docs = { format: 'i8' as const, dim, offsets, data, scales };
      const serial = maxSimSync(q, docs, { isa: 'serial' });
      expected.forEach((v, i) => assert.ok(Math.abs(serial[i] - v) <= 1e-5 * Math.max(1, Math.abs(v)), `dim ${dim} doc ${i}: ${serial[i]} vs ${v}`));
      for (const tier of TIERS) assert.deepEqual(maxSimSync(q, docs, { isa: tier }), serial, `${tier} dim ${dim}`);
    }
  });

  it('empty documents and empty queries score 0', () => {
    const { q, docs } = corpus(7, 8, 1, [0, 3, 0]);
    const scores = maxSimSync(q, docs, { dim: 8 });
    assert.equal(scores[0], 0);
    assert.equal(scores[2], 0);
    assert.ok(Math.abs(scores[1] - maxSimReference(q, docs.data, docs.offsets, 8)[1]) <= 1e-6);
    assert.deepEqual(Array.from(maxSimSync(new Float32Array(0), docs, { dim: 8 })), [0, 0, 0]);
  });

  it('thread counts agree bitwise; async equals sync; many queries at once', async () => {
    const { q, docs } = corpus(9, 64, 32, Array.from({ length: 300 }, (_, i) => (i * 37) % 90));
    const one = maxSimSync(q, docs, { dim: 64, threads: 1 });
    assert.deepEqual(maxSimSync(q, docs, { dim: 64, threads: 2 }), one);
    assert.deepEqual(await maxSim(q, docs, { dim: 64, threads: 2 }), one);
    const q2 = corpus(10, 64, 5, [1]).q;
    const queries = { offsets: Uint32Array.of(0, 32, 32, 37), data: Float32Array.from([...q, ...q2]) };
    const many = await maxSim(queries, docs, { dim: 64 });
    assert.equal(many.length, 3 * 300);
    assert.deepEqual(many.subarray(0, 300), one);
    assert.ok(many.subarray(300, 600).every((x) => x === 0), 'an empty query scores 0');
    assert.deepEqual(many.subarray(600), maxSimSync(q2, docs, { dim: 64 }));
  });

  it('matches the plain JS reference on real encode() output; colbertScore is the same kernel', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      const texts = golden.cases.map((c) => c.text);
      const out = await model.encode(texts, { dense: false, sparse: false, colbert: true });
      const query = out.row(0).colbert!;
      const scores = await maxSim(query, out.colbert!, { dim: out.dim });
      texts.forEach((_, i) => {
        assert.ok(Math.abs(scores[i] - colbertReference(query, out.row(i).colbert!, out.dim)) <= 1e-6);
        assert.equal(colbertScore(query, out.row(i).colbert!, out.dim), scores[i]);
      });
    } finally {
      await model.dispose();
    }
  });

  it('refuses malformed input with ERR_INPUT and a message naming the problem', async () => {
    const { q, docs } = corpus(11, 8, 2, [2, 3]);
    const bad = (fn: () => unknown, pattern: RegExp) =>
      assert.throws(fn, (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && pattern.test(e.message ?? ''));
    bad(() => maxSimSync(q, docs, {}), /dim/);
    bad(() => maxSimSync(q, docs, { dim: 3 }), /multiple of dim 3|offsets end/);
    bad(() => maxSimSync(q.subarray(1), docs, { dim: 8 }), /multiple of dim/);
    bad(() => maxSimSync(q, { offsets: Uint32Array.of(0, 3, 2), data: docs.data }, { dim: 8 }), /non-decreasing|offsets end/);
    bad(() => maxSimSync(q, { offsets: Uint32Array.of(0, 2, 6), data: docs.data }, { dim: 8 }), /offsets end at 6 rows/);
    bad(() => maxSimSync(q, docs, { dim: 8, threads: 0 }), /threads/);
    bad(() => maxSimSync(q, docs, { dim: 8, format: 'bf16' }), /quantize/);
    bad(() => maxSimSync(q, { offsets: docs.offsets, data: Array.from(docs.data) } as never, { dim: 8 }), /docs\.data/);
    bad(() => quantize(docs, 8, 'f16' as never), /format/);
    const nan = Float32Array.from(docs.data);
    nan[3 * 8 + 2] = NaN;
    for (const tier of TIERS) bad(() => maxSimSync(q, { offsets: docs.offsets, data: nan }, { dim: 8, isa: tier }), /document 1 holds a NaN/);
    const inf = Float32Array.from(docs.data);
    inf[5] = Infinity;
    bad(() => maxSimSync(q, { offsets: docs.offsets, data: inf }, { dim: 8 }), /document 0 holds a NaN or infinite/);
    bad(() => quantize({ offsets: docs.offsets, data: inf }, 8, 'i8'), /not finite/);
    const nanQuery = Float32Array.from(q);
    nanQuery[0] = NaN;
    bad(() => maxSimSync(nanQuery, docs, { dim: 8 }), /query 0 holds a non-finite/);
    await assert.rejects(maxSim(q, { offsets: docs.offsets, data: nan }, { dim: 8 }), (e: { code?: string }) => e.code === 'ERR_INPUT');
  });
});
