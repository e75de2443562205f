/** `bge-m3 score`: a query against passages in all three modes and their combinations (FlagEmbedding's compute_score). */
import type { Command } from 'commander';
import { DEFAULT_WEIGHTS } from '../../scoring/fusion';
import { addModelFlags, weightList, withModel } from '../args';

export function registerScore(program: Command): void {
  addModelFlags(program.command('score')
    .description('score a query against passages with all three modes (FlagEmbedding compute_score)')
    .argument('<query>', 'the query')
    .argument('<passages...>', 'one or more passages')
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [...DEFAULT_WEIGHTS] as [number, number, number]))
    .action(async (query: string, passages: string[], opts) => {
      await withModel(opts, async (model) => {
        const scores = await model.computeScore(passages.map((p) => [query, p] as [string, string]), { weights: opts.weights });
        const rows = passages.map((passage, i) => ({
          passage, dense: scores.dense[i], sparse: scores.sparse[i], colbert: scores.colbert[i],
          'sparse+dense': scores['sparse+dense'][i], 'colbert+sparse+dense': scores['colbert+sparse+dense'][i],
        }));
        process.stdout.write(`${JSON.stringify({ query, weights: opts.weights, scores: rows }, null, 2)}\n`);
      });
    });
}
