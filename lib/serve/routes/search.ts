/** POST /search: a query against the server's hybrid index (registered only when it has one). */
import type { FastifyPluginAsync } from 'fastify';
import type { HybridIndex } from '../../retrieval/hybrid_index';
import type { RouteOptions } from '../context';
import * as schemas from '../schemas';

export const searchRoutes: FastifyPluginAsync<RouteOptions & { index: HybridIndex }> = async (app, { ctx, index }) => {
  app.post<{ Body: schemas.SearchBody }>('/search', { schema: { body: schemas.searchBody } }, async (request, reply) => {
    const b = request.body;
    const q = await ctx.batcher.encode(b.query, {
      dense: true, sparse: true, colbert: !!index.colbert, maxLength: ctx.queryLengthOf(b.max_query_length), signal: ctx.requestSignal(reply),
    });
    const hits = index.search(q.row(0), {
      k: b.k, weights: b.weights, denseCandidates: b.dense_candidates, sparseCandidates: b.sparse_candidates, exhaustive: b.exhaustive,
    });
    return { hits, usage: { prompt_tokens: q.tokenCount } };
  });
};
