/**
 * Export and import between HybridIndex and PgStore: ids, texts, metadata and vectors make the
 * round trip, and each side then searches like the other (dense in the fp16 a store keeps).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3, HybridIndex, type EncodeOutput } from '../lib';
import { PgStore } from '../lib/store/pg_store';
import { exportIndex, importIndex } from '../lib/store/transfer';
import { DEMO_MODEL, rejectsWith } from './helpers';
import { generateCorpus, withHalfDense } from './store_support';

describe('PgStore export and import', () => {
  let model: BGEM3;
  let docs: EncodeOutput;
  let qs: EncodeOutput;
  const corpus = generateCorpus(23, 500, 8);
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    docs = await model.encode(corpus.texts, { colbert: true });
    qs = await model.encode(corpus.queries, { colbert: true });
  });
  after(() => model?.dispose());

  const ids = (hits: Array<{ id: unknown }>) => hits.map((h) => h.id);

  for (const format of ['bf16', 'f32', 'i8'] as const) {
    it(`index -> store -> index keeps documents and rankings (ColBERT ${format})`, async () => {
      const index = HybridIndex.create({ dim: docs.dim, vocabSize: model.info().vocabSize, colbert: format, model });
      index.add(corpus.ids, withHalfDense(docs), { texts: corpus.texts, metadata: corpus.metadata });
      const store = await PgStore.open('pglite:memory', { model, colbert: format });
      try {
        const seen: number[] = [];
        assert.equal(await importIndex(store, index, { batchSize: 128, onProgress: (n) => seen.push(n) }), corpus.ids.length);
        assert.deepEqual(seen, [128, 256, 384, 500]);
        assert.equal(await store.count(), corpus.ids.length);
        assert.ok(await store.hasIndexes());
        for (const i of [0, 1, 499]) {
          assert.deepEqual(await store.get(corpus.ids[i]), { id: corpus.ids[i], text: corpus.texts[i], metadata: corpus.metadata[i] });
        }
        const back = await exportIndex(store, { batchSize: 100 });
        assert.equal(back.size, corpus.ids.length);
        assert.equal(back.colbert, format);
        assert.deepEqual(back.get(corpus.ids[7]), index.get(corpus.ids[7]));
        for (let q = 0; q < qs.count; q++) {
          const want = index.search(qs.row(q), { k: 10, exhaustive: true });
          const fromStore = await store.search(qs.row(q), { k: 10, exhaustive: true });
          const again = back.search(qs.row(q), { k: 10, exhaustive: true });
          if (format === 'i8') {
            // int8 is requantized from the dequantized rows: scores move by rounding, not rankings at large.
            const overlap = ids(again).filter((id) => ids(want).includes(id)).length;
            assert.ok(overlap >= 9, `query ${q}: ${overlap} of 10`);
            again.forEach((h, i) => assert.ok(Math.abs(h.score - want[i].score) < 5e-3));
          } else {
            assert.deepEqual(ids(fromStore), ids(want), `query ${q} store`);
            assert.deepEqual(ids(again), ids(want), `query ${q} exported index`);
            again.forEach((h, i) => assert.ok(Math.abs(h.score - want[i].score) <= 1e-6, `query ${q} hit ${i}`));
          }
        }
        const filtered = back.search(qs.row(0), { k: 5, filter: { lang: 'fr' }, exhaustive: true });
        assert.deepEqual(ids(filtered), ids(await store.search(qs.row(0), { k: 5, filter: { lang: 'fr' }, exhaustive: true })));
      } finally {
        await store.close();
      }
    });
  }

  it('refuses a transfer between different models or ColBERT settings', async () => {
    const index = HybridIndex.create({ dim: docs.dim + 1, vocabSize: 838 });
    const store = await PgStore.open('pglite:memory', { model, colbert: false });
    try {
      await rejectsWith(importIndex(store, index), 'ERR_MODEL_LAYOUT', /different models/);
      await rejectsWith(exportIndex(store, { colbert: 'bf16' }), 'ERR_INPUT', /no ColBERT/);
      const bare = await exportIndex(store);
      assert.equal(bare.size, 0);
    } finally {
      await store.close();
    }
  });
});
