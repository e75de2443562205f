/** `bge-m3 eval`: retrieval metrics per mode on {query, pos, neg} JSONL. */
import type { Command } from 'commander';
import { evaluate, formatMetricsTable } from '../../training/evaluate';
import { addModelFlags, withModel } from '../args';
import { progressReporter } from '../io';

export function registerEval(program: Command): void {
  addModelFlags(program.command('eval')
    .description('evaluate retrieval on {query, pos, neg} JSONL: MRR@10, nDCG@10, Recall@1/10/100 per mode')
    .requiredOption('-d, --data <file>', 'JSONL with {"query", "pos": [...], "neg": [...]} rows')
    .option('--json', 'print JSON instead of a table'))
    .action(async (opts) => {
      await withModel(opts, async (model) => {
        const result = await evaluate(model, opts.data, { onProgress: progressReporter(!opts.json, 'passages') });
        process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n`
          : `${result.queries} queries, ${result.passages} passages\n${formatMetricsTable(result)}\n`);
      });
    });
}
