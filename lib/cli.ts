#!/usr/bin/env node
/**
 * The `bge-m3` command: encode texts, score pairs and describe the runtime and a model.
 * Without --model it uses the bundled demo model, whose weights are random.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { BGEM3, type LoadOptions } from './model';
import { M3Error } from './errors';
import { DEMO_MODEL_DIR, capabilities, runtimeInfo } from './runtime';

const DEMO_WARNING = 'bge-m3: using the bundled demo model, whose weights are RANDOM: its vectors and scores mean ' +
  'nothing. For real embeddings download BAAI/bge-m3 (huggingface-cli download BAAI/bge-m3 --local-dir ./bge-m3) ' +
  'and pass --model ./bge-m3.';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function weightList(value: string): [number, number, number] {
  const parts = value.split(',').map(Number);
  if (parts.length !== 3 || parts.some((x) => !Number.isFinite(x) || x < 0)) {
    throw new InvalidArgumentError('expected three non-negative numbers, e.g. 0.4,0.2,0.4');
  }
  return parts as [number, number, number];
}

interface ModelFlags {
  model?: string;
  threads?: number;
  device?: 'cpu' | 'cuda';
}

async function openModel(flags: ModelFlags): Promise<BGEM3> {
  const dir = flags.model ?? DEMO_MODEL_DIR;
  if (!flags.model) process.stderr.write(`${DEMO_WARNING}\n`);
  const options: LoadOptions = { device: flags.device ?? 'cpu' };
  if (flags.threads) options.threads = flags.threads;
  return BGEM3.load(dir, options);
}

/** Texts from the arguments, else from --file (one per line, or JSON lines with a "text" field), else stdin. */
function readTexts(args: string[], file?: string): string[] {
  if (args.length > 0) return args;
  const source = file === undefined || file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(path.resolve(file), 'utf8');
  const lines = source.split(/\r?\n/).filter((l) => l.length > 0);
  const isJsonl = file !== undefined && /\.jsonl$/i.test(file);
  return lines.map((line, i) => {
    if (!isJsonl) return line;
    const row = JSON.parse(line) as { text?: unknown };
    if (typeof row.text !== 'string') throw new M3Error('ERR_INPUT', `${file}:${i + 1}: expected an object with a "text" string`);
    return row.text;
  });
}

function addModelFlags(cmd: Command): Command {
  return cmd
    .option('-m, --model <dir>', 'model directory (BAAI/bge-m3 snapshot or ONNX export); default: the demo model')
    .option('-t, --threads <n>', 'ONNX Runtime threads', positiveInt)
    .option('--device <device>', "'cpu' or 'cuda'", 'cpu');
}

async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('bge-m3').description('BGE-M3 embeddings (dense, sparse, ColBERT) through ONNX Runtime')
    .showHelpAfterError();

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
      const model = await openModel(opts);
      try {
        const out = await model.encode(texts, { ...want, maxLength: opts.maxLength, batchSize: opts.batchSize });
        const results = texts.map((text, i) => {
          const row = out.row(i);
          const item: Record<string, unknown> = { text };
          if (row.dense) item.dense = Array.from(row.dense);
          if (row.sparse) {
            item.sparse = opts.tokens ? model.convertIdToToken(row.sparse)
              : Object.fromEntries(Array.from(row.sparse.ids, (id, k) => [String(id), row.sparse!.weights[k]]));
          }
          if (row.colbert) {
            const rows: number[][] = [];
            for (let r = 0; r < row.colbert.length / out.dim; r++) rows.push(Array.from(row.colbert.subarray(r * out.dim, (r + 1) * out.dim)));
            item.colbert = rows;
          }
          return item;
        });
        process.stdout.write(`${JSON.stringify({ model: model.info().dir, dim: out.dim, count: out.count, results }, null, opts.pretty ? 2 : undefined)}\n`);
      } finally {
        await model.dispose();
      }
    });

  addModelFlags(program.command('score')
    .description('score a query against passages with all three modes (FlagEmbedding compute_score)')
    .argument('<query>', 'the query')
    .argument('<passages...>', 'one or more passages')
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [0.4, 0.2, 0.4] as [number, number, number]))
    .action(async (query: string, passages: string[], opts) => {
      const model = await openModel(opts);
      try {
        const scores = await model.computeScore(passages.map((p) => [query, p] as [string, string]), { weights: opts.weights });
        const rows = passages.map((passage, i) => ({
          passage, dense: scores.dense[i], sparse: scores.sparse[i], colbert: scores.colbert[i],
          'sparse+dense': scores['sparse+dense'][i], 'colbert+sparse+dense': scores['colbert+sparse+dense'][i],
        }));
        process.stdout.write(`${JSON.stringify({ query, weights: opts.weights, scores: rows }, null, 2)}\n`);
      } finally {
        await model.dispose();
      }
    });

  addModelFlags(program.command('info')
    .description('ONNX Runtime version and providers, CPU features and kernel tier, and the model layout'))
    .action(async (opts) => {
      const runtime = runtimeInfo();
      const report: Record<string, unknown> = {
        node: process.version,
        onnxruntime: { version: runtime.ortVersion, providers: runtime.providers, usableProviders: runtime.usableProviders,
          libraryDir: runtime.ortLibraryDir, cudaProviderLibrariesMissing: runtime.cudaMissing },
        cpu: capabilities(),
      };
      const model = await openModel(opts);
      try {
        report.model = { ...model.info(), demo: !opts.model };
      } finally {
        await model.dispose();
      }
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    });

  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`bge-m3: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
