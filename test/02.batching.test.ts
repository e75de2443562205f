/** Batch planning, and results that do not depend on batch size, order or token budget. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, type EncodeOutput } from '../lib';
import { planBatches } from '../lib/batching';
import { DEMO_MODEL, MODEL_DIRS, assertClose, golden } from './helpers';

describe('planBatches', () => {
  it('sorts longest first, ties in caller order, and respects batchSize', () => {
    const plan = planBatches([3, 9, 5, 9, 2], 2, 1000);
    assert.deepEqual(Array.from(plan.order), [1, 3, 2, 0, 4]);
    assert.deepEqual(Array.from(plan.batchEnds), [2, 4, 5]);
  });
  it('keeps padded tokens within maxBatchTokens, a long text alone', () => {
    const plan = planBatches([10, 4, 4, 4, 4, 30], 100, 12);
    // 30 alone (over budget), 10 alone (2*10 > 12), then three 4s (12), then one 4.
    assert.deepEqual(Array.from(plan.order), [5, 0, 1, 2, 3, 4]);
    assert.deepEqual(Array.from(plan.batchEnds), [1, 2, 5, 6]);
  });
  it('plans nothing for no texts', () => {
    const plan = planBatches([], 4, 100);
    assert.equal(plan.order.length, 0);
    assert.equal(plan.batchEnds.length, 0);
  });
});

function assertSameOutput(a: EncodeOutput, b: EncodeOutput, what: string): void {
  assert.equal(a.count, b.count);
  assertClose(a.dense!, b.dense!, `${what} dense`, 1e-6);
  assert.deepEqual(a.sparse!.offsets, b.sparse!.offsets, `${what} sparse offsets`);
  assert.deepEqual(a.sparse!.ids, b.sparse!.ids, `${what} sparse ids`);
  assertClose(a.sparse!.weights, b.sparse!.weights, `${what} sparse weights`, 1e-6);
  assert.deepEqual(a.colbert!.offsets, b.colbert!.offsets, `${what} colbert offsets`);
  assertClose(a.colbert!.data, b.colbert!.data, `${what} colbert`, 1e-6);
}

for (const [layout, dir] of Object.entries(MODEL_DIRS).filter(([name]) => !name.includes('alt'))) {
  describe(`batch invariance: ${layout}`, () => {
    let model: BGEM3;
    const texts = golden.cases.filter((c) => c.maxLength === null).map((c) => c.text);
    before(async () => {
      model = await BGEM3.load(dir);
    });
    after(() => model.dispose());

    it('batch size 1, 3 and all give the same outputs, equal to the golden ones', async () => {
      const all = await model.encode(texts, { colbert: true, batchSize: texts.length });
      for (const batchSize of [1, 3]) {
        assertSameOutput(await model.encode(texts, { colbert: true, batchSize }), all, `batchSize ${batchSize}`);
      }
      const cases = golden.cases.filter((c) => c.maxLength === null);
      cases.forEach((c, i) => assertClose(all.row(i).dense!, c.dense, `${c.name} dense in a batch`));
      assert.deepEqual(Array.from(all.colbert!.offsets), cases.reduce((acc, c) => [...acc, acc[acc.length - 1] + c.ids.length - 1], [0]));
    });

    it('a shuffled order gives the same rows', async () => {
      const base = await model.encode(texts, { colbert: true });
      const perm = texts.map((_, i) => i).reverse();
      perm.push(perm.shift()!);
      const shuffled = await model.encode(perm.map((i) => texts[i]), { colbert: true, batchSize: 4 });
      perm.forEach((src, k) => {
        const a = shuffled.row(k);
        const b = base.row(src);
        assertClose(a.dense!, b.dense!, `row ${k} dense`, 1e-6);
        assert.deepEqual(a.sparse!.ids, b.sparse!.ids);
        assertClose(a.sparse!.weights, b.sparse!.weights, `row ${k} sparse`, 1e-6);
        assertClose(a.colbert!, b.colbert!, `row ${k} colbert`, 1e-6);
      });
    });

    it('a small token budget (many batches) gives the same outputs', async () => {
      const all = await model.encode(texts, { colbert: true });
      assertSameOutput(await model.encode(texts, { colbert: true, maxBatchTokens: 40 }), all, 'maxBatchTokens 40');
    });
  });
}

describe('requested outputs', () => {
  it('computes only what was asked, with row views into the batch arrays', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      const texts = ['one text', 'another text here'];
      const denseOnly = await model.encode(texts, { sparse: false });
      assert.ok(denseOnly.dense);
      assert.equal(denseOnly.sparse, undefined);
      assert.equal(denseOnly.colbert, undefined);
      const colbertOnly = await model.encode(texts, { dense: false, sparse: false, colbert: true });
      assert.equal(colbertOnly.dense, undefined);
      const row = colbertOnly.row(1);
      assert.equal(row.colbert!.buffer, colbertOnly.colbert!.data.buffer, 'row(i) is a view, not a copy');
      const full = await model.encode(texts, { colbert: true });
      assertClose(colbertOnly.colbert!.data, full.colbert!.data, 'colbert alone = colbert with the rest', 1e-6);
      assertClose(denseOnly.dense!, full.dense!, 'dense alone = dense with the rest', 1e-6);
      const empty = await model.encode([], { colbert: true });
      assert.equal(empty.count, 0);
      assert.deepEqual(Array.from(empty.sparse!.offsets), [0]);
      assert.deepEqual(Array.from(empty.colbert!.offsets), [0]);
      const single = await model.encode('a single string is one text');
      assert.equal(single.count, 1);
    } finally {
      await model.dispose();
    }
  });
});

describe('parallel heads', () => {
  it('a batch big enough to split the ColBERT head over threads gives the per-text results', async () => {
    const model = await BGEM3.load(DEMO_MODEL, { threads: 2 });
    try {
      const base = golden.cases.filter((c) => c.maxLength === null).map((c) => c.text);
      const texts = Array.from({ length: 1200 }, (_, i) => `${base[i % base.length]} ${i}`);
      // One batch of 1200 texts: enough head work for the parallel path.
      const together = await model.encode(texts, { colbert: true, batchSize: texts.length, maxBatchTokens: 1 << 30 });
      const alone = await model.encode(texts.slice(0, 40), { colbert: true, batchSize: 1 });
      const n = alone.colbert!.offsets[40];
      assert.deepEqual(Array.from(together.colbert!.offsets.subarray(0, 41)), Array.from(alone.colbert!.offsets));
      assertClose(together.colbert!.data.subarray(0, n * together.dim), alone.colbert!.data, 'colbert', 1e-6);
      assert.deepEqual(Array.from(together.sparse!.ids.subarray(0, alone.sparse!.ids.length)), Array.from(alone.sparse!.ids));
    } finally {
      await model.dispose();
    }
  });
});
