/**
 * The HTTP server of `bge-m3 serve` (fastify + @fastify/under-pressure): OpenAI-compatible
 * embeddings, encode (JSON or binary), score, rerank (Cohere's, Jina's and TEI's bodies), TEI's
 * /embed and /embed_sparse, search (a hybrid index or a PostgreSQL store, whose documents the
 * server can also write), health and Prometheus metrics.
 * Requests go through a Batcher, whose bounded queue is the server's backpressure: a full queue
 * or a stalled event loop is answered 503 with Retry-After, never with a hang. Each group of
 * routes is a fastify plugin in routes/, sharing the server's RouteContext (context.ts).
 */
import * as http from 'node:http';
import * as path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import underPressure from '@fastify/under-pressure';
import { M3Error } from '../base/errors';
import { isIntegerIn } from '../base/validate';
import { Batcher, type BatcherOptions } from '../engine/batcher';
import type { BGEM3 } from '../engine/model';
import { capabilities, runtimeInfo } from '../engine/runtime';
import type { HybridIndex } from '../retrieval/hybrid_index';
import type { PgStore } from '../store/pg_store';
import { checkAccess, registerAccess } from './access';
import { RouteContext, type RequestLimits } from './context';
import { classify, sendError } from './http_errors';
import { createMetrics } from './metrics';
import { documentRoutes } from './routes/documents';
import { encodeRoutes } from './routes/encode';
import { openaiRoutes } from './routes/openai';
import { opsRoutes } from './routes/ops';
import { rerankRoutes } from './routes/rerank';
import { scoringRoutes } from './routes/scoring';
import { searchRoutes } from './routes/search';
import { teiRoutes } from './routes/tei';

/** Options of {@link createServer}. */
export interface ServerOptions {
  model: BGEM3;
  /** A loaded index for POST /search. */
  index?: HybridIndex;
  /**
   * A store (opened with the served model) for POST /search, POST /documents and
   * DELETE /documents/:id; not with `index`. close() leaves it open: the caller closes it.
   */
  store?: PgStore;
  /** The model name the routes report and `model` fields must name (default: the model directory's name). */
  modelName?: string;
  /** Accept a `model` field naming any model (default false: another name is a 400 model_not_served). */
  allowAnyModel?: boolean;
  /**
   * Cut over-long texts where the API followed refuses them by default (/v1/embeddings, /embed,
   * /embed_sparse, TEI's rerank): TEI's --auto-truncate. Default false (413 text_too_long).
   */
  autoTruncate?: boolean;
  /** Require `Authorization: Bearer <apiKey>` on every route but /health and /metrics (401 otherwise). */
  apiKey?: string;
  /** CORS: '*' or allowed origins separated by commas (default: no CORS headers). */
  cors?: string;
  /**
   * Batcher options, or false to encode each request alone (the default queue limits; pass
   * { maxWaitMs: 0, maxBatchTexts: 1, maxQueue, ... } for others). Default: batching on.
   */
  batching?: boolean | BatcherOptions;
  /** Largest request body in bytes (default 8 MiB); larger is answered 413. */
  bodyLimit?: number;
  /** Most texts (or pairs, or documents) per request (default 2048, OpenAI's); more is answered 413 too_many_inputs. */
  maxTexts?: number;
  /** Most tokens per text (default: the model's maxLength); a longer text is truncated, or 413 with truncate: false. */
  maxTextTokens?: number;
  /**
   * A request not answered after this many ms gets 503, and one whose headers and body have not
   * all arrived by then gets 408 and its connection closed (default 30000).
   */
  requestTimeoutMs?: number;
  /** close() waits this long for requests in flight, then closes every connection (default 10000). */
  drainTimeoutMs?: number;
  /** Event-loop delay above which requests get 503 (default 1000 ms; 0 turns the check off). */
  maxEventLoopDelayMs?: number;
  /** Retry-After seconds on 503 (default 1). */
  retryAfterSeconds?: number;
  /** fastify's logger (default false). */
  logger?: boolean;
}

/** A created server: listen, then close gracefully. */
export interface M3Server {
  readonly app: FastifyInstance;
  readonly batcher: Batcher;
  /** Starts listening; resolves with the address (http://host:port). */
  listen(options: { host?: string; port?: number }): Promise<string>;
  /**
   * Graceful stop: /health turns 503, new connections are refused, requests in flight are
   * answered, the batcher drains. The model stays loaded (the caller disposes it).
   */
  close(): Promise<void>;
}

/** setTimeout's limit: a longer delay fires at once (Node caps it to 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The server's settings, checked, with their defaults. */
interface Settings extends RequestLimits {
  bodyLimit: number;
  drainTimeoutMs: number;
  retryAfter: string;
}

function checkSettings(options: ServerOptions): Settings {
  const { model } = options;
  const maxTextTokens = Math.min(options.maxTextTokens ?? model.maxLength, model.modelMaxLength);
  if (!isIntegerIn(maxTextTokens, 2, Infinity)) {
    throw new M3Error('ERR_INPUT', `maxTextTokens must be an integer >= 2 (room for <s> and </s>), got ${String(options.maxTextTokens)}`);
  }
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  if (!isIntegerIn(requestTimeoutMs, 1, MAX_TIMER_MS)) {
    throw new M3Error('ERR_INPUT', `requestTimeoutMs must be an integer in [1, ${MAX_TIMER_MS}] ms, got ${String(options.requestTimeoutMs)}`);
  }
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  if (!isIntegerIn(drainTimeoutMs, 0, MAX_TIMER_MS)) {
    throw new M3Error('ERR_INPUT', `drainTimeoutMs must be an integer in [0, ${MAX_TIMER_MS}] ms, got ${String(options.drainTimeoutMs)}`);
  }
  return {
    bodyLimit: options.bodyLimit ?? 8 * 1024 * 1024, maxTexts: options.maxTexts ?? 2048, maxTextTokens, requestTimeoutMs, drainTimeoutMs,
    retryAfter: String(options.retryAfterSeconds ?? 1), autoTruncate: !!options.autoTruncate, allowAnyModel: !!options.allowAnyModel,
  };
}

export async function createServer(options: ServerOptions): Promise<M3Server> {
  const { model, index, store } = options;
  if (index && store) throw new M3Error('ERR_INPUT', 'serve an index or a store, not both');
  const settings = checkSettings(options);
  checkAccess(options);
  const modelName = options.modelName ?? path.basename(model.info().dir);
  const batcherOptions: BatcherOptions = options.batching === false
    ? { maxWaitMs: 0, maxBatchTexts: 1 }
    : options.batching === true || options.batching === undefined ? {} : options.batching;
  const batcher = new Batcher(model, batcherOptions);
  const info = model.info();
  const metrics = createMetrics(batcher, {
    model: modelName, layout: info.layout, dim: String(info.dim),
    onnxruntime: runtimeInfo().ortVersion, isa: capabilities().active, precision: info.precision,
  });
  const ctx = new RouteContext(model, index, batcher, metrics, modelName, settings);
  const app = createApp(settings, options.logger ?? false);
  handleErrors(app, settings, index ? 'index' : store ? 'store' : undefined);
  await app.register(underPressure, {
    maxEventLoopDelay: options.maxEventLoopDelayMs ?? 1000,
    retryAfter: Number(settings.retryAfter),
    pressureHandler: (_request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => {
      sendError(reply, {
        status: 503, type: 'overloaded', code: 'under_pressure',
        message: `The server is overloaded (${type} ${value === undefined ? '' : Math.round(value)}); retry later.`, retryAfter: true,
      }, settings.retryAfter);
    },
  });
  // While draining, each answer closes its connection: a keep-alive connection that turns idle
  // after close() began would otherwise hold the process until the keep-alive timeout.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (ctx.draining) reply.header('Connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.request(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, reply.elapsedTime / 1000);
  });
  await registerAccess(app, ctx, options, settings.retryAfter);
  for (const routes of [opsRoutes, openaiRoutes, encodeRoutes, scoringRoutes, rerankRoutes, teiRoutes]) await app.register(routes, { ctx });
  if (index) await app.register(searchRoutes, { ctx, index });
  if (store) {
    await app.register(searchRoutes, { ctx, store });
    await app.register(documentRoutes, { ctx, store });
  }
  return {
    app,
    batcher,
    async listen({ host = '127.0.0.1', port = 8080 }) {
      return app.listen({ host, port });
    },
    close: () => drain(app, ctx, settings.drainTimeoutMs),
  };
}

/** The fastify instance: JSON bodies only, with the server's body limit and timeouts. */
function createApp(settings: Settings, logger: boolean): FastifyInstance {
  const { requestTimeoutMs } = settings;
  const app = Fastify({
    logger,
    bodyLimit: settings.bodyLimit,
    forceCloseConnections: 'idle',
    // A request whose headers and body have not arrived in full by requestTimeoutMs is answered
    // 408 and its connection closed: a client that trickles its upload a byte at a time keeps
    // a socket busy (so no idle timeout fires) but cannot hold a connection, or a shutdown,
    // forever. Node checks these deadlines every connectionsCheckingInterval (30 s unless set,
    // which let a 3 s timeout run for a minute), so the server is built here with a check
    // interval in step with the timeout.
    serverFactory: (handler) => http.createServer({
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(requestTimeoutMs / 4))),
    }, handler),
    requestTimeout: requestTimeoutMs,
    // A socket silent for twice the request timeout is closed at once (an answer is due by then
    // anyway: 503 at requestTimeoutMs).
    connectionTimeout: 2 * requestTimeoutMs,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
  });
  // JSON bodies only: without its text/plain parser, fastify answers any other type 415.
  app.removeContentTypeParser('text/plain');
  return app;
}

/** Every error as an OpenAI-style answer (http_errors.ts); an unknown route names the routes there are. */
function handleErrors(app: FastifyInstance, settings: Settings, serving: 'index' | 'store' | undefined): void {
  app.setErrorHandler((err, request, reply) => {
    const classified = classify(err as Error, settings);
    if (classified.status >= 500 && classified.code !== 'timeout' && classified.status !== 503) request.log.error(err);
    return sendError(reply, classified, settings.retryAfter);
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, {
    status: 404, type: 'invalid_request_error', code: 'not_found',
    message: request.url.startsWith('/search') && !serving
      ? 'No index or store is served: start the server with --index DIR or --store URL to use POST /search.'
      : request.url.startsWith('/documents') && serving !== 'store'
        ? 'No store is served: start the server with --store URL to write documents (POST /documents, DELETE /documents/:id).'
        : `No route ${request.method} ${request.url}. Routes: POST /v1/embeddings, /v1/rerank, /encode, /score, /rerank, /embed, /embed_sparse` +
          `${serving ? ', /search' : ''}${serving === 'store' ? ', /documents; DELETE /documents/:id' : ''}; GET /v1/models, /health, /metrics.`,
  }, settings.retryAfter));
}

/**
 * Graceful stop: the batcher stops waiting for company at once and refuses new work (503);
 * requests already accepted are answered while fastify stops listening and waits for them.
 */
async function drain(app: FastifyInstance, ctx: RouteContext, drainTimeoutMs: number): Promise<void> {
  ctx.draining = true;
  const drained = ctx.batcher.close();
  // A client that neither finishes its request nor reads its answer would hold app.close()
  // until it leaves; after the drain timeout every connection is closed.
  const force = setTimeout(() => app.server.closeAllConnections(), drainTimeoutMs);
  try {
    await app.close();
  } finally {
    clearTimeout(force);
  }
  await drained;
}
