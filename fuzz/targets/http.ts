/**
 * http: the server of `bge-m3 serve` on the demo model, with an index for /search, answering
 * mutated requests (through fastify's inject, no sockets). Each request starts as a valid one of
 * a route; its JSON is mutated (other types, huge and non-finite numbers, deep nesting, long and
 * odd strings, unknown fields), or its bytes, route or headers. A 2xx answer must hold only
 * finite numbers, any other must be a 4xx or a 503 with an error body; a 500, or no answer, is
 * an uncoded failure.
 */
import * as path from 'node:path';
import { HybridIndex } from '../../lib/retrieval/hybrid_index';
import { BGEM3 } from '../../lib/engine/model';
import type { M3Server } from '../../lib/server';
import { WIRE_CONTENT_TYPE, decodeWire } from '../../lib/serve/wire';
import { EDGE_STRINGS, applyByteOp, applyJsonOpsToBytes, randomByteOps, randomJsonOps, stringifyJson, type JsonFocus } from '../mutate';
import type { ByteOp, CaseResult, JsonOp, JsonPath, Recipe, Step } from '../recipe';
import type { Random } from '../rng';
import { ROOT, clip, firstNonFinite, fromRecipe, misleading, type Target } from '../target';

interface BaseRequest {
  route: string;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** A valid request of each route, with every optional field present so that mutations reach it. */
export const HTTP_BASES: Record<string, BaseRequest> = {
  embeddings: { route: '/v1/embeddings', body: { input: ['hello world', '東京は日本の首都です'], model: 'bge-m3', encoding_format: 'float', user: 'u' } },
  'embeddings-base64': { route: '/v1/embeddings', body: { input: 'one text', encoding_format: 'base64', dimensions: 32 } },
  encode: { route: '/encode', body: { texts: ['a short text', 'another one'], dense: true, sparse: true, colbert: true, max_length: 32, truncate: true } },
  'encode-wire': {
    route: '/encode', body: { texts: ['a short text', 'another one'], dense: true, sparse: true, colbert: true }, headers: { accept: WIRE_CONTENT_TYPE },
  },
  score: {
    route: '/score',
    body: { pairs: [['what is bge-m3?', 'an embedding model'], ['東京', '👩🏽‍💻']], weights: [0.4, 0.2, 0.4], max_query_length: 16, max_passage_length: 64, truncate: true },
  },
  rerank: {
    route: '/rerank',
    body: {
      query: 'what is bge-m3?', documents: ['an embedding model', { text: 'a city' }, 'lexical weights'], top_n: 2, weights: [1, 0.3, 1],
      return_documents: true, max_query_length: 16, max_passage_length: 64, truncate: true,
    },
  },
  'rerank-cohere': {
    route: '/v1/rerank',
    body: {
      model: 'bge-m3', query: 'what is bge-m3?', documents: ['an embedding model', 'a city'], top_n: 1, return_documents: true,
      max_tokens_per_doc: 4096, rank_fields: ['text'], max_chunks_per_doc: 10,
    },
  },
  'rerank-tei': {
    route: '/rerank',
    body: { query: 'what is bge-m3?', texts: ['an embedding model', '東京'], raw_scores: false, return_text: true, truncate: true, truncation_direction: 'Right' },
  },
  embed: { route: '/embed', body: { inputs: ['hello world', '👩🏽‍💻'], truncate: true, normalize: true, truncation_direction: 'Right', model: 'bge-m3' } },
  'embed-sparse': { route: '/embed_sparse', body: { inputs: 'lexical weights by token id', truncate: false, truncation_direction: 'right' } },
  search: {
    route: '/search',
    body: { query: 'retrieval with lexical matching', k: 5, weights: [1, 0.3, 1], dense_candidates: 20, sparse_candidates: 20, exhaustive: false, max_query_length: 16 },
  },
};

const ROUTES = [
  '/v1/embeddings', '/encode', '/score', '/rerank', '/v1/rerank', '/embed', '/embed_sparse', '/search', '/v1/embeddings/', '/score?x=1', '//encode',
  '/health', '/metrics', '/v1/models', '/nope',
];
/** Routes the fuzzer asks with GET. */
const GET_ROUTES = ['/health', '/metrics', '/v1/models'];
const FIELD_WORDS = [
  'input', 'inputs', 'texts', 'pairs', 'query', 'documents', 'text', 'weights', 'k', 'top_n', 'float', 'base64', 'max_length', 'model', 'return_text',
  '__proto__', 'constructor',
];
const CONTENT_TYPES = [
  'text/plain', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/x-www-form-urlencoded', 'application/octet-stream',
  'APPLICATION/JSON', 'application/json, text/plain', 'application/jsonx', 'multipart/form-data; boundary=x', '',
];
/** Weights that overflow the fused score, have no denominator, or are not numbers JSON can hold. */
const WEIGHT_SETS: unknown[] = [
  [1e308, 1e308, 1e308], [{ $raw: '1e309' }, 1, 1], [0, 0, 0], [0, 0, 1], [5e-324, 5e-324, 5e-324], [1e308, 0, 1e-308], [-0, 1, 1], [1, 1], [1, 1, 1, 1],
  [-1, 1, 1], ['1', 1, 1], [null, 1, 1], [{ $raw: '-1e309' }, 1, 1], [1.7976931348623157e308, 1.7976931348623157e308, 0],
];

/** Mutations aimed at the known weak spots: weights, counts, lengths, big and odd texts. */
function pointedOps(rng: Random, base: BaseRequest): JsonOp[] {
  const keys = Object.keys(base.body);
  const textKey = keys.find((k) => ['input', 'inputs', 'texts', 'query', 'documents', 'pairs'].includes(k)) ?? keys[0];
  switch (rng.below(6)) {
    case 0:
      return [{ op: 'json-set', path: ['weights'], value: rng.pick(WEIGHT_SETS) }];
    case 1:
      return [{ op: 'json-set', path: [rng.pick(keys)], value: rng.pick<unknown>([1e308, { $raw: '1e309' }, -1, 0, 2 ** 31, 2 ** 53 + 2, 1.5, 65, 66, 67, 8193, 1e21]) }];
    case 2: {
      const count = rng.pick([256, 257, 1000, 2048, 2049]);
      const many = `[${Array.from({ length: count }, () => (textKey === 'pairs' ? '["q","p"]' : '"t"')).join(',')}]`;
      return [{ op: 'json-set', path: [textKey === 'query' ? 'documents' : textKey], value: { $raw: many } }];
    }
    case 3:
      return [{ op: 'json-set', path: [textKey, ...(textKey === 'query' ? [] : [0]), ...(textKey === 'pairs' ? [rng.below(2)] : [])],
        value: rng.chance(0.5) ? rng.pick(EDGE_STRINGS) : { $repeat: rng.pick(['a', 'word ', '東', '👩🏽‍💻', '\u0301', '</s>']), count: rng.pick([1000, 100_000, 600_000]) } }];
    case 4:
      return [{ op: 'json-set', path: [rng.pick([...keys, 'unknown_field'])], value: { $nest: rng.pick([50, 5000, 100_000]), leaf: 'x' } }];
    default:
      return [{ op: 'json-set', path: [textKey], value: rng.pick<unknown>([[], {}, null, 42, [[]], [null], [1, 2, 3], { text: 'x' }, [{ text: 1 }]]) }];
  }
}

/** The request a recipe describes. */
export function buildRequest(recipe: Recipe): { route: string; headers: Record<string, string>; payload: Buffer } {
  const base = HTTP_BASES[recipe.base];
  if (!base) throw new Error(`http has no base '${recipe.base}' (${Object.keys(HTTP_BASES).join(', ')})`);
  let route = base.route;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...base.headers };
  let payload: Buffer = Buffer.from(stringifyJson(base.body), 'utf8');
  for (const step of recipe.ops) {
    if (step.op === 'route') route = step.value;
    else if (step.op === 'header') {
      if (step.value === null) delete headers[step.name.toLowerCase()];
      else headers[step.name.toLowerCase()] = step.value;
    } else if (step.op.startsWith('json-')) payload = applyJsonOpsToBytes(payload, [step as JsonOp]);
    else payload = applyByteOp(payload, step as ByteOp);
  }
  return { route, headers, payload };
}

/** Where a JSON answer holds something other than a finite number where numbers are expected: null or a non-number. */
function nonNumber(value: unknown, at: string): string | undefined {
  if (value === null) return `${at} is null`;
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${at} is ${value}`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = nonNumber(value[i], `${at}[${i}]`);
      if (bad) return bad;
    }
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const bad = nonNumber(v, `${at}.${k}`);
      if (bad) return bad;
    }
  }
  return undefined;
}

/** Builds an index from the model's own vectors, for /search. */
async function demoIndex(model: BGEM3): Promise<HybridIndex> {
  const docs = Array.from({ length: 30 }, (_, i) => `document ${i} about ${['retrieval', 'lexical matching', 'dense vectors', '東京', 'emoji 🎉'][i % 5]} and more`);
  const info = model.info();
  const index = HybridIndex.create({ dim: model.dim, vocabSize: info.vocabSize, colbert: 'f32', model });
  index.add(docs.map((_, i) => `doc-${i}`), await model.encode(docs, { dense: true, sparse: true, colbert: true }));
  return index;
}

export const httpTarget: Target = {
  name: 'http',
  caseTimeoutMs: 20_000,
  batchSize: 50,
  setupTimeoutMs: 30_000,
  // A request leaves typed arrays and JSON behind, nothing with a native finalizer of its own.
  collectAfterEachCase: false,

  generate(rng: Random): Recipe {
    const base = rng.pick(Object.keys(HTTP_BASES));
    const body = HTTP_BASES[base].body;
    const ops: Step[] = [];
    const roll = rng.next();
    if (roll < 0.35) ops.push(...pointedOps(rng, HTTP_BASES[base]));
    else if (roll < 0.75) {
      const focus: JsonFocus = [[[], 1], ...Object.keys(body).map((k): [JsonPath, number] => [[k], 1])];
      ops.push(...randomJsonOps(rng, body, focus, FIELD_WORDS));
      if (rng.chance(0.2)) ops.push({ op: 'json-set', path: [rng.pick(FIELD_WORDS)], value: rng.pick<unknown>([1, 'x', null, [], {}]) });
    } else if (roll < 0.88) {
      ops.push(...randomByteOps(rng, Buffer.byteLength(stringifyJson(body))));
    } else {
      if (rng.chance(0.5)) ops.push({ op: 'header', name: 'content-type', value: rng.chance(0.15) ? null : rng.pick(CONTENT_TYPES) });
      if (rng.chance(0.5)) ops.push({ op: 'route', value: rng.pick(ROUTES) });
      if (rng.chance(0.3)) ops.push({ op: 'header', name: 'accept', value: rng.pick([WIRE_CONTENT_TYPE, 'text/html', '*/*', `${WIRE_CONTENT_TYPE};q=0`]) });
      if (ops.length === 0) ops.push({ op: 'route', value: rng.pick(ROUTES) });
      if (rng.chance(0.3)) ops.push(...randomJsonOps(rng, body, [[[], 1]], FIELD_WORDS, 1));
    }
    return { target: 'http', base, ops };
  },

  async open() {
    const { createServer } = await import('../../lib/server');
    const model = await BGEM3.load(path.join(ROOT, 'demo-model'), { threads: 1, releaseMemoryAfterMs: 0 });
    const index = await demoIndex(model);
    // The event-loop check answers 503 when this shared machine is busy, which would hide the answer under test.
    const server: M3Server = await createServer({ model, index, maxEventLoopDelayMs: 0, requestTimeoutMs: 15_000 });
    await server.app.ready();
    return {
      async run(recipe: Recipe): Promise<CaseResult> {
        const { route, headers, payload } = fromRecipe(() => buildRequest(recipe));
        const method = GET_ROUTES.includes(route) ? 'GET' : 'POST';
        const res = await server.app.inject({ method, url: route, headers, payload });
        const status = res.statusCode;
        const type = String(res.headers['content-type'] ?? '');
        if (status >= 200 && status < 300) {
          if (type.startsWith(WIRE_CONTENT_TYPE)) {
            const out = decodeWire(res.rawPayload);
            for (const [name, values] of [['dense', out.dense], ['sparse', out.sparse?.weights], ['colbert', out.colbert?.data]] as const) {
              const bad = values ? firstNonFinite(values) : -1;
              if (bad >= 0) return { ...misleading(`${route} answered ${name}[${bad}] = ${values![bad]}`), status };
            }
          } else if (type.includes('json')) {
            const bad = nonNumber(JSON.parse(res.body), 'the answer');
            if (bad) return { ...misleading(`${route} answered ${status} where ${bad}`), status };
          }
          return { outcome: 'clean-ok', status };
        }
        let code: string | undefined;
        let message = clip(res.body, 600);
        try {
          const error = JSON.parse(res.body).error;
          code = typeof error?.code === 'string' ? error.code : undefined;
          if (typeof error?.message === 'string') message = clip(error.message, 600);
        } catch {
          // not a JSON error body: reported as it is
        }
        if ((status >= 400 && status < 500) || status === 503) return { outcome: 'clean-error', status, code, message };
        return { outcome: 'uncoded', status, code, message: `${method} ${route} answered ${status}: ${message}` };
      },
      async close() {
        await server.close();
        await model.dispose();
      },
    };
  },
};
