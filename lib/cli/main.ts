#!/usr/bin/env node
/**
 * The `bge-m3` command: encode texts, score pairs and describe the runtime and a model.
 * Without --model it uses the bundled demo model, whose weights are random.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { BGEM3, type LoadOptions } from '../engine/model';
import { DEFAULT_MAX_BATCH_TOKENS, queryLength } from '../base/defaults';
import { M3Error } from '../base/errors';
import { isIntegerIn, isNumberIn, isWeightTriple } from '../base/validate';
import { RERANK_WEIGHTS, SEARCH_WEIGHTS } from '../scoring/fusion';
import { DEMO_MODEL_DIR, PACKAGE_DATA_DIR, capabilities, runtimeInfo } from '../engine/runtime';
import { HybridIndex, type DocumentId, type SearchHit } from '../retrieval/hybrid_index';
import { EVAL_MODES, evaluate, formatMetricsTable } from '../training/evaluate';
import { readEvalRows } from '../training/rows';
import { SingleBar } from 'cli-progress';
import { createServer, type M3Server } from '../serve/server';
import { finetuneHeads, type FinetuneEvent } from '../training/finetune';
import { cudaInfo } from '../scoring/maxsim';

const DEMO_WARNING = 'bge-m3: using the bundled demo model, whose weights are RANDOM: its vectors and scores mean ' +
  'nothing. For real embeddings download BAAI/bge-m3 (huggingface-cli download BAAI/bge-m3 --local-dir ./bge-m3) ' +
  'and pass --model ./bge-m3.';

/** A parser of numeric arguments: the number, if `accept` takes it. */
function numberArg(accept: (n: number) => boolean, expected: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!accept(n)) throw new InvalidArgumentError(`expected ${expected}`);
    return n;
  };
}

const positiveInt = numberArg((n) => isIntegerIn(n, 1, Infinity), 'a positive integer');
const nonNegativeInt = numberArg((n) => isIntegerIn(n, 0, Infinity), 'a non-negative integer');
const nonNegativeNumber = numberArg((n) => isNumberIn(n, 0, Infinity), 'a non-negative number');
const positiveNumber = numberArg((n) => isNumberIn(n, Number.MIN_VALUE, Infinity), 'a positive number');

/** A byte count: a plain number, or with a binary unit (512M, 8G, 8GiB). */
function byteSize(value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(value.trim());
  const power = m?.[2] ? 'KMGT'.indexOf(m[2].toUpperCase()) + 1 : 0;
  const n = m ? Math.round(Number(m[1]) * 1024 ** power) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a byte count such as 8G, 512M or 1073741824');
  return n;
}

function weightList(value: string): [number, number, number] {
  const parts = value.split(',').map(Number);
  if (!isWeightTriple(parts)) throw new InvalidArgumentError('expected three non-negative numbers, e.g. 0.4,0.2,0.4');
  return parts;
}

function precisionArg(value: string): 'fp32' | 'bf16' {
  if (value !== 'fp32' && value !== 'bf16') throw new InvalidArgumentError("expected 'fp32' or 'bf16'");
  return value;
}

interface ModelFlags {
  model?: string;
  threads?: number;
  device?: 'cpu' | 'cuda';
  deviceId?: number;
  gpuMemLimit?: number;
  fusedAttention?: boolean;
  precision?: 'fp32' | 'bf16';
  releaseMemoryAfterMs?: number;
}

/** The load options the model flags (addModelFlags, addDeviceFlags) give. */
function loadOptions(flags: ModelFlags): LoadOptions {
  const options: LoadOptions = { device: flags.device ?? 'cpu' };
  if (flags.threads) options.threads = flags.threads;
  if (flags.deviceId !== undefined) options.deviceId = flags.deviceId;
  if (flags.gpuMemLimit !== undefined) options.gpuMemLimit = flags.gpuMemLimit;
  if (flags.fusedAttention === false) options.fusedAttention = false;
  if (flags.precision !== undefined) options.precision = flags.precision;
  if (flags.releaseMemoryAfterMs !== undefined) options.releaseMemoryAfterMs = flags.releaseMemoryAfterMs;
  return options;
}

async function openModel(flags: ModelFlags): Promise<BGEM3> {
  const dir = flags.model ?? DEMO_MODEL_DIR;
  if (!flags.model) process.stderr.write(`${DEMO_WARNING}\n`);
  return BGEM3.load(dir, loadOptions(flags));
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

/** A progress bar with rate and ETA on a terminal (nothing otherwise). */
function progressReporter(enabled: boolean, unit: string): ((done: number, total: number) => void) | undefined {
  if (!enabled || !process.stderr.isTTY) return undefined;
  let bar: SingleBar | undefined;
  return (done, total) => {
    if (!bar) {
      bar = new SingleBar({ format: `{bar} {value}/{total} ${unit} | {rate}/s | ETA {eta}s`, stream: process.stderr, hideCursor: true });
      bar.start(total, 0, { rate: '0' });
    }
    const elapsed = process.uptime();
    bar.update(done, { rate: (done / Math.max(elapsed, 1e-3)).toFixed(1) });
    if (done >= total) bar.stop();
  };
}

/** A corpus JSONL: {"id"?: string | number, "text": string} per line (id defaults to the line number). */
function readCorpus(file: string): Array<{ id: DocumentId; text: string }> {
  const lines = fs.readFileSync(path.resolve(file), 'utf8').split(/\r?\n/);
  const lineOf = new Map<DocumentId, number>();
  return lines.flatMap((line, i) => {
    if (!line.trim()) return [];
    let row: { id?: unknown; text?: unknown };
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof row.text !== 'string') throw new M3Error('ERR_INPUT', `${file}:${i + 1}: expected {"id"?, "text": string}`);
    const id = row.id ?? i + 1;
    if (typeof id !== 'string' && !(typeof id === 'number' && Number.isSafeInteger(id))) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: "id" must be a string or an integer`);
    }
    const first = lineOf.get(id as DocumentId);
    if (first !== undefined) throw new M3Error('ERR_INPUT', `${file}:${i + 1}: id ${JSON.stringify(id)} is already used on line ${first}`);
    lineOf.set(id as DocumentId, i + 1);
    return [{ id: id as DocumentId, text: row.text }];
  });
}

function formatHits(hits: SearchHit[], label: (id: DocumentId) => string): string {
  return hits.map((h, i) => `${String(i + 1).padStart(3)}. ${h.score.toFixed(4)}  (dense ${h.dense.toFixed(4)}, sparse ${h.sparse.toFixed(4)}, ` +
    `colbert ${h.colbert.toFixed(4)})  ${label(h.id)}`).join('\n') + '\n';
}

/** Progress of finetune-heads: a bar with the running losses on a terminal, or JSON lines. */
function finetuneReporter(json: boolean): { event: (e: FinetuneEvent) => void; stop: () => void } {
  if (json) return { event: (e) => process.stdout.write(`${JSON.stringify(e)}\n`), stop: () => {} };
  if (!process.stderr.isTTY) return { event: () => {}, stop: () => {} };
  let bar: SingleBar | undefined;
  let phase = '';
  let recent: number[][] = [];
  const stop = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    stop,
    event: (e) => {
      if (e.phase === 'encode' || e.phase === 'train') {
        if (phase !== e.phase) {
          stop();
          phase = e.phase;
          bar = new SingleBar({
            format: e.phase === 'encode' ? 'encoding {bar} {value}/{total} texts'
              : 'training {bar} step {value}/{total} | epoch {epoch} | loss {loss} (dense {dense} lex {lex} colbert {colbert}) | {rate} ex/s',
            stream: process.stderr, hideCursor: true,
          });
          bar.start(e.phase === 'encode' ? e.total : e.steps, 0,
            { epoch: e.phase === 'train' ? `${e.epoch + 1}/${e.epochs}` : '', loss: '-', dense: '-', lex: '-', colbert: '-', rate: '0' });
        }
        if (e.phase === 'encode') bar!.update(e.done);
        else {
          // Means over the last 20 steps: single steps are noisy.
          recent = [...recent.slice(-19), [e.losses.loss, e.losses.dense, e.losses.lex, e.losses.colbert]];
          const mean = (k: number) => (recent.reduce((s, r) => s + r[k], 0) / recent.length).toFixed(3);
          bar!.update(e.step, { epoch: `${e.epoch + 1}/${e.epochs}`, loss: mean(0), dense: mean(1), lex: mean(2), colbert: mean(3),
            rate: e.examplesPerSecond.toFixed(1) });
        }
      } else if (e.phase === 'checkpoint') {
        bar?.update({});
      }
    },
  };
}

function addDeviceFlags(cmd: Command): Command {
  return cmd
    .option('--device <device>', "'cpu' or 'cuda'", 'cpu')
    .option('--device-id <n>', 'CUDA device (with --device cuda)', nonNegativeInt)
    .option('--gpu-mem-limit <bytes>', "ONNX Runtime's GPU arena limit, e.g. 8G (with --device cuda)", byteSize);
}

function addModelFlags(cmd: Command): Command {
  return addDeviceFlags(cmd
    .option('-m, --model <dir>', 'model directory (BAAI/bge-m3 snapshot or ONNX export); default: the demo model')
    .option('-t, --threads <n>', 'ONNX Runtime threads', positiveInt)
    .option('--no-fused-attention', "run the graph's own attention ops instead of the fused CPU kernel")
    .option('--precision <p>', "the dense layers' arithmetic: fp32, or bf16 (a CPU with AVX-512 BF16; about 1e-3 from fp32)", precisionArg));
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
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [...RERANK_WEIGHTS] as [number, number, number]))
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
          libraryDir: runtime.ortLibraryDir, cudaProviderLibrariesMissing: runtime.cudaMissing,
          cudaProvider: runtime.cudaProviderError ? { loads: false, why: runtime.cudaProviderError } : { loads: true } },
        cpu: capabilities(),
        cudaKernels: (({ built, devices, why, names }) => ({ built, devices: names, ...(devices === 0 ? { unavailable: why } : {}) }))(cudaInfo()),
      };
      const model = await openModel(opts);
      try {
        report.model = { ...model.info(), demo: !opts.model };
      } finally {
        await model.dispose();
      }
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    });

  addModelFlags(program.command('eval')
    .description('evaluate retrieval on {query, pos, neg} JSONL: MRR@10, nDCG@10, Recall@1/10/100 per mode')
    .requiredOption('-d, --data <file>', 'JSONL with {"query", "pos": [...], "neg": [...]} rows')
    .option('--json', 'print JSON instead of a table'))
    .action(async (opts) => {
      const model = await openModel(opts);
      try {
        const result = await evaluate(model, opts.data, { onProgress: progressReporter(!opts.json, 'passages') });
        process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n`
          : `${result.queries} queries, ${result.passages} passages\n${formatMetricsTable(result)}\n`);
      } finally {
        await model.dispose();
      }
    });

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
      const model = await openModel(opts);
      try {
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
      } finally {
        await model.dispose();
      }
    });

  addModelFlags(program.command('search')
    .description('search a hybrid index')
    .requiredOption('-x, --index <dir>', 'index directory (bge-m3 index build)')
    .argument('<query>', 'the query')
    .option('-k, --k <n>', 'results', positiveInt, 10)
    .option('-w, --weights <w>', 'dense,sparse,colbert weights', weightList, [...SEARCH_WEIGHTS] as [number, number, number])
    .option('--json', 'print JSON'))
    .action(async (query: string, opts) => {
      const model = await openModel(opts);
      try {
        const ix = HybridIndex.load(opts.index, { model });
        const encoded = await model.encode([query], { colbert: !!ix.colbert, maxLength: queryLength(model.modelMaxLength) });
        const hits = ix.search(encoded.row(0), { k: opts.k, weights: opts.weights });
        process.stdout.write(opts.json ? `${JSON.stringify({ query, hits }, null, 2)}\n` : formatHits(hits, (id) => String(id)));
      } finally {
        await model.dispose();
      }
    });

  addModelFlags(program.command('serve')
    .description('serve the model over HTTP (POST /v1/embeddings, /encode, /score, /rerank, /search; GET /health, /metrics)')
    .option('-x, --index <dir>', 'a hybrid index for POST /search')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('-p, --port <n>', 'port (0 picks a free one)', nonNegativeInt, 8080)
    .option('--no-batching', 'encode each request alone instead of coalescing concurrent requests')
    .option('--max-wait-ms <ms>', 'how long a request may wait for others to batch with', nonNegativeNumber, 2)
    .option('--max-batch-tokens <n>', 'tokens per coalesced batch', positiveInt, DEFAULT_MAX_BATCH_TOKENS)
    .option('--max-queue <n>', 'requests waiting before 503s', positiveInt, 1024)
    .option('--max-queue-tokens <n>', 'tokens waiting before 503s (default 8 x --max-batch-tokens)', positiveInt)
    .option('--max-texts <n>', 'texts per request', positiveInt, 256)
    .option('--max-text-tokens <n>', "tokens per text (default the model's max length)", positiveInt)
    .option('--body-limit <bytes>', 'largest request body', positiveInt, 8 * 1024 * 1024)
    .option('--timeout-ms <ms>', 'answer 503 to a request not done by then (408 to one not received by then)', positiveInt, 30000)
    .option('--drain-timeout-ms <ms>', 'on SIGTERM, wait this long for requests in flight, then close every connection', nonNegativeInt, 10000)
    .option('--release-memory-after-ms <ms>', 'idle this long, give the memory of a burst back to the system (0: never)', nonNegativeInt, 1000)
    .option('--max-event-loop-delay <ms>', 'answer 503 while the event loop lags more (0: off)', nonNegativeInt, 1000)
    .option('--log', 'log requests (JSON lines on stdout)'))
    .action(async (opts) => {
      const model = await openModel(opts);
      let server: M3Server | undefined;
      try {
        const index = opts.index ? HybridIndex.load(opts.index, { model }) : undefined;
        server = await createServer({
          model, index, logger: !!opts.log, bodyLimit: opts.bodyLimit, maxTexts: opts.maxTexts, maxTextTokens: opts.maxTextTokens,
          requestTimeoutMs: opts.timeoutMs, drainTimeoutMs: opts.drainTimeoutMs, maxEventLoopDelayMs: opts.maxEventLoopDelay,
          // --no-batching: each request alone (one request per batch, no wait), the same queue limits.
          batching: opts.batching
            ? { maxWaitMs: opts.maxWaitMs, maxBatchTokens: opts.maxBatchTokens, maxQueue: opts.maxQueue, maxQueueTokens: opts.maxQueueTokens }
            : { maxWaitMs: 0, maxBatchTexts: 1, maxQueue: opts.maxQueue, maxQueueTokens: opts.maxQueueTokens },
        });
        const address = await server.listen({ host: opts.host, port: opts.port });
        process.stdout.write(`bge-m3 serve: listening on ${address}\n`);
      } catch (err) {
        await server?.close();
        await model.dispose();
        throw err;
      }
      const running = server;
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) {
          process.stderr.write(`bge-m3 serve: ${signal} again, exiting without waiting\n`);
          process.exit(1);
        }
        stopping = true;
        process.stderr.write(`bge-m3 serve: ${signal}: finishing requests in flight, then exiting\n`);
        running.close().then(() => model.dispose()).then(() => process.exit(0), (err: Error) => {
          process.stderr.write(`bge-m3 serve: shutdown failed: ${err.message}\n`);
          process.exit(1);
        });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });

  addDeviceFlags(program.command('finetune-heads'))
    .description('fine-tune the sparse and ColBERT heads on {query, pos, neg} JSONL with self-knowledge distillation (encoder frozen)')
    .requiredOption('-m, --model <dir>', 'source model directory (BAAI layout; never modified)')
    .requiredOption('-d, --data <file>', 'training JSONL: {"query", "pos": [...], "neg": [...]} per line')
    .requiredOption('-o, --out <dir>', 'output model directory (written atomically)')
    .option('--epochs <n>', 'passes over the data', positiveInt, 1)
    .option('--lr <x>', "Adam's learning rate", positiveNumber, 1e-4)
    .option('--weight-decay <x>', 'AdamW weight decay', nonNegativeNumber, 0)
    .option('--group-size <n>', 'passages per query: 1 positive + n-1 negatives', positiveInt, 8)
    .option('--batch-size <n>', 'queries per step (in-batch negatives across them)', positiveInt, 8)
    .option('--seed <n>', 'shuffling and sampling seed', nonNegativeInt, 0)
    .option('--temperature <x>', 'InfoNCE temperature', positiveNumber, 0.02)
    .option('--loss-weights <d,s,c>', 'mode weights in the loss', weightList)
    .option('--no-self-distill', 'train each mode on its own InfoNCE only (no distillation from the combined score)')
    .option('--heads <list>', 'heads to train: sparse,colbert', 'sparse,colbert')
    .option('--max-query-length <n>', 'query truncation in tokens', positiveInt)
    .option('--max-passage-length <n>', 'passage truncation in tokens', positiveInt)
    .option('--checkpoint-every <n>', 'steps between checkpoints (0: epoch ends and Ctrl-C only)', nonNegativeInt, 500)
    .option('--resume', 'continue the interrupted run whose checkpoint is in the work directory')
    .option('--force', 'replace an existing output directory; discard an old checkpoint when not resuming')
    .option('--copy-encoder', "copy the encoder's files instead of hard-linking them")
    .option('--work-dir <dir>', 'hidden-state cache and checkpoints (default: OUT.partial)')
    .option('--keep-work-dir', 'keep the hidden-state cache after success')
    .option('-t, --threads <n>', 'ONNX Runtime threads for encoding', positiveInt)
    .option('--train-threads <n>', 'threads for the training steps (default: all cores)', positiveInt)
    .option('--json', 'JSON lines of progress on stdout instead of a progress bar')
    .action(async (opts) => {
      const heads = String(opts.heads).split(',').map((h) => h.trim()).filter(Boolean);
      const unknown = heads.filter((h) => h !== 'sparse' && h !== 'colbert');
      if (unknown.length > 0 || heads.length === 0) throw new M3Error('ERR_INPUT', `--heads takes sparse, colbert or sparse,colbert, not '${opts.heads}'`);
      const controller = new AbortController();
      let interrupts = 0;
      const onSignal = (signal: string) => {
        if (++interrupts > 1) {
          process.stderr.write(`bge-m3 finetune-heads: ${signal} again, exiting without a checkpoint\n`);
          process.exit(130);
        }
        process.stderr.write(`\nbge-m3 finetune-heads: ${signal}: finishing the current step and saving a checkpoint\n`);
        controller.abort();
      };
      const onInt = () => onSignal('SIGINT');
      const onTerm = () => onSignal('SIGTERM');
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
      const report = finetuneReporter(!!opts.json);
      try {
        const result = await finetuneHeads({
          model: opts.model, data: opts.data, out: opts.out, epochs: opts.epochs, lr: opts.lr, weightDecay: opts.weightDecay,
          groupSize: opts.groupSize, batchSize: opts.batchSize, seed: opts.seed, temperature: opts.temperature,
          weights: opts.lossWeights, selfDistill: opts.selfDistill, trainSparse: heads.includes('sparse'), trainColbert: heads.includes('colbert'),
          maxQueryLength: opts.maxQueryLength, maxPassageLength: opts.maxPassageLength, checkpointEvery: opts.checkpointEvery,
          resume: !!opts.resume, force: !!opts.force, encoderFiles: opts.copyEncoder ? 'copy' : 'link', workDir: opts.workDir,
          keepWorkDir: !!opts.keepWorkDir, threads: opts.trainThreads, load: loadOptions(opts),
          signal: controller.signal, onProgress: report.event,
        });
        report.stop();
        if (opts.json) process.stdout.write(`${JSON.stringify({ phase: 'result', ...result })}\n`);
        else {
          const l = result.lastEpoch;
          process.stdout.write(`Wrote ${result.out}: ${result.steps} steps, ${result.epochs} epoch(s); last epoch's mean loss ${l.loss.toFixed(4)} ` +
            `(dense ${l.dense.toFixed(3)}, lex ${l.lex.toFixed(3)}, colbert ${l.colbert.toFixed(3)}); ` +
            `${result.examplesPerSecond.toFixed(1)} examples/s training, ${result.encodedTexts} texts encoded in ${result.encodeSeconds.toFixed(1)} s\n`);
        }
      } catch (err) {
        report.stop();
        if ((err as { code?: string }).code === 'ERR_ABORTED') {
          process.stderr.write(`bge-m3 finetune-heads: ${(err as Error).message}\n`);
          process.exitCode = 130;
          return;
        }
        throw err;
      } finally {
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
      }
    });

  addModelFlags(program.command('demo')
    .description('index the bundled seed examples, run their queries, print the top results and metrics'))
    .action(async (opts) => {
      const file = path.join(PACKAGE_DATA_DIR, 'seed-examples.jsonl');
      const rows = readEvalRows(file);
      const model = await openModel(opts);
      try {
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
      } finally {
        await model.dispose();
      }
    });

  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`bge-m3: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exitCode = 1;
});
