/**
 * POST /rerank and POST /v1/rerank: documents ordered by their fused score against one query.
 * One route, three clients' bodies: Cohere's and Jina's (`documents`) are answered
 * `{ id, model, results: [{ index, relevance_score, scores, document? }], usage, meta }`, TEI's
 * (`texts`) with TEI's bare array `[{ index, score, text? }]`. A body with both, or neither, is a 400.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { EncodeOutput } from '../../engine/outputs';
import { DEFAULT_WEIGHTS, checkWeights, fuse, type FusionWeights } from '../../scoring/fusion';
import { lexicalScoresSync } from '../../scoring/lexical';
import { maxSimSync } from '../../scoring/maxsim';
import { denseScore } from '../../scoring/scores';
import type { RouteContext, RouteOptions } from '../context';
import { httpFailure } from '../http_errors';
import * as schemas from '../schemas_compat';

/** Fields of one family that make no sense in the other's body. */
const TEI_ONLY = ['raw_scores', 'return_text', 'truncation_direction'] as const;
const DOCUMENTS_ONLY = ['top_n', 'return_documents', 'max_tokens_per_doc', 'rank_fields', 'max_chunks_per_doc'] as const;

export const rerankRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  const handler = async (request: { body: schemas.RerankBody }, reply: FastifyReply) => {
    const b = request.body;
    if ((b.texts === undefined) === (b.documents === undefined)) {
      throw httpFailure('invalid_body', "send either 'documents' (Cohere's and Jina's rerank) or 'texts' (TEI's rerank), not both or neither");
    }
    const foreign = (b.texts ? DOCUMENTS_ONLY : TEI_ONLY).find((f) => b[f] !== undefined);
    if (foreign) {
      throw httpFailure('invalid_body', `unknown field '${foreign}' with '${b.texts ? 'texts' : 'documents'}': ` +
        `it belongs to ${b.texts ? "Cohere's and Jina's" : "TEI's"} rerank`);
    }
    return b.texts ? teiRerank(ctx, reply, b, b.texts) : documentsRerank(ctx, reply, b, b.documents!);
  };
  for (const url of ['/rerank', '/v1/rerank']) app.post<{ Body: schemas.RerankBody }>(url, { schema: { body: schemas.rerankBody } }, handler);
};

/** Cohere's and Jina's rerank (and this server's own fields). */
async function documentsRerank(ctx: RouteContext, reply: FastifyReply, b: schemas.RerankBody, documents: Array<string | { text: string }>) {
  if (b.rank_fields && (b.rank_fields.length !== 1 || b.rank_fields[0] !== 'text')) {
    throw httpFailure('invalid_input', `rank_fields ${JSON.stringify(b.rank_fields)}: only ["text"] is supported (documents are { text } objects)`);
  }
  const docs = documents.map((d) => (typeof d === 'string' ? d : d.text));
  // max_tokens_per_doc (Cohere's, default 4096) cuts documents, within the server's limit.
  const passageLength = b.max_passage_length !== undefined || b.max_tokens_per_doc === undefined
    ? ctx.lengthOf(b.max_passage_length, 'max_passage_length')
    : Math.max(2, Math.min(b.max_tokens_per_doc, ctx.limits.maxTextTokens));
  const ranked = await rankDocuments(ctx, reply, b, docs, passageLength, b.truncate ?? true);
  // return_documents defaults to true, as Jina documents it: Cohere's clients (whose v1 default
  // is false, and whose v2 never asks) ignore the extra field, while a Jina client reads it.
  const results = ranked.results.slice(0, b.top_n ?? docs.length)
    .map((r) => ({ ...r, ...(b.return_documents ?? true ? { document: { text: docs[r.index] } } : {}) }));
  return {
    id: randomUUID(), model: ctx.modelName, results,
    usage: { prompt_tokens: ranked.tokens, total_tokens: ranked.tokens },
    meta: { api_version: { version: '2' }, billed_units: { search_units: 1 } },
  };
}

/** TEI's rerank: a bare array `[{ index, score, text? }]`, best first; `truncate` defaults to --auto-truncate. */
async function teiRerank(ctx: RouteContext, reply: FastifyReply, b: schemas.RerankBody, texts: string[]) {
  checkDirection(b.truncation_direction);
  const passageLength = ctx.lengthOf(b.max_passage_length, 'max_passage_length');
  const ranked = await rankDocuments(ctx, reply, b, texts, passageLength, b.truncate ?? ctx.limits.autoTruncate);
  // raw_scores changes nothing: the fused score is a similarity, not a logit to squash.
  return ranked.results.map((r) => ({ index: r.index, score: r.relevance_score, ...(b.return_text ? { text: texts[r.index] } : {}) }));
}

/** TEI's truncation_direction: texts are cut at the end (Right); Left is refused. */
export function checkDirection(direction: string | undefined): void {
  if (direction !== undefined && direction.toLowerCase() === 'left') {
    throw httpFailure('invalid_input', 'truncation_direction Left is not supported: texts are cut at the end (Right)');
  }
}

/** The query and documents encoded, scored and ranked; with the tokens they took. */
async function rankDocuments(ctx: RouteContext, reply: FastifyReply, b: schemas.RerankBody, docs: string[], passageLength: number, truncate: boolean) {
  ctx.checkCount(docs.length, 'documents');
  const weights = checkWeights(b.weights ?? DEFAULT_WEIGHTS, 'weights');
  const queryLength = ctx.queryLengthOf(b.max_query_length);
  const [q, d] = await ctx.encodeBoth(reply, truncate, [[b.query], queryLength], [docs, passageLength]);
  return { results: rerank(q, d, weights), tokens: q.tokenCount + d.tokenCount };
}

/** Each document's three scores against the query (text 0 of `q`) and their fusion, best first (ties by index). */
function rerank(q: EncodeOutput, d: EncodeOutput, weights: FusionWeights) {
  const query = q.row(0);
  const sparse = lexicalScoresSync(query.sparse!, d.sparse!);
  const colbert = maxSimSync(query.colbert!, d.colbert!, { dim: d.dim });
  const results = Array.from({ length: d.count }, (_, i) => {
    const dense = denseScore(query.dense!, d.dense!.subarray(i * d.dim, (i + 1) * d.dim));
    return { index: i, relevance_score: fuse(weights, dense, sparse[i], colbert[i]), scores: { dense, sparse: sparse[i], colbert: colbert[i] } };
  });
  return results.sort((x, y) => y.relevance_score - x.relevance_score || x.index - y.index);
}
