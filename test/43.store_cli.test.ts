/**
 * The command line on a PostgreSQL store (pglite:DIR): `index build --store` ingests a corpus with
 * metadata and resumes by id, `search --store` returns the hits an in-process oracle gives (with
 * and without --filter), with text and metadata; and the errors of bad flags, URLs and filters.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BGEM3, HybridIndex } from '../lib';
import { queryLength } from '../lib/base/defaults';
import { DEMO_MODEL, ROOT } from './helpers';
import { generateCorpus, withHalfDense } from './store_support';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-store-cli-'));
const N = 120;

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Hit {
  id: string | number;
  score: number;
  dense: number;
  sparse: number;
  colbert: number;
  text?: string;
  metadata?: Meta;
}
interface Meta { lang: string; year: number; group: number; n: number; tags: string[] }

describe('bge-m3 CLI with --store', () => {
  const corpus = generateCorpus(43, N, 3);
  const corpusFile = path.join(tmp, 'corpus.jsonl');
  const url = `pglite:${path.join(tmp, 'store')}`;
  let model: BGEM3;
  let oracle: HybridIndex;

  before(async () => {
    fs.writeFileSync(corpusFile, corpus.ids.map((id, i) => JSON.stringify({ id, text: corpus.texts[i], metadata: corpus.metadata[i] })).join('\n') + '\n');
    model = await BGEM3.load(DEMO_MODEL);
    oracle = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'bf16' });
    oracle.add(corpus.ids, withHalfDense(await model.encode(corpus.texts, { colbert: true })));
  });
  after(async () => {
    await model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** The oracle's top-k for `query` among the documents whose metadata satisfy `keep`. */
  async function expected(query: string, k: number, keep: (m: Meta) => boolean = () => true) {
    const q = await model.encode([query], { colbert: true, maxLength: queryLength(model.modelMaxLength) });
    return oracle.search(q.row(0), { k: N, exhaustive: true })
      .filter((h) => keep(corpus.metadata[corpus.ids.indexOf(h.id)]))
      .slice(0, k).map((h) => h.id);
  }

  function search(args: string[]): Hit[] {
    const r = run(['search', '--store', url, '--json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { hits: Hit[] }).hits;
  }

  /** Each hit's text and metadata are its document's. */
  function checkDocuments(hits: Hit[]) {
    for (const h of hits) {
      const i = corpus.ids.indexOf(h.id);
      assert.ok(i >= 0, `unknown id ${JSON.stringify(h.id)}`);
      assert.equal(h.text, corpus.texts[i]);
      assert.deepEqual(h.metadata, corpus.metadata[i]);
      for (const part of ['score', 'dense', 'sparse', 'colbert'] as const) assert.equal(typeof h[part], 'number');
    }
  }

  it('index build --store ingests the corpus with its metadata; a second run writes nothing', () => {
    const r = run(['index', 'build', '--in', corpusFile, '--store', url, '--batch', '64', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.deepEqual({ ...summary, seconds: 0, documentsPerSecond: 0 },
      { store: url, table: 'bge_m3', documents: N, written: N, skipped: 0, seconds: 0, documentsPerSecond: 0, colbert: 'bf16' });
    assert.ok(summary.seconds > 0 && summary.documentsPerSecond > 0);
    const again = run(['index', 'build', '--in', corpusFile, '--store', url, '--json']);
    assert.equal(again.code, 0, again.stderr);
    const second = JSON.parse(again.stdout);
    assert.deepEqual([second.written, second.skipped, second.documents], [0, N, N]);
  });

  it('search --store finds a passage from its own text, with the oracle\'s ranking, text and metadata', async () => {
    const own = search([corpus.texts[101], '-k', '5']);
    assert.equal(own[0].id, corpus.ids[101], 'a passage is its own top hit');
    assert.deepEqual(own.map((h) => h.id), await expected(corpus.texts[101], 5));
    checkDocuments(own);
    const hits = search([corpus.queries[0]]);
    assert.equal(hits.length, 10);
    assert.deepEqual(hits.map((h) => h.id), await expected(corpus.queries[0], 10));
    // The plain output lists the hits with their text.
    const plain = run(['search', '--store', url, corpus.texts[7], '-k', '2']);
    assert.equal(plain.code, 0, plain.stderr);
    const first = plain.stdout.split('\n')[0];
    assert.ok(first.includes(`  ${corpus.ids[7]}  ${corpus.texts[7].slice(0, 40)}`), first);
  });

  it('search --filter returns only matching documents, the oracle\'s top-k among them', async () => {
    const cases: Array<[unknown, (m: Meta) => boolean, string]> = [
      [{ lang: 'de', year: { gte: 2010 } }, (m) => m.lang === 'de' && m.year >= 2010, corpus.texts[3]],
      [{ or: [{ group: { in: [1, 2] } }, { year: { lt: 2005 } }] }, (m) => [1, 2].includes(m.group) || m.year < 2005, corpus.queries[1]],
      [{ not: { lang: 'en' }, n: { lt: 60 } }, (m) => m.lang !== 'en' && m.n < 60, corpus.queries[2]],
    ];
    for (const [filter, keep, query] of cases) {
      const matching = corpus.metadata.filter(keep).length;
      assert.ok(matching > 0 && matching < N, `filter ${JSON.stringify(filter)} matches ${matching} documents`);
      const hits = search([query, '-k', '8', '--filter', JSON.stringify(filter)]);
      assert.equal(hits.length, Math.min(8, matching));
      for (const h of hits) assert.ok(keep(h.metadata!), `${JSON.stringify(h.metadata)} does not satisfy ${JSON.stringify(filter)}`);
      assert.deepEqual(hits.map((h) => h.id), await expected(query, 8, keep), `filter ${JSON.stringify(filter)}`);
      checkDocuments(hits);
    }
    const none = run(['search', '--store', url, 'x', '--filter', '{"lang": "xx"}']);
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /no documents match/);
  });

  it('a second build adds only the new lines of a grown corpus', () => {
    const grown = path.join(tmp, 'grown.jsonl');
    const extra = [{ id: 'new-1', text: 'an extra passage about rivers', metadata: { lang: 'en' } }, { id: 'new-2', text: 'and one more' }];
    fs.writeFileSync(grown, fs.readFileSync(corpusFile, 'utf8') + extra.map((d) => JSON.stringify(d)).join('\n') + '\n');
    const r = run(['index', 'build', '--in', grown, '--store', url, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.deepEqual([summary.written, summary.skipped, summary.documents], [2, N, N + 2]);
    const hits = search(['an extra passage about rivers', '-k', '1']);
    assert.deepEqual([hits[0].id, hits[0].text, hits[0].metadata], ['new-1', extra[0].text, { lang: 'en' }]);
  });

  it('index build --out keeps texts and metadata, and search --index takes --filter', async () => {
    const dir = path.join(tmp, 'index');
    const built = run(['index', 'build', '--in', corpusFile, '--out', dir, '--json']);
    assert.equal(built.code, 0, built.stderr);
    const reference = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'f32' });
    reference.add(corpus.ids, await model.encode(corpus.texts, { colbert: true }));
    const query = corpus.queries[1];
    const q = await model.encode([query], { colbert: true, maxLength: queryLength(model.modelMaxLength) });
    const want = reference.search(q.row(0), { k: N, exhaustive: true })
      .filter((h) => corpus.metadata[corpus.ids.indexOf(h.id)].year < 2010).slice(0, 5).map((h) => h.id);
    const r = run(['search', '--index', dir, query, '-k', '5', '--filter', '{"year": {"lt": 2010}}', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const hits = (JSON.parse(r.stdout) as { hits: Hit[] }).hits;
    assert.deepEqual(hits.map((h) => h.id), want);
    checkDocuments(hits);
  });

  it('store import and export move an index directory into a store and back; store info describes it', () => {
    const dir = path.join(tmp, 'index');   // built by the test above
    const imported = `pglite:${path.join(tmp, 'imported')}`;
    const r = run(['store', 'import', '--index', dir, '--store', imported, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([JSON.parse(r.stdout).written, JSON.parse(r.stdout).documents], [N, N]);
    const info = run(['store', 'info', '--store', imported]);
    assert.equal(info.code, 0, info.stderr);
    const described = JSON.parse(info.stdout);
    assert.deepEqual([described.documents, described.colbert, described.dim, described.indexes], [N, 'f32', model.dim, true]);
    assert.ok(described.bytes.toast > 0 && described.bytes.denseIndex > 0);
    const out = path.join(tmp, 'exported');
    const e = run(['store', 'export', '--store', imported, '--out', out, '--json']);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(JSON.parse(e.stdout).documents, N);
    for (const query of corpus.queries) {
      const fromStore = run(['search', '--store', imported, query, '--json', '--filter', '{"lang": {"ne": "de"}}']);
      const fromIndex = run(['search', '--index', out, query, '--json', '--filter', '{"lang": {"ne": "de"}}']);
      const a = (JSON.parse(fromStore.stdout) as { hits: Hit[] }).hits;
      const b = (JSON.parse(fromIndex.stdout) as { hits: Hit[] }).hits;
      assert.deepEqual(b.map((h) => h.id), a.map((h) => h.id));
      b.forEach((h, i) => assert.ok(Math.abs(h.score - a[i].score) <= 1e-6));
      checkDocuments(b);
    }
    const missing = run(['store', 'export', '--store', `pglite:${path.join(tmp, 'nothing')}`, '--out', path.join(tmp, 'x')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no store at/i);
  });

  it('refuses bad flags, URLs, filters and corpus lines with a clear message and exit code 1', () => {
    const fails = (args: string[], message: RegExp) => {
      const r = run(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, message, args.join(' '));
    };
    fails(['search', '--store', url, 'x', '--filter', '{lang: en}'], /ERR_INPUT: --filter is not valid JSON/);
    fails(['search', '--store', url, 'x', '--filter', '{"year": {"after": 2000}}'], /ERR_INPUT: filter\.year\.after: unknown condition 'after'/);
    fails(['search', '--store', url, 'x', '--filter', '[1]'], /ERR_INPUT: filter/);
    fails(['search', '--store', 'mysql://localhost/db', 'x'], /ERR_INPUT: store URL "mysql:\/\/localhost\/db": unknown scheme 'mysql:'/);
    fails(['search', '--store', `pglite:${path.join(tmp, 'missing')}`, 'x'], /no store at .*missing.*bge-m3 index build/i);
    assert.ok(!fs.existsSync(path.join(tmp, 'missing')), 'searching a missing store does not create it');
    fails(['search', '--store', url, '--store-table', 'other', 'x'], /ERR_STORE: The store 'other' .* does not exist; build it with bge-m3 index build/);
    fails(['search', '--store', url, '--index', tmp, 'x'], /exactly one of --index DIR and --store URL, not both/);
    fails(['search', 'x'], /exactly one of --index DIR and --store URL, got neither/);
    fails(['search', '--index', path.join(tmp, 'no-index'), 'x', '--filter', '{"lang": {"in": "en"}}'], /filter\.lang\.in/);
    fails(['index', 'build', '--in', corpusFile, '--store', url, '--out', path.join(tmp, 'ix')], /exactly one of --out DIR and --store URL, not both/);
    fails(['index', 'build', '--in', corpusFile], /exactly one of --out DIR and --store URL, got neither/);
    fails(['index', 'build', '--in', corpusFile, '--store', 'pglite:memory'], /pglite:memory is gone when this command ends/);
    fails(['index', 'build', '--in', corpusFile, '--store', url, '--colbert', 'i8'], /keeps ColBERT vectors as bf16, not i8/);
    fails(['index', 'build', '--in', corpusFile, '--store', url, '--dense', 'hnsw'], /--dense applies to --out/);
    fails(['index', 'build', '--in', corpusFile, '--store', 'postgres://'], /ERR_INPUT: store URL/);
    const bad = path.join(tmp, 'bad.jsonl');
    fs.writeFileSync(bad, '{"id": 1, "text": "a"}\n{"id": 2, "text": "b", "metadata": ["x"]}\n');
    fails(['index', 'build', '--in', bad, '--store', `pglite:${path.join(tmp, 'bad-store')}`], /bad\.jsonl:2: "metadata" must be an object/);
    fs.writeFileSync(bad, '{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n');
    fails(['index', 'build', '--in', bad, '--store', `pglite:${path.join(tmp, 'bad-store')}`], /bad\.jsonl:2: id "1" names the same document as the id on line 1/);
    fs.writeFileSync(bad, '{"id": 1, "text": "a", "metadata": {"k": "\\u0000"}}\n');
    fails(['index', 'build', '--in', bad, '--store', `pglite:${path.join(tmp, 'bad-store')}`], /bad\.jsonl:1: "metadata"\S* holds a NUL character/);
  });

  it('index build --out keeps working on a corpus with metadata', () => {
    const out = path.join(tmp, 'ix');
    const r = run(['index', 'build', '--in', corpusFile, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).documents, N);
    const s = run(['search', '--index', out, corpus.texts[5], '-k', '1', '--json']);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(JSON.parse(s.stdout).hits[0].id, corpus.ids[5]);
  });
});
