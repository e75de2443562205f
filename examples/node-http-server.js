#!/usr/bin/env node
'use strict';
/**
 * Embedding bge-m3 in an existing server: plain node:http, no framework, no other dependency.
 *
 *   node examples/node-http-server.js [MODEL_DIR] [PORT]
 *   curl -s localhost:3000/embed -d '{"texts": ["hello", "world"]}'
 *
 * The pieces a server needs, in about sixty lines:
 *   - one model, loaded once at start-up;
 *   - a Batcher in front of it, so concurrent requests share batches (and a full queue is
 *     answered 503 with Retry-After instead of growing without bound);
 *   - an AbortSignal per request, so a client that hangs up leaves the queue at once;
 *   - a graceful stop on SIGTERM / SIGINT: stop listening, drain, dispose, exit 0.
 * Inside this repository it loads the package from the build (dist/); elsewhere require('bge-m3').
 */
const http = require('node:http');
const path = require('node:path');

let m3;
try {
  m3 = require('bge-m3');
} catch {
  m3 = require(path.join(__dirname, '..', 'dist', 'lib'));
}
const { BGEM3, Batcher, DEMO_MODEL_DIR } = m3;

const STATUS = { ERR_INPUT: 400, ERR_TOO_LONG: 413, ERR_QUEUE_FULL: 503, ERR_DISPOSED: 503, ERR_ABORTED: 503 };

function readJson(req, limit) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) reject(Object.assign(new Error(`body over ${limit} bytes`), { status: 413 }));
      else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(Object.assign(new Error(`invalid JSON: ${err.message}`), { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

async function main() {
  const dir = process.argv[2] || DEMO_MODEL_DIR;
  const port = Number(process.argv[3] || 3000);
  const model = await BGEM3.load(dir);
  const batcher = new Batcher(model, { maxWaitMs: 2, maxQueue: 512 });

  const server = http.createServer(async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/embed') return send(res, 404, { error: 'POST /embed {"texts": [...]}' });
    const controller = new AbortController();
    res.once('close', () => res.writableFinished || controller.abort());
    try {
      const body = await readJson(req, 1 << 20);
      if (!body || !Array.isArray(body.texts) || !body.texts.every((t) => typeof t === 'string')) {
        return send(res, 400, { error: 'expected {"texts": ["...", ...]}' });
      }
      const out = await batcher.encode(body.texts, { dense: true, sparse: false, signal: controller.signal });
      const embeddings = body.texts.map((_, i) => Array.from(out.row(i).dense));
      send(res, 200, { embeddings, tokens: out.tokenCount });
    } catch (err) {
      const status = err.status || STATUS[err.code] || 500;
      send(res, status, { error: err.message }, status === 503 ? { 'retry-after': '1' } : {});
    }
  });
  server.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${server.address().port}/embed`));

  const stop = async () => {
    server.close();
    server.closeIdleConnections();
    await batcher.close();
    await model.dispose();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
