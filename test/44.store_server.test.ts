/**
 * The HTTP server on a PostgreSQL store: POST /documents encodes and upserts through the batcher
 * (in chunks, so a query is answered during a large write), POST /search finds the documents
 * with their text and metadata and honours `filter`, DELETE /documents/:id removes one; the API
 * key guards the writes, a database that is down answers 503, and `bge-m3 serve --store` runs as
 * a process that closes its store on SIGTERM.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BGEM3, HybridIndex } from '../lib';
import { createServer, type M3Server, type ServerOptions } from '../lib/server';
import { PgStore } from '../lib/store/pg_store';
import { DEMO_MODEL, ROOT, assertClose } from './helpers';
import { generateCorpus, servePglite } from './store_support';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-store-server-'));

interface Meta { lang: string; year: number; group: number; n: number; tags: string[] }
interface Hit { id: string | number; score: number; dense: number; sparse: number; colbert: number; text?: string; metadata?: Meta }
interface ErrorBody { error: { message: string; type: string; code: string } }

describe('bge-m3 serve with a store', () => {
  let model: BGEM3;
  let store: PgStore;
  let server: M3Server;
  const servers: M3Server[] = [];
  const stores: PgStore[] = [];
  const corpus = generateCorpus(44, 80, 2);
  const documents = corpus.ids.map((id, i) => ({ id, text: corpus.texts[i], metadata: corpus.metadata[i] }));

  const make = async (options: Omit<ServerOptions, 'model'>) => {
    const s = await createServer({ model, ...options });
    servers.push(s);
    return s;
  };
  const open = async (url: string) => {
    const s = await PgStore.open(url, { model, poolSize: 2, connectTimeoutMs: 2000 });
    stores.push(s);
    return s;
  };
  const post = (s: M3Server, url: string, payload: unknown, headers: Record<string, string> = {}) =>
    s.app.inject({ method: 'POST', url, payload: payload as string, headers: { 'content-type': 'application/json', ...headers } });
  const del = (s: M3Server, id: string, headers: Record<string, string> = {}) =>
    s.app.inject({ method: 'DELETE', url: `/documents/${encodeURIComponent(id)}`, headers });
  const expectError = (res: { statusCode: number; json(): unknown }, status: number, code: string, message?: RegExp) => {
    assert.equal(res.statusCode, status, `status ${res.statusCode}: ${JSON.stringify(res.json())}`);
    const body = res.json() as ErrorBody;
    assert.equal(body.error.code, code, JSON.stringify(body));
    if (message) assert.match(body.error.message, message);
  };
  const search = async (s: M3Server, body: Record<string, unknown>) => {
    const res = await post(s, '/search', body);
    assert.equal(res.statusCode, 200, res.body);
    return (res.json() as { hits: Hit[] }).hits;
  };

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    store = await open('pglite:memory');
    server = await make({ store });
  });
  after(async () => {
    for (const s of servers) await s.close();
    for (const s of stores) await s.close();
    await model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('POST /documents encodes and stores every document with its text, metadata and vectors', async () => {
    const res = await post(server, '/documents', { documents });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), { upserted: documents.length });
    assert.equal(await store.count(), documents.length);
    // 80 documents are encoded in several requests of the batcher; the joined vectors are each text's own.
    const want = await model.encode(corpus.texts, { colbert: true });
    const stored = new Map<string, { dense: Float32Array; ids: number[]; colbert: number }>();
    for await (const batch of store.documents(1000)) {
      batch.ids.forEach((id, i) => {
        const row = batch.encoded.row(i);
        stored.set(String(id), { dense: row.dense!, ids: Array.from(row.sparse!.ids), colbert: row.colbert!.length });
        assert.equal(batch.texts[i], corpus.texts[corpus.ids.indexOf(id)]);
        assert.deepEqual(batch.metadata[i], corpus.metadata[corpus.ids.indexOf(id)]);
      });
    }
    corpus.ids.forEach((id, i) => {
      const got = stored.get(String(id))!;
      const row = want.row(i);
      assertClose(got.dense, row.dense!, `dense of ${id}`, 2e-3);
      assert.deepEqual(got.ids, Array.from(row.sparse!.ids), `sparse ids of ${id}`);
      assert.equal(got.colbert, row.colbert!.length, `ColBERT vectors of ${id}`);
    });
  });

  it('POST /search finds a document from its own text, with its text and metadata, and honours filter', async () => {
    for (const i of [0, 41]) {
      const hits = await search(server, { query: corpus.texts[i], k: 3 });
      assert.equal(hits[0].id, corpus.ids[i]);
      assert.equal(hits[0].text, corpus.texts[i]);
      assert.deepEqual(hits[0].metadata, corpus.metadata[i]);
    }
    const keep = (m: Meta) => m.lang === 'fr' || m.year < 2008;
    const matching = corpus.metadata.filter(keep).length;
    const filter = { or: [{ lang: 'fr' }, { year: { lt: 2008 } }] };
    const hits = await search(server, { query: corpus.queries[0], k: 50, filter, exhaustive: true });
    assert.equal(hits.length, Math.min(50, matching));
    for (const h of hits) assert.ok(keep(h.metadata!), JSON.stringify(h.metadata));
    // The same ranking as an exhaustive search of the unfiltered store, less the documents the filter drops.
    const all = await search(server, { query: corpus.queries[0], k: 80, exhaustive: true });
    assert.deepEqual(hits.map((h) => h.id), all.filter((h) => keep(h.metadata!)).slice(0, 50).map((h) => h.id));
    assert.deepEqual(await search(server, { query: 'x', filter: { lang: 'xx' } }), []);
  });

  it('refuses a bad filter, a bad document and a filter on an index with 400s that say why', async () => {
    expectError(await post(server, '/search', { query: 'x', filter: { year: { after: 1 } } }), 400, 'invalid_input', /filter\.year\.after: unknown condition/);
    expectError(await post(server, '/search', { query: 'x', filter: { 'bad field!': 1 } }), 400, 'invalid_input', /field name/);
    expectError(await post(server, '/search', { query: 'x', filter: [1] }), 400, 'invalid_body', /filter/);
    expectError(await post(server, '/documents', { documents: [{ id: 1, text: 'a' }, { id: '1', text: 'b' }] }), 400, 'invalid_input', /same document/);
    expectError(await post(server, '/documents', { documents: [{ id: 1 }] }), 400, 'invalid_body', /text/);
    expectError(await post(server, '/documents', { documents: [{ id: 1, text: 'a', metadata: [1] }] }), 400, 'invalid_body', /metadata/);
    expectError(await post(server, '/documents', { documents: [{ id: 1, text: 'a', extra: 1 }] }), 400, 'invalid_body', /unknown field 'extra'/);
    expectError(await post(server, '/documents', { documents: [{ id: '', text: 'a' }] }), 400, 'invalid_input', /1 to 512 characters/);
    expectError(await post(server, '/documents', { documents: [{ id: 1.5, text: 'a' }] }), 400, 'invalid_input', /documents\[0\]\.id/);
    expectError(await post(server, '/documents', { documents: [{ id: null, text: 'a' }] }), 400, 'invalid_input', /documents\[0\]\.id/);
    expectError(await post(server, '/documents', { documents: [{ id: 1, text: 'nul \u0000' }] }), 400, 'invalid_input', /NUL/);
    expectError(await post(server, '/documents', { documents: [] }), 400, 'invalid_body');
    const small = await make({ store, maxTexts: 2 });
    expectError(await post(small, '/documents', { documents: documents.slice(0, 3) }), 413, 'too_many_inputs');
    assert.equal(await store.count(), documents.length, 'a refused write writes nothing');

    const index = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'f32', model });
    index.add([1, 2], await model.encode(['one', 'two'], { colbert: true }), { texts: ['one', 'two'], metadata: [{ lang: 'en' }, { lang: 'de' }] });
    const withIndex = await make({ index });
    const onIndex = (await post(withIndex, '/search', { query: 'one', filter: { lang: 'de' } })).json() as { hits: Array<{ id: number; text: string; metadata: unknown }> };
    assert.deepEqual(onIndex.hits.map((h) => [h.id, h.text, h.metadata]), [[2, 'two', { lang: 'de' }]], 'an index server filters too');
    expectError(await post(withIndex, '/search', { query: 'x', filter: { lang: { in: 'de' } } }), 400, 'invalid_input', /filter\.lang\.in/);
    expectError(await post(withIndex, '/search', { query: 'x', ef_search: 100 }), 400, 'invalid_input', /'ef_search' needs a store/);
    expectError(await post(withIndex, '/documents', { documents: [{ id: 1, text: 'a' }] }), 404, 'not_found', /--store/);
    await assert.rejects(createServer({ model, index, store }), /an index or a store, not both/);
  });

  it('GET /documents/:id reads a document; DELETE /documents/:id removes it ({deleted: 1}, then {deleted: 0}); upserts replace', async () => {
    const id = corpus.ids[41];
    const got = await server.app.inject({ method: 'GET', url: `/documents/${encodeURIComponent(String(id))}` });
    assert.equal(got.statusCode, 200);
    assert.deepEqual(got.json(), { id, text: corpus.texts[41], metadata: corpus.metadata[41] });
    assert.deepEqual((await del(server, String(id))).json(), { deleted: 1 });
    const gone = await server.app.inject({ method: 'GET', url: `/documents/${encodeURIComponent(String(id))}` });
    expectError(gone, 404, 'not_found', /no document with id/);
    assert.deepEqual((await del(server, String(id))).json(), { deleted: 0 });
    const hits = await search(server, { query: corpus.texts[41], k: 80, exhaustive: true });
    assert.ok(!hits.some((h) => h.id === id), 'a deleted document is not found');
    const odd = 'a/b c?';
    const put = await post(server, '/documents', { documents: [{ id: odd, text: corpus.texts[41], metadata: { lang: 'xx' } }, { id: 'plain', text: 'replaced later' }] });
    assert.deepEqual(put.json(), { upserted: 2 });
    const again = await post(server, '/documents', { documents: [{ id: 'plain', text: 'the second version', metadata: null }] });
    assert.deepEqual(again.json(), { upserted: 1 });
    assert.deepEqual(await store.get('plain'), { id: 'plain', text: 'the second version' });
    const found = await search(server, { query: corpus.texts[41], k: 1, filter: { lang: 'xx' } });
    assert.deepEqual([found[0].id, found[0].text], [odd, corpus.texts[41]]);
    assert.deepEqual((await del(server, odd, { 'content-type': 'application/json' })).json(), { deleted: 1 }, 'an empty DELETE with a JSON content type');
    assert.deepEqual((await del(server, 'plain')).json(), { deleted: 1 });
    assert.equal(await store.count(), documents.length - 1);
  });

  it('answers a query during a large write: the write is encoded in chunks through the batcher', async () => {
    const many = Array.from({ length: 300 }, (_, i) => ({ id: `bulk-${i}`, text: `${corpus.texts[i % corpus.texts.length]} ${i}` }));
    const batches: number[] = [];
    server.batcher.on('batch', (b: { texts: number }) => batches.push(b.texts));
    const order: string[] = [];
    const write = post(server, '/documents', { documents: many }).then((r) => {
      order.push('write');
      return r;
    });
    while (batches.length === 0) await new Promise((r) => setTimeout(r, 5));
    const query = search(server, { query: corpus.queries[1], k: 3 }).then((h) => {
      order.push('search');
      return h;
    });
    const [written, hits] = await Promise.all([write, query]);
    server.batcher.removeAllListeners('batch');
    assert.equal(written.statusCode, 200, written.body);
    assert.equal(hits.length, 3);
    assert.deepEqual(order, ['search', 'write'], 'the query did not wait for the whole write');
    assert.ok(Math.max(...batches) <= 33, `batches of ${batches.join(', ')} texts`);
    assert.ok(batches.length >= 10);
    const removed = await Promise.all(many.map((d) => del(server, d.id)));
    assert.ok(removed.every((r) => r.json().deleted === 1));
  });

  it('guards the write routes with the API key', async () => {
    const locked = await make({ store, apiKey: 'k1' });
    const doc = { documents: [{ id: 'keyed', text: 'a keyed document' }] };
    expectError(await post(locked, '/documents', doc), 401, 'invalid_api_key');
    expectError(await post(locked, '/documents', doc, { authorization: 'Bearer other' }), 401, 'invalid_api_key');
    expectError(await del(locked, 'keyed'), 401, 'invalid_api_key');
    expectError(await post(locked, '/search', { query: 'x' }), 401, 'invalid_api_key');
    const ok = { authorization: 'Bearer k1' };
    assert.deepEqual((await post(locked, '/documents', doc, ok)).json(), { upserted: 1 });
    assert.deepEqual((await del(locked, 'keyed', ok)).json(), { deleted: 1 });
  });

  it('answers 503 with Retry-After while the database is down, and works again once it is back', async () => {
    const db = await servePglite();
    try {
      const remote = await open(db.url);
      const s = await make({ store: remote, retryAfterSeconds: 2 });
      assert.deepEqual((await post(s, '/documents', { documents: documents.slice(0, 5) })).json(), { upserted: 5 });
      await db.stop();
      const down = await post(s, '/search', { query: corpus.texts[0] });
      expectError(down, 503, 'store_unavailable', /postgres:\/\/postgres:\*\*\*@127\.0\.0\.1/);
      assert.equal(down.headers['retry-after'], '2');
      expectError(await post(s, '/documents', { documents: documents.slice(5, 6) }), 503, 'store_unavailable');
      expectError(await del(s, String(documents[0].id)), 503, 'store_unavailable');
      await db.restart();
      const hits = await search(s, { query: corpus.texts[0], k: 1 });
      assert.equal(hits[0].id, documents[0].id);
    } finally {
      await db.close();
    }
  });

  it('bge-m3 serve --store: writes and searches over HTTP, closes the store on SIGTERM', async () => {
    const dir = path.join(tmp, 'served');
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--store', `pglite:${dir}`, '--api-key', 'k2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const address = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
    });
    const call = (method: string, url: string, body?: unknown) => fetch(`${address}${url}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { authorization: 'Bearer k2', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    });
    try {
        assert.equal((await call('POST', '/documents', { documents: documents.slice(0, 10) })).status, 200);
      const res = await call('POST', '/search', { query: corpus.texts[3], k: 2, filter: { lang: corpus.metadata[3].lang } });
      const hits = ((await res.json()) as { hits: Hit[] }).hits;
      assert.deepEqual([hits[0].id, hits[0].text, hits[0].metadata], [corpus.ids[3], corpus.texts[3], corpus.metadata[3]]);
      assert.deepEqual(await (await call('DELETE', `/documents/${corpus.ids[4]}`)).json(), { deleted: 1 });
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    // The store was closed (its directory lock released) and holds what was written.
    const reopened = await open(`pglite:${dir}`);
    assert.equal(await reopened.count(), 9);
    assert.deepEqual(await reopened.get(corpus.ids[3]), documents[3]);
    await reopened.close();
    const both = spawnSync(process.execPath, [CLI, 'serve', '--index', tmp, '--store', `pglite:${dir}`], { encoding: 'utf8' });
    assert.equal(both.status, 1);
    assert.match(both.stderr, /--index DIR or --store URL, not both/);
  });
});
