/** `bge-m3 search`: the top hits of a query in a hybrid index directory or a PostgreSQL store. */
import type { Command } from 'commander';
import { queryLength } from '../../base/defaults';
import { HybridIndex, type SearchHit } from '../../retrieval/hybrid_index';
import { DEFAULT_WEIGHTS } from '../../scoring/fusion';
import { addModelFlags, positiveInt, weightList, withModel } from '../args';
import { formatHits, snippet } from '../io';
import { addStoreFlags, checkStoreFlags, exactlyOne, openStore, parseFilter } from '../store';

/** A search needs a store that exists and outlives the command. */
const STORE_OPTIONS = { create: false, persistent: true };

export function registerSearch(program: Command): void {
  addModelFlags(addStoreFlags(program.command('search')
    .description('search a hybrid index directory or a PostgreSQL store')
    .option('-x, --index <dir>', 'index directory (bge-m3 index build --out)'),
  'a store (bge-m3 index build --store)')
    .argument('<query>', 'the query')
    .option('-k, --k <n>', 'results', positiveInt, 10)
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [...DEFAULT_WEIGHTS] as [number, number, number])
    .option('--filter <json>', `only documents whose metadata match, e.g. '{"lang": "en", "year": {"gte": 2020}}'`)
    .option('--json', 'print JSON'))
    .action(async (query: string, opts) => {
      exactlyOne('search', ['--index DIR', opts.index], ['--store URL', opts.store]);
      checkStoreFlags(opts, STORE_OPTIONS);
      const filter = opts.filter === undefined ? undefined : parseFilter(opts.filter);
      await withModel(opts, async (model) => {
        if (opts.index !== undefined) {
          const ix = HybridIndex.load(opts.index, { model });
          const encoded = await model.encode([query], { colbert: !!ix.colbert, maxLength: queryLength(model.modelMaxLength) });
          const hits = ix.search(encoded.row(0), { k: opts.k, weights: opts.weights, ...(filter ? { filter } : {}) });
          printHits(query, hits, opts.json);
          return;
        }
        const store = await openStore(opts, model, STORE_OPTIONS);
        try {
          const hits = await store.search(query, { k: opts.k, weights: opts.weights, ...(filter ? { filter } : {}) });
          printHits(query, hits, opts.json);
        } finally {
          await store.close();
        }
      });
    });
}

/** Hits as JSON, or one line each with the text's start when the document has one. */
function printHits(query: string, hits: SearchHit[], json: boolean): void {
  process.stdout.write(json ? `${JSON.stringify({ query, hits }, null, 2)}\n`
    : hits.length === 0 ? 'no documents match\n'
      : formatHits(hits, (id, hit) => `${String(id)}${hit.text === undefined ? '' : `  ${snippet(hit.text)}`}`));
}
