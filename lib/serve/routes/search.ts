/**
 * POST /search: a query against the server's hybrid index or store (registered only when it has
 * one). Hits carry the documents' text and metadata when they have them, and `filter` narrows them.
 */
import type { FastifyPluginAsync } from 'fastify';
import { MetadataFilter, type Filter } from '../../retrieval/filter';
import type { HybridIndex } from '../../retrieval/hybrid_index';
import type { PgStore } from '../../store/pg_store';
import type { RouteOptions } from '../context';
import { httpFailure } from '../http_errors';
import * as schemas from '../schemas';

/** What POST /search searches: a loaded index or a store. */
export type Searchable = { index: HybridIndex; store?: undefined } | { store: PgStore; index?: undefined };

export const searchRoutes: FastifyPluginAsync<RouteOptions & Searchable> = async (app, { ctx, index, store }) => {
  app.post<{ Body: schemas.SearchBody }>('/search', { schema: { body: schemas.searchBody } }, async (request, reply) => {
    const b = request.body;
    if (index && b.ef_search !== undefined) {
      throw httpFailure('invalid_input', "'ef_search' needs a store: this server searches a hybrid index directory (--index); serve a store (--store URL)");
    }
    // A bad filter is refused before the query is encoded; the message names the part that is wrong.
    if (b.filter !== undefined) MetadataFilter.parse(b.filter);
    const colbert = !!(index ?? store)!.colbert;
    const q = await ctx.batcher.encode(b.query, {
      dense: true, sparse: true, colbert, maxLength: ctx.queryLengthOf(b.max_query_length), signal: ctx.requestSignal(reply),
    });
    const options = {
      k: b.k, weights: b.weights, denseCandidates: b.dense_candidates, sparseCandidates: b.sparse_candidates, exhaustive: b.exhaustive,
      filter: b.filter as Filter | undefined,
    };
    const hits = index ? index.search(q.row(0), options) : await store!.search(q.row(0), { ...options, efSearch: b.ef_search });
    return { hits, usage: { prompt_tokens: q.tokenCount } };
  });
};
