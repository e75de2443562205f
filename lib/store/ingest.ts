/**
 * Bulk ingestion into a PgStore: documents are encoded in batches while the previous batch is
 * written (encoding and database writes overlap), each batch in one transaction. An ingest that
 * is interrupted, however it ends, leaves whole batches: run again, it skips the ids the store
 * already has (resume by id), so nothing is written twice and nothing is lost.
 *
 * Into an empty store, the HNSW indexes are dropped first and built once at the end: one build
 * over the loaded rows is much faster than inserting every row into the graphs. A store whose
 * ingest stopped before that build still answers searches (its routes fall back to exact scans)
 * and the next ingest builds the indexes.
 */
import { M3Error } from '../base/errors';
import { checkBoolean, checkOptions, checkSignal, optionalInteger } from '../base/validate';
import type { EncodeOutput } from '../engine/outputs';
import type { PgStore, StoreDocument } from './pg_store';

/** Options of {@link ingest}. */
export interface IngestOptions {
  /** Documents per encode call and per transaction (default 256). */
  batchSize?: number;
  /** Skip documents whose ids the store already has (default true); false re-encodes and replaces them. */
  resume?: boolean;
  /**
   * Drop the HNSW indexes of an empty store before loading and build them after (default true).
   * false keeps them and inserts every row into the graphs.
   */
  deferIndexes?: boolean;
  /** Called after each written batch. */
  onProgress?: (progress: IngestProgress) => void;
  /** Stops between batches; batches already written stay. */
  signal?: AbortSignal;
  /** Encodes one batch of texts (default: the store's model). */
  encode?: (texts: string[]) => Promise<EncodeOutput>;
}

export interface IngestProgress {
  /** Documents read from the input so far. */
  read: number;
  /** Documents written in this run. */
  written: number;
  /** Documents skipped because the store had their ids. */
  skipped: number;
}

export interface IngestResult extends IngestProgress {
  seconds: number;
  /** Whether this run built the HNSW indexes. */
  builtIndexes: boolean;
}

/**
 * Encodes and writes `documents` (each with an id and a text; metadata optional) into `store`.
 * Rejects with the first failure; every batch written before it stays.
 */
export async function ingest(store: PgStore, documents: Iterable<StoreDocument> | AsyncIterable<StoreDocument>,
  options: IngestOptions = {}): Promise<IngestResult> {
  checkOptions(options);
  const batchSize = optionalInteger(options.batchSize, 'batchSize', 256, 1, 100_000);
  const resume = checkBoolean(options.resume, 'resume', true);
  const deferIndexes = checkBoolean(options.deferIndexes, 'deferIndexes', true);
  const signal = checkSignal(options.signal);
  const encode = options.encode ?? ((texts: string[]) => store.encodeTexts(texts, false));
  const started = performance.now();
  const deferred = deferIndexes && (await store.count()) === 0;
  if (deferred) await store.dropIndexes();
  const progress: IngestProgress = { read: 0, written: 0, skipped: 0 };
  // The write of batch i runs while batch i + 1 is encoded; its failure is seen at the next wait.
  let writing: Promise<void> | undefined;
  let writeError: unknown;
  const waitForWrite = async () => {
    await writing;
    writing = undefined;
    if (writeError !== undefined) throw writeError;
  };
  const flush = async (batch: StoreDocument[]) => {
    let todo = batch;
    if (resume) {
      const have = await store.existing(batch.map((d) => d.id));
      todo = batch.filter((d) => !have.has(String(d.id)));
      progress.skipped += batch.length - todo.length;
    }
    if (todo.length === 0) {
      options.onProgress?.({ ...progress });
      return;
    }
    const encoded = await encode(todo.map((d) => d.text as string));
    await waitForWrite();
    writing = store.add(todo.map((d) => d.id), encoded, { texts: todo.map((d) => d.text), metadata: todo.map((d) => d.metadata) })
      .then(() => {
        progress.written += todo.length;
        options.onProgress?.({ ...progress });
      }, (err) => {
        writeError = err;
      });
  };
  let batch: StoreDocument[] = [];
  for await (const doc of documents as AsyncIterable<StoreDocument>) {
    if (signal?.aborted) break;
    const where = `document ${progress.read + 1}`;
    if (!doc || typeof doc !== 'object' || typeof doc.text !== 'string') throw new M3Error('ERR_INPUT', `${where}: expected { id, text, metadata? } with a string text`);
    if (doc.id === undefined || doc.id === null) throw new M3Error('ERR_INPUT', `${where}: no id (an ingest resumes by id, so every document needs one)`);
    progress.read++;
    batch.push(doc);
    if (batch.length >= batchSize) {
      await flush(batch);
      batch = [];
    }
  }
  if (batch.length > 0 && !signal?.aborted) await flush(batch);
  await waitForWrite();
  if (signal?.aborted) throw new M3Error('ERR_ABORTED', `ingest stopped after ${progress.written} documents (the batches written stay; run again to resume)`);
  // Build the indexes when this run dropped them, or when an earlier, interrupted run did.
  let builtIndexes = false;
  if (deferred || !(await store.hasIndexes())) {
    await store.createIndexes();
    builtIndexes = true;
  }
  return { ...progress, seconds: (performance.now() - started) / 1000, builtIndexes };
}
