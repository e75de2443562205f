/**
 * POST /documents, GET /documents/:id and DELETE /documents/:id: the server's store's documents (registered only when
 * it has one). POST encodes the texts with the served model through the server's batcher and
 * upserts them in one transaction: every document is written, or none.
 */
import type { FastifyPluginAsync } from 'fastify';
import { M3Error, abortedError } from '../../base/errors';
import { EncodeOutput } from '../../engine/outputs';
import { checkStoreDocument } from '../../store/documents';
import type { PgStore, StoreDocument } from '../../store/pg_store';
import type { RouteContext, RouteOptions } from '../context';
import { httpFailure } from '../http_errors';
import * as schemas from '../schemas';

/** Most texts of one write in a single encode request. */
const CHUNK_TEXTS = 32;

export const documentRoutes: FastifyPluginAsync<RouteOptions & { store: PgStore }> = async (app, { ctx, store }) => {
  app.post<{ Body: schemas.DocumentsBody }>('/documents', { schema: { body: schemas.documentsBody } }, async (request, reply) => {
    const b = request.body;
    ctx.checkCount(b.documents.length, 'documents');
    const documents = checkDocuments(b.documents);
    const { signal } = ctx.requestController(reply);
    const encoded = await encodeInChunks(ctx, documents.map((d) => d.text as string), !!store.colbert, b.truncate ?? true, signal);
    if (signal.aborted) throw abortedError();
    await store.upsert(documents, encoded);
    return { upserted: documents.length };
  });

  app.get<{ Params: { id: string } }>('/documents/:id', async (request) => {
    const doc = await store.get(request.params.id);
    if (!doc) throw httpFailure('not_found', `the store has no document with id ${JSON.stringify(request.params.id)}`, 404);
    return doc;
  });

  app.delete<{ Params: { id: string } }>('/documents/:id', {
    // A DELETE has no body; a client that sends Content-Type: application/json on every request
    // is not refused for the empty body that comes with it.
    onRequest: async (request) => {
      const length = request.headers['content-length'];
      if ((length === undefined || length === '0') && request.headers['transfer-encoding'] === undefined) delete request.headers['content-type'];
    },
  }, async (request) => ({ deleted: await store.remove([request.params.id]) }));
};

/** The documents of a body, checked before anything is encoded: ids (unique as the store keys them), texts, metadata. */
function checkDocuments(documents: schemas.DocumentsBody['documents']): StoreDocument[] {
  const seen = new Map<string, number>();
  return documents.map((d, i) => {
    const where = `documents[${i}]`;
    const key = checkStoreDocument(d.id, d.text, d.metadata, (field) => `${where}.${field}`);
    const first = seen.get(key);
    if (first !== undefined) {
      throw new M3Error('ERR_INPUT', `${where}.id ${JSON.stringify(d.id)} names the same document as documents[${first}].id ` +
        '(ids are kept as text, so 5 and "5" are one id); send each document once');
    }
    seen.set(key, i);
    const doc: StoreDocument = { id: d.id, text: d.text };
    if (d.metadata) doc.metadata = d.metadata;
    return doc;
  });
}

/**
 * Passages encoded through the batcher in chunks of about one batch (CHUNK_TEXTS texts, or the
 * batcher's maxBatchTokens in characters), each queued once the previous one is done: queries
 * that arrive during a large write wait for one chunk, not for the whole write.
 */
async function encodeInChunks(ctx: RouteContext, texts: string[], colbert: boolean, truncate: boolean, signal: AbortSignal): Promise<EncodeOutput> {
  const budget = ctx.batcher.maxBatchTokens;
  const parts: EncodeOutput[] = [];
  let start = 0;
  while (start < texts.length) {
    let end = start + 1;
    let chars = texts[start].length;
    while (end < texts.length && end - start < CHUNK_TEXTS && chars + texts[end].length <= budget) chars += texts[end++].length;
    parts.push(await ctx.batcher.encode(texts.slice(start, end), {
      dense: true, sparse: true, colbert, maxLength: ctx.limits.maxTextTokens, truncate, signal,
    }));
    start = end;
  }
  return parts.length === 1 ? parts[0] : concatOutputs(parts);
}

/** Several encode results (same outputs and dim) as one, in order. */
function concatOutputs(parts: EncodeOutput[]): EncodeOutput {
  const { dim } = parts[0];
  const count = parts.reduce((n, p) => n + p.count, 0);
  function joined<T extends Float32Array | Uint32Array>(arrays: T[], make: (length: number) => T): T {
    const out = make(arrays.reduce((n, a) => n + a.length, 0));
    let at = 0;
    for (const a of arrays) {
      out.set(a, at);
      at += a.length;
    }
    return out;
  }
  const floats = (arrays: Float32Array[]) => joined(arrays, (n) => new Float32Array(n));
  const uints = (arrays: Uint32Array[]) => joined(arrays, (n) => new Uint32Array(n));
  /** Offsets of each part, shifted after the entries of the parts before it. */
  const joinedOffsets = (all: Uint32Array[]) => {
    const out = new Uint32Array(count + 1);
    let row = 0;
    let base = 0;
    for (const offsets of all) {
      for (let i = 1; i < offsets.length; i++) out[row + i] = base + offsets[i];
      row += offsets.length - 1;
      base += offsets[offsets.length - 1];
    }
    return out;
  };
  const dense = parts[0].dense ? floats(parts.map((p) => p.dense!)) : undefined;
  const sparse = parts[0].sparse ? {
    offsets: joinedOffsets(parts.map((p) => p.sparse!.offsets)),
    ids: uints(parts.map((p) => p.sparse!.ids)),
    weights: floats(parts.map((p) => p.sparse!.weights)),
  } : undefined;
  const colbert = parts[0].colbert ? {
    offsets: joinedOffsets(parts.map((p) => p.colbert!.offsets)),
    data: floats(parts.map((p) => p.colbert!.data)),
  } : undefined;
  const tokens = parts.every((p) => p.tokens) ? uints(parts.map((p) => p.tokens!)) : undefined;
  return new EncodeOutput(count, dim, dense, sparse, colbert, undefined, tokens);
}
