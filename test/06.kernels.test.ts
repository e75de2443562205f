/**
 * The ColBERT head's dense-layer kernel and the fused attention kernel on every tier against
 * float64 references, and CPU dispatch.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { capabilities, setIsa } from '../lib';
import { native, type IsaTierName } from '../lib/addon/native';
import { attentionReference } from './helpers';

/** Deterministic pseudo-random floats in [-1, 1). */
function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = (s / 0x100000000) * 2 - 1;
  }
  return out;
}

const ORDER: IsaTierName[] = ['serial', 'avx2', 'avx512'];

describe('linear kernel (ColBERT head)', () => {
  const detected = capabilities().detected;
  const tiers = ORDER.slice(0, ORDER.indexOf(detected) + 1);
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1], [7, 5, 3], [13, 17, 1], [6, 32, 32], [19, 33, 31], [64, 64, 100], [5, 1024, 40], [200, 48, 7],
  ];
  for (const tier of tiers) {
    it(`${tier}: matches a float64 reference on odd shapes`, () => {
      for (const [out, inp, rows] of shapes) {
        const w = random(out * inp, out * 31 + inp);
        const b = random(out, out + 7);
        const x = random(rows * inp, rows * 13 + inp);
        const y = native().testing.linearForward(w, b, out, inp, x, rows, tier);
        assert.equal(y.length, rows * out);
        for (let r = 0; r < rows; r++) {
          for (let o = 0; o < out; o++) {
            let ref = b[o];
            for (let k = 0; k < inp; k++) ref += x[r * inp + k] * w[o * inp + k];
            const tol = 1e-6 * (inp + 1);
            assert.ok(Math.abs(y[r * out + o] - ref) <= tol, `${tier} [${out}x${inp}] rows ${rows}: y[${r}][${o}] ${y[r * out + o]} vs ${ref}`);
          }
        }
      }
    });
  }

  it('capabilities report CPUID features and the tier in use; a lower tier can be forced', () => {
    const caps = capabilities();
    assert.ok(ORDER.includes(caps.detected));
    assert.equal(typeof caps.features.avx2, 'boolean');
    if (caps.detected === 'avx512') assert.ok(caps.features.avx512f && caps.features.avx512bw);
    try {
      assert.equal(setIsa('serial'), 'serial');
      assert.equal(capabilities().active, 'serial');
      assert.throws(() => setIsa('sse' as never), (e: { code?: string }) => e.code === 'ERR_INPUT');
    } finally {
      setIsa(caps.detected);
    }
    assert.equal(capabilities().active, caps.detected);
  });
});

describe('fused attention kernel', () => {
  const detected = capabilities().detected;
  const tiers = ORDER.slice(0, ORDER.indexOf(detected) + 1);
  const FLOAT_MIN = -3.4028234663852886e38;
  // [batch, heads, qLen, kvLen, headDim, vDim]: register-tile and block tails, several units per
  // head, value widths across the 64-column chunks, and rows longer than one key chunk (512:
  // the online softmax over 2 and 5 chunks, the last one short).
  const shapes = [
    [1, 1, 1, 1, 1, 1], [2, 3, 7, 5, 8, 8], [1, 2, 13, 49, 17, 33], [2, 1, 100, 97, 64, 64],
    [1, 2, 130, 600, 16, 80], [1, 1, 5, 1000, 3, 5], [3, 2, 33, 48, 32, 32], [1, 1, 70, 2100, 64, 64],
  ];
  for (const tier of tiers) {
    it(`${tier}: matches a float64 reference with padding, full and head-broadcast masks`, () => {
      for (const dims of shapes) {
        const [B, H, Sq, Skv, d, dv] = dims;
        const seed = dims.reduce((a, x) => a * 31 + x, 7);
        const q = random(B * H * Sq * d, seed), kt = random(B * H * d * Skv, seed + 1), v = random(B * H * Skv * dv, seed + 2);
        // Padding over keys (HF's finite minimum), one per text: text b keeps Skv - b keys.
        const padding = new Float32Array(B * Skv);
        for (let b = 0; b < B; b++) for (let j = Math.max(1, Skv - b); j < Skv; j++) padding[b * Skv + j] = FLOAT_MIN;
        const full = random(B * H * Sq * Skv, seed + 3).map((x) => 4 * x);
        const perHead = random(H * Sq * Skv, seed + 4).map((x) => x < -0.8 ? -10000 : x);
        const cases: Array<[string, Float32Array | null, number[]]> = [
          ['none', null, [0, 0, 0]], ['padding', padding, [Skv, 0, 0]],
          ['full', full, [H * Sq * Skv, Sq * Skv, Skv]], ['per head', perHead, [0, Sq * Skv, Skv]],
        ];
        for (const [name, mask, strides] of cases) {
          for (const scale of [1 / Math.sqrt(d), 6]) {
            const got = native().testing.attentionForward(q, kt, v, mask, dims, strides, scale, tier);
            const want = attentionReference(q, kt, v, mask, dims, strides, scale);
            assert.equal(got.length, want.length);
            for (let i = 0; i < want.length; i++) {
              assert.ok(Math.abs(got[i] - want[i]) <= 2e-6 * (1 + Math.sqrt(Skv)),
                `${tier} ${JSON.stringify(dims)} mask ${name} scale ${scale}: out[${i}] ${got[i]} vs ${want[i]}`);
            }
          }
        }
      }
    });
  }

  it('attentionKernelTimes (the benchmark\'s entry) times each run and checks its dims', () => {
    const ms = native().testing.attentionKernelTimes([1, 2, 40, 40, 16, 16], 'serial', 3);
    assert.equal(ms.length, 3);
    for (const t of ms) assert.ok(t > 0 && t < 10_000);
    assert.throws(() => native().testing.attentionKernelTimes([1, 2, 0, 40, 16, 16], 'serial', 1), (e: { code?: string }) => e.code === 'ERR_INPUT');
  });

  it('a row whose keys are all masked but one returns that key\'s value row exactly', () => {
    const dims = [1, 1, 3, 40, 8, 20];
    const q = random(3 * 8, 5), kt = random(8 * 40, 6), v = random(40 * 20, 7);
    const mask = new Float32Array(40).fill(FLOAT_MIN);
    mask[17] = 0;
    for (const tier of tiers) {
      const got = native().testing.attentionForward(q, kt, v, mask, dims, [0, 0, 0], 1, tier);
      for (let i = 0; i < 3; i++) for (let c = 0; c < 20; c++) assert.equal(got[i * 20 + c], v[17 * 20 + c], `${tier} row ${i} col ${c}`);
    }
  });
});

describe('golden parity on every tier', () => {
  it('encode matches the reference with the heads on each forced tier', async () => {
    const { BGEM3 } = await import('../lib');
    const { DEMO_MODEL, assertClose, golden } = await import('./helpers');
    const detected = capabilities().detected;
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      const c = golden.cases.find((x) => x.name === 'readme_passage')!;
      for (const tier of ORDER.slice(0, ORDER.indexOf(detected) + 1)) {
        native().setIsa(tier);
        const row = (await model.encode([c.text], { colbert: true })).row(0);
        assertClose(row.colbert!, c.colbert.flat(), `${tier} colbert`);
      }
    } finally {
      native().setIsa(detected);
      await model.dispose();
    }
  });
});

describe('BGE_M3_ISA', () => {
  it('lowers the tier for the whole process at startup', async () => {
    const { spawnSync } = await import('node:child_process');
    const { ROOT } = await import('./helpers');
    const script = `const m = require(${JSON.stringify(`${ROOT}/dist/lib/index.js`)}); console.log(m.capabilities().active);`;
    for (const tier of ORDER.slice(0, ORDER.indexOf(capabilities().detected) + 1)) {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, BGE_M3_ISA: tier }, encoding: 'utf8' });
      assert.equal(r.stdout.trim(), tier, r.stderr);
    }
  });
});
