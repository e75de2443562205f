/**
 * Other servers' request shapes on a listening server (raw fetch with each API's documented
 * bodies): Cohere's and Jina's rerank, TEI's rerank, /embed and /embed_sparse, the `model` check,
 * the 2048-input limit and its code, and truncation on and off. Expected values come from the
 * library (BGEM3.encode, computeScore's components fused with the default [1, 0.3, 1]).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { BGEM3 } from '../lib';
import { createServer, type M3Server, type ServerOptions } from '../lib/server';
import { DEMO_MODEL, assertClose, longText } from './helpers';

const TOL = 1e-5;

interface Ranked { index: number; relevance_score: number; document?: { text: string } }
interface ErrorBody { error: { code: string; message: string } }

describe('other APIs\' shapes: Cohere, Jina, TEI, model, limits, truncation', () => {
  let model: BGEM3;
  let strict = '';
  let open = '';
  const servers: M3Server[] = [];
  const serve = async (options: Omit<ServerOptions, 'model'> = {}) => {
    const s = await createServer({ model, ...options });
    servers.push(s);
    return s.listen({ host: '127.0.0.1', port: 0 });
  };
  const post = async (url: string, body: unknown) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: (await res.json()) as unknown };
  };
  const expectError = (res: { status: number; json: unknown }, status: number, code: string, message?: RegExp) => {
    assert.equal(res.status, status, JSON.stringify(res.json));
    const { error } = res.json as ErrorBody;
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
  };

  const query = 'what is retrieval';
  const docs = ['retrieval finds documents', 'a cat sat on the mat', 'what is retrieval', 'lexical matching of words'];
  /** Each document's fused score with the default triple, from computeScore's components. */
  let fused: number[] = [];
  let order: number[] = [];

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    strict = await serve();
    open = await serve({ allowAnyModel: true });
    const ref = await model.computeScore(docs.map((d) => [query, d] as [string, string]), { weights: [1, 1, 1] });
    fused = docs.map((_, i) => (ref.dense[i] + 0.3 * ref.sparse[i] + ref.colbert[i]) / 2.3);
    order = docs.map((_, i) => i).sort((a, b) => fused[b] - fused[a] || a - b);
  });
  after(async () => {
    for (const s of servers) await s.close();
    await model.dispose();
  });

  const checkRanked = (results: Ranked[], n: number, withDocuments: boolean) => {
    assert.deepEqual(results.map((r) => r.index), order.slice(0, n));
    for (const r of results) {
      assert.ok(Math.abs(r.relevance_score - fused[r.index]) <= TOL);
      if (withDocuments) assert.deepEqual(r.document, { text: docs[r.index] });
      else assert.equal(r.document, undefined);
    }
  };

  it('Cohere\'s v2 and v1 rerank bodies, on /v1/rerank and /rerank', async () => {
    const v2 = await post(`${open}/v1/rerank`, { model: 'rerank-v3.5', query, documents: docs, top_n: 3, max_tokens_per_doc: 4096 });
    assert.equal(v2.status, 200, JSON.stringify(v2.json));
    const body = v2.json as { id: string; results: Ranked[]; meta: { billed_units: unknown } };
    assert.equal(typeof body.id, 'string');
    assert.ok(body.meta.billed_units);
    // Without return_documents the documents come back (Jina's default; Cohere's clients ignore them).
    checkRanked(body.results, 3, true);
    const without = await post(`${open}/v1/rerank`, { model: 'rerank-english-v3.0', query, documents: docs, return_documents: false });
    checkRanked((without.json as { results: Ranked[] }).results, 4, false);
    const v1 = await post(`${open}/rerank`, {
      model: 'rerank-multilingual-v3.0', query, documents: docs.map((text) => ({ text })), top_n: 2,
      return_documents: true, rank_fields: ['text'], max_chunks_per_doc: 10,
    });
    assert.equal(v1.status, 200, JSON.stringify(v1.json));
    checkRanked((v1.json as { results: Ranked[] }).results, 2, true);
    expectError(await post(`${open}/rerank`, { query, documents: docs, rank_fields: ['title'] }), 400, 'invalid_input', /only \["text"\]/);
  });

  it('Jina\'s rerank body', async () => {
    const res = await post(`${open}/v1/rerank`, { model: 'jina-reranker-v2-base-multilingual', query, documents: docs, top_n: 4, return_documents: true });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const body = res.json as { model: string; usage: { total_tokens: number }; results: Ranked[] };
    assert.ok(body.usage.total_tokens > 0);
    checkRanked(body.results, 4, true);
  });

  it('TEI\'s rerank body, answered with TEI\'s bare array', async () => {
    const res = await post(`${strict}/rerank`, { query, texts: docs, raw_scores: false, return_text: true, truncate: true, truncation_direction: 'Right' });
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const list = res.json as Array<{ index: number; score: number; text?: string }>;
    assert.ok(Array.isArray(list));
    assert.deepEqual(list.map((r) => r.index), order);
    for (const r of list) {
      assert.ok(Math.abs(r.score - fused[r.index]) <= TOL);
      assert.equal(r.text, docs[r.index]);
    }
    const bare = (await post(`${strict}/v1/rerank`, { query, texts: docs })).json as Array<Record<string, unknown>>;
    assert.deepEqual(Object.keys(bare[0]).sort(), ['index', 'score']);
    expectError(await post(`${strict}/rerank`, { query, texts: docs, documents: docs }), 400, 'invalid_body', /either 'documents'.*or 'texts'/);
    expectError(await post(`${strict}/rerank`, { query }), 400, 'invalid_body', /not both or neither/);
    expectError(await post(`${strict}/rerank`, { query, texts: docs, top_n: 1 }), 400, 'invalid_body', /'top_n'/);
    expectError(await post(`${strict}/rerank`, { query, documents: docs, return_text: true }), 400, 'invalid_body', /'return_text'/);
    expectError(await post(`${strict}/rerank`, { query, texts: docs, truncation_direction: 'Left' }), 400, 'invalid_input', /Left is not supported/);
  });

  it('TEI\'s /embed and /embed_sparse equal the library\'s dense and sparse outputs', async () => {
    const texts = ['What is BGE M3?', 'lexical matching of words'];
    const out = await model.encode(texts, { dense: true, sparse: true });
    const dense = (await post(`${strict}/embed`, { inputs: texts, truncate: false, normalize: true })).json as number[][];
    assert.equal(dense.length, 2);
    dense.forEach((v, i) => assertClose(v, out.dense!.subarray(i * out.dim, (i + 1) * out.dim), `embed ${i}`, TOL));
    const one = (await post(`${strict}/embed`, { inputs: texts[0] })).json as number[][];
    assert.equal(one.length, 1);
    assertClose(one[0], dense[0], 'one input', TOL);
    const sparse = (await post(`${strict}/embed_sparse`, { inputs: texts })).json as Array<Array<{ index: number; value: number }>>;
    sparse.forEach((row, i) => {
      const ref = out.row(i).sparse!;
      assert.deepEqual(row.map((e) => e.index), Array.from(ref.ids), `ids ${i}`);
      assertClose(row.map((e) => e.value), ref.weights, `values ${i}`, TOL);
    });
    expectError(await post(`${strict}/embed`, { inputs: 'x', normalize: false }), 400, 'invalid_input', /normalize: false/);
    expectError(await post(`${strict}/embed`, { inputs: 'x', pooling: 'cls' }), 400, 'invalid_body', /unknown field 'pooling'/);
  });

  it('model: the served name, the directory\'s and bge-m3 pass; another is a 400 naming the served model, unless any is allowed', async () => {
    for (const name of ['demo-model', 'bge-m3', 'BAAI/bge-m3']) assert.equal((await post(`${strict}/v1/embeddings`, { input: 'x', model: name })).status, 200, name);
    const routes: Array<[string, unknown]> = [
      ['/v1/embeddings', { input: 'x' }], ['/encode', { texts: 'x' }], ['/score', { pairs: [['a', 'b']] }],
      ['/rerank', { query: 'q', documents: ['a'] }], ['/v1/rerank', { query: 'q', texts: ['a'] }],
      ['/embed', { inputs: 'x' }], ['/embed_sparse', { inputs: 'x' }],
    ];
    for (const [route, body] of routes) {
      expectError(await post(`${strict}${route}`, { ...(body as object), model: 'text-embedding-3-small' }), 400, 'model_not_served',
        /'text-embedding-3-small' is not served here: this server serves 'demo-model'.*--allow-any-model/);
      assert.equal((await post(`${open}${route}`, { ...(body as object), model: 'text-embedding-3-small' })).status, 200, route);
    }
    const named = await serve({ modelName: 'm3-prod' });
    expectError(await post(`${named}/embed`, { inputs: 'x', model: 'other' }), 400, 'model_not_served', /serves 'm3-prod'/);
    assert.equal((await post(`${named}/embed`, { inputs: 'x', model: 'm3-prod' })).status, 200);
  });

  it('2048 inputs per request by default; one more is a 413 too_many_inputs', async () => {
    const many = Array.from({ length: 2048 }, (_, i) => `t${i % 10}`);
    const ok = await post(`${strict}/v1/embeddings`, { input: many });
    assert.equal(ok.status, 200);
    assert.equal((ok.json as { data: unknown[] }).data.length, 2048);
    expectError(await post(`${strict}/v1/embeddings`, { input: [...many, 'x'] }), 413, 'too_many_inputs', /2049 inputs in one request; the limit is 2048/);
    expectError(await post(`${strict}/embed`, { inputs: [...many, 'x'] }), 413, 'too_many_inputs');
  });

  it('truncation: 413 saying how to cut, truncate: true cuts, --auto-truncate cuts by default', async () => {
    const long = longText(200);
    const cut = await model.encode([long], { dense: true, sparse: true, truncate: true });
    const hint = /"truncate": true.*--auto-truncate/;
    expectError(await post(`${strict}/v1/embeddings`, { input: long }), 413, 'text_too_long', hint);
    expectError(await post(`${strict}/embed`, { inputs: long }), 413, 'text_too_long', hint);
    expectError(await post(`${strict}/rerank`, { query, texts: [long] }), 413, 'text_too_long', hint);
    const asked = await post(`${strict}/v1/embeddings`, { input: long, truncate: true });
    assert.equal(asked.status, 200);
    assertClose((asked.json as { data: Array<{ embedding: number[] }> }).data[0].embedding, cut.dense!, 'truncate: true', TOL);
    expectError(await post(`${strict}/v1/embeddings`, { input: long, truncate: false }), 413, 'text_too_long');
    const auto = await serve({ autoTruncate: true });
    const embedded = await post(`${auto}/v1/embeddings`, { input: long });
    assert.equal(embedded.status, 200);
    assertClose((embedded.json as { data: Array<{ embedding: number[] }> }).data[0].embedding, cut.dense!, 'auto', TOL);
    assertClose(((await post(`${auto}/embed`, { inputs: long })).json as number[][])[0], cut.dense!, 'auto /embed', TOL);
    expectError(await post(`${auto}/v1/embeddings`, { input: long, truncate: false }), 413, 'text_too_long');
  });
});
