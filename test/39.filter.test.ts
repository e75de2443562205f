/**
 * The metadata filter language: its JavaScript predicate and its SQL (run by PostgreSQL itself,
 * in PGlite) are two independent implementations of one meaning, compared on random documents
 * and random filters; a bad filter is an ERR_INPUT that names the part that is wrong.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { PGlite } from '@electric-sql/pglite';
import { MetadataFilter } from '../lib/retrieval/filter';
import { mulberry32 } from '../lib/base/rng';

const next = mulberry32(2026);
const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)];
const LANGS = ['en', 'de', 'fr', 'zh', 'é', '😀', 'Z', ''];
const SCALARS = [0, 1, -1, 2.5, 1e21, 0.1, 'en', 'de', 'a', 'A', '', true, false, null, '2024-01-01', '2023-12-31'];

function randomDoc(): Record<string, unknown> {
  const doc: Record<string, unknown> = {};
  if (next() < 0.8) doc.lang = pick(LANGS);
  if (next() < 0.8) doc.year = 2015 + Math.floor(next() * 12);
  if (next() < 0.5) doc.score = Math.round(next() * 1000) / 100;
  if (next() < 0.3) doc.flag = next() < 0.5;
  if (next() < 0.2) doc.empty = null;
  if (next() < 0.3) doc.mixed = pick(SCALARS);
  if (next() < 0.4) doc.author = next() < 0.8 ? { name: pick(['Ada', 'Bob', 'Cy']), age: Math.floor(next() * 90) } : 'anonymous';
  if (next() < 0.3) doc.tags = Array.from({ length: Math.floor(next() * 3) }, () => pick(['x', 'y', 'z']));
  if (next() < 0.2) doc.date = pick(['2024-01-01', '2023-12-31', '2024-06-15']);
  return doc;
}

const FIELDS = ['lang', 'year', 'score', 'flag', 'empty', 'mixed', 'author.name', 'author.age', 'author', 'tags.0', 'tags.-1', 'date', 'nope'];

function randomCondition(): unknown {
  const field = pick(FIELDS);
  switch (Math.floor(next() * 8)) {
    case 0: return { [field]: pick(SCALARS) };
    case 1: return { [field]: { ne: pick(SCALARS) } };
    case 2: return { [field]: { in: [pick(SCALARS), pick(SCALARS), pick(LANGS)] } };
    case 3: return { [field]: { nin: [pick(SCALARS), pick(LANGS)] } };
    case 4: return { [field]: { exists: next() < 0.5 } };
    case 5: return { [field]: { [pick(['gt', 'gte', 'lt', 'lte'])]: pick([2018, 2020.5, 5, 0, 'en', 'b', '2024-01-01', '😀']) } };
    case 6: return { [field]: { gte: pick([2016, 1, 'a']), lt: pick([2022, 7, 'z']) } };
    default: return { [field]: pick(SCALARS), [pick(FIELDS)]: { exists: true } };
  }
}

function randomFilter(depth: number): unknown {
  const r = next();
  if (depth <= 0 || r < 0.45) return randomCondition();
  if (r < 0.65) return { and: Array.from({ length: 1 + Math.floor(next() * 3) }, () => randomFilter(depth - 1)) };
  if (r < 0.85) return { or: Array.from({ length: 1 + Math.floor(next() * 3) }, () => randomFilter(depth - 1)) };
  return { not: randomFilter(depth - 1) };
}

describe('metadata filters', () => {
  let db: PGlite;
  const docs = Array.from({ length: 300 }, randomDoc);
  before(async () => {
    db = new PGlite();
    await db.exec('CREATE TABLE docs (id int PRIMARY KEY, metadata jsonb NOT NULL)');
    for (let i = 0; i < docs.length; i++) await db.query('INSERT INTO docs VALUES ($1, $2::jsonb)', [i, JSON.stringify(docs[i])]);
  });
  after(async () => db.close());

  it('the predicate and the SQL select the same documents for 400 random filters', async () => {
    let nonTrivial = 0;
    for (let trial = 0; trial < 400; trial++) {
      const raw = randomFilter(3);
      const filter = MetadataFilter.parse(raw);
      const expected = docs.map((d, i) => (filter.matches(d) ? i : -1)).filter((i) => i >= 0);
      const { sql, params } = filter.toSql('metadata', 2);
      const rows = await db.query<{ id: number }>(`SELECT id FROM docs WHERE $1::int IS NOT NULL AND ${sql} ORDER BY id`, [0, ...params]);
      assert.deepEqual(rows.rows.map((r) => r.id), expected, JSON.stringify(raw));
      if (expected.length > 0 && expected.length < docs.length) nonTrivial++;
    }
    assert.ok(nonTrivial > 60, `only ${nonTrivial} filters split the documents`);
  });

  it('hand-written cases mean what the grammar says', () => {
    const m = (f: unknown, d: unknown) => MetadataFilter.parse(f).matches(d);
    assert.equal(m({ year: 2020 }, { year: 2020 }), true);
    assert.equal(m({ year: 2020 }, { year: '2020' }), false, '1 is not "1"');
    assert.equal(m({ year: { gt: 2019 } }, { year: '2020' }), false, 'a string field is never above a number');
    assert.equal(m({ lang: { ne: 'en' } }, {}), true, 'ne matches a missing field');
    assert.equal(m({ empty: { exists: true } }, { empty: null }), true, 'null is present');
    assert.equal(m({ empty: null }, {}), false, 'missing is not null');
    assert.equal(m({ 'author.name': 'Ada' }, { author: { name: 'Ada' } }), true);
    assert.equal(m({ 'tags.-1': 'z' }, { tags: ['x', 'z'] }), true);
    assert.equal(m({ date: { gte: '2024-01-01', lt: '2025-01-01' } }, { date: '2024-06-15' }), true);
    assert.equal(m({ and: [{ a: 1 }, { not: { b: 2 } }] }, { a: 1, b: 3 }), true);
    assert.equal(m({ a: 1, b: 2 }, { a: 1 }), false, 'several keys must all hold');
  });

  it('a bad filter names the part that is wrong', () => {
    const refuses = (f: unknown, message: RegExp) =>
      assert.throws(() => MetadataFilter.parse(f), (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && message.test(e.message ?? ''));
    refuses([], /expected an object/);
    refuses({}, /empty filter/);
    refuses({ year: { between: [1, 2] } }, /filter\.year\.between: unknown condition 'between'/);
    refuses({ year: { gt: null } }, /filter\.year\.gt: a range bound is a finite number or a string/);
    refuses({ tags: ['a'] }, /filter\.tags: the value of tags must be/);
    refuses({ and: [] }, /filter\.and: expected a non-empty array/);
    refuses({ or: [{ a: 1 }, { 'a b': 1 }] }, /filter\.or\[1\]\.a b: field name/);
    refuses({ x: { in: [{}] } }, /filter\.x\.in: expected an array/);
    refuses({ x: Number.NaN }, /filter\.x: the value of x must be/);
    let deep: unknown = { a: 1 };
    for (let i = 0; i < 40; i++) deep = { not: deep };
    refuses(deep, /nested more than 32 levels/);
    assert.throws(() => MetadataFilter.parse({ a: 1 }).toSql('metadata; DROP TABLE docs'), /not a plain identifier/);
  });
});
