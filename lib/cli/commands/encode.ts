/** `bge-m3 encode`: texts to JSON (dense vectors, lexical weights, ColBERT vectors). */
import type { Command } from 'commander';
import type { EncodeOutput } from '../../engine/outputs';
import type { BGEM3 } from '../../engine/model';
import { addModelFlags, positiveInt, withModel } from '../args';
import { readTexts } from '../io';

export function registerEncode(program: Command): void {
  addModelFlags(program.command('encode')
    .description('encode texts and print JSON')
    .argument('[texts...]', 'texts to encode (default: --file, or stdin, one text per line)')
    .option('-f, --file <path>', 'read texts from a file (.jsonl: a "text" field per line; else one per line)')
    .option('--dense', 'output dense vectors')
    .option('--sparse', 'output lexical weights')
    .option('--colbert', 'output ColBERT vectors')
    .option('--tokens', 'key lexical weights by token piece instead of id')
    .option('--max-length <n>', 'truncate texts to n tokens', positiveInt)
    .option('--batch-size <n>', 'texts per batch', positiveInt)
    .option('--pretty', 'indent the JSON'))
    .action(async (args: string[], opts) => {
      const texts = readTexts(args, opts.file);
      const any = opts.dense || opts.sparse || opts.colbert;
      const want = { dense: any ? !!opts.dense : true, sparse: any ? !!opts.sparse : true, colbert: any ? !!opts.colbert : false };
      await withModel(opts, async (model) => {
        const out = await model.encode(texts, { ...want, maxLength: opts.maxLength, batchSize: opts.batchSize });
        const results = texts.map((text, i) => encodedText(model, out, i, text, !!opts.tokens));
        process.stdout.write(`${JSON.stringify({ model: model.info().dir, dim: out.dim, count: out.count, results }, null, opts.pretty ? 2 : undefined)}\n`);
      });
    });
}

/** Text i of an encode result as JSON: lexical weights keyed by id (or by token piece, with `byPiece`), ColBERT vectors as rows. */
function encodedText(model: BGEM3, out: EncodeOutput, i: number, text: string, byPiece: boolean): Record<string, unknown> {
  const row = out.row(i);
  const item: Record<string, unknown> = { text };
  if (row.dense) item.dense = Array.from(row.dense);
  if (row.sparse) {
    item.sparse = byPiece ? model.convertIdToToken(row.sparse)
      : Object.fromEntries(Array.from(row.sparse.ids, (id, k) => [String(id), row.sparse!.weights[k]]));
  }
  if (row.colbert) {
    const rows: number[][] = [];
    for (let r = 0; r < row.colbert.length / out.dim; r++) rows.push(Array.from(row.colbert.subarray(r * out.dim, (r + 1) * out.dim)));
    item.colbert = rows;
  }
  return item;
}
