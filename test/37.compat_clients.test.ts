/**
 * Well-known clients against a listening server on the demo model: the official `openai` client
 * (float, base64 and its default encoding; GET /v1/models), LangChain's OpenAIEmbeddings with its
 * defaults on 1,000 documents, the API key (401 / 200) and CORS. Every vector is checked against
 * the library's own BGEM3.encode of the same texts, never against the server's answers.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import OpenAI from 'openai';
import { OpenAIEmbeddings } from '@langchain/openai';
import { BGEM3 } from '../lib';
import { createServer, type M3Server, type ServerOptions } from '../lib/server';
import { DEMO_MODEL, ROOT, assertClose } from './helpers';

/** Dense vectors differ from the library's only by batching's float order, if at all. */
const TOL = 1e-5;

describe('clients: openai, LangChain, API key, CORS', () => {
  let model: BGEM3;
  const servers: M3Server[] = [];
  /** A server listening on a free local port, and its address. */
  const serve = async (options: Omit<ServerOptions, 'model'> = {}) => {
    const s = await createServer({ model, ...options });
    servers.push(s);
    return { server: s, url: await s.listen({ host: '127.0.0.1', port: 0 }) };
  };
  /** The library's dense vector of each text. */
  const denseOf = async (texts: string[]) => {
    const out = await model.encode(texts, { dense: true, sparse: false });
    return texts.map((_, i) => Array.from(out.dense!.subarray(i * out.dim, (i + 1) * out.dim)));
  };

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
  });
  after(async () => {
    for (const s of servers) await s.close();
    await model.dispose();
  });

  it('openai embeddings.create: float, base64 and the client\'s default, equal to the library\'s vectors', async () => {
    const { url } = await serve();
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const texts = ['What is BGE M3?', 'Defines a dense, sparse and multi-vector model.', 'a third text'];
    const expected = await denseOf(texts);
    const float = await client.embeddings.create({ model: 'bge-m3', input: texts, encoding_format: 'float' });
    assert.equal(float.data.length, texts.length);
    float.data.forEach((d, i) => assertClose(d.embedding, expected[d.index], `float ${i}`, TOL));
    assert.ok(float.usage.prompt_tokens > 0);
    // The client asks for base64 by default and decodes it into numbers itself.
    const byDefault = await client.embeddings.create({ model: 'bge-m3', input: texts });
    byDefault.data.forEach((d, i) => assertClose(d.embedding, expected[d.index], `default ${i}`, TOL));
    // Asked for explicitly, base64 comes back as the string: little-endian float32.
    const b64 = await client.embeddings.create({ model: 'bge-m3', input: texts[0], encoding_format: 'base64' });
    const raw = Buffer.from(b64.data[0].embedding as unknown as string, 'base64');
    const decoded = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    assertClose(decoded, expected[0], 'base64', TOL);
  });

  it('openai models.list and models.retrieve show the one model served', async () => {
    const { url } = await serve({ modelName: 'my-m3' });
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['my-m3']);
    assert.equal((await client.models.retrieve('my-m3')).object, 'model');
    await assert.rejects(client.models.retrieve('gpt-4o'), (err: { status?: number; message: string }) =>
      err.status === 400 && /serves 'my-m3'/.test(err.message));
  });

  it('LangChain OpenAIEmbeddings embeds 1,000 documents with its defaults', async () => {
    // LangChain sends its own default model name: a server that accepts any name takes it.
    const { url } = await serve({ allowAnyModel: true });
    const embeddings = new OpenAIEmbeddings({ apiKey: 'unused', configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });
    const docs = Array.from({ length: 1000 }, (_, i) => `document ${i} about retrieval topic ${i % 37} and words ${(i * 7) % 101}`);
    const vectors = await embeddings.embedDocuments(docs);
    assert.equal(vectors.length, 1000);
    const expected = await denseOf(docs);
    vectors.forEach((v, i) => assertClose(v, expected[i], `document ${i}`, TOL));
    assertClose(await embeddings.embedQuery(docs[3]), expected[3], 'query', TOL);
  });

  it('LangChain\'s default model name against a server that checks names: a 400 naming the served model', async () => {
    const { url } = await serve();
    const embeddings = new OpenAIEmbeddings({ apiKey: 'unused', configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });
    await assert.rejects(embeddings.embedQuery('x'), /is not served here: this server serves 'demo-model'/);
    const named = new OpenAIEmbeddings({ model: 'bge-m3', apiKey: 'unused', configuration: { baseURL: `${url}/v1` }, maxRetries: 0 });
    assertClose(await named.embedQuery('x'), (await denseOf(['x']))[0], 'named', TOL);
  });

  it('--api-key: 401 in OpenAI\'s error shape without the key or with another, 200 with it; /health and /metrics open', async () => {
    const { url } = await serve({ apiKey: 'sk-local-secret' });
    const body = JSON.stringify({ input: 'x' });
    const headers = { 'content-type': 'application/json' };
    const none = await fetch(`${url}/v1/embeddings`, { method: 'POST', body, headers });
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    const err = (await none.json()) as { error: { code: string; type: string; message: string } };
    assert.equal(err.error.code, 'invalid_api_key');
    assert.equal(err.error.type, 'invalid_request_error');
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.embeddings.create({ model: 'bge-m3', input: 'x' }), (e: { status?: number }) => e.status === 401);
    const right = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-local-secret', maxRetries: 0 });
    assertClose((await right.embeddings.create({ model: 'bge-m3', input: 'x' })).data[0].embedding, (await denseOf(['x']))[0], 'keyed', TOL);
    const rerank = await fetch(`${url}/v1/rerank`, { method: 'POST', headers: { ...headers, authorization: 'Bearer sk-local-secret' },
      body: JSON.stringify({ query: 'q', documents: ['a'] }) });
    assert.equal(rerank.status, 200);
    assert.equal((await fetch(`${url}/health`)).status, 200);
    assert.equal((await fetch(`${url}/metrics`)).status, 200);
    await assert.rejects(createServer({ model, apiKey: ' ' }), /apiKey must be a non-empty string/);
  });

  it('--cors: CORS headers and preflight for the allowed origin only, none when off', async () => {
    const { url } = await serve({ cors: 'https://app.example', apiKey: 'k' });
    const preflight = await fetch(`${url}/v1/embeddings`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    assert.ok(preflight.status === 204 || preflight.status === 200, `preflight ${preflight.status}`);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /POST/);
    const post = await fetch(`${url}/v1/embeddings`, {
      method: 'POST', body: JSON.stringify({ input: 'x' }),
      headers: { origin: 'https://app.example', 'content-type': 'application/json', authorization: 'Bearer k' },
    });
    assert.equal(post.status, 200);
    assert.equal(post.headers.get('access-control-allow-origin'), 'https://app.example');
    const other = await fetch(`${url}/health`, { headers: { origin: 'https://evil.example' } });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    const any = await serve({ cors: '*' });
    assert.equal((await fetch(`${any.url}/health`, { headers: { origin: 'https://x.example' } })).headers.get('access-control-allow-origin'), '*');
    const off = await serve();
    assert.equal((await fetch(`${off.url}/health`, { headers: { origin: 'https://app.example' } })).headers.get('access-control-allow-origin'), null);
  });

  it('/health reports the package version', async () => {
    const { url } = await serve();
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const health = (await (await fetch(`${url}/health`)).json()) as { status: string; version: string };
    assert.equal(health.status, 'ok');
    assert.equal(health.version, version);
  });
});
