/**
 * PgStore on PostgreSQL + pgvector (PGlite in process, and through the wire protocol with `pg`):
 * against HybridIndex as the oracle, with candidate counts that cover the corpus it returns the
 * exhaustive top-10 (dense scores from the fp16 values a halfvec keeps), with default settings it
 * recalls it; filters give the brute-force filtered top-k; writes, reopening, model and schema
 * checks, URLs, and a database that goes away.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, EncodeOutput, HybridIndex } from '../lib';
import { PgStore } from '../lib/store/pg_store';
import { DEMO_MODEL, rejectsWith } from './helpers';
import { generateCorpus, servePglite, withHalfDense, type Corpus } from './store_support';

const N = 2000;
const K = 10;

interface Meta { lang: string; year: number; group: number; n: number; tags: string[] }

describe('PgStore', () => {
  let model: BGEM3;
  let corpus: Corpus;
  let docs: EncodeOutput;
  let qs: EncodeOutput;
  let store: PgStore;
  let oracle: HybridIndex;      // the same vectors, dense rounded to fp16
  let reference: HybridIndex;   // the same vectors, dense in fp32
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-store-'));

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    corpus = generateCorpus(7, N, 24);
    docs = await model.encode(corpus.texts, { colbert: true });
    qs = await model.encode(corpus.queries, { colbert: true });
    store = await PgStore.open('pglite:memory', { model, colbert: 'bf16' });
    // As a bulk load does: the HNSW indexes built after the rows (the other tests insert into built ones).
    await store.dropIndexes();
    await store.add(corpus.ids, docs, { texts: corpus.texts, metadata: corpus.metadata });
    await store.createIndexes();
    oracle = HybridIndex.create({ dim: docs.dim, vocabSize: model.info().vocabSize, colbert: 'bf16' });
    oracle.add(corpus.ids, withHalfDense(docs));
    reference = HybridIndex.create({ dim: docs.dim, vocabSize: model.info().vocabSize, colbert: 'bf16' });
    reference.add(corpus.ids, docs);
  });
  after(async () => {
    await store?.close();
    model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const textOf = (id: string | number) => corpus.texts[corpus.ids.indexOf(id)];

  it('with candidate counts that cover the corpus, returns the exhaustive top-10 with the same scores', async () => {
    assert.equal(await store.count(), N);
    for (let q = 0; q < 12; q++) {
      const want = oracle.search(qs.row(q), { k: K, exhaustive: true });
      const got = await store.search(qs.row(q), { k: K, denseCandidates: N, sparseCandidates: N });
      assert.deepEqual(got.map((h) => h.id), want.map((h) => h.id), `query ${q}`);
      got.forEach((h, i) => {
        for (const part of ['score', 'dense', 'sparse', 'colbert'] as const) {
          assert.ok(Math.abs(h[part] - want[i][part]) <= 2e-6, `query ${q} hit ${i} ${part}: ${h[part]} vs ${want[i][part]}`);
        }
        assert.equal(h.text, textOf(h.id));
        assert.deepEqual(h.metadata, corpus.metadata[corpus.ids.indexOf(h.id)]);
      });
      const exhaustive = await store.search(qs.row(q), { k: K, exhaustive: true });
      assert.deepEqual(exhaustive.map((h) => h.id), want.map((h) => h.id));
    }
  });

  it('with default settings, recalls the fp32 exhaustive top-10 (recall@10 >= 0.98)', async () => {
    let found = 0;
    const batch = await store.searchBatch(qs, { k: K });
    for (let q = 0; q < qs.count; q++) {
      const want = new Set(reference.search(qs.row(q), { k: K, exhaustive: true }).map((h) => h.id));
      found += batch[q].filter((h) => want.has(h.id)).length;
      assert.equal(batch[q].length, K);
    }
    const recall = found / (K * qs.count);
    assert.ok(recall >= 0.98, `recall@10 ${recall}`);
  });

  it('colbertCandidates reranks only the best candidates by dense and lexical scores', async () => {
    const R = 15;
    for (let q = 0; q < 6; q++) {
      // Independently: the R best by the dense + lexical part, then the full fused score among them.
      const partial = oracle.search(qs.row(q), { k: R, exhaustive: true, weights: [1, 0.3, 0] }).map((h) => h.id);
      const full = oracle.search(qs.row(q), { k: N, exhaustive: true }).filter((h) => partial.includes(h.id)).slice(0, K);
      const got = await store.search(qs.row(q), { k: K, denseCandidates: N, sparseCandidates: N, colbertCandidates: R });
      assert.deepEqual(got.map((h) => h.id), full.map((h) => h.id), `query ${q}`);
      got.forEach((h, i) => assert.ok(Math.abs(h.score - full[i].score) <= 2e-6));
    }
    await rejectsWith(store.search(qs.row(0), { colbertCandidates: 0 }), 'ERR_INPUT', /colbertCandidates/);
  });

  it('searches texts with the model it was opened with', async () => {
    const hits = await store.search(corpus.queries[0], { k: 3 });
    const want = oracle.search(qs.row(0), { k: 3, exhaustive: true });
    assert.deepEqual(hits.map((h) => h.id), want.map((h) => h.id));
    const many = await store.searchBatch(corpus.queries.slice(0, 3), { k: 3 });
    assert.equal(many.length, 3);
    assert.deepEqual(many[0].map((h) => h.id), hits.map((h) => h.id));
  });

  // Filters, and an independent predicate for each, written here without the filter module.
  const FILTERS: Array<[unknown, (m: Meta) => boolean]> = [
    [{ lang: 'de' }, (m) => m.lang === 'de'],
    [{ year: { gte: 2010, lt: 2015 } }, (m) => m.year >= 2010 && m.year < 2015],
    [{ and: [{ lang: 'en' }, { not: { group: 3 } }] }, (m) => m.lang === 'en' && m.group !== 3],
    [{ group: { in: [1, 2] }, 'tags.0': 'a' }, (m) => (m.group === 1 || m.group === 2) && m.tags[0] === 'a'],
    [{ or: [{ n: { lt: 3 } }, { n: 1000 }] }, (m) => m.n < 3 || m.n === 1000],
    [{ n: { gt: 5000 } }, () => false],
  ];

  it('filters give exactly the brute-force filtered top-k, inside the routes', async () => {
    for (let q = 0; q < 6; q++) {
      const all = oracle.search(qs.row(q), { k: N, exhaustive: true });
      for (const [filter, keep] of FILTERS) {
        const want = all.filter((h) => keep(corpus.metadata[corpus.ids.indexOf(h.id)])).slice(0, K).map((h) => h.id);
        const covering = await store.search(qs.row(q), { k: K, filter: filter as never, denseCandidates: N, sparseCandidates: N });
        assert.deepEqual(covering.map((h) => h.id), want, `query ${q} filter ${JSON.stringify(filter)}`);
        const exhaustive = await store.search(qs.row(q), { k: K, filter: filter as never, exhaustive: true });
        assert.deepEqual(exhaustive.map((h) => h.id), want);
        // Default candidate counts: still k hits whenever k documents match, every one of them matching.
        const plain = await store.search(qs.row(q), { k: K, filter: filter as never });
        assert.equal(plain.length, want.length, `query ${q} filter ${JSON.stringify(filter)}: ${plain.length} hits`);
        for (const h of plain) assert.ok(keep(h.metadata as unknown as Meta));
      }
    }
    await rejectsWith(store.search(qs.row(0), { filter: { year: { gte: [1] } } as never }), 'ERR_INPUT', /filter\.year\.gte/);
  });

  it('upserts, replaces, removes and gets documents; a bad batch writes nothing', async () => {
    const s = await PgStore.open('pglite:memory', { model, colbert: 'i8', table: 'crud' });
    try {
      const three = await model.encode(['alpha beta', 'gamma delta', 'epsilon'], { colbert: true });
      await s.upsert([{ id: 'a', text: 'alpha beta', metadata: { k: 1 } }, { id: 2, text: 'gamma delta' }, { id: 'c', text: 'epsilon' }]);
      assert.equal(await s.count(), 3);
      assert.deepEqual(await s.get(2), { id: 2, text: 'gamma delta' });
      assert.deepEqual(await s.get('a'), { id: 'a', text: 'alpha beta', metadata: { k: 1 } });
      // Replacing 'a' with the vectors of 'epsilon' makes it tie with 'c' on every score.
      await s.add(['a'], await model.encode(['epsilon'], { colbert: true }), { texts: ['epsilon'], metadata: [{ k: 2 }] });
      assert.equal(await s.count(), 3);
      const hits = await s.search(three.row(2), { k: 3, exhaustive: true });
      assert.deepEqual(hits.slice(0, 2).map((h) => h.id).sort(), ['a', 'c']);
      assert.equal(hits[0].score, hits[1].score);
      assert.deepEqual(hits.find((h) => h.id === 'a')?.metadata, { k: 2 });
      assert.equal(await s.remove(['a', 'nope', 'a']), 1);
      assert.equal(await s.get('a'), undefined);
      assert.equal(await s.count(), 2);
      // One bad document (a NaN, a NUL in a text, duplicate ids, 5 and '5') stops the whole call.
      const bad = await model.encode(['x', 'y'], { colbert: true });
      const nan = await model.encode(['x', 'y'], { colbert: true });
      nan.dense![nan.dim + 1] = NaN;
      await rejectsWith(s.add(['n1', 'n2'], nan), 'ERR_INPUT', /dense vector holds NaN/);
      await rejectsWith(s.add(['n1', 'n2'], bad, { texts: ['ok', 'bad\0'] }), 'ERR_INPUT', /NUL/);
      await rejectsWith(s.add(['n1', 'n2'], bad, { metadata: [{ ok: 1 }, { deep: ['x', 'y\0'] }] }), 'ERR_INPUT', /fields\.metadata\[1\]\.deep\[1\].*NUL/);
      await rejectsWith(s.add(['n1', 'n2'], bad, { metadata: [{ ['k\uD800']: 1 }, undefined] }), 'ERR_INPUT', /surrogate/);
      await rejectsWith(s.add(['n1', 'n2'], bad, { texts: ['\uDC00 lone', 'ok'] }), 'ERR_INPUT', /fields\.texts\[0\].*surrogate/);
      await rejectsWith(s.add([5, '5'], bad), 'ERR_INPUT', /same document/);
      await rejectsWith(s.add(['n1', 'n2'], bad, { metadata: [{ ok: 1 }, [1] as never] }), 'ERR_INPUT', /metadata\[1\]/);
      await rejectsWith(s.upsert([{ id: 'z' }]), 'ERR_INPUT', /no text/);
      assert.equal(await s.count(), 2);
    } finally {
      await s.close();
    }
  });

  it('reopens a pglite directory, refuses another model, a second opener and a newer schema', async () => {
    const dir = path.join(tmp, 'store');
    const first = await PgStore.open(`pglite:${dir}`, { model, colbert: 'f32' });
    await first.add(corpus.ids.slice(0, 100), sliceOutput(docs, 100), { texts: corpus.texts.slice(0, 100) });
    const before = await first.search(qs.row(1), { k: 5 });
    await rejectsWith(PgStore.open(`pglite:${dir}`, { model }), 'ERR_STORE', /open elsewhere/);
    await first.close();
    const again = await PgStore.open(`pglite:${dir}`, { model });
    assert.equal(again.colbert, 'f32');
    assert.equal(await again.count(), 100);
    assert.deepEqual(await again.search(qs.row(1), { k: 5 }), before);
    await again.close();
    await rejectsWith(PgStore.open(`pglite:${dir}`, { model: { dim: docs.dim + 1, vocabSize: 838, name: 'other' } }), 'ERR_MODEL_LAYOUT', /built with the model/);
    await rejectsWith(PgStore.open(`pglite:${dir}`, { dim: 7 }), 'ERR_MODEL_LAYOUT', /dim/);
    // A schema version from the future, and a table that a store did not make.
    const { PGlite } = await import('@electric-sql/pglite');
    const { vector } = await import('@electric-sql/pglite-pgvector');
    const raw = await PGlite.create(dir, { extensions: { vector } });
    await raw.exec(`UPDATE bge_m3_meta SET value = '99' WHERE key = 'schema_version'; CREATE TABLE foreign_documents (id text)`);
    await raw.close();
    await rejectsWith(PgStore.open(`pglite:${dir}`, { model }), 'ERR_STORE', /schema version 99.*newer/);
    await rejectsWith(PgStore.open(`pglite:${dir}`, { model, table: 'foreign' }), 'ERR_STORE', /not made by bge-m3/);
    await rejectsWith(PgStore.open(`pglite:${dir}`, { table: 'absent' }), 'ERR_STORE', /does not exist/);
  });

  it('refuses malformed URLs and table names with the accepted forms', async () => {
    for (const url of ['', 'pglite:', 'mysql://x/y', 'postgres://', 'postgres://h:99999/db', 'just-a-path', 42]) {
      await rejectsWith(PgStore.open(url as string, { model }), 'ERR_INPUT', /pglite:memory/);
    }
    await rejectsWith(PgStore.open('pglite:memory', { model, table: 'Bad-Name' }), 'ERR_INPUT', /table prefix/);
  });

  it('works through the wire protocol (pg), fails clearly when the database goes away and recovers', async () => {
    const server = await servePglite();
    try {
      const remote = await PgStore.open(server.url, { model, colbert: 'bf16', poolSize: 2 });
      assert.equal(remote.url.includes('secret'), false, 'the password is masked');
      await remote.add(corpus.ids.slice(0, 300), sliceOutput(docs, 300), { texts: corpus.texts.slice(0, 300), metadata: corpus.metadata.slice(0, 300) });
      const local = await PgStore.open('pglite:memory', { model, colbert: 'bf16' });
      await local.add(corpus.ids.slice(0, 300), sliceOutput(docs, 300), { texts: corpus.texts.slice(0, 300), metadata: corpus.metadata.slice(0, 300) });
      for (let q = 0; q < 4; q++) {
        const a = await remote.search(qs.row(q), { k: 5, filter: { lang: { ne: 'fr' } } });
        const b = await local.search(qs.row(q), { k: 5, filter: { lang: { ne: 'fr' } } });
        assert.deepEqual(a, b);
      }
      // searchBatch runs its queries on the pool's connections at once, each with search()'s results.
      const batch = await remote.searchBatch(sliceOutput(qs, 6), { k: 5, concurrency: 2 });
      for (let q = 0; q < 6; q++) assert.deepEqual(batch[q], await local.search(qs.row(q), { k: 5 }));
      await local.close();
      // statementTimeoutMs reaches every connection (the server, not PGlite, enforces it).
      const limited = await PgStore.open(server.url, { model, statementTimeoutMs: 1500 });
      const db = (limited as unknown as { db: { query(sql: string): Promise<{ rows: Array<Record<string, unknown>> }> } }).db;
      assert.equal((await db.query('SHOW statement_timeout')).rows[0].statement_timeout, '1500ms');
      await limited.close();
      const inFlight = remote.search(qs.row(0), { k: 5, exhaustive: true });
      await server.stop();
      await assert.rejects(Promise.all([inFlight, remote.search(qs.row(1), { k: 5 })]), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_STORE');
        assert.match(err.message, /postgres:\/\/postgres:\*\*\*@127\.0\.0\.1/);
        assert.doesNotMatch(err.message, /secret/);
        return true;
      });
      await server.restart();
      assert.equal(await remote.count(), 300, 'the next call after the database is back works');
      await remote.close();
    } finally {
      await server.close();
    }
  });
});

function sliceOutput(out: EncodeOutput, n: number): EncodeOutput {
  const s = out.sparse!;
  const c = out.colbert!;
  return new EncodeOutput(n, out.dim, out.dense!.slice(0, n * out.dim),
    { offsets: s.offsets.slice(0, n + 1), ids: s.ids.slice(0, s.offsets[n]), weights: s.weights.slice(0, s.offsets[n]) },
    { offsets: c.offsets.slice(0, n + 1), data: c.data.slice(0, c.offsets[n] * out.dim) });
}
