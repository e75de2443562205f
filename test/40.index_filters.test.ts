/**
 * HybridIndex with stored texts and metadata, and search filters over the metadata: on a
 * synthetic corpus with random metadata, filtered searches equal the brute-force filtered top-k
 * (an unfiltered exhaustive search, filtered by a predicate written here, independently of the
 * filter module); a filter matching k or more documents gives k hits on both dense routes; texts
 * and metadata come back on hits and survive save/load and compaction; documents() rebuilds an
 * equal index; bad fields and filters are ERR_INPUT naming the part.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HybridIndex, M3Error, type DocumentId, type EncodeOutput, type Filter, type HybridIndexOptions, type SearchHit, type SearchOptions } from '../lib';
import { native } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { syntheticEncoded } from './index_synthetic';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-index-filters-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => path.join(tmp, `ix-${dirs++}`);

type Meta = Record<string, unknown> | undefined;
const COUNT = 800;
const DIM = 64;
const LANGS = ['en', 'de', 'fr', 'ja'];
const NAMES = ['Ada', 'Bob', 'Cy'];
const TAGS = ['x', 'y', 'z'];
/** The documents of the very selective filter { lang: 'la' }. */
const LATIN = [17, 404, 777];

const next = mulberry32(4040);
const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)];

function randomMetadata(i: number): Meta {
  if (LATIN.includes(i)) return { lang: 'la', year: 1999 };
  if (next() < 0.15) return undefined;
  const m: Record<string, unknown> = {};
  if (next() < 0.9) m.lang = pick(LANGS);
  if (next() < 0.85) m.year = 2000 + Math.floor(next() * 25);
  if (next() < 0.5) m.score = Math.round(next() * 1000) / 100;
  if (next() < 0.3) m.draft = next() < 0.5;
  if (next() < 0.5) m.author = { name: pick(NAMES) };
  if (next() < 0.4) m.tags = Array.from({ length: 1 + Math.floor(next() * 2) }, () => pick(TAGS));
  return m;
}

const ids: DocumentId[] = Array.from({ length: COUNT }, (_, i) => (i % 3 ? `d${i}` : i));
const encoded = syntheticEncoded(40, COUNT, DIM);
const metadata: Meta[] = ids.map((_, i) => randomMetadata(i));
const texts = ids.map((_, i) => (i % 4 === 3 ? undefined : `text of document ${i}`));
const queries = syntheticEncoded(41, 6, DIM);
const byId = new Map(ids.map((id, i) => [id, i]));

function build(options: Partial<HybridIndexOptions> = {}): HybridIndex {
  const index = HybridIndex.create({ dim: DIM, vocabSize: 1000, colbert: 'f32', ...options });
  index.add(ids, encoded, { texts, metadata });
  return index;
}

// ---- Random filters, each with its meaning as a predicate written here. ----

interface FilterCase {
  filter: Filter;
  test(m: Meta): boolean;
  text: string;
}

/** The value at a dotted path of plain objects (these filters never step into arrays). */
function valueAt(m: Meta, field: string): unknown {
  let at: unknown = m ?? {};
  for (const step of field.split('.')) {
    if (typeof at !== 'object' || at === null || Array.isArray(at) || !Object.prototype.hasOwnProperty.call(at, step)) return undefined;
    at = (at as Record<string, unknown>)[step];
  }
  return at;
}

const VALUES: Record<string, unknown[]> = {
  lang: [...LANGS, 'la', 'xx'], year: [1999, 2000, 2010, 2012, 2024], score: [0, 2.5, 5, 9.99], draft: [true, false],
  'author.name': [...NAMES, 'Dee'], tags: ['x'],
};
const FIELDS = Object.keys(VALUES);

function leaf(): FilterCase {
  const field = pick(FIELDS);
  const v = pick(VALUES[field]) as string | number | boolean;
  const done = (filter: Filter, test: (x: unknown) => boolean): FilterCase =>
    ({ filter, test: (m) => test(valueAt(m, field)), text: JSON.stringify(filter) });
  switch (Math.floor(next() * 6)) {
    case 0: return done({ [field]: v }, (x) => x === v);
    case 1: return done({ [field]: { ne: v } }, (x) => x !== v);
    case 2: {
      const list = [v, pick(VALUES[field]) as string | number | boolean];
      return next() < 0.5 ? done({ [field]: { in: list } }, (x) => list.includes(x as never)) : done({ [field]: { nin: list } }, (x) => !list.includes(x as never));
    }
    case 3: {
      const present = next() < 0.5;
      return done({ [field]: { exists: present } }, (x) => (x !== undefined) === present);
    }
    default: {
      // A range on a number field (numbers), or on lang (strings by code point).
      const numeric = field === 'year' || field === 'score';
      const lo = numeric ? (v as number) : 'de';
      const hi = numeric ? (v as number) + (field === 'year' ? 8 : 3) : 'fr';
      const type = numeric ? 'number' : 'string';
      if (numeric || field === 'lang') {
        return done({ [field]: { gte: lo, lt: hi } }, (x) => typeof x === type && (x as number) >= (lo as number) && (x as number) < (hi as number));
      }
      return done({ [field]: { exists: false } }, (x) => x === undefined);
    }
  }
}

function randomFilter(depth = 0): FilterCase {
  const r = next();
  if (depth >= 2 || r < 0.5) return leaf();
  if (r < 0.7) {
    const items = [randomFilter(depth + 1), randomFilter(depth + 1)];
    return { filter: { and: items.map((c) => c.filter) }, test: (m) => items.every((c) => c.test(m)), text: `and(${items.map((c) => c.text)})` };
  }
  if (r < 0.9) {
    const items = [randomFilter(depth + 1), randomFilter(depth + 1)];
    return { filter: { or: items.map((c) => c.filter) }, test: (m) => items.some((c) => c.test(m)), text: `or(${items.map((c) => c.text)})` };
  }
  const item = randomFilter(depth + 1);
  return { filter: { not: item.filter }, test: (m) => !item.test(m), text: `not(${item.text})` };
}

/** The brute-force filtered top-k: every document scored (unfiltered, exhaustive), then the predicate. */
function bruteForce(index: HybridIndex, q: number, test: (m: Meta) => boolean, k: number, options: SearchOptions = {}): SearchHit[] {
  const all = index.search(queries.row(q), { ...options, k: index.size, exhaustive: true });
  assert.equal(all.length, index.size);
  return all.filter((h) => test(metadata[byId.get(h.id)!])).slice(0, k);
}

const matching = (test: (m: Meta) => boolean) => ids.filter((_, i) => test(metadata[i]));

describe('HybridIndex filters', () => {
  const index = build();
  const hnsw = build({ dense: 'hnsw' });
  const cases = Array.from({ length: 60 }, () => randomFilter());

  it('the random filters range from none to all of the documents', (t) => {
    const counts = cases.map((c) => matching(c.test).length);
    t.diagnostic(`documents matching each of the ${cases.length} filters: ${counts.join(' ')}`);
    assert.ok(counts.some((n) => n < 10), `some filters match fewer than 10: ${counts}`);
    assert.ok(counts.some((n) => n > COUNT / 2), `some filters match most: ${counts}`);
  });

  it('exhaustive and full-coverage filtered searches equal the brute-force filtered top-k', () => {
    const full = { denseCandidates: COUNT, sparseCandidates: COUNT };
    for (const c of cases) {
      for (let q = 0; q < queries.count; q++) {
        const want = bruteForce(index, q, c.test, 10);
        assert.deepEqual(index.search(queries.row(q), { k: 10, exhaustive: true, filter: c.filter }), want, `${c.text}, query ${q}, exhaustive`);
        assert.deepEqual(index.search(queries.row(q), { k: 10, ...full, filter: c.filter }), want, `${c.text}, query ${q}, routes`);
        assert.deepEqual(hnsw.search(queries.row(q), { k: 10, exhaustive: true, filter: c.filter }), want, `${c.text}, query ${q}, hnsw exhaustive`);
      }
      // Weights of one route at a time: each route recalls among the matching documents.
      for (const [routes, weights] of [[['dense'], [1, 0, 0]], [['sparse'], [0, 1, 0]]] as const) {
        const options: SearchOptions = { k: 7, routes: [...routes], weights: [...weights], ...full };
        const want = bruteForce(index, 0, c.test, 7, { weights: [...weights] }).filter((h) => routes[0] === 'dense' || h.sparse > 0);
        assert.deepEqual(index.search(queries.row(0), { ...options, filter: c.filter }), want, `${c.text}, ${routes[0]} route only`);
      }
    }
  });

  it('with default settings, k hits whenever k documents match, on both dense routes; all of them when fewer match', () => {
    let many = 0;
    for (const c of cases) {
      const n = matching(c.test).length;
      for (const ix of [index, hnsw]) {
        for (let q = 0; q < queries.count; q++) {
          const hits = ix.search(queries.row(q), { k: 10, filter: c.filter });
          assert.equal(hits.length, Math.min(10, n), `${c.text} (${n} match), ${ix.denseRoute}, query ${q}`);
          for (const h of hits) assert.ok(c.test(metadata[byId.get(h.id)!]), `${c.text}: hit ${h.id} matches`);
          // The exact dense route recalls every matching document up to its 200 candidates.
          if (ix === index && n <= 200) assert.deepEqual(hits, bruteForce(index, q, c.test, 10), `${c.text}, query ${q}`);
        }
      }
      if (n >= 10) many++;
    }
    assert.ok(many > 10, `${many} filters match 10 or more documents`);
  });

  it('a very selective filter returns exactly its documents with default settings', () => {
    const want = LATIN.map((i) => ids[i]).sort();
    for (const ix of [index, hnsw]) {
      for (let q = 0; q < queries.count; q++) {
        const hits = ix.search(queries.row(q), { filter: { lang: 'la' } });
        assert.deepEqual(hits.map((h) => h.id).sort(), want, ix.denseRoute);
        assert.deepEqual(hits, bruteForce(index, q, (m) => m?.lang === 'la', 10));
        assert.deepEqual(ix.search(queries.row(q), { filter: { lang: 'la' }, routes: ['dense'] }).map((h) => h.id).sort(), want, 'the dense route alone');
      }
    }
    assert.deepEqual(index.search(queries.row(0), { filter: { lang: 'tlh' } }), [], 'a filter nothing matches');
    assert.deepEqual(index.searchBatch(queries, { filter: { lang: 'tlh' } }), Array.from({ length: queries.count }, () => []));
  });

  it('the hnsw route over-fetches from its graph past the documents a broad filter refuses', (t) => {
    // Few candidates, dense only: the graph's answer, filtered, must still hold k matching ones.
    const route = (hnsw as unknown as { route: { candidates(...args: unknown[]): Uint32Array | undefined } }).route;
    const candidates = t.mock.method(route, 'candidates');
    const options: SearchOptions = { k: 10, routes: ['dense'], weights: [1, 0, 0], denseCandidates: 10 };
    const broad: Array<{ filter: Filter; test: (m: Meta) => boolean }> = [{ filter: { lang: { ne: 'en' } }, test: (m: Meta) => m?.lang !== 'en' },
      { filter: { draft: { ne: true } }, test: (m: Meta) => m?.draft !== true }];
    let found = 0;
    let asked = 0;
    for (const c of broad) {
      assert.ok(matching(c.test).length > COUNT * 0.6);
      for (let q = 0; q < queries.count; q++) {
        const hits = hnsw.search(queries.row(q), { ...options, filter: c.filter });
        assert.equal(hits.length, 10);
        for (const h of hits) assert.ok(c.test(metadata[byId.get(h.id)!]));
        const want = index.search(queries.row(q), { ...options, filter: c.filter }).map((h) => h.id);
        found += hits.filter((h) => want.includes(h.id)).length;
        asked += 10;
      }
    }
    assert.ok(found / asked >= 0.9, `recall@10 of the filtered hnsw route ${found / asked}`);
    const fromGraph = candidates.mock.calls.filter((c) => c.result !== undefined).length;
    t.diagnostic(`${fromGraph} of ${candidates.mock.callCount()} filtered searches answered by the graph`);
    assert.ok(fromGraph >= candidates.mock.callCount() / 2, `${fromGraph} of ${candidates.mock.callCount()} answered by the graph, not the exact scan`);
    candidates.mock.restore();
    // A selective filter leaves the graph alone: the exact scan over the matching slots answers.
    const selective = t.mock.method(route, 'candidates');
    assert.equal(hnsw.search(queries.row(0), { ...options, filter: { lang: 'la' } }).length, 3);
    assert.equal(selective.mock.calls[0].result, undefined);
  });

  it('searchBatch with a filter equals search, on both routes and on several threads', () => {
    for (const c of cases.slice(0, 20)) {
      for (const ix of [index, hnsw]) {
        const one = Array.from({ length: queries.count }, (_, q) => ix.search(queries.row(q), { k: 5, filter: c.filter }));
        assert.deepEqual(ix.searchBatch(queries, { k: 5, filter: c.filter }), one, c.text);
        assert.deepEqual(ix.searchBatch(queries, { k: 5, filter: c.filter, threads: 2 }), one, c.text);
      }
    }
  });

  it('hits carry the text and metadata they were added with; get and has find them', () => {
    const hits = index.search(queries.row(0), { k: COUNT, exhaustive: true });
    for (const h of hits) {
      const i = byId.get(h.id)!;
      assert.equal('text' in h, texts[i] !== undefined);
      assert.equal('metadata' in h, metadata[i] !== undefined);
      assert.equal(h.text, texts[i]);
      assert.deepEqual(h.metadata, metadata[i]);
      assert.deepEqual(index.get(h.id), { id: h.id, ...(texts[i] !== undefined ? { text: texts[i] } : {}), ...(metadata[i] ? { metadata: metadata[i] } : {}) });
      assert.ok(index.has(h.id));
    }
    assert.equal(index.get('no-such-id'), undefined);
    assert.equal(index.has('no-such-id'), false);
    assert.equal(index.has(1), false, 'ids are not coerced: 1 is not "d1"');
  });

  it('metadata is a frozen copy: the caller\'s object may change, the stored one does not', () => {
    const ix = HybridIndex.create({ dim: DIM, vocabSize: 1000 });
    const mine = { lang: 'en', author: { name: 'Ada' } };
    ix.add(['a'], encoded.slice(0, 1), { metadata: [mine] });
    mine.lang = 'de';
    mine.author.name = 'Bob';
    const stored = ix.get('a')!.metadata!;
    assert.deepEqual(stored, { lang: 'en', author: { name: 'Ada' } });
    assert.ok(Object.isFrozen(stored) && Object.isFrozen(stored.author));
    assert.throws(() => { (stored as Record<string, unknown>).lang = 'fr'; }, TypeError, 'module code is strict: writes to it throw');
    assert.equal(ix.search(queries.row(0), { filter: { lang: 'en' } }).length, 1);
    assert.equal(ix.search(queries.row(0), { filter: { lang: 'de' } }).length, 0);
    // Undefined values of an object are left out, as JSON leaves them out.
    ix.add(['b'], encoded.slice(1, 2), { metadata: [{ lang: 'en', draft: undefined }] });
    assert.deepEqual(ix.get('b'), { id: 'b', metadata: { lang: 'en' } });
  });

  it('re-adding an id replaces its text and metadata (left out: none), and filters see the new metadata', () => {
    const ix = build({ colbert: false });
    const id = ids[5];
    ix.add([id], encoded.slice(5, 6), { texts: ['new text'], metadata: [{ lang: 'xx' }] });
    assert.deepEqual(ix.get(id), { id, text: 'new text', metadata: { lang: 'xx' } });
    assert.deepEqual(ix.search(queries.row(0), { filter: { lang: 'xx' } }).map((h) => [h.id, h.text]), [[id, 'new text']]);
    ix.add([id], encoded.slice(5, 6));
    assert.deepEqual(ix.get(id), { id });
    assert.deepEqual(ix.search(queries.row(0), { filter: { lang: 'xx' } }), []);
    ix.add([id], encoded.slice(5, 6), { texts: [undefined], metadata: [null as never] });
    assert.deepEqual(ix.get(id), { id });
    assert.equal(ix.size, COUNT);
  });

  it('refuses bad filters with ERR_INPUT naming the part, on search and searchBatch', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{}, /empty filter/], ['lang', /expected an object/], [{ year: { between: [1, 2] } }, /unknown condition 'between'/],
      [{ 'bad field!': 1 }, /field name/], [{ and: [] }, /non-empty array/], [{ year: { gte: [2020] } }, /range bound/],
      [{ lang: { in: 'en' } }, /array/], [null, /expected an object/],
    ];
    for (const [filter, pattern] of bad) {
      for (const run of [() => index.search(queries.row(0), { filter: filter as Filter }), () => hnsw.searchBatch(queries, { filter: filter as Filter })]) {
        assert.throws(run, (e: unknown) => e instanceof M3Error && e.code === 'ERR_INPUT' && /^filter/.test(e.message) && pattern.test(e.message),
          JSON.stringify(filter));
      }
    }
  });

  it('the native search refuses an allow mask of the wrong length or type', () => {
    const ix = new (native().HybridIndexNative)(DIM, 1000, null);
    ix.add(encoded.dense!, encoded.sparse!.offsets, encoded.sparse!.ids, encoded.sparse!.weights, null, null);
    const q = queries.row(0);
    const params = { k: 5, wDense: 1, wSparse: 0.3, wColbert: 0, denseCandidates: 5, sparseCandidates: 5, denseRoute: true, sparseRoute: true, exhaustive: false, threads: 1 };
    const refused = (allowed: unknown, pattern: RegExp) => {
      for (const run of [() => ix.search(q.dense!, q.sparse!.ids, q.sparse!.weights, null, { ...params, allowed: allowed as Uint8Array }),
        () => ix.searchBatch(queries.dense!, queries.sparse!.offsets, queries.sparse!.ids, queries.sparse!.weights, null, null, { ...params, allowed: allowed as Uint8Array })]) {
        assert.throws(run, (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && pattern.test(e.message ?? ''), String(allowed));
      }
    };
    refused(new Uint8Array(COUNT - 1), /params\.allowed has 799 bytes but the index has 800 slots/);
    refused(new Uint8Array(COUNT + 1), /801 bytes/);
    refused(new Int8Array(COUNT), /Uint8Array for params\.allowed/);
    refused(Array.from({ length: COUNT }, () => 1), /Uint8Array for params\.allowed/);
    const mask = new Uint8Array(COUNT);
    mask[3] = mask[500] = 1;
    assert.deepEqual([...ix.search(q.dense!, q.sparse!.ids, q.sparse!.weights, null, { ...params, allowed: mask }).slots].sort((a, b) => a - b), [3, 500]);
  });

  it('refuses bad texts and metadata with ERR_INPUT naming the entry, and adds nothing', () => {
    const ix = HybridIndex.create({ dim: DIM, vocabSize: 1000 });
    const four = encoded.slice(0, 4);
    const fourIds = ['a', 'b', 'c', 'd'];
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = { back: cyclic };
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 70; i++) deep = { deep };
    const at3 = (m: unknown) => [undefined, {}, { ok: true }, m];
    const refused: Array<[unknown, RegExp]> = [
      [{ metadata: at3([1, 2]) }, /plain JSON object.*fields\.metadata\[3\].*an array/],
      [{ metadata: at3('lang=en') }, /plain JSON object.*fields\.metadata\[3\]/],
      [{ metadata: at3(new Date(0)) }, /plain JSON object.*fields\.metadata\[3\].*Date/],
      [{ metadata: at3({ when: new Date(0) }) }, /toISOString.*fields\.metadata\[3\]\.when/],
      [{ metadata: at3({ year: NaN }) }, /finite number.*fields\.metadata\[3\]\.year/],
      [{ metadata: at3({ n: 10n }) }, /JSON value.*fields\.metadata\[3\]\.n/],
      [{ metadata: at3({ f: () => 1 }) }, /JSON value.*fields\.metadata\[3\]\.f.*function/],
      [{ metadata: at3({ list: [1, undefined] }) }, /fields\.metadata\[3\]\.list\[1\]/],
      [{ metadata: at3(cyclic) }, /fields\.metadata\[3\]\.self\.back: metadata refers to itself/],
      [{ metadata: at3(deep) }, /fields\.metadata\[3\].*nests more than 64 levels/],
      [{ metadata: at3({ blob: 'x'.repeat(70_000) }) }, /fields\.metadata\[3\] is 70\d{3} bytes as JSON, more than the 65536.*fields\.texts/],
      [{ metadata: [{}] }, /fields\.metadata has 1 entries for 4 ids/],
      [{ metadata: { 0: {} } }, /array of 4 entries.*fields\.metadata/],
      [{ texts: ['a', 'b', 'c', 5] }, /a string.*fields\.texts\[3\].*number 5/],
      [{ texts: ['a'] }, /fields\.texts has 1 entries for 4 ids/],
      [{ text: ['a', 'b', 'c', 'd'] }, /unknown key "text"/],
      [[], /an object \{ texts\?, metadata\? \} for fields/],
    ];
    for (const [fields, pattern] of refused) {
      assert.throws(() => ix.add(fourIds, four, fields as never), (e: unknown) => e instanceof M3Error && e.code === 'ERR_INPUT' && pattern.test(e.message),
        `${pattern}`);
    }
    assert.equal(ix.size, 0, 'failed adds add nothing');
    assert.equal(ix.get('a'), undefined);
    // Just under the limit is fine.
    ix.add(fourIds, four, { metadata: at3({ blob: 'x'.repeat(65_000) }) as never });
    assert.equal((ix.get('d')!.metadata!.blob as string).length, 65_000);
    assert.throws(() => ix.get({} as never), (e: unknown) => e instanceof M3Error && e.code === 'ERR_INPUT' && /for id/.test(e.message));
  });

  it('save and load keep texts and metadata; filters work after load, after remove and after compaction', () => {
    for (const ix of [build(), build({ dense: 'hnsw', colbert: 'i8' })]) {
      const dir = freshDir();
      ix.save(dir);
      const loaded = HybridIndex.load(dir);
      for (const id of ids) assert.deepEqual(loaded.get(id), ix.get(id));
      assert.ok(Object.isFrozen(loaded.get(ids[1])!.metadata), 'loaded metadata is frozen too');
      for (const c of cases.slice(0, 15)) {
        for (let q = 0; q < 2; q++) {
          assert.deepEqual(loaded.search(queries.row(q), { k: 10, filter: c.filter }), ix.search(queries.row(q), { k: 10, filter: c.filter }), c.text);
        }
      }
      // Removing a third, then adding and removing enough documents to compact the index.
      const removed = new Set(ids.filter((_, i) => i % 3 === 1));
      loaded.remove([...removed]);
      const extra = syntheticEncoded(42, 1100, DIM);
      const extraIds = Array.from({ length: 1100 }, (_, i) => `extra-${i}`);
      loaded.add(extraIds, extra, { texts: extraIds, metadata: extraIds.map(() => ({ lang: 'en' })) });
      loaded.remove(extraIds);
      assert.equal(loaded.size, COUNT - removed.size);
      for (const c of cases.slice(0, 15)) {
        for (let q = 0; q < 2; q++) {
          const all = loaded.search(queries.row(q), { k: loaded.size, exhaustive: true });
          const want = all.filter((h) => c.test(metadata[byId.get(h.id)!])).slice(0, 10);
          assert.deepEqual(loaded.search(queries.row(q), { k: 10, exhaustive: true, filter: c.filter }), want, c.text);
          for (const h of loaded.search(queries.row(q), { k: 10, filter: c.filter })) {
            assert.ok(!removed.has(h.id) && c.test(metadata[byId.get(h.id)!]));
            assert.equal(h.text, texts[byId.get(h.id)!], 'texts follow their documents through compaction');
          }
        }
      }
      const again = freshDir();
      loaded.save(again);
      const reloaded = HybridIndex.load(again);
      for (const id of ids) assert.deepEqual(reloaded.get(id), removed.has(id) ? undefined : ix.get(id));
    }
  });
});

describe('HybridIndex.documents', () => {
  /** An index with removed and replaced documents, so that slots and ids are out of step. */
  function churned(colbert: 'f32' | 'bf16' | 'i8' | false, dense: 'exact' | 'hnsw' = 'exact'): HybridIndex {
    const ix = build({ colbert, dense });
    ix.remove(ids.filter((_, i) => i % 5 === 2));
    ix.add([ids[10], ids[11]], encoded.slice(600, 602), { texts: ['replaced', undefined], metadata: [{ lang: 'xx' }, undefined] });
    return ix;
  }

  function rebuilt(ix: HybridIndex, batchSize: number): HybridIndex {
    const copy = HybridIndex.create({ dim: ix.dim, vocabSize: ix.vocabSize, colbert: ix.colbert, dense: ix.denseRoute });
    for (const batch of ix.documents(batchSize)) {
      assert.ok(batch.ids.length <= batchSize && batch.ids.length > 0);
      assert.equal(batch.encoded.count, batch.ids.length);
      assert.equal(batch.texts.length, batch.ids.length);
      assert.equal(batch.metadata.length, batch.ids.length);
      assert.equal(!!batch.encoded.colbert, !!ix.colbert);
      copy.add(batch.ids, batch.encoded, { texts: batch.texts, metadata: batch.metadata });
    }
    return copy;
  }

  for (const colbert of ['f32', 'bf16', false] as const) {
    it(`rebuilds an index with identical exhaustive results (${colbert || 'no'} ColBERT)`, () => {
      const ix = churned(colbert);
      const copy = rebuilt(ix, 97);
      assert.equal(copy.size, ix.size);
      for (let q = 0; q < queries.count; q++) {
        const options: SearchOptions = { k: ix.size, exhaustive: true };
        assert.deepEqual(copy.search(queries.row(q), options), ix.search(queries.row(q), options));
        assert.deepEqual(copy.search(queries.row(q), { k: 10, filter: { lang: 'en' } }), ix.search(queries.row(q), { k: 10, filter: { lang: 'en' } }));
      }
      // Exported again, the same bytes.
      const flat = (x: HybridIndex) => [...x.documents(1000)];
      assert.deepEqual(flat(copy).map((b) => [b.ids, b.texts, b.metadata, b.encoded.dense, b.encoded.sparse, b.encoded.colbert]),
        flat(ix).map((b) => [b.ids, b.texts, b.metadata, b.encoded.dense, b.encoded.sparse, b.encoded.colbert]));
    });
  }

  it('rebuilds an int8 index with near-identical results, and an hnsw one with the same documents', () => {
    const ix = churned('i8');
    const copy = rebuilt(ix, 1000);
    for (let q = 0; q < queries.count; q++) {
      const options: SearchOptions = { k: ix.size, exhaustive: true };
      const want = new Map(ix.search(queries.row(q), options).map((h) => [h.id, h]));
      const got = copy.search(queries.row(q), options);
      assert.equal(got.length, want.size);
      for (const h of got) {
        const w = want.get(h.id)!;
        assert.ok(Math.abs(h.colbert - w.colbert) <= 1e-5 && Math.abs(h.score - w.score) <= 1e-5, `${h.id}: ${h.colbert} vs ${w.colbert}`);
        assert.equal(h.dense, w.dense);
        assert.equal(h.sparse, w.sparse);
        assert.deepEqual([h.text, h.metadata], [w.text, w.metadata]);
      }
    }
    const graph = churned('bf16', 'hnsw');
    const graphCopy = rebuilt(graph, 250);
    assert.equal(graphCopy.denseRoute, 'hnsw');
    for (let q = 0; q < queries.count; q++) {
      assert.deepEqual(graphCopy.search(queries.row(q), { k: 20, exhaustive: true }), graph.search(queries.row(q), { k: 20, exhaustive: true }));
    }
  });

  it('an empty index yields nothing; the ColBERT rows decode to what was added', () => {
    assert.deepEqual([...HybridIndex.create({ dim: DIM, vocabSize: 1000 }).documents()], []);
    const ix = HybridIndex.create({ dim: DIM, vocabSize: 1000, colbert: 'f32' });
    ix.add(ids.slice(0, 30), encoded.slice(0, 30));
    const [batch, ...rest] = [...ix.documents()];
    assert.equal(rest.length, 0);
    const first30: EncodeOutput = encoded.slice(0, 30);
    assert.deepEqual(batch.encoded.dense, first30.dense);
    assert.deepEqual(batch.encoded.sparse, { offsets: first30.sparse!.offsets, ids: first30.sparse!.ids, weights: first30.sparse!.weights });
    assert.deepEqual(batch.encoded.colbert!.offsets, first30.colbert!.offsets);
    assert.deepEqual(batch.encoded.colbert!.data, first30.colbert!.data);
    assert.deepEqual(batch.texts, new Array(30).fill(undefined));
    assert.throws(() => ix.documents(0), (e: unknown) => e instanceof M3Error && e.code === 'ERR_INPUT' && /batchSize/.test(e.message));
  });
});
