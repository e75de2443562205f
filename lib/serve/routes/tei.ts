/**
 * Text Embeddings Inference's embedding routes: POST /embed (dense vectors, `[[...floats]]`) and
 * POST /embed_sparse (lexical weights by token id, `[[{ index, value }]]`, the shape Qdrant,
 * Milvus and pgvector's sparsevec take). As in TEI, `truncate` defaults to false (413 for an
 * over-long text) unless the server runs with --auto-truncate.
 */
import type { FastifyPluginAsync } from 'fastify';
import { textsOf, type RouteOptions } from '../context';
import { httpFailure } from '../http_errors';
import * as schemas from '../schemas_compat';
import { checkDirection } from './rerank';

export const teiRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  const encode = (b: schemas.TeiEmbedBody, signal: AbortSignal, dense: boolean) => {
    const texts = textsOf(b.inputs);
    ctx.checkCount(texts.length, 'inputs');
    checkDirection(b.truncation_direction);
    if (b.prompt_name != null) throw httpFailure('invalid_input', `prompt_name '${b.prompt_name}': this model has no prompts (omit the field)`);
    return ctx.batcher.encode(texts, {
      dense, sparse: !dense, maxLength: ctx.limits.maxTextTokens, truncate: b.truncate ?? ctx.limits.autoTruncate, signal,
    });
  };

  app.post<{ Body: schemas.TeiEmbedBody }>('/embed', { schema: { body: schemas.teiEmbedBody } }, async (request, reply) => {
    const b = request.body;
    if (b.normalize === false) {
      throw httpFailure('invalid_input', "normalize: false is not supported: BGE-M3's dense vectors are normalized by the model (omit the field)");
    }
    if (b.dimensions != null && b.dimensions !== ctx.model.dim) {
      throw httpFailure('invalid_input', `dimensions ${b.dimensions} is not supported: this model's vectors have ${ctx.model.dim} dimensions (omit the field)`);
    }
    const out = await encode(b, ctx.requestSignal(reply), true);
    return Array.from({ length: out.count }, (_, i) => Array.from(out.dense!.subarray(i * out.dim, (i + 1) * out.dim)));
  });

  app.post<{ Body: schemas.TeiEmbedBody }>('/embed_sparse', { schema: { body: schemas.teiEmbedSparseBody } }, async (request, reply) => {
    const out = await encode(request.body, ctx.requestSignal(reply), false);
    return Array.from({ length: out.count }, (_, i) => {
      const { ids, weights } = out.row(i).sparse!;
      return Array.from(ids, (id, k) => ({ index: id, value: weights[k] }));
    });
  });
};
