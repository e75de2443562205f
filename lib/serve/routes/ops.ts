/** GET /health and GET /metrics (Prometheus): answered even under pressure. */
import type { FastifyPluginAsync } from 'fastify';
import { VERSION } from '../../engine/runtime';
import type { RouteOptions } from '../context';

export const opsRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  const unpressured = { pressureHandler: () => undefined };
  const precision = ctx.model.info().precision;
  const version = VERSION;
  app.get('/health', { config: unpressured }, async (_request, reply) => {
    if (ctx.draining) return reply.code(503).send({ status: 'shutting down' });
    return { status: 'ok', version, model: ctx.modelName, dim: ctx.model.dim, precision, queue: ctx.batcher.stats().queued };
  });

  app.get('/metrics', { config: unpressured }, async (_request, reply) => {
    reply.header('Content-Type', ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });
};
