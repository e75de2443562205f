/**
 * `bge-m3 store import|export|info`: documents between a hybrid index directory and a PostgreSQL
 * store, without re-encoding (no model is loaded: each side records the model it holds, and a
 * store refuses an index of another model), and what a store holds.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { M3Error } from '../../base/errors';
import { HybridIndex } from '../../retrieval/hybrid_index';
import { PgStore } from '../../store/pg_store';
import { exportIndex, importIndex } from '../../store/transfer';
import { progressReporter } from '../io';
import { addStoreFlags, checkStoreFlags, type StoreFlags } from '../store';

function tableOf(flags: StoreFlags): { table?: string } {
  return flags.storeTable === undefined ? {} : { table: flags.storeTable };
}

function requireStore(flags: StoreFlags, command: string): void {
  if (flags.store === undefined) throw new M3Error('ERR_INPUT', `store ${command} needs --store URL`);
}

export function registerStore(program: Command): void {
  const store = program.command('store').description('move documents between a hybrid index directory and a PostgreSQL store; describe a store');

  addStoreFlags(store.command('import')
    .description('copy every document of a hybrid index directory (vectors, texts, metadata) into a store, created if missing')
    .requiredOption('-x, --index <dir>', 'index directory (bge-m3 index build --out)'), 'the store to write')
    .option('--json', 'no progress bar; print a JSON summary')
    .action(async (opts) => {
      requireStore(opts, 'import');
      checkStoreFlags(opts, { create: true, persistent: true });
      const index = HybridIndex.load(opts.index);
      const started = performance.now();
      const target = await PgStore.open(opts.store, {
        model: index.model ?? { dim: index.dim, vocabSize: index.vocabSize }, colbert: index.colbert, ...tableOf(opts),
      });
      try {
        const progress = progressReporter(!opts.json, 'documents');
        const written = await importIndex(target, index, { onProgress: (n) => progress?.(n, index.size) });
        const summary = { index: path.resolve(opts.index), store: target.url, table: target.table, written, documents: await target.count(),
          seconds: (performance.now() - started) / 1000 };
        process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n` : `copied ${written} documents from ${summary.index} into ${target.url}\n`);
      } finally {
        await target.close();
      }
    });

  addStoreFlags(store.command('export')
    .description('write every document of a store (vectors, texts, metadata) into a new hybrid index directory')
    .requiredOption('-o, --out <dir>', 'index directory (written atomically)')
    .option('--dense <route>', 'dense route of the index: exact, or hnsw', 'exact'), 'the store to read')
    .option('--json', 'no progress bar; print a JSON summary')
    .action(async (opts) => {
      requireStore(opts, 'export');
      checkStoreFlags(opts, { create: false });
      if (opts.dense !== 'exact' && opts.dense !== 'hnsw') throw new M3Error('ERR_INPUT', `--dense must be exact or hnsw, not ${opts.dense}`);
      const started = performance.now();
      const source = await PgStore.open(opts.store, { create: false, ...tableOf(opts) });
      try {
        const total = await source.count();
        const progress = progressReporter(!opts.json, 'documents');
        const index = await exportIndex(source, { dense: opts.dense, onProgress: (n) => progress?.(n, total) });
        index.save(opts.out);
        const summary = { store: source.url, table: source.table, index: path.resolve(opts.out), documents: index.size,
          seconds: (performance.now() - started) / 1000 };
        process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n` : `wrote ${index.size} documents from ${source.url} to ${summary.index}\n`);
      } finally {
        await source.close();
      }
    });

  addStoreFlags(store.command('info')
    .description("a store's settings, model, document count and storage"), 'the store to describe')
    .action(async (opts) => {
      requireStore(opts, 'info');
      checkStoreFlags(opts, { create: false });
      const s = await PgStore.open(opts.store, { create: false, ...tableOf(opts) });
      try {
        const info = {
          store: s.url, table: s.table, dim: s.dim, vocabSize: s.vocabSize, colbert: s.colbert, model: s.model ?? null,
          documents: await s.count(), indexes: await s.hasIndexes(), bytes: await s.storageBytes(),
        };
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      } finally {
        await s.close();
      }
    });
}
