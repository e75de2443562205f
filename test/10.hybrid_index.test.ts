/**
 * HybridIndex: exhaustive search equals brute-force scoring with the public scoring functions,
 * the multi-route default agrees with it when candidates cover the corpus, ids (add, replace,
 * remove, compaction), ColBERT storage formats, and bad input.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, HybridIndex, denseScore, lexicalScore, type EncodeOutput } from '../lib';
import { DEMO_MODEL, ROOT, colbertReference } from './helpers';

interface Row { query: string; pos: string[]; neg: string[] }
const rows: Row[] = fs.readFileSync(path.join(ROOT, 'data', 'seed-examples.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const passages = [...new Set(rows.flatMap((r) => [...r.pos, ...r.neg]))];
const queries = rows.map((r) => r.query);

describe('HybridIndex', () => {
  let model: BGEM3;
  let docs: EncodeOutput;
  let qs: EncodeOutput;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    docs = await model.encode(passages, { colbert: true });
    qs = await model.encode(queries, { colbert: true });
  });
  after(() => model.dispose());

  const weights: [number, number, number] = [1, 0.3, 1];
  function bruteForce(qi: number, k: number) {
    const q = qs.row(qi);
    const scored = passages.map((_, i) => {
      const d = docs.row(i);
      const dense = denseScore(q.dense!, d.dense!);
      const sparse = lexicalScore(q.sparse!, d.sparse!);
      const colbert = colbertReference(q.colbert!, d.colbert!, docs.dim);
      return { id: `p${i}`, slot: i, dense, sparse, colbert, score: (weights[0] * dense + weights[1] * sparse + weights[2] * colbert) / 2.3 };
    });
    scored.sort((a, b) => b.score - a.score || a.slot - b.slot);
    return scored.slice(0, k);
  }

  function build(colbert: 'f32' | 'bf16' | 'i8' | false = 'f32') {
    const index = HybridIndex.create({ dim: docs.dim, colbert });
    index.add(passages.map((_, i) => `p${i}`), docs);
    return index;
  }

  it('exhaustive search equals brute-force scoring of every document', () => {
    const index = build();
    assert.equal(index.size, passages.length);
    queries.forEach((_, qi) => {
      const got = index.search(qs.row(qi), { k: 10, exhaustive: true, weights });
      const want = bruteForce(qi, 10);
      assert.deepEqual(got.map((h) => h.id), want.map((h) => h.id), `query ${qi} ranking`);
      got.forEach((h, i) => {
        assert.equal(h.dense, want[i].dense, 'dense is computed exactly like denseScore');
        assert.equal(h.sparse, want[i].sparse, 'sparse is computed exactly like lexicalScore');
        assert.ok(Math.abs(h.colbert - want[i].colbert) <= 1e-6);
        assert.ok(Math.abs(h.score - want[i].score) <= 1e-6);
      });
    });
  });

  it('multi-route recall agrees with exhaustive when the candidates cover the corpus; narrow routes recall a subset', () => {
    const index = build();
    let agree = 0;
    queries.forEach((_, qi) => {
      const exhaustive = index.search(qs.row(qi), { k: 10, exhaustive: true }).map((h) => h.id);
      const routed = index.search(qs.row(qi), { k: 10, denseCandidates: passages.length, sparseCandidates: passages.length }).map((h) => h.id);
      assert.deepEqual(routed, exhaustive);
      const narrow = index.search(qs.row(qi), { k: 3, denseCandidates: 3, routes: ['dense'] });
      assert.equal(narrow.length, 3, 'only the dense candidates are reranked');
      agree += narrow.filter((h) => exhaustive.includes(h.id)).length;
    });
    assert.ok(agree > 0);
  });

  it('replaces re-added ids, removes ids, and keeps working across compaction', () => {
    const index = build(false);
    const q = qs.row(0);
    const first = index.search(q, { k: 1, exhaustive: true })[0];
    // Re-adding the best document under another text's vectors changes its scores.
    const other = passages.findIndex((_, i) => `p${i}` !== first.id);
    const single = (i: number) => ({ ...docs, count: 1, dense: docs.row(i).dense, sparse: { offsets: Uint32Array.of(0, docs.row(i).sparse!.ids.length), ...docs.row(i).sparse! } });
    index.add([first.id], single(other) as unknown as EncodeOutput);
    assert.equal(index.size, passages.length, 'replacing keeps the size');
    const again = index.search(q, { k: passages.length, exhaustive: true }).find((h) => h.id === first.id)!;
    assert.equal(again.dense, denseScore(q.dense!, docs.row(other).dense!));
    assert.equal(index.remove([first.id, 'no-such-id']), 1);
    assert.equal(index.size, passages.length - 1);
    assert.ok(!index.search(q, { k: passages.length, exhaustive: true }).some((h) => h.id === first.id));
    // Many adds and removes trigger compaction; ids must still map to the right documents.
    const big = HybridIndex.create({ dim: docs.dim });
    for (let round = 0; round < 30; round++) big.add(passages.map((_, i) => round * 1000 + i), docs);
    for (let round = 0; round < 29; round++) big.remove(passages.map((_, i) => round * 1000 + i));
    assert.equal(big.size, passages.length);
    const hits = big.search(q, { k: 5, exhaustive: true });
    const ref = build(false).search(q, { k: 5, exhaustive: true });
    assert.deepEqual(hits.map((h) => Number(h.id) - 29000), ref.map((h) => Number(String(h.id).slice(1))));
  });

  it('stores ColBERT vectors as f32, bf16 or int8 with their sizes and error bounds', () => {
    const f32 = build('f32');
    const bf16 = build('bf16');
    const i8 = build('i8');
    assert.ok(f32.colbertBytesPerDocument > 0);
    assert.ok(Math.abs(bf16.colbertBytesPerDocument * 2 - f32.colbertBytesPerDocument) < 1e-9);
    assert.ok(i8.colbertBytesPerDocument < f32.colbertBytesPerDocument / 2);
    assert.equal(build(false).colbertBytesPerDocument, 0);
    const q = qs.row(1);
    const exact = f32.search(q, { k: passages.length, exhaustive: true });
    const byId = new Map(exact.map((h) => [h.id, h.colbert]));
    for (const h of bf16.search(q, { k: passages.length, exhaustive: true })) assert.ok(Math.abs(h.colbert - byId.get(h.id)!) <= 3.93e-3);
    for (const h of i8.search(q, { k: passages.length, exhaustive: true })) assert.ok(Math.abs(h.colbert - byId.get(h.id)!) <= 0.05);
  });

  it('refuses bad input with ERR_INPUT and stays usable; an empty index returns nothing', () => {
    const index = build();
    const code = (fn: () => unknown, pattern: RegExp) =>
      assert.throws(fn, (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && pattern.test(e.message ?? ''));
    const ids = passages.map((_, i) => `x${i}`);
    code(() => index.add(ids.map(() => ({})) as never, docs), /ids\[0\]/);
    code(() => index.add(ids.map((_, i) => (i === 1 ? 'x0' : `x${i}`)), docs), /twice/);
    code(() => index.add(ids.slice(1), docs), /ids for/);
    code(() => HybridIndex.create({ dim: 8 }).add(ids, docs), /dim 32 but the index has dim 8/);
    code(() => HybridIndex.create({ dim: docs.dim, vocabSize: 10 }).add(ids, docs), /vocabSize 10/);
    code(() => index.search(qs.row(0), { k: 0 }), /k/);
    code(() => index.search(qs.row(0), { weights: [-1, 1, 1] }), /weights/);
    code(() => index.search(qs.row(0), { weights: [0, 0, 0] }), /all zero/);
    code(() => index.search(qs.row(0), { routes: ['bm25' as never] }), /routes/);
    code(() => index.search({ dense: new Float32Array(3), sparse: qs.row(0).sparse }), /dim 3/);
    code(() => HybridIndex.create({ dim: 0 }), /dim/);
    code(() => HybridIndex.create({ dim: 4, colbert: 'f16' as never }), /colbert/);
    assert.equal(index.size, passages.length, 'failed adds add nothing');
    assert.equal(index.search(qs.row(0), { k: 3 }).length, 3);
    assert.deepEqual(HybridIndex.create({ dim: docs.dim }).search(qs.row(0)), []);
  });
});

describe('HybridIndex.searchBatch', () => {
  it('equals search() query by query, on 1 and 2 threads', async () => {
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      const docs = await model.encode(passages, { colbert: true });
      const qs = await model.encode(queries, { colbert: true });
      const index = HybridIndex.create({ dim: docs.dim, colbert: 'i8' });
      index.add(passages.map((_, i) => i), docs);
      const one = queries.map((_, i) => index.search(qs.row(i), { k: 7 }));
      assert.deepEqual(index.searchBatch(qs, { k: 7, threads: 1 }), one);
      assert.deepEqual(index.searchBatch(qs, { k: 7, threads: 2 }), one);
      assert.deepEqual(HybridIndex.create({ dim: docs.dim }).searchBatch(qs), queries.map(() => []));
    } finally {
      await model.dispose();
    }
  });
});

describe('HybridIndex dense: hnsw (usearch)', () => {
  it('replacing and removing documents keeps k live results (removed entries of the graph are skipped)', async () => {
    const { syntheticEncoded } = await import('./index_synthetic');
    const ids = Array.from({ length: 40 }, (_, i) => i);
    const index = HybridIndex.create({ dim: 64, vocabSize: 1000, dense: 'hnsw' });
    const exact = HybridIndex.create({ dim: 64, vocabSize: 1000 });
    const options = { k: 10, routes: ['dense'] as Array<'dense'>, weights: [1, 0, 0] as [number, number, number], denseCandidates: 10 };
    for (let round = 0; round < 6; round++) {
      const docs = syntheticEncoded(10 + round, ids.length);
      index.add(ids, docs);  // every round replaces all 40 documents
      exact.add(ids, docs);
      if (round === 3) {
        index.remove(ids.slice(0, 25));
        exact.remove(ids.slice(0, 25));
        ids.splice(0, 25);
      }
      const query = docs.row(docs.count - 1);
      const hits = index.search(query, options);
      assert.equal(hits.length, Math.min(10, ids.length), `round ${round}: ${hits.length} hits`);
      assert.ok(hits.every((h) => ids.includes(h.id as number)));
      // Each hit carries the current document's score: the exact route's for that id.
      const want = new Map(exact.search(query, { ...options, k: 40, denseCandidates: 40 }).map((h) => [h.id, h.dense]));
      for (const h of hits) assert.ok(Math.abs(h.dense - want.get(h.id)!) <= 1e-6);
    }
  });

  it('recalls the exact route\'s top 10 on a 3,000-document corpus, and forgets removed documents across compaction', async () => {
    const { syntheticEncoded } = await import('./index_synthetic');
    const docs = syntheticEncoded(5, 3000);
    const queries = syntheticEncoded(6, 40);
    const exact = HybridIndex.create({ dim: docs.dim, vocabSize: 1000 });
    const hnsw = HybridIndex.create({ dim: docs.dim, vocabSize: 1000, dense: 'hnsw' });
    assert.equal(hnsw.denseRoute, 'hnsw');
    const ids = Array.from({ length: docs.count }, (_, i) => i);
    exact.add(ids, docs);
    hnsw.add(ids, docs);
    let found = 0;
    for (let q = 0; q < queries.count; q++) {
      const options = { k: 10, routes: ['dense'] as Array<'dense'>, weights: [1, 0, 0] as [number, number, number], denseCandidates: 50 };
      const want = exact.search(queries.row(q), options).map((h) => h.id);
      const got = hnsw.search(queries.row(q), options).map((h) => h.id);
      found += got.filter((id) => want.includes(id)).length;
    }
    assert.ok(found / (10 * queries.count) >= 0.9, `recall@10 of the hnsw route ${found / (10 * queries.count)}`);
    // Removing most documents compacts the index and rebuilds the graph from the kept vectors.
    hnsw.remove(ids.slice(0, 2000));
    exact.remove(ids.slice(0, 2000));
    const options = { k: 10, routes: ['dense'] as Array<'dense'>, weights: [1, 0, 0] as [number, number, number], denseCandidates: 1000 };
    const left = hnsw.search(queries.row(0), options);
    assert.ok(left.every((h) => (h.id as number) >= 2000));
    assert.deepEqual(left.map((h) => h.id), exact.search(queries.row(0), options).map((h) => h.id));
  });
});
