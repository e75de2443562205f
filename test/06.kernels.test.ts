/** The ColBERT head's dense-layer kernel on every tier against a float64 reference, and CPU dispatch. */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { capabilities, setIsa } from '../lib';
import { native, type IsaTierName } from '../lib/native';

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
        const y = native().linearForward(w, b, out, inp, x, rows, tier);
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
