/**
 * POST /score (query-passage pairs, FlagEmbedding's compute_score) and POST /rerank (documents
 * ordered by their fused score against one query).
 */
import type { FastifyPluginAsync } from 'fastify';
import type { EncodeOutput } from '../../engine/outputs';
import { pairScores } from '../../engine/pair_scores';
import { DEFAULT_WEIGHTS, checkWeights, fuse, type FusionWeights } from '../../scoring/fusion';
import { lexicalScoresSync } from '../../scoring/lexical';
import { maxSimSync } from '../../scoring/maxsim';
import { denseScore } from '../../scoring/scores';
import type { RouteOptions } from '../context';
import * as schemas from '../schemas';

export const scoringRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.post<{ Body: schemas.ScoreBody }>('/score', { schema: { body: schemas.scoreBody } }, async (request, reply) => {
    const b = request.body;
    ctx.checkCount(b.pairs.length, 'pairs');
    const asked = b.weights ?? DEFAULT_WEIGHTS;
    const weights = checkWeights(asked, 'weights', { denseOrSparse: true });
    const queryLength = ctx.queryLengthOf(b.max_query_length);
    const passageLength = ctx.lengthOf(b.max_passage_length, 'max_passage_length');
    const [queries, passages] = await ctx.encodeBoth(reply, b.truncate ?? true,
      [b.pairs.map((p) => p[0]), queryLength], [b.pairs.map((p) => p[1]), passageLength]);
    const scores = pairScores(queries, passages, weights);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(scores)) out[k] = Array.from(v as Float32Array);
    // `weights`: the [dense, sparse, colbert] triple both combinations used ('sparse+dense' its first two).
    return { ...out, weights: [...asked], usage: { prompt_tokens: queries.tokenCount + passages.tokenCount } };
  });

  app.post<{ Body: schemas.RerankBody }>('/rerank', { schema: { body: schemas.rerankBody } }, async (request, reply) => {
    const b = request.body;
    ctx.checkCount(b.documents.length, 'documents');
    const weights = checkWeights(b.weights ?? DEFAULT_WEIGHTS, 'weights');
    const docs = b.documents.map((d) => (typeof d === 'string' ? d : d.text));
    const queryLength = ctx.queryLengthOf(b.max_query_length);
    const passageLength = ctx.lengthOf(b.max_passage_length, 'max_passage_length');
    const [q, d] = await ctx.encodeBoth(reply, b.truncate ?? true, [[b.query], queryLength], [docs, passageLength]);
    const results = rerank(q, d, weights).map((r) => ({ ...r, ...(b.return_documents ? { document: { text: docs[r.index] } } : {}) }));
    return { model: ctx.modelName, results: results.slice(0, b.top_n ?? results.length), usage: { prompt_tokens: q.tokenCount + d.tokenCount } };
  });
};

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
