/**
 * JSON schemas of the bodies that follow other servers' APIs: rerank as Cohere, Jina and TEI send
 * it (one schema; the route tells TEI's `texts` from Cohere's and Jina's `documents`), and TEI's
 * /embed and /embed_sparse. Unknown fields are still errors; the fields those clients send are not.
 */
import { body, length, texts, weights } from './schemas';

/** TEI's truncation_direction; only Right (keep the start) is supported. */
const direction = { enum: ['Right', 'right', 'Left', 'left'] };

export const rerankBody = body(['query'], {
  query: { type: 'string' },
  // Cohere and Jina: documents, as strings or { text } objects.
  documents: {
    type: 'array', minItems: 1,
    items: { anyOf: [{ type: 'string' }, { type: 'object', required: ['text'], additionalProperties: false, properties: { text: { type: 'string' } } }] },
  },
  top_n: { type: 'integer', minimum: 1 },
  return_documents: { type: 'boolean' },
  max_tokens_per_doc: { type: 'integer', minimum: 1 },
  rank_fields: { type: 'array', items: { type: 'string' } },
  max_chunks_per_doc: { type: 'integer', minimum: 1 },
  // TEI: texts, and its answer options.
  texts: { type: 'array', minItems: 1, items: { type: 'string' } },
  raw_scores: { type: 'boolean' },
  return_text: { type: 'boolean' },
  truncation_direction: direction,
  // This server's own.
  weights,
  max_query_length: length,
  max_passage_length: length,
  truncate: { type: 'boolean' },
});

export const teiEmbedBody = body(['inputs'], {
  inputs: texts,
  truncate: { type: 'boolean' },
  truncation_direction: direction,
  normalize: { type: 'boolean' },
  prompt_name: { type: ['string', 'null'] },
  dimensions: { type: ['integer', 'null'], minimum: 1 },
});

export const teiEmbedSparseBody = body(['inputs'], {
  inputs: texts,
  truncate: { type: 'boolean' },
  truncation_direction: direction,
  prompt_name: { type: ['string', 'null'] },
});

export interface RerankBody {
  query: string;
  documents?: Array<string | { text: string }>;
  top_n?: number;
  return_documents?: boolean;
  max_tokens_per_doc?: number;
  rank_fields?: string[];
  max_chunks_per_doc?: number;
  texts?: string[];
  raw_scores?: boolean;
  return_text?: boolean;
  truncation_direction?: string;
  weights?: [number, number, number];
  max_query_length?: number;
  max_passage_length?: number;
  truncate?: boolean;
}

export interface TeiEmbedBody {
  inputs: string | string[];
  truncate?: boolean;
  truncation_direction?: string;
  normalize?: boolean;
  prompt_name?: string | null;
  dimensions?: number | null;
}
