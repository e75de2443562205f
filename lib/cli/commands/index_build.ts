/** `bge-m3 index build`: a corpus JSONL encoded into a hybrid index directory or a PostgreSQL store. */
import * as path from 'node:path';
import type { Command, OptionValues } from 'commander';
import { M3Error } from '../../base/errors';
import type { BGEM3 } from '../../engine/model';
import { HybridIndex } from '../../retrieval/hybrid_index';
import type { ColbertFormat } from '../../store/codec';
import { checkStoreDocument } from '../../store/documents';
import { ingest } from '../../store/ingest';
import { addModelFlags, positiveInt, withModel } from '../args';
import { progressReporter, readCorpus, type CorpusDocument } from '../io';
import { addStoreFlags, checkStoreFlags, exactlyOne, openStore } from '../store';

export function registerIndex(program: Command): void {
  const index = program.command('index').description('build hybrid indexes and stores');
  addModelFlags(addStoreFlags(index.command('build')
    .description('encode a corpus (JSONL: {"id"?, "text", "metadata"?} per line) into a hybrid index directory (--out) or a PostgreSQL store (--store)')
    .requiredOption('-i, --in <file>', 'corpus JSONL')
    .option('-o, --out <dir>', 'index directory (written atomically)'),
  'a store to add the documents to (a second run skips the ids the store has, so an interrupted build resumes)')
    .option('--colbert <format>', 'ColBERT storage: f32, bf16, i8 or none (default f32 with --out, bf16 with --store; a store keeps the format it was created with)')
    .option('--dense <route>', 'with --out, the dense route: exact (default), or hnsw (an approximate graph, saved with the index, for large corpora)')
    .option('--batch <n>', 'texts per encode call (and per transaction with --store)', positiveInt, 256)
    .option('--json', 'no progress bar; print a JSON summary'))
    .action(async (opts) => {
      exactlyOne('index build', ['--out DIR', opts.out], ['--store URL', opts.store]);
      const colbert = opts.colbert === undefined ? undefined : opts.colbert === 'none' ? false : opts.colbert;
      if (![undefined, false, 'f32', 'bf16', 'i8'].includes(colbert)) throw new M3Error('ERR_INPUT', `--colbert must be f32, bf16, i8 or none, not ${opts.colbert}`);
      if (opts.dense !== undefined && opts.dense !== 'exact' && opts.dense !== 'hnsw') throw new M3Error('ERR_INPUT', `--dense must be exact or hnsw, not ${opts.dense}`);
      if (opts.store !== undefined && opts.dense !== undefined) {
        throw new M3Error('ERR_INPUT', '--dense applies to --out: a store recalls with HNSW indexes in PostgreSQL');
      }
      checkStoreFlags(opts, { create: true, persistent: true });
      const docs = readCorpus(opts.in);
      if (opts.store !== undefined) checkForStore(docs, opts.in);
      await withModel(opts, (model) => (opts.store !== undefined ? buildStore(model, docs, colbert, opts) : buildIndex(model, docs, colbert ?? 'f32', opts)));
    });
}

async function buildIndex(model: BGEM3, docs: CorpusDocument[], colbert: ColbertFormat | false, opts: OptionValues): Promise<void> {
  const started = performance.now();
  const ix = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert, model, dense: opts.dense ?? 'exact' });
  const progress = progressReporter(!opts.json, 'documents');
  for (let start = 0; start < docs.length; start += opts.batch) {
    const part = docs.slice(start, start + opts.batch);
    ix.add(part.map((d) => d.id), await model.encode(part.map((d) => d.text), { colbert: !!colbert }),
      { texts: part.map((d) => d.text), metadata: part.map((d) => d.metadata) });
    progress?.(Math.min(start + opts.batch, docs.length), docs.length);
  }
  ix.save(opts.out);
  const seconds = (performance.now() - started) / 1000;
  const summary = { index: path.resolve(opts.out), documents: ix.size, seconds, documentsPerSecond: ix.size / seconds, colbert, dense: ix.denseRoute, colbertBytesPerDocument: ix.colbertBytesPerDocument };
  process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n` : `indexed ${ix.size} documents in ${seconds.toFixed(1)} s into ${summary.index}\n`);
}

/**
 * Ingests the corpus into the store (resuming by id). SIGINT or SIGTERM stops it between batches
 * and closes the store cleanly; the batches written stay, and the next run goes on from there.
 */
async function buildStore(model: BGEM3, docs: CorpusDocument[], colbert: ColbertFormat | false | undefined, opts: OptionValues): Promise<void> {
  const started = performance.now();
  const store = await openStore(opts, model, { create: true, colbert, persistent: true });
  const stop = new AbortController();
  const onSignal = (signal: string) => {
    if (stop.signal.aborted) process.exit(130);
    process.stderr.write(`bge-m3 index build: ${signal}: stopping after the batch in progress (run the command again to resume)\n`);
    stop.abort();
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    if (colbert !== undefined && store.colbert !== colbert) {
      throw new M3Error('ERR_INPUT', `The store '${store.table}' at ${store.url} keeps ColBERT vectors as ${store.colbert || 'none'}, ` +
        `not ${opts.colbert}: --colbert applies when a store is created (leave it out, or use another --store-table)`);
    }
    const progress = progressReporter(!opts.json, 'documents');
    const result = await ingest(store, docs.map((d) => ({ id: d.id, text: d.text, metadata: d.metadata })), {
      batchSize: opts.batch, signal: stop.signal, onProgress: progress && ((p) => progress(p.written + p.skipped, docs.length)),
    });
    const seconds = (performance.now() - started) / 1000;
    const summary = {
      store: store.url, table: store.table, documents: await store.count(), written: result.written, skipped: result.skipped,
      seconds, documentsPerSecond: result.written / seconds, colbert: store.colbert,
    };
    process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n`
      : `indexed ${result.written} documents (${result.skipped} already there) in ${seconds.toFixed(1)} s into ${store.url}, ` +
        `table ${store.table} (${summary.documents} documents)\n`);
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    await store.close();
  }
}

/** What a store refuses, found before anything is written and named by file and line. */
function checkForStore(docs: CorpusDocument[], file: string): void {
  const lineOf = new Map<string, number>();
  for (const d of docs) {
    const where = `${file}:${d.line}`;
    const key = checkStoreDocument(d.id, d.text, d.metadata, (field) => `${where}: "${field}"`);
    const first = lineOf.get(key);
    if (first !== undefined) {
      throw new M3Error('ERR_INPUT', `${where}: id ${JSON.stringify(d.id)} names the same document as the id on line ${first} ` +
        '(a store keeps ids as text, so 5 and "5" are one id)');
    }
    lineOf.set(key, d.line);
  }
}
