/**
 * Bulk ingestion into a PgStore: every document arrives once with its text, metadata and vectors;
 * an ingest killed midway (SIGKILL, in another process) resumes by id without duplicates or
 * losses; the HNSW indexes are built after a load into an empty store.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3, HybridIndex } from '../lib';
import { PgStore } from '../lib/store/pg_store';
import { ingest } from '../lib/store/ingest';
import { DEMO_MODEL, ROOT } from './helpers';
import { generateCorpus, withHalfDense } from './store_support';

describe('PgStore ingest', () => {
  let model: BGEM3;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-ingest-'));
  const corpus = generateCorpus(11, 900, 6);
  const documents = corpus.ids.map((id, i) => ({ id, text: corpus.texts[i], metadata: corpus.metadata[i] }));
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
  });
  after(() => {
    model?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Every document is in the store once, with its text and metadata, and searches like the oracle. */
  async function checkComplete(store: PgStore) {
    assert.equal(await store.count(), documents.length);
    for (const i of [0, 1, 2, 450, 899]) assert.deepEqual(await store.get(documents[i].id), documents[i]);
    const docs = await model.encode(corpus.texts, { colbert: true });
    const oracle = HybridIndex.create({ dim: docs.dim, vocabSize: model.info().vocabSize, colbert: 'bf16' });
    oracle.add(corpus.ids, withHalfDense(docs));
    const qs = await model.encode(corpus.queries, { colbert: true });
    for (let q = 0; q < qs.count; q++) {
      const want = oracle.search(qs.row(q), { k: 10, exhaustive: true }).map((h) => h.id);
      const got = await store.search(qs.row(q), { k: 10, exhaustive: true });
      assert.deepEqual(got.map((h) => h.id), want);
    }
  }

  it('loads a corpus in overlapping batches, builds the indexes after, and skips what it has', async () => {
    const store = await PgStore.open('pglite:memory', { model, colbert: 'bf16' });
    try {
      const seen: number[] = [];
      const result = await ingest(store, documents, { batchSize: 128, onProgress: (p) => seen.push(p.written) });
      assert.equal(result.written, documents.length);
      assert.equal(result.builtIndexes, true);
      assert.ok(await store.hasIndexes());
      assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
      assert.equal(seen[seen.length - 1], documents.length);
      await checkComplete(store);
      const again = await ingest(store, documents, { batchSize: 300 });
      assert.deepEqual([again.written, again.skipped, again.builtIndexes], [0, documents.length, false]);
      await assert.rejects(ingest(store, [{ id: 'x' } as never]), /string text/);
    } finally {
      await store.close();
    }
  });

  it('resumes an ingest killed midway, with nothing lost and nothing twice', async () => {
    const dir = path.join(tmp, 'killed');
    const input = path.join(tmp, 'docs.json');
    fs.writeFileSync(input, JSON.stringify(documents));
    // The child writes batches of 50 and reports each; it is killed after the fourth.
    const script = `
      const { BGEM3 } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
      const { PgStore } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'store', 'pg_store.js'))});
      const { ingest } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'store', 'ingest.js'))});
      (async () => {
        const model = await BGEM3.load(${JSON.stringify(DEMO_MODEL)});
        const store = await PgStore.open(${JSON.stringify(`pglite:${dir}`)}, { model, colbert: 'bf16' });
        const docs = JSON.parse(require('fs').readFileSync(${JSON.stringify(input)}, 'utf8'));
        await ingest(store, docs, { batchSize: 50, onProgress: (p) => process.stdout.write('written ' + p.written + '\\n') });
        process.stdout.write('done\\n');
      })();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk) => {
        out += chunk;
        if (/written 200\n/.test(out)) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
      child.on('error', reject);
    });
    assert.doesNotMatch(out, /done/, 'the child was killed before it finished');
    const store = await PgStore.open(`pglite:${dir}`, { model });
    try {
      const before = await store.count();
      assert.ok(before >= 200 && before < documents.length, `${before} documents after the kill`);
      assert.equal(before % 50, 0, 'only whole batches were written');
      const result = await ingest(store, documents, { batchSize: 64 });
      assert.equal(result.skipped, before);
      assert.equal(result.written, documents.length - before);
      assert.equal(result.builtIndexes, true, 'the indexes dropped by the killed run are built');
      await checkComplete(store);
    } finally {
      await store.close();
    }
  });
});
