/** `bge-m3 serve`: the model (and an index or a store) over HTTP until SIGTERM or SIGINT, which drain the requests in flight. */
import type { Command, OptionValues } from 'commander';
import { DEFAULT_BATCH_LIMITS } from '../../base/defaults';
import { M3Error } from '../../base/errors';
import type { BGEM3 } from '../../engine/model';
import { HybridIndex } from '../../retrieval/hybrid_index';
import { createServer, type M3Server } from '../../serve/server';
import type { PgStore } from '../../store/pg_store';
import { addModelFlags, nonNegativeInt, nonNegativeNumber, openModel, positiveInt } from '../args';
import { addStoreFlags, checkStoreFlags, openStore } from '../store';

export function registerServe(program: Command): void {
  addModelFlags(addStoreFlags(program.command('serve')
    .description('serve the model over HTTP (POST /v1/embeddings, /v1/rerank, /encode, /score, /rerank, /embed, /embed_sparse, /search, /documents; ' +
      'DELETE /documents/:id; GET /v1/models, /health, /metrics)')
    .option('-x, --index <dir>', 'a hybrid index for POST /search'),
  'a store for POST /search, POST /documents and DELETE /documents/:id (created when missing)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('-p, --port <n>', 'port (0 picks a free one)', nonNegativeInt, 8080)
    .option('--no-batching', 'encode each request alone instead of coalescing concurrent requests')
    .option('--max-wait-ms <ms>', 'how long a request may wait for others to batch with', nonNegativeNumber, 2)
    .option('--max-batch-tokens <n>', `tokens per coalesced batch (default ${DEFAULT_BATCH_LIMITS.cpu.maxBatchTokens}, ${DEFAULT_BATCH_LIMITS.cuda.maxBatchTokens} with --device cuda)`, positiveInt)
    .option('--max-queue <n>', 'requests waiting before 503s', positiveInt, 1024)
    .option('--max-queue-tokens <n>', 'tokens waiting before 503s (default 8 x --max-batch-tokens)', positiveInt)
    .option('--max-texts <n>', 'texts, pairs or documents per request', positiveInt, 2048)
    .option('--max-text-tokens <n>', "tokens per text (default the model's max length)", positiveInt)
    .option('--body-limit <bytes>', 'largest request body', positiveInt, 8 * 1024 * 1024)
    .option('--timeout-ms <ms>', 'answer 503 to a request not done by then (408 to one not received by then)', positiveInt, 30000)
    .option('--drain-timeout-ms <ms>', 'on SIGTERM, wait this long for requests in flight, then close every connection', nonNegativeInt, 10000)
    .option('--release-memory-after-ms <ms>', 'idle this long, give the memory of a burst back to the system (0: never)', nonNegativeInt, 1000)
    .option('--max-event-loop-delay <ms>', 'answer 503 while the event loop lags more (0: off)', nonNegativeInt, 1000)
    .option('--model-name <name>', "the model name the routes report and `model` fields must name (default the model directory's name)")
    .option('--allow-any-model', 'accept a `model` field naming any model')
    .option('--auto-truncate', 'cut over-long texts where the API followed would refuse them (/v1/embeddings, /embed, TEI rerank)')
    .option('--api-key <key>', 'require Authorization: Bearer <key> (default $BGE_M3_API_KEY; /health and /metrics stay open)')
    .option('--cors <origins>', "send CORS headers for these origins ('*' or a comma-separated list)")
    .option('--log', 'log requests (JSON lines on stdout)'))
    .action(async (opts) => {
      if (opts.index !== undefined && opts.store !== undefined) throw new M3Error('ERR_INPUT', 'serve takes --index DIR or --store URL, not both');
      checkStoreFlags(opts, { create: true });
      const model = await openModel(opts);
      let store: PgStore | undefined;
      let server: M3Server | undefined;
      try {
        if (opts.store !== undefined) store = await openStore(opts, model, { create: true });
        server = await startServer(model, store, opts);
      } catch (err) {
        await server?.close();
        await store?.close();
        await model.dispose();
        throw err;
      }
      stopOnSignals(server, model, store);
    });
}

/** A server for the model (and the index --index names, or the store), listening where the flags say. */
async function startServer(model: BGEM3, store: PgStore | undefined, opts: OptionValues): Promise<M3Server> {
  const index = opts.index ? HybridIndex.load(opts.index, { model }) : undefined;
  const server = await createServer({
    model, index, store, logger: !!opts.log, bodyLimit: opts.bodyLimit, maxTexts: opts.maxTexts, maxTextTokens: opts.maxTextTokens,
    requestTimeoutMs: opts.timeoutMs, drainTimeoutMs: opts.drainTimeoutMs, maxEventLoopDelayMs: opts.maxEventLoopDelay,
    modelName: opts.modelName, allowAnyModel: !!opts.allowAnyModel, autoTruncate: !!opts.autoTruncate,
    apiKey: opts.apiKey ?? (process.env.BGE_M3_API_KEY || undefined), cors: opts.cors,
    // --no-batching: each request alone (one request per batch, no wait), the same queue limits.
    batching: opts.batching
      ? { maxWaitMs: opts.maxWaitMs, maxBatchTokens: opts.maxBatchTokens, maxQueue: opts.maxQueue, maxQueueTokens: opts.maxQueueTokens }
      : { maxWaitMs: 0, maxBatchTexts: 1, maxQueue: opts.maxQueue, maxQueueTokens: opts.maxQueueTokens },
  });
  const address = await server.listen({ host: opts.host, port: opts.port });
  process.stdout.write(`bge-m3 serve: listening on ${address}\n`);
  return server;
}

/** On SIGTERM or SIGINT: answer the requests in flight, close the store, dispose of the model, exit; a second signal exits at once. */
function stopOnSignals(running: M3Server, model: BGEM3, store: PgStore | undefined): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      process.stderr.write(`bge-m3 serve: ${signal} again, exiting without waiting\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`bge-m3 serve: ${signal}: finishing requests in flight, then exiting\n`);
    running.close().then(() => store?.close()).then(() => model.dispose()).then(() => process.exit(0), (err: Error) => {
      process.stderr.write(`bge-m3 serve: shutdown failed: ${err.message}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
