/**
 * The HTTP server, in process (fastify inject): every route's answers checked against the
 * PyTorch reference (golden.json) or the library's own verified calls, every error answer, the
 * binary layout round trip, Prometheus text, backpressure (queue full, timeout, body limit).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { BGEM3, HybridIndex } from '../lib';
import { createServer, type M3Server, type ServerOptions } from '../lib/server';
import { decodeWire } from '../lib/serve/wire';
import { DEMO_MODEL, assertClose, golden, longText } from './helpers';

interface ErrorBody {
  error: { message: string; type: string; code: string };
}

describe('bge-m3 serve (in process)', () => {
  let model: BGEM3;
  let server: M3Server;
  const servers: M3Server[] = [];
  const make = async (options: Omit<ServerOptions, 'model'> = {}) => {
    const s = await createServer({ model, ...options });
    servers.push(s);
    return s;
  };
  const post = (s: M3Server, url: string, payload: unknown, headers: Record<string, string> = {}) =>
    s.app.inject({ method: 'POST', url, payload: payload as string, headers: { 'content-type': 'application/json', ...headers } });
  const expectError = (res: { statusCode: number; json(): unknown }, status: number, code: string, message?: RegExp) => {
    assert.equal(res.statusCode, status, `status ${res.statusCode}: ${JSON.stringify(res.json())}`);
    const body = res.json() as ErrorBody;
    assert.equal(body.error.code, code, JSON.stringify(body));
    assert.equal(typeof body.error.type, 'string');
    if (message) assert.match(body.error.message, message);
  };

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    server = await make();
  });
  after(async () => {
    for (const s of servers) await s.close();
    await model.dispose();
  });

  it('GET /health is ok once the model is loaded', async () => {
    const res = await server.app.inject({ method: 'GET', url: '/health' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().status, 'ok');
    assert.equal(res.json().dim, golden.dim);
    assert.equal(res.json().precision, 'fp32');
  });

  it('POST /v1/embeddings answers in the OpenAI shape with the reference vectors (float and base64)', async () => {
    const cases = golden.cases.filter((c) => c.maxLength === null && c.ids.length < 64);
    const res = await post(server, '/v1/embeddings', { input: cases.map((c) => c.text), model: 'bge-m3' });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    assert.equal(body.object, 'list');
    assert.equal(body.model, 'bge-m3');
    assert.equal(body.data.length, cases.length);
    cases.forEach((c, i) => {
      assert.equal(body.data[i].object, 'embedding');
      assert.equal(body.data[i].index, i);
      assertClose(body.data[i].embedding, c.dense, `${c.name} dense`);
    });
    const tokens = cases.reduce((n, c) => n + c.ids.length, 0);
    assert.deepEqual(body.usage, { prompt_tokens: tokens, total_tokens: tokens });

    const b64 = (await post(server, '/v1/embeddings', { input: cases[0].text, encoding_format: 'base64' })).json();
    const bytes = Buffer.from(b64.data[0].embedding, 'base64');
    const vec = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    assertClose(vec, cases[0].dense, 'base64 dense');
    assert.equal(b64.model, 'demo-model', 'the directory name when the request names no model');
  });

  it('POST /v1/embeddings refuses over-long texts (413), wrong dimensions and token arrays (400)', async () => {
    expectError(await post(server, '/v1/embeddings', { input: ['ok', longText(200)] }), 413, 'text_too_long', /text 1 has \d+ tokens/);
    expectError(await post(server, '/v1/embeddings', { input: 'x', dimensions: 7 }), 400, 'invalid_input', /dimensions 7/);
    expectError(await post(server, '/v1/embeddings', { input: [[1, 2, 3]] }), 400, 'invalid_body',
      /^body\/input must be a string or a non-empty array of strings \(token-id arrays are not accepted/);
    expectError(await post(server, '/rerank', { query: 'q', documents: ['a', 5] }), 400, 'invalid_body', /^body\/documents\/1 must be a string or an object \{ text \}$/);
    expectError(await post(server, '/v1/embeddings', { input: [] }), 400, 'invalid_body');
  });

  it('POST /encode returns JSON rows equal to encode(), and the binary layout round-trips', async () => {
    const texts = ['first text', 'a second, longer text about retrieval', ''];
    const expected = await model.encode(texts, { colbert: true });
    const res = await post(server, '/encode', { texts, colbert: true });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    assert.equal(body.count, 3);
    for (let i = 0; i < 3; i++) {
      const row = expected.row(i);
      assertClose(body.dense[i], row.dense!, `dense ${i}`);
      assert.deepEqual(body.sparse[i].ids, Array.from(row.sparse!.ids));
      assertClose(body.sparse[i].weights, row.sparse!.weights, `sparse ${i}`);
      assertClose(body.colbert[i].flat(), row.colbert!, `colbert ${i}`);
    }
    assert.equal(body.usage.prompt_tokens, expected.tokenCount);

    const bin = await post(server, '/encode', { texts, colbert: true }, { accept: 'application/octet-stream' });
    assert.equal(bin.statusCode, 200);
    assert.match(String(bin.headers['content-type']), /application\/octet-stream/);
    const decoded = decodeWire(bin.rawPayload);
    assert.equal(decoded.count, 3);
    assertClose(decoded.dense!, expected.dense!, 'binary dense');
    assert.deepEqual(decoded.sparse!.offsets, expected.sparse!.offsets);
    assert.deepEqual(decoded.sparse!.ids, expected.sparse!.ids);
    assertClose(decoded.colbert!.data, expected.colbert!.data, 'binary colbert');
    assert.deepEqual(decoded.tokens, expected.tokens);

    const denseOnly = decodeWire((await post(server, '/encode', { texts: 'x', sparse: false }, { accept: 'application/octet-stream' })).rawPayload);
    assert.ok(denseOnly.dense && !denseOnly.sparse && !denseOnly.colbert);
    assert.throws(() => decodeWire(Buffer.from('not a result at all, really not, no, really not')), /magic/);
    assert.throws(() => decodeWire(bin.rawPayload.subarray(0, bin.rawPayload.length - 4)), /truncated/);
  });

  it('POST /encode truncates by default; truncate: false and limits give 413 or 400', async () => {
    const cut = await post(server, '/encode', { texts: longText(200), max_length: 16 });
    assert.equal(cut.statusCode, 200);
    assert.equal(cut.json().usage.prompt_tokens, 16);
    expectError(await post(server, '/encode', { texts: longText(200), truncate: false }), 413, 'text_too_long');
    expectError(await post(server, '/encode', { texts: 'x', max_length: 100000 }), 400, 'invalid_input', /max_length 100000 is over this server's limit/);
  });

  it('POST /score equals the PyTorch compute_score values', async () => {
    const g = golden.scores;
    const res = await post(server, '/score', { pairs: g.pairs, weights: g.weights, max_query_length: g.maxQueryLength, max_passage_length: g.maxPassageLength });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    for (const key of ['dense', 'sparse', 'colbert', 'sparse+dense', 'colbert+sparse+dense'] as const) assertClose(body[key], g[key], `score ${key}`);
    // Without weights: the one default triple [1, 0.3, 1] for both combinations, echoed in `weights`.
    const byDefault = (await post(server, '/score', { pairs: g.pairs, max_query_length: g.maxQueryLength, max_passage_length: g.maxPassageLength })).json();
    assert.deepEqual(byDefault.weights, [1, 0.3, 1]);
    assertClose(byDefault['sparse+dense'], g.pairs.map((_, i) => (g.dense[i] + 0.3 * g.sparse[i]) / 1.3), 'default sparse+dense');
    assertClose(byDefault['colbert+sparse+dense'], g.pairs.map((_, i) => (g.dense[i] + 0.3 * g.sparse[i] + g.colbert[i]) / 2.3), 'default all');
    expectError(await post(server, '/score', { pairs: [['only one']] }), 400, 'invalid_body');
    expectError(await post(server, '/score', { pairs: [['a', 'b']], weights: [0, 0, 1] }), 400, 'invalid_input', /divide by zero/);
  });

  it('POST /rerank sorts documents by the fused score, with computeScore\'s components', async () => {
    const query = 'what is retrieval';
    const docs = ['retrieval finds documents', 'a cat sat on the mat', 'what is retrieval', 'lexical matching of words'];
    const res = await post(server, '/rerank', { query, documents: [docs[0], { text: docs[1] }, docs[2], docs[3]], top_n: 3, return_documents: true });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json();
    assert.equal(body.results.length, 3);
    const ref = await model.computeScore(docs.map((d) => [query, d] as [string, string]), { weights: [1, 1, 1] });
    // The default triple [1, 0.3, 1], fused here from computeScore's components.
    const fused = docs.map((_, i) => (ref.dense[i] + 0.3 * ref.sparse[i] + ref.colbert[i]) / 2.3);
    const order = docs.map((_, i) => i).sort((a, b) => fused[b] - fused[a]);
    assert.deepEqual(body.results.map((r: { index: number }) => r.index), order.slice(0, 3));
    for (const r of body.results) {
      assert.ok(Math.abs(r.relevance_score - fused[r.index]) <= 1e-5);
      assert.ok(Math.abs(r.scores.dense - ref.dense[r.index]) <= 1e-5);
      assert.ok(Math.abs(r.scores.sparse - ref.sparse[r.index]) <= 1e-5);
      assert.ok(Math.abs(r.scores.colbert - ref.colbert[r.index]) <= 1e-5);
      assert.equal(r.document.text, docs[r.index]);
    }
    expectError(await post(server, '/rerank', { query, documents: [{ txt: 'x' }] }), 400, 'invalid_body');
  });

  it('POST /search answers 404 without an index, and the index\'s own hits with one', async () => {
    expectError(await post(server, '/search', { query: 'x' }), 404, 'not_found', /--index/);
    const passages = ['retrieval finds documents', 'a cat sat on the mat', 'lexical matching of words', 'dense vectors'];
    const index = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'f32', model });
    index.add(passages.map((_, i) => `doc-${i}`), await model.encode(passages, { colbert: true }));
    const withIndex = await make({ index });
    const res = await post(withIndex, '/search', { query: 'finding documents', k: 3 });
    assert.equal(res.statusCode, 200, res.body);
    const expected = index.search((await model.encode('finding documents', { colbert: true })).row(0), { k: 3 });
    assert.deepEqual(res.json().hits.map((h: { id: string }) => h.id), expected.map((h) => h.id));
    res.json().hits.forEach((h: { score: number }, i: number) => assert.ok(Math.abs(h.score - expected[i].score) <= 1e-5));
  });

  it('answers malformed bodies with clear 4xx JSON errors', async () => {
    expectError(await post(server, '/encode', '{"texts": '), 400, 'invalid_json');
    expectError(await post(server, '/encode', { texts: 5 }), 400, 'invalid_body', /texts/);
    expectError(await post(server, '/encode', { texts: 'x', colbert: 'yes' }), 400, 'invalid_body', /colbert/);
    expectError(await post(server, '/encode', { texts: 'x', extra: 1 }), 400, 'invalid_body', /unknown field 'extra'/);
    expectError(await post(server, '/encode', {}), 400, 'invalid_body', /texts/);
    const text = await server.app.inject({ method: 'POST', url: '/encode', payload: '<texts/>', headers: { 'content-type': 'application/xml' } });
    expectError(text, 415, 'unsupported_media_type');
    const plain = await server.app.inject({ method: 'POST', url: '/encode', payload: '{"texts":"x"}', headers: { 'content-type': 'text/plain' } });
    expectError(plain, 415, 'unsupported_media_type');
    expectError(await server.app.inject({ method: 'GET', url: '/nope' }), 404, 'not_found', /Routes:/);
  });

  it('a bad length limit in /score or /rerank is a 400, and the server keeps serving', async () => {
    // The limit is checked before any encode starts: an encode started and then left without a
    // handler would reject later, unhandled, and take the process down.
    const long = longText(200);
    expectError(await post(server, '/rerank', { query: long, documents: ['b'], truncate: false, max_passage_length: 10_000 }),
      400, 'invalid_input', /max_passage_length 10000 is over this server's limit/);
    expectError(await post(server, '/score', { pairs: [[long, 'b']], truncate: false, max_passage_length: 10_000 }),
      400, 'invalid_input', /max_passage_length/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal((await server.app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
    // One side failing (a query over the limit with truncate: false) fails the request cleanly.
    expectError(await post(server, '/rerank', { query: long, documents: ['b'], truncate: false }), 413, 'text_too_long');
  });

  it('refuses server limits that would break every request', async () => {
    await assert.rejects(createServer({ model, maxTextTokens: 1 }), /maxTextTokens must be an integer >= 2/);
    await assert.rejects(createServer({ model, requestTimeoutMs: 3_000_000_000 }), /requestTimeoutMs must be an integer in \[1, 2147483647\]/);
  });

  it('a client that stalls mid-upload is answered 408 and disconnected', async () => {
    const s = await make({ requestTimeoutMs: 300 });
    const address = new URL(await s.listen({ host: '127.0.0.1', port: 0 }));
    const socket = net.connect(Number(address.port), '127.0.0.1');
    const started = Date.now();
    let answer = '';
    socket.on('data', (d) => { answer += d; });  // read, so the end of the stream is seen
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => {});
    socket.write('POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"input":');
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('still connected after 10 s')), 10_000))]);
    assert.ok(Date.now() - started < 10_000);
    assert.match(answer, /^HTTP\/1\.1 408/);
  });

  it('limits: texts per request (413) and body bytes (413)', async () => {
    const small = await make({ maxTexts: 3, bodyLimit: 2000 });
    expectError(await post(small, '/encode', { texts: ['a', 'b', 'c', 'd'] }), 413, 'too_many_inputs', /4 texts in one request; the limit is 3/);
    expectError(await post(small, '/rerank', { query: 'q', documents: ['a', 'b', 'c', 'd'] }), 413, 'too_many_inputs', /4 documents/);
    expectError(await post(small, '/encode', { texts: 'x'.repeat(3000) }), 413, 'body_too_large', /2000-byte limit/);
  });

  it('overload: a full queue and a timeout are answered 503 with Retry-After', async () => {
    const full = await make({ batching: { maxQueue: 1, maxWaitMs: 300 }, retryAfterSeconds: 2 });
    const answers = await Promise.all([0, 1, 2].map((i) => post(full, '/encode', { texts: `text ${i}` })));
    const refused = answers.filter((r) => r.statusCode === 503);
    assert.ok(refused.length >= 1, `statuses ${answers.map((r) => r.statusCode)}`);
    assert.ok(answers.every((r) => r.statusCode === 200 || r.statusCode === 503));
    for (const r of refused) {
      expectError(r, 503, 'queue_full');
      assert.equal(r.headers['retry-after'], '2');
    }
    const slow = await make({ batching: { maxWaitMs: 500 }, requestTimeoutMs: 20 });
    const timedOut = await post(slow, '/encode', { texts: 'late' });
    expectError(timedOut, 503, 'timeout', /20 ms/);
    assert.equal(timedOut.headers['retry-after'], '1');
  });

  it('a stalled event loop is answered 503 with Retry-After; /health and /metrics still answer', async () => {
    const pressured = await make({ maxEventLoopDelayMs: 20 });
    // Block the event loop, then give the sampler (every second) time to see it.
    const until = Date.now() + 1500;
    while (Date.now() < until) { /* stall */ }
    let res = await post(pressured, '/encode', { texts: 'x' });
    for (let i = 0; i < 30 && res.statusCode === 200; i++) {
      const stallUntil = Date.now() + 300;
      while (Date.now() < stallUntil) { /* stall */ }
      await new Promise((r) => setTimeout(r, 100));
      res = await post(pressured, '/encode', { texts: 'x' });
    }
    expectError(res, 503, 'under_pressure', /overloaded/);
    assert.equal(res.headers['retry-after'], '1');
    assert.equal((await pressured.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
    assert.equal((await pressured.app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
  });

  it('GET /metrics is Prometheus text with request, batch and model series', async () => {
    await post(server, '/encode', { texts: ['metrics one', 'metrics two'] });
    const res = await server.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$/;
    const names = new Set<string>();
    for (const line of res.body.split('\n')) {
      if (line === '') continue;
      if (line.startsWith('#')) {
        assert.match(line, /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$/, `comment line: ${line}`);
        continue;
      }
      const m = sample.exec(line);
      assert.ok(m, `not a Prometheus sample line: ${line}`);
      names.add(m[1]);
    }
    for (const name of ['bge_m3_http_requests_total', 'bge_m3_http_request_duration_seconds_bucket', 'bge_m3_queue_requests',
      'bge_m3_batch_texts_bucket', 'bge_m3_tokens_per_second', 'bge_m3_model_info', 'bge_m3_encoded_tokens_total']) {
      assert.ok(names.has(name), `${name} is exported`);
    }
    assert.match(res.body, /bge_m3_http_requests_total\{route="\/encode",method="POST",status="200"\} [1-9]/);
    assert.match(res.body, /bge_m3_model_info\{[^}]*layout="bge-m3-snapshot"[^}]*\} 1/);
    assert.match(res.body, /bge_m3_model_info\{[^}]*precision="fp32"[^}]*\} 1/);
  });
});
