/** POST /score: query-passage pairs scored as FlagEmbedding's compute_score does. */
import type { FastifyPluginAsync } from 'fastify';
import { pairScores } from '../../engine/pair_scores';
import { DEFAULT_WEIGHTS, checkWeights } from '../../scoring/fusion';
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
};
