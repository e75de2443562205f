/**
 * The OpenAI-compatible routes: POST /v1/embeddings (dense vectors, float arrays or base64) and
 * GET /v1/models (the one model served), for the openai client, LangChain and their kin.
 */
import type { FastifyPluginAsync } from 'fastify';
import { M3Error } from '../../base/errors';
import { textsOf, type RouteOptions } from '../context';
import * as schemas from '../schemas';

export const openaiRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  const { model } = ctx;
  app.post<{ Body: schemas.EmbeddingsBody }>('/v1/embeddings', { schema: { body: schemas.embeddingsBody } }, async (request, reply) => {
    const { input, encoding_format: format = 'float', dimensions } = request.body;
    const texts = textsOf(input);
    ctx.checkCount(texts.length, 'inputs');
    if (dimensions !== undefined && dimensions !== model.dim) {
      throw new M3Error('ERR_INPUT', `dimensions ${dimensions} is not supported: this model's vectors have ${model.dim} dimensions (omit the field)`);
    }
    // Like the OpenAI API, a text over the limit is an error rather than silently cut, unless
    // the request says `truncate: true` or the server runs with --auto-truncate.
    const out = await ctx.batcher.encode(texts, {
      dense: true, sparse: false, maxLength: ctx.limits.maxTextTokens, truncate: request.body.truncate ?? ctx.limits.autoTruncate,
      signal: ctx.requestSignal(reply),
    });
    const data = texts.map((_, i) => {
      const v = out.dense!.subarray(i * out.dim, (i + 1) * out.dim);
      return { object: 'embedding', index: i, embedding: format === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v) };
    });
    const tokens = out.tokenCount;
    return { object: 'list', data, model: request.body.model ?? ctx.modelName, usage: { prompt_tokens: tokens, total_tokens: tokens } };
  });

  const entry = () => ({ id: ctx.modelName, object: 'model', created: ctx.created, owned_by: 'bge-m3' });
  app.get('/v1/models', async () => ({ object: 'list', data: [entry()] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    ctx.checkModel(request.params.id);
    return entry();
  });
};
