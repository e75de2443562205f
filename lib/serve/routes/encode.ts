/** POST /encode: any of the three outputs, as JSON or (Accept: application/octet-stream) the binary layout of wire.ts. */
import type { FastifyPluginAsync } from 'fastify';
import type { EncodeOutput } from '../../engine/outputs';
import { textsOf, type RouteOptions } from '../context';
import * as schemas from '../schemas';
import { WIRE_CONTENT_TYPE, encodeWire } from '../wire';

export const encodeRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.post<{ Body: schemas.EncodeBody }>('/encode', { schema: { body: schemas.encodeBody } }, async (request, reply) => {
    const b = request.body;
    const texts = textsOf(b.texts);
    ctx.checkCount(texts.length, 'texts');
    const out = await ctx.batcher.encode(texts, {
      dense: b.dense ?? true, sparse: b.sparse ?? true, colbert: b.colbert ?? false,
      maxLength: ctx.lengthOf(b.max_length, 'max_length'), truncate: b.truncate ?? true, signal: ctx.requestSignal(reply),
    });
    if ((request.headers.accept ?? '').includes(WIRE_CONTENT_TYPE)) {
      return reply.header('Content-Type', WIRE_CONTENT_TYPE).send(encodeWire(out));
    }
    return encodeJson(out);
  });
};

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
