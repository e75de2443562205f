/**
 * The fused attention path: which graphs are rewritten (every attention block of each export
 * style, none of a block with another reader), and that a fused model encodes what the graph's
 * own attention gives (the golden test holds both to the PyTorch reference; this holds them to
 * each other, on every tier the kernel can be switched to after loading).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, capabilities, setIsa, type EncodeOutput } from '../lib';
import { DEMO_MODEL, FIXTURES } from './helpers';

const VECTOR = capabilities().detected !== 'serial';

/**
 * Each fixture, the attention blocks it must run fused (two layers each), and how far the fused
 * outputs may be from the unfused ones: float32 rounding, or for hidden states rounded to fp16
 * at the graph's output, a flip of that rounding (half an fp16 ulp of values near 1, carried
 * through the heads).
 */
const EXPECTED: Array<[string, string, number, number]> = [
  ['snapshot (.pt heads)', DEMO_MODEL, 2, 2e-5],
  ['heads-baked', path.join(FIXTURES, 'tiny-m3-baked'), 2, 2e-5],
  ['int32 inputs', path.join(FIXTURES, 'tiny-m3-int32-inputs'), 2, 2e-5],
  ['fp16 hidden states', path.join(FIXTURES, 'tiny-m3-fp16-hidden'), 2, 2e-3],
  ['SDPA-style q/k scaling, mask on the left, Mul scale, explicit axis', path.join(FIXTURES, 'tiny-m3-attention-sdpa'), 2, 2e-5],
  ['block 1 probabilities read by another node', path.join(FIXTURES, 'tiny-m3-attention-partial'), 1, 2e-5],
  ['dense layers as Transpose and Gemm', path.join(FIXTURES, 'tiny-m3-linear-variants'), 2, 2e-5],
];

const TEXTS = [
  'What is BGE M3?',
  'BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.',
  'x',
  'Defination of BM25: BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in each document',
];

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Sparse weights as dense rows over the vocabulary ids seen (a weight near 0 may drop out). */
function sparseRows(out: EncodeOutput): Map<number, number>[] {
  const { offsets, ids, weights } = out.sparse!;
  return Array.from({ length: out.count }, (_, i) => {
    const row = new Map<number, number>();
    for (let k = offsets[i]; k < offsets[i + 1]; k++) row.set(ids[k], weights[k]);
    return row;
  });
}

function assertClose(got: EncodeOutput, want: EncodeOutput, what: string, tol = 2e-5): void {
  if (want.dense) assert.ok(maxDiff(got.dense!, want.dense) < tol, `${what}: dense ${maxDiff(got.dense!, want.dense)}`);
  if (want.colbert) {
    assert.deepEqual(got.colbert!.offsets, want.colbert.offsets);
    assert.ok(maxDiff(got.colbert!.data, want.colbert.data) < tol, `${what}: colbert ${maxDiff(got.colbert!.data, want.colbert.data)}`);
  }
  if (want.sparse) {
    const g = sparseRows(got), w = sparseRows(want);
    for (let i = 0; i < w.length; i++) {
      for (const id of new Set([...g[i].keys(), ...w[i].keys()])) {
        const d = Math.abs((g[i].get(id) ?? 0) - (w[i].get(id) ?? 0));
        assert.ok(d < tol, `${what}: text ${i} sparse weight of id ${id} differs by ${d}`);
      }
    }
  }
}

describe('fused attention', () => {
  for (const [name, dir, blocks, tol] of EXPECTED) {
    it(`${name}: ${VECTOR ? `${blocks} block(s) fused` : 'not fused without AVX2'}, outputs as the graph's own attention`, async () => {
      const fused = await BGEM3.load(dir);
      const plain = await BGEM3.load(dir, { fusedAttention: false });
      try {
        if (VECTOR) {
          assert.equal(fused.info().fusedAttentionBlocks, blocks);
          assert.equal(fused.info().attentionNote, '');
        } else {
          assert.equal(fused.info().fusedAttentionBlocks, 0);
          assert.match(fused.info().attentionNote, /needs AVX2/);
        }
        assert.equal(plain.info().fusedAttentionBlocks, 0);
        assert.equal(plain.info().attentionNote, '');
        const opts = { dense: true, sparse: true, colbert: true };
        assertClose(await fused.encode(TEXTS, opts), await plain.encode(TEXTS, opts), name, tol);
      } finally {
        await fused.dispose();
        await plain.dispose();
      }
    });
  }

  describe('tiers', () => {
    const detected = capabilities().detected;
    let fused: BGEM3;
    let plain: BGEM3;
    before(async () => {
      fused = await BGEM3.load(DEMO_MODEL);
      plain = await BGEM3.load(DEMO_MODEL, { fusedAttention: false });
    });
    after(async () => {
      setIsa(detected);
      await fused.dispose();
      await plain.dispose();
    });

    it('a fused model keeps its outputs when the kernels are lowered to another tier after loading', { skip: !VECTOR }, async () => {
      const opts = { dense: true, sparse: true, colbert: true };
      const want = await plain.encode(TEXTS, opts);
      for (const tier of ['serial', 'avx2'] as const) {
        setIsa(tier);
        try {
          assertClose(await fused.encode(TEXTS, opts), want, `${tier} tier`);
        } finally {
          setIsa(detected);
        }
      }
    });

    it('a model loaded while the kernels run serially keeps the graph\'s attention and says why', async () => {
      setIsa('serial');
      try {
        const m = await BGEM3.load(DEMO_MODEL);
        try {
          assert.equal(m.info().fusedAttentionBlocks, 0);
          assert.match(m.info().attentionNote, /needs AVX2 or AVX-512/);
        } finally {
          await m.dispose();
        }
      } finally {
        setIsa(detected);
      }
    });
  });

  it('damaged graph files (cut short, bytes changed) load or fail with a model error, never crash', async () => {
    const src = path.join(FIXTURES, 'tiny-m3-baked');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-fused-'));
    try {
      for (const name of fs.readdirSync(src)) fs.copyFileSync(path.join(src, name), path.join(dir, name));
      const bytes = fs.readFileSync(path.join(src, 'model.onnx'));
      let seed = 7;
      const next = () => (seed = (seed * 1103515245 + 12345) >>> 0);
      for (let i = 0; i < 24; i++) {
        const damaged = Buffer.from(i % 2 ? bytes.subarray(0, next() % bytes.length) : bytes);
        if (i % 2 === 0) for (let k = 0; k < 4; k++) damaged[next() % damaged.length] = next() & 0xff;
        fs.writeFileSync(path.join(dir, 'model.onnx'), damaged);
        try {
          const m = await BGEM3.load(dir);
          await m.dispose();
        } catch (err) {
          assert.ok(['ERR_MODEL_FILES', 'ERR_MODEL_LAYOUT'].includes((err as { code?: string }).code ?? ''), String(err));
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fusedAttention must be a boolean', async () => {
    await assert.rejects(BGEM3.load(DEMO_MODEL, { fusedAttention: 'yes' as never }),
      (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && /fusedAttention/.test(e.message ?? ''));
  });
});
