/** `bge-m3 index build`: a corpus JSONL encoded into a hybrid index directory. */
import * as path from 'node:path';
import type { Command } from 'commander';
import { M3Error } from '../../base/errors';
import { HybridIndex } from '../../retrieval/hybrid_index';
import { addModelFlags, positiveInt, withModel } from '../args';
import { progressReporter, readCorpus } from '../io';

export function registerIndex(program: Command): void {
  const index = program.command('index').description('build hybrid indexes');
  addModelFlags(index.command('build')
    .description('encode a corpus (JSONL: {"id"?, "text"} per line) into a hybrid index directory')
    .requiredOption('-i, --in <file>', 'corpus JSONL')
    .requiredOption('-o, --out <dir>', 'index directory (written atomically)')
    .option('--colbert <format>', "ColBERT storage: f32, bf16, i8 or none", 'f32')
    .option('--dense <route>', "dense route: exact, or hnsw (an approximate graph, saved with the index, for large corpora)", 'exact')
    .option('--batch <n>', 'texts per encode call', positiveInt, 256)
    .option('--json', 'no progress bar; print a JSON summary'))
    .action(async (opts) => {
      const colbert = opts.colbert === 'none' ? false : opts.colbert;
      if (![false, 'f32', 'bf16', 'i8'].includes(colbert)) throw new M3Error('ERR_INPUT', `--colbert must be f32, bf16, i8 or none, not ${opts.colbert}`);
      if (opts.dense !== 'exact' && opts.dense !== 'hnsw') throw new M3Error('ERR_INPUT', `--dense must be exact or hnsw, not ${opts.dense}`);
      const docs = readCorpus(opts.in);
      await withModel(opts, async (model) => {
        const started = performance.now();
        const ix = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert, model, dense: opts.dense });
        const progress = progressReporter(!opts.json, 'documents');
        for (let start = 0; start < docs.length; start += opts.batch) {
          const part = docs.slice(start, start + opts.batch);
          ix.add(part.map((d) => d.id), await model.encode(part.map((d) => d.text), { colbert: !!colbert }));
          progress?.(Math.min(start + opts.batch, docs.length), docs.length);
        }
        ix.save(opts.out);
        const seconds = (performance.now() - started) / 1000;
        const summary = { index: path.resolve(opts.out), documents: ix.size, seconds, documentsPerSecond: ix.size / seconds, colbert, dense: ix.denseRoute, colbertBytesPerDocument: ix.colbertBytesPerDocument };
        process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n` : `indexed ${ix.size} documents in ${seconds.toFixed(1)} s into ${summary.index}\n`);
      });
    });
}
