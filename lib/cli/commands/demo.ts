/** `bge-m3 demo`: the bundled seed examples indexed and searched, with the top hits and the metrics. */
import * as path from 'node:path';
import type { Command } from 'commander';
import { queryLength } from '../../base/defaults';
import { PACKAGE_DATA_DIR } from '../../engine/runtime';
import { HybridIndex } from '../../retrieval/hybrid_index';
import { EVAL_MODES, evaluate, formatMetricsTable } from '../../training/evaluate';
import { readEvalRows } from '../../training/rows';
import { addModelFlags, withModel } from '../args';
import { formatHits } from '../io';

export function registerDemo(program: Command): void {
  addModelFlags(program.command('demo')
    .description('index the bundled seed examples, run their queries, print the top results and metrics'))
    .action(async (opts) => {
      const file = path.join(PACKAGE_DATA_DIR, 'seed-examples.jsonl');
      const rows = readEvalRows(file);
      await withModel(opts, async (model) => {
        const passages = [...new Set(rows.flatMap((r) => [...r.pos, ...(r.neg ?? [])]))];
        const ix = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'f32', model });
        ix.add(passages.map((_, i) => i), await model.encode(passages, { colbert: true }));
        const queries = await model.encode(rows.map((r) => r.query), { colbert: true, maxLength: queryLength(model.modelMaxLength) });
        process.stdout.write(`Indexed ${passages.length} passages from ${file}\n`);
        rows.slice(0, 3).forEach((row, i) => {
          process.stdout.write(`\nQuery: ${row.query}\n`);
          process.stdout.write(formatHits(ix.search(queries.row(i), { k: 3, weights: EVAL_MODES.all }), (id) => passages[id as number]));
        });
        const result = await evaluate(model, rows);
        process.stdout.write(`\n${result.queries} queries, ${result.passages} passages\n${formatMetricsTable(result)}\n`);
      });
    });
}
