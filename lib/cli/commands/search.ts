/** `bge-m3 search`: the top hits of a query in a hybrid index directory. */
import type { Command } from 'commander';
import { queryLength } from '../../base/defaults';
import { HybridIndex } from '../../retrieval/hybrid_index';
import { DEFAULT_WEIGHTS } from '../../scoring/fusion';
import { addModelFlags, positiveInt, weightList, withModel } from '../args';
import { formatHits } from '../io';

export function registerSearch(program: Command): void {
  addModelFlags(program.command('search')
    .description('search a hybrid index')
    .requiredOption('-x, --index <dir>', 'index directory (bge-m3 index build)')
    .argument('<query>', 'the query')
    .option('-k, --k <n>', 'results', positiveInt, 10)
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [...DEFAULT_WEIGHTS] as [number, number, number])
    .option('--json', 'print JSON'))
    .action(async (query: string, opts) => {
      await withModel(opts, async (model) => {
        const ix = HybridIndex.load(opts.index, { model });
        const encoded = await model.encode([query], { colbert: !!ix.colbert, maxLength: queryLength(model.modelMaxLength) });
        const hits = ix.search(encoded.row(0), { k: opts.k, weights: opts.weights });
        process.stdout.write(opts.json ? `${JSON.stringify({ query, hits }, null, 2)}\n` : formatHits(hits, (id) => String(id)));
      });
    });
}
