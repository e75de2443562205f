/** Batch planning, and results that do not depend on batch size, order or token budget. */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, type EncodeOutput } from '../lib';
import { planBatches, type BatchLimits } from '../lib/engine/batching';
import { DEMO_MODEL, MODEL_DIRS, assertClose, golden, longText } from './helpers';

/** The cheapest plan by exhaustive search over every cut of the sorted order (small n only). */
function bruteForce(lengths: number[], limits: BatchLimits, runCost: number): number {
  const { batchSize, maxBatchTokens } = limits;
  const maxAttentionCells = limits.maxAttentionCells ?? Infinity;
  const sorted = [...lengths].sort((a, b) => b - a);
  let best = Infinity;
  const n = sorted.length;
  for (let mask = 0; mask < 1 << Math.max(0, n - 1); mask++) {
    let cost = 0;
    let start = 0;
    let ok = true;
    for (let i = 1; i <= n; i++) {
      if (i === n || mask & (1 << (i - 1))) {
        const size = i - start;
        const padded = size * sorted[start];
        if (size > batchSize || (size > 1 && (padded > maxBatchTokens || padded * sorted[start] > maxAttentionCells))) ok = false;
        cost += runCost + padded;
        start = i;
      }
    }
    if (ok) best = Math.min(best, cost);
  }
  return best;
}

function planCost(lengths: number[], plan: { order: Uint32Array; batchEnds: Uint32Array }, runCost: number): number {
  let cost = 0;
  let start = 0;
  for (const end of plan.batchEnds) {
    cost += runCost + (end - start) * lengths[plan.order[start]];
    start = end;
  }
  return cost;
}

describe('planBatches', () => {
  it('sorts longest first, ties in caller order; one batch for equal lengths', () => {
    const plan = planBatches([3, 9, 5, 9, 2], { batchSize: 8, maxBatchTokens: 1000 }, 1000);
    assert.deepEqual(Array.from(plan.order), [1, 3, 2, 0, 4]);
    assert.deepEqual(Array.from(plan.batchEnds), [5]);
    assert.equal(planBatches([7, 7, 7, 7, 7, 7], { batchSize: 4, maxBatchTokens: 1000 }).batchEnds.length, 2, 'as few runs as batchSize allows');
  });
  it('keeps padded tokens within maxBatchTokens and batchSize, a long text alone', () => {
    const plan = planBatches([10, 4, 4, 4, 4, 30], { batchSize: 100, maxBatchTokens: 12 });
    assert.deepEqual(Array.from(plan.order), [5, 0, 1, 2, 3, 4]);
    let start = 0;
    for (const end of plan.batchEnds) {
      const size = end - start;
      assert.ok(size === 1 || size * [10, 4, 4, 4, 4, 30][plan.order[start]] <= 12);
      start = end;
    }
    assert.deepEqual(Array.from(plan.batchEnds).slice(0, 2), [1, 2], '30 and 10 each alone');
  });
  it('splits a batch where padding would cost more than another run', () => {
    // One run of 4 x 100 = 400 padded tokens against two runs of 2 x 100 and 2 x 10 (+ 2 x 32).
    const plan = planBatches([100, 100, 10, 10], { batchSize: 32, maxBatchTokens: 100000 });
    assert.deepEqual(Array.from(plan.batchEnds), [2, 4]);
  });
  it('finds the cheapest plan (checked against exhaustive search)', () => {
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + rand(11);
      const lengths = Array.from({ length: n }, () => 1 + rand(60));
      const batchSize = 1 + rand(6);
      const maxBatchTokens = 20 + rand(200);
      // Half the trials also bound the attention cells (texts x length²), often below one text's.
      const maxAttentionCells = trial % 2 ? 100 + rand(6000) : undefined;
      const runCost = rand(50);
      const limits = { batchSize, maxBatchTokens, maxAttentionCells };
      const plan = planBatches(lengths, limits, runCost);
      assert.equal(planCost(lengths, plan, runCost), bruteForce(lengths, limits, runCost),
        `lengths ${lengths} limits ${JSON.stringify(limits)} runCost ${runCost}`);
    }
  });
  it('keeps texts x length² within maxAttentionCells, a text over it alone', () => {
    const lengths = [40, 40, 40, 40, 20, 20, 20, 20, 20, 20, 70];
    const limits = { batchSize: 32, maxBatchTokens: 100000, maxAttentionCells: 2 * 40 * 40 };
    const plan = planBatches(lengths, limits, 1e6);
    let start = 0;
    const sizes: number[] = [];
    for (const end of plan.batchEnds) {
      const size = end - start;
      const longest = lengths[plan.order[start]];
      assert.ok(size === 1 || size * longest * longest <= limits.maxAttentionCells, `batch of ${size} x ${longest}²`);
      sizes.push(size);
      start = end;
    }
    // 70² is over the budget alone; pairs of 40s; the 20s in 8 = 3200 / 400 per batch.
    assert.deepEqual(sizes, [1, 2, 2, 6]);
    assert.equal(planBatches(lengths, { ...limits, maxAttentionCells: undefined }, 1e6).batchEnds.length, 1, 'no limit: one batch');
  });
  it('plans nothing for no texts', () => {
    const plan = planBatches([], { batchSize: 4, maxBatchTokens: 100 });
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

for (const [layout, dir] of Object.entries(MODEL_DIRS).filter(([name]) => !name.includes('alt') && !name.includes('int32'))) {
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

    it('an attention budget runs long texts in smaller batches, with the same outputs', async () => {
      const heads = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).num_attention_heads;
      assert.equal(model.info().attentionHeads, heads);
      const long = Array.from({ length: 40 }, (_, i) => `${longText(60)} ${i}`);
      const lengths = (await model.tokenize(long)).offsets.slice(1).map((end, i, ends) => end - (i ? ends[i - 1] : 0));
      const free = await model.encode(long, { colbert: true });
      // 1 MiB of fp32 scores over the model's heads, texts of up to the model's 64 positions.
      const bounded = await model.encode(long, { colbert: true, maxAttentionBytes: 1 << 20 });
      const cells = Math.floor((1 << 20) / (4 * heads));
      const expected = planBatches(lengths, { batchSize: 32, maxBatchTokens: 16384, maxAttentionCells: cells });
      assert.equal(bounded.stats!.batches, expected.batchEnds.length);
      assert.ok(bounded.stats!.batches > free.stats!.batches, `${bounded.stats!.batches} batches vs ${free.stats!.batches} without the budget`);
      assertSameOutput(bounded, free, 'maxAttentionBytes 1 MiB');
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
