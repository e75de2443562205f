/**
 * bge-m3/server: the HTTP server of `bge-m3 serve` as a library (fastify): OpenAI-compatible
 * embeddings, encode, score, rerank and search over a loaded model, with backpressure and metrics.
 */
export { createServer } from './serve/server';
export type { ServerOptions, M3Server } from './serve/server';
