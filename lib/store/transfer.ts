/**
 * Moving documents between an in-process HybridIndex and a PgStore, both ways, with their ids,
 * texts, metadata and vectors (no re-encoding). What changes on the way is only what the
 * destination's formats keep: a store holds dense vectors in fp16, and each side stores ColBERT
 * rows in its own format (bf16 to f32 and back is exact; int8 is requantized).
 */
import { M3Error } from '../base/errors';
import { checkOptions, optionalInteger } from '../base/validate';
import { HybridIndex, type HybridIndexOptions } from '../retrieval/hybrid_index';
import type { PgStore } from './pg_store';

export interface TransferOptions {
  /** Documents per batch (default 1000). */
  batchSize?: number;
  /** Called after each batch with the documents moved so far. */
  onProgress?: (done: number) => void;
}

/**
 * Writes every document of `index` into `store` (replacing documents with the same ids). Into an
 * empty store, the HNSW indexes are built once at the end. Returns the documents written.
 */
export async function importIndex(store: PgStore, index: HybridIndex, options: TransferOptions = {}): Promise<number> {
  checkOptions(options);
  const batchSize = optionalInteger(options.batchSize, 'batchSize', 1000, 1, 1_000_000);
  if (index.dim !== store.dim || index.vocabSize !== store.vocabSize) {
    throw new M3Error('ERR_MODEL_LAYOUT', `the index holds vectors of dim ${index.dim} over ${index.vocabSize} token ids, the store ${store.dim} over ${store.vocabSize}; they come from different models`);
  }
  if (store.colbert && !index.colbert) {
    throw new M3Error('ERR_INPUT', `the store keeps ColBERT vectors (${store.colbert}) but the index has none; import into a store opened with { colbert: false }`);
  }
  const deferred = (await store.count()) === 0;
  if (deferred) await store.dropIndexes();
  let done = 0;
  for (const batch of index.documents(batchSize)) {
    await store.add(batch.ids, batch.encoded, { texts: batch.texts, metadata: batch.metadata });
    done += batch.ids.length;
    options.onProgress?.(done);
  }
  if (deferred || !(await store.hasIndexes())) await store.createIndexes();
  return done;
}

/**
 * A new HybridIndex holding every document of `store`, with its ColBERT format unless `options`
 * says otherwise (a ColBERT format the store does not keep is refused).
 */
export async function exportIndex(store: PgStore, options: TransferOptions & Partial<Pick<HybridIndexOptions, 'colbert' | 'dense'>> = {}): Promise<HybridIndex> {
  checkOptions(options);
  const batchSize = optionalInteger(options.batchSize, 'batchSize', 1000, 1, 1_000_000);
  const colbert = options.colbert ?? store.colbert;
  if (colbert && !store.colbert) throw new M3Error('ERR_INPUT', `the store keeps no ColBERT vectors, so the index cannot have ${colbert} ones; export with { colbert: false }`);
  const index = HybridIndex.create({
    dim: store.dim, vocabSize: store.vocabSize, colbert, dense: options.dense,
    model: store.model ?? { dim: store.dim, vocabSize: store.vocabSize },
  });
  let done = 0;
  for await (const batch of store.documents(batchSize)) {
    index.add(batch.ids, batch.encoded, { texts: batch.texts, metadata: batch.metadata });
    done += batch.ids.length;
    options.onProgress?.(done);
  }
  return index;
}
