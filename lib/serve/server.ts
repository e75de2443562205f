/**
 * The HTTP server of `bge-m3 serve` (fastify + @fastify/under-pressure): OpenAI-compatible
 * embeddings, encode (JSON or binary), score, rerank and search, health and Prometheus metrics.
 * Requests go through a Batcher, whose bounded queue is the server's backpressure: a full queue
 * or a stalled event loop is answered 503 with Retry-After, never with a hang.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import underPressure from '@fastify/under-pressure';
import { Batcher, type BatcherOptions } from '../engine/batcher';
import { DEFAULT_QUERY_LENGTH } from '../base/defaults';
import { M3Error } from '../base/errors';
import { isIntegerIn } from '../base/validate';
import type { HybridIndex } from '../retrieval/hybrid_index';
import { lexicalScoresSync } from '../scoring/lexical';
import { maxSimSync } from '../scoring/maxsim';
import type { BGEM3 } from '../engine/model';
import type { EncodeOutput } from '../engine/outputs';
import { runtimeInfo, capabilities } from '../engine/runtime';
import { RERANK_WEIGHTS, SCORE_WEIGHTS, checkWeights, fuse, type FusionWeights, type WeightNeeds } from '../scoring/fusion';
import { denseScore, pairScores } from '../scoring/scores';
import { createMetrics } from './metrics';
import * as schemas from './schemas';
import { WIRE_CONTENT_TYPE, encodeWire } from './wire';

/** Options of {@link createServer}. */
export interface ServerOptions {
  model: BGEM3;
  /** A loaded index for POST /search. */
  index?: HybridIndex;
  /** The model name /v1/embeddings reports (default: the model directory's name). */
  modelName?: string;
  /**
   * Batcher options, or false to encode each request alone (the default queue limits; pass
   * { maxWaitMs: 0, maxBatchTexts: 1, maxQueue, ... } for others). Default: batching on.
   */
  batching?: boolean | BatcherOptions;
  /** Largest request body in bytes (default 8 MiB); larger is answered 413. */
  bodyLimit?: number;
  /** Most texts (or pairs, or documents) per request (default 256); more is answered 413. */
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

interface HttpError {
  status: number;
  type: string;
  code: string;
  message: string;
  retryAfter?: boolean;
}


function textsOf(input: string | string[]): string[] {
  return typeof input === 'string' ? [input] : input;
}

function weightsOf(w: [number, number, number] | undefined, fallback: FusionWeights, needs: WeightNeeds = {}): [number, number, number] {
  return checkWeights(w ?? fallback, 'weights', needs);
}

/** An M3Error, fastify error or anything else, as a status and an OpenAI-style error body. */
function classify(err: FastifyError | M3Error | Error, options: { bodyLimit: number; requestTimeoutMs: number }): HttpError {
  const e = err as FastifyError & { code?: string; validation?: Array<{ keyword?: string; instancePath: string; message?: string; params?: Record<string, unknown> }> };
  if (e.validation) {
    // A value that fits none of a field's shapes: say what the shapes are, not each mismatch.
    const choice = e.validation.find((v) => v.keyword === 'anyOf');
    if (choice) {
      const where = `body${choice.instancePath}`;
      const shapes = /^\/documents\/\d+$/.test(choice.instancePath)
        ? 'a string or an object { text }'
        : 'a string or a non-empty array of strings (token-id arrays are not accepted: send the text)';
      return { status: 400, type: 'invalid_request_error', code: 'invalid_body', message: `${where} must be ${shapes}` };
    }
    const v = e.validation[0];
    const field = v.params?.additionalProperty ? `: unknown field '${String(v.params.additionalProperty)}'` : '';
    return { status: 400, type: 'invalid_request_error', code: 'invalid_body', message: `${e.message}${field}` };
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, type: 'invalid_request_error', code: 'body_too_large', message: `The request body is over the ${options.bodyLimit}-byte limit; send fewer or shorter texts per request.` };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, type: 'invalid_request_error', code: 'invalid_json', message: `The request body is not valid JSON: ${e.message}` };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, type: 'invalid_request_error', code: 'unsupported_media_type', message: `${e.message}; send Content-Type: application/json` };
    case 'ERR_INPUT':
      return { status: 400, type: 'invalid_request_error', code: 'invalid_input', message: e.message };
    case 'ERR_TOO_LONG':
      return { status: 413, type: 'invalid_request_error', code: 'text_too_long', message: e.message };
    case 'ERR_QUEUE_FULL':
      return { status: 503, type: 'overloaded', code: 'queue_full', message: e.message, retryAfter: true };
    case 'ERR_ABORTED':
      return { status: 503, type: 'overloaded', code: 'timeout', message: `The request was not answered within ${options.requestTimeoutMs} ms; retry later.`, retryAfter: true };
    case 'ERR_DISPOSED':
      return { status: 503, type: 'unavailable', code: 'shutting_down', message: 'The server is shutting down.', retryAfter: true };
    default:
      break;
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, type: 'invalid_request_error', code: String(e.code ?? 'bad_request').toLowerCase(), message: e.message };
  }
  return { status: 500, type: 'server_error', code: e.code ? String(e.code).toLowerCase() : 'internal_error', message: e.message };
}

export async function createServer(options: ServerOptions): Promise<M3Server> {
  const { model, index } = options;
  const bodyLimit = options.bodyLimit ?? 8 * 1024 * 1024;
  const maxTexts = options.maxTexts ?? 256;
  const maxTextTokens = Math.min(options.maxTextTokens ?? model.maxLength, model.modelMaxLength);
  if (!isIntegerIn(maxTextTokens, 2, Infinity)) {
    throw new M3Error('ERR_INPUT', `maxTextTokens must be an integer >= 2 (room for <s> and </s>), got ${String(options.maxTextTokens)}`);
  }
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  // setTimeout's limit: a longer delay fires at once (Node caps it to 1 ms).
  if (!isIntegerIn(requestTimeoutMs, 1, MAX_TIMER_MS)) {
    throw new M3Error('ERR_INPUT', `requestTimeoutMs must be an integer in [1, ${MAX_TIMER_MS}] ms, got ${String(options.requestTimeoutMs)}`);
  }
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  if (!isIntegerIn(drainTimeoutMs, 0, MAX_TIMER_MS)) {
    throw new M3Error('ERR_INPUT', `drainTimeoutMs must be an integer in [0, ${MAX_TIMER_MS}] ms, got ${String(options.drainTimeoutMs)}`);
  }
  const retryAfter = String(options.retryAfterSeconds ?? 1);
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
  let draining = false;

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
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

  const sendError = (reply: FastifyReply, err: HttpError) => {
    if (err.retryAfter) reply.header('Retry-After', retryAfter);
    return reply.code(err.status).send({ error: { message: err.message, type: err.type, code: err.code } });
  };
  app.setErrorHandler((err, request, reply) => {
    const classified = classify(err as Error, { bodyLimit, requestTimeoutMs });
    if (classified.status >= 500 && classified.code !== 'timeout' && classified.status !== 503) request.log.error(err);
    return sendError(reply, classified);
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, {
    status: 404, type: 'invalid_request_error', code: 'not_found',
    message: request.url.startsWith('/search') && !index
      ? 'No index is loaded: start the server with --index DIR to use POST /search.'
      : `No route ${request.method} ${request.url}. Routes: POST /v1/embeddings, /encode, /score, /rerank${index ? ', /search' : ''}; GET /health, /metrics.`,
  }));

  await app.register(underPressure, {
    maxEventLoopDelay: options.maxEventLoopDelayMs ?? 1000,
    retryAfter: Number(retryAfter),
    pressureHandler: (_request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => {
      sendError(reply, {
        status: 503, type: 'overloaded', code: 'under_pressure',
        message: `The server is overloaded (${type} ${value === undefined ? '' : Math.round(value)}); retry later.`, retryAfter: true,
      });
    },
  });

  // While draining, each answer closes its connection: a keep-alive connection that turns idle
  // after close() began would otherwise hold the process until the keep-alive timeout.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (draining) reply.header('Connection', 'close');
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    metrics.request(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, reply.elapsedTime / 1000);
  });

  /** An abort controller for one request: its timeout, or the client going away, aborts it. */
  const requestController = (reply: FastifyReply): AbortController => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), requestTimeoutMs);
    reply.raw.once('close', () => {
      clearTimeout(timer);
      if (!reply.raw.writableFinished) controller.abort();
    });
    return controller;
  };
  const requestSignal = (reply: FastifyReply): AbortSignal => requestController(reply).signal;

  const checkCount = (n: number, what: string) => {
    if (n > maxTexts) throw new M3Error('ERR_TOO_LONG', `${n} ${what} in one request; the limit is ${maxTexts} (--max-texts). Split the request.`);
  };
  const lengthOf = (requested: number | undefined, what: string) => {
    if (requested === undefined) return maxTextTokens;
    if (requested > maxTextTokens) {
      throw new M3Error('ERR_INPUT', `${what} ${requested} is over this server's limit of ${maxTextTokens} tokens per text (--max-text-tokens)`);
    }
    return requested;
  };

  /**
   * Queries and passages with all three outputs, encoded concurrently (each with its own
   * truncation); when one fails the other is cancelled (Promise.all handles its later rejection).
   */
  const encodeBoth = async (reply: FastifyReply, truncate: boolean, ...parts: Array<[string[], number]>) => {
    const both = requestController(reply);
    const { signal } = both;
    const runs = parts.map(([texts, maxLength]) =>
      batcher.encode(texts, { dense: true, sparse: true, colbert: true, truncate, maxLength, signal }));
    try {
      return await Promise.all(runs);
    } catch (err) {
      both.abort();
      throw err;
    }
  };

  const unpressured = { pressureHandler: () => undefined };
  app.get('/health', { config: unpressured }, async (_request, reply) => {
    if (draining) return reply.code(503).send({ status: 'shutting down' });
    return { status: 'ok', model: modelName, dim: model.dim, precision: info.precision, queue: batcher.stats().queued };
  });

  app.get('/metrics', { config: unpressured }, async (_request, reply) => {
    reply.header('Content-Type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  app.post<{ Body: schemas.EmbeddingsBody }>('/v1/embeddings', { schema: { body: schemas.embeddingsBody } }, async (request, reply) => {
    const { input, encoding_format: format = 'float', dimensions } = request.body;
    const texts = textsOf(input);
    checkCount(texts.length, 'inputs');
    if (dimensions !== undefined && dimensions !== model.dim) {
      throw new M3Error('ERR_INPUT', `dimensions ${dimensions} is not supported: this model's vectors have ${model.dim} dimensions (omit the field)`);
    }
    // Like the OpenAI API, a text over the limit is an error rather than silently cut.
    const out = await batcher.encode(texts, { dense: true, sparse: false, maxLength: maxTextTokens, truncate: false, signal: requestSignal(reply) });
    const data = texts.map((_, i) => {
      const v = out.dense!.subarray(i * out.dim, (i + 1) * out.dim);
      return { object: 'embedding', index: i, embedding: format === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v) };
    });
    const tokens = out.tokenCount;
    return { object: 'list', data, model: request.body.model ?? modelName, usage: { prompt_tokens: tokens, total_tokens: tokens } };
  });

  app.post<{ Body: schemas.EncodeBody }>('/encode', { schema: { body: schemas.encodeBody } }, async (request, reply) => {
    const b = request.body;
    const texts = textsOf(b.texts);
    checkCount(texts.length, 'texts');
    const out = await batcher.encode(texts, {
      dense: b.dense ?? true, sparse: b.sparse ?? true, colbert: b.colbert ?? false,
      maxLength: lengthOf(b.max_length, 'max_length'), truncate: b.truncate ?? true, signal: requestSignal(reply),
    });
    if ((request.headers.accept ?? '').includes(WIRE_CONTENT_TYPE)) {
      return reply.header('Content-Type', WIRE_CONTENT_TYPE).send(encodeWire(out));
    }
    return encodeJson(out);
  });

  app.post<{ Body: schemas.ScoreBody }>('/score', { schema: { body: schemas.scoreBody } }, async (request, reply) => {
    const b = request.body;
    checkCount(b.pairs.length, 'pairs');
    const weights = weightsOf(b.weights, SCORE_WEIGHTS, { denseOrSparse: true });
    const queryLength = Math.min(lengthOf(b.max_query_length, 'max_query_length'), b.max_query_length ?? DEFAULT_QUERY_LENGTH);
    const passageLength = lengthOf(b.max_passage_length, 'max_passage_length');
    const [queries, passages] = await encodeBoth(reply, b.truncate ?? true,
      [b.pairs.map((p) => p[0]), queryLength], [b.pairs.map((p) => p[1]), passageLength]);
    const scores = pairScores(queries, passages, weights);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(scores)) out[k] = Array.from(v as Float32Array);
    return { ...out, usage: { prompt_tokens: queries.tokenCount + passages.tokenCount } };
  });

  app.post<{ Body: schemas.RerankBody }>('/rerank', { schema: { body: schemas.rerankBody } }, async (request, reply) => {
    const b = request.body;
    checkCount(b.documents.length, 'documents');
    const weights = weightsOf(b.weights, RERANK_WEIGHTS);
    const docs = b.documents.map((d) => (typeof d === 'string' ? d : d.text));
    const queryLength = Math.min(lengthOf(b.max_query_length, 'max_query_length'), b.max_query_length ?? DEFAULT_QUERY_LENGTH);
    const passageLength = lengthOf(b.max_passage_length, 'max_passage_length');
    const [q, d] = await encodeBoth(reply, b.truncate ?? true, [[b.query], queryLength], [docs, passageLength]);
    const query = q.row(0);
    const sparse = lexicalScoresSync(query.sparse!, d.sparse!);
    const colbert = maxSimSync(query.colbert!, d.colbert!, { dim: d.dim });
    const results = docs.map((text, i) => {
      const dense = denseScore(query.dense!, d.dense!.subarray(i * d.dim, (i + 1) * d.dim));
      const score = fuse(weights, dense, sparse[i], colbert[i]);
      return { index: i, relevance_score: score, scores: { dense, sparse: sparse[i], colbert: colbert[i] }, ...(b.return_documents ? { document: { text } } : {}) };
    });
    results.sort((x, y) => y.relevance_score - x.relevance_score || x.index - y.index);
    return { model: modelName, results: results.slice(0, b.top_n ?? results.length), usage: { prompt_tokens: q.tokenCount + d.tokenCount } };
  });

  if (index) {
    app.post<{ Body: schemas.SearchBody }>('/search', { schema: { body: schemas.searchBody } }, async (request, reply) => {
      const b = request.body;
      const q = await batcher.encode(b.query, {
        dense: true, sparse: true, colbert: !!index.colbert,
        maxLength: Math.min(lengthOf(b.max_query_length, 'max_query_length'), b.max_query_length ?? DEFAULT_QUERY_LENGTH), signal: requestSignal(reply),
      });
      const hits = index.search(q.row(0), {
        k: b.k, weights: b.weights, denseCandidates: b.dense_candidates, sparseCandidates: b.sparse_candidates, exhaustive: b.exhaustive,
      });
      return { hits, usage: { prompt_tokens: q.tokenCount } };
    });
  }

  return {
    app,
    batcher,
    async listen({ host = '127.0.0.1', port = 8080 }) {
      return app.listen({ host, port });
    },
    async close() {
      draining = true;
      // The batcher stops waiting for company at once and refuses new work (503); requests
      // already accepted are answered while fastify stops listening and waits for them.
      const drained = batcher.close();
      // A client that neither finishes its request nor reads its answer would hold app.close()
      // until it leaves; after the drain timeout every connection is closed.
      const force = setTimeout(() => app.server.closeAllConnections(), drainTimeoutMs);
      try {
        await app.close();
      } finally {
        clearTimeout(force);
      }
      await drained;
    },
  };
}

/** An encode result as JSON: dense rows, sparse {ids, weights} rows, ColBERT rows of vectors. */
function encodeJson(out: EncodeOutput): Record<string, unknown> {
  const rows = Array.from({ length: out.count }, (_, i) => out.row(i));
  const json: Record<string, unknown> = { count: out.count, dim: out.dim };
  if (out.dense) json.dense = rows.map((r) => Array.from(r.dense!));
  if (out.sparse) json.sparse = rows.map((r) => ({ ids: Array.from(r.sparse!.ids), weights: Array.from(r.sparse!.weights) }));
  if (out.colbert) {
    json.colbert = rows.map((r) => Array.from({ length: r.colbert!.length / out.dim }, (_, j) => Array.from(r.colbert!.subarray(j * out.dim, (j + 1) * out.dim))));
  }
  json.usage = { prompt_tokens: out.tokenCount };
  return json;
}
