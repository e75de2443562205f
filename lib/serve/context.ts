/**
 * What the route plugins of a server share: the model, the index, the batcher every encode goes
 * through, the limits of a request, and the helpers that apply them.
 */
import * as path from 'node:path';
import type { FastifyReply } from 'fastify';
import { DEFAULT_QUERY_LENGTH } from '../base/defaults';
import { M3Error } from '../base/errors';
import type { Batcher } from '../engine/batcher';
import type { BGEM3 } from '../engine/model';
import type { EncodeOutput } from '../engine/outputs';
import type { HybridIndex } from '../retrieval/hybrid_index';
import { httpFailure } from './http_errors';
import type { ServerMetrics } from './metrics';

/** The limits of one request (see ServerOptions). */
export interface RequestLimits {
  maxTexts: number;
  maxTextTokens: number;
  requestTimeoutMs: number;
  /** The default of `truncate` where the API it follows refuses over-long texts (OpenAI, TEI): TEI's --auto-truncate. */
  autoTruncate: boolean;
  /** Accept any `model` name instead of only the served one. */
  allowAnyModel: boolean;
}

/** Names every BGE-M3 server answers to besides its own (compared without case). */
const BGE_M3_NAMES = ['bge-m3', 'baai/bge-m3'];

/** A server's state, as its routes see it. */
export class RouteContext {
  /** Set by close(): /health turns 503 and answers close their connections. */
  draining = false;

  constructor(
    readonly model: BGEM3,
    readonly index: HybridIndex | undefined,
    readonly batcher: Batcher,
    readonly metrics: ServerMetrics,
    /** The model name the routes report (--model-name, default the model directory's name). */
    readonly modelName: string,
    readonly limits: RequestLimits,
  ) {
    this.dirName = path.basename(model.info().dir);
  }

  /** The model directory's name, a name the server answers to besides modelName. */
  readonly dirName: string;
  /** When the server was created, in seconds (GET /v1/models' `created`). */
  readonly created = Math.floor(Date.now() / 1000);

  /** An abort controller for one request: its timeout, or the client going away, aborts it. */
  requestController(reply: FastifyReply): AbortController {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.limits.requestTimeoutMs);
    reply.raw.once('close', () => {
      clearTimeout(timer);
      if (!reply.raw.writableFinished) controller.abort();
    });
    return controller;
  }

  requestSignal(reply: FastifyReply): AbortSignal {
    return this.requestController(reply).signal;
  }

  /** Refuses a request with more than maxTexts texts (or pairs, or documents): 413 too_many_inputs. */
  checkCount(n: number, what: string): void {
    const { maxTexts } = this.limits;
    if (n > maxTexts) throw httpFailure('too_many_inputs', `${n} ${what} in one request; the limit is ${maxTexts} (--max-texts). Split the request.`, 413);
  }

  /**
   * Refuses a `model` that names another model (400 model_not_served) unless allowAnyModel: the
   * served name, the model directory's name, "bge-m3" and "BAAI/bge-m3" are this server's.
   */
  checkModel(requested: unknown): void {
    if (typeof requested !== 'string' || this.limits.allowAnyModel) return;
    const lower = requested.toLowerCase();
    if (lower === this.modelName.toLowerCase() || lower === this.dirName.toLowerCase() || BGE_M3_NAMES.includes(lower)) return;
    throw httpFailure('model_not_served', `model '${requested}' is not served here: this server serves '${this.modelName}' ` +
      '(send that name, or omit model; start the server with --allow-any-model to accept any name)');
  }

  /** The truncation a request asks for (`what` names the field), within maxTextTokens; that limit when it asks none. */
  lengthOf(requested: number | undefined, what: string): number {
    const { maxTextTokens } = this.limits;
    if (requested === undefined) return maxTextTokens;
    if (requested > maxTextTokens) {
      throw new M3Error('ERR_INPUT', `${what} ${requested} is over this server's limit of ${maxTextTokens} tokens per text (--max-text-tokens)`);
    }
    return requested;
  }

  /** The query truncation a request asks for in max_query_length (default 512, within maxTextTokens). */
  queryLengthOf(requested: number | undefined): number {
    return Math.min(this.lengthOf(requested, 'max_query_length'), requested ?? DEFAULT_QUERY_LENGTH);
  }

  /**
   * Queries and passages with all three outputs, encoded concurrently (each with its own
   * truncation); when one fails the other is cancelled (Promise.all handles its later rejection).
   */
  async encodeBoth(reply: FastifyReply, truncate: boolean, ...parts: Array<[string[], number]>): Promise<EncodeOutput[]> {
    const both = this.requestController(reply);
    const { signal } = both;
    const runs = parts.map(([texts, maxLength]) =>
      this.batcher.encode(texts, { dense: true, sparse: true, colbert: true, truncate, maxLength, signal }));
    try {
      return await Promise.all(runs);
    } catch (err) {
      both.abort();
      throw err;
    }
  }
}

/** The options of every route plugin: the server's context. */
export type RouteOptions = { ctx: RouteContext };

/** A request's `input` or `texts`: one text or several. */
export function textsOf(input: string | string[]): string[] {
  return typeof input === 'string' ? [input] : input;
}
