/**
 * JSON schemas of the server's request bodies. Unknown fields are errors (the server's ajv keeps
 * them instead of dropping them), and types are never coerced.
 */

const texts = {
  anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, items: { type: 'string' } }],
};
const length = { type: 'integer', minimum: 2 };
const weights = { type: 'array', minItems: 3, maxItems: 3, items: { type: 'number', minimum: 0 } };

/** A request body: its fields, and `model`, which every route takes (the server checks it names the served model). */
function body(required: string[], properties: Record<string, unknown>) {
  return { type: 'object', required, additionalProperties: false, properties: { model: { type: 'string' }, ...properties } };
}

export const embeddingsBody = body(['input'], {
  input: texts,
  encoding_format: { enum: ['float', 'base64'] },
  dimensions: { type: 'integer', minimum: 1 },
  user: { type: 'string' },
  truncate: { type: 'boolean' },
});

export { body, texts, length, weights };

export const encodeBody = body(['texts'], {
  texts,
  dense: { type: 'boolean' },
  sparse: { type: 'boolean' },
  colbert: { type: 'boolean' },
  max_length: length,
  truncate: { type: 'boolean' },
});

export const scoreBody = body(['pairs'], {
  pairs: { type: 'array', minItems: 1, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'string' } } },
  weights,
  max_query_length: length,
  max_passage_length: length,
  truncate: { type: 'boolean' },
});

export const searchBody = body(['query'], {
  query: { type: 'string' },
  k: { type: 'integer', minimum: 1, maximum: 1000 },
  weights,
  dense_candidates: { type: 'integer', minimum: 1, maximum: 100000 },
  sparse_candidates: { type: 'integer', minimum: 1, maximum: 100000 },
  exhaustive: { type: 'boolean' },
  max_query_length: length,
  filter: { type: 'object' },
  ef_search: { type: 'integer', minimum: 1, maximum: 1000 },
});

export const documentsBody = body(['documents'], {
  documents: {
    type: 'array', minItems: 1,
    items: {
      type: 'object', required: ['id', 'text'], additionalProperties: false,
      // id: a string or a safe integer, checked by the route (a store keeps ids as text, 1 to 512 characters).
      properties: { id: {}, text: { type: 'string' }, metadata: { type: 'object', nullable: true } },
    },
  },
  truncate: { type: 'boolean' },
});

export interface EmbeddingsBody {
  input: string | string[];
  model?: string;
  encoding_format?: 'float' | 'base64';
  dimensions?: number;
  user?: string;
  truncate?: boolean;
}

export interface EncodeBody {
  texts: string | string[];
  dense?: boolean;
  sparse?: boolean;
  colbert?: boolean;
  max_length?: number;
  truncate?: boolean;
}

export interface ScoreBody {
  pairs: Array<[string, string]>;
  weights?: [number, number, number];
  max_query_length?: number;
  max_passage_length?: number;
  truncate?: boolean;
}

export interface SearchBody {
  query: string;
  k?: number;
  weights?: [number, number, number];
  dense_candidates?: number;
  sparse_candidates?: number;
  exhaustive?: boolean;
  max_query_length?: number;
  /** A metadata filter (retrieval/filter.ts); with a store only. */
  filter?: Record<string, unknown>;
  /** pgvector's hnsw.ef_search; with a store only. */
  ef_search?: number;
}

export interface DocumentsBody {
  documents: Array<{ id: string | number; text: string; metadata?: Record<string, unknown> | null }>;
  truncate?: boolean;
}
