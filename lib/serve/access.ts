/**
 * Who may call the server and what a request may name: opt-in CORS (@fastify/cors), an optional
 * API key (Bearer), and the `model` field every JSON route takes, checked against the served model.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import cors from '@fastify/cors';
import type { FastifyInstance } from 'fastify';
import { M3Error } from '../base/errors';
import type { RouteContext } from './context';
import { sendError } from './http_errors';

/** Routes an API key does not guard: probes and scrapers rarely carry one, and neither reveals data. */
export const OPEN_ROUTES = ['/health', '/metrics'];

export interface AccessOptions {
  /** Require `Authorization: Bearer <apiKey>` on every route but OPEN_ROUTES. */
  apiKey?: string;
  /** Allowed browser origins: '*', one origin, or several separated by commas. Default: no CORS headers. */
  cors?: string;
}

/** Checks the access options (an empty key or origin list would lock out or open up by mistake). */
export function checkAccess(options: AccessOptions): void {
  if (options.apiKey !== undefined && (typeof options.apiKey !== 'string' || options.apiKey.trim() === '')) {
    throw new M3Error('ERR_INPUT', 'apiKey must be a non-empty string (omit it to serve without a key)');
  }
  if (options.cors !== undefined && (typeof options.cors !== 'string' || options.cors.trim() === '')) {
    throw new M3Error('ERR_INPUT', "cors must be '*' or one or more origins separated by commas (omit it for no CORS headers)");
  }
}

/** Registers CORS, the API-key check and the model check on the app. */
export async function registerAccess(app: FastifyInstance, ctx: RouteContext, options: AccessOptions, retryAfter: string): Promise<void> {
  if (options.cors) {
    const origins = options.cors.split(',').map((o) => o.trim()).filter(Boolean);
    await app.register(cors, { origin: origins.includes('*') ? '*' : origins, methods: ['GET', 'POST', 'DELETE'] });
  }
  if (options.apiKey) {
    const expected = digest(options.apiKey);
    app.addHook('onRequest', async (request, reply) => {
      if (request.method === 'OPTIONS' || OPEN_ROUTES.includes(request.url.split('?')[0])) return;
      const header = request.headers.authorization ?? '';
      const match = /^Bearer\s+(.+)$/i.exec(header);
      if (match && timingSafeEqual(digest(match[1].trim()), expected)) return;
      reply.header('WWW-Authenticate', 'Bearer');
      return sendError(reply, {
        status: 401, type: 'invalid_request_error', code: 'invalid_api_key',
        message: match ? 'Incorrect API key provided.' : 'No API key provided: send the header Authorization: Bearer <key> (the server runs with --api-key).',
      }, retryAfter);
    });
  }
  app.addHook('preHandler', async (request) => {
    const body = request.body as { model?: unknown } | undefined;
    if (body !== null && typeof body === 'object' && !Array.isArray(body)) ctx.checkModel(body.model);
  });
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}
