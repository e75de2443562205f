/**
 * The SQL of a store's search: the candidate routes (pgvector HNSW scans, each with an exact
 * fallback in the same statement), their union, and each candidate's exact dense and lexical
 * scores, text, metadata and ColBERT bytes, in one statement whose values are all parameters.
 * How and why: pg_store.ts's header and docs/store.md.
 */
import type { EncodeRow } from '../engine/outputs';
import type { MetadataFilter } from '../retrieval/filter';
import type { SearchParams } from '../retrieval/search_params';
import { vectorText } from './codec';
import type { StoreNames, StoreSettings } from './schema';

/** Checked search options. */
export interface SearchPlan {
  params: SearchParams;
  filter?: MetadataFilter;
  efSearch?: number;
  colbertCandidates?: number;
}

/**
 * The one statement of a search: candidate routes (HNSW scans with an exact fallback), their
 * union, and for each candidate its exact dense and lexical scores, text, metadata and ColBERT
 * bytes. Every value is a parameter.
 */
export function candidateQuery(n: StoreNames, plan: SearchPlan, query: EncodeRow, settings: StoreSettings,
  withColbert: boolean): { sql: string; values: unknown[] } {
  const { params: p, filter } = plan;
  const values: unknown[] = [];
  const param = (v: unknown) => {
    values.push(v);
    return `$${values.length}`;
  };
  // A parameter is numbered when first used: PostgreSQL cannot type one that the statement never reads.
  const once = (v: () => unknown) => {
    let name: string | undefined;
    return () => (name ??= param(v()));
  };
  const text = vectorText(query.dense!);
  const order = Array.from(query.sparse!.ids.keys());
  const qSparse = `{${order.map((i) => `${query.sparse!.ids[i] + 1}:${query.sparse!.weights[i]}`).join(',')}}/${settings.vocabSize}`;
  // The same text twice: as halfvec for the index scans, as vector (fp32) for the exact score.
  const half = once(() => text);
  const qVec = param(text);
  const qSp = param(qSparse);
  let where = 'true';
  if (filter) {
    const f = filter.toSql('metadata', values.length + 1);
    values.push(...f.params);
    where = f.sql;
  }
  const T = n.documents;
  const sparseDistance = `((sparse <#> ${qSp}::sparsevec) + COALESCE(sparse_rest <#> ${qSp}::sparsevec, 0))`;
  let candidates: string;
  const ctes: string[] = [];
  if (p.exhaustive) {
    candidates = `SELECT id FROM ${T} WHERE ${where}`;
  } else {
    const parts: string[] = [];
    if (p.denseRoute) {
      const qHalf = half();
      const lim = param(p.denseCandidates);
      ctes.push(`dh AS MATERIALIZED (SELECT id FROM ${T} WHERE ${where} ORDER BY dense <#> ${qHalf}::halfvec LIMIT ${lim}::int)`,
        `dx AS (SELECT id FROM ${T} WHERE ${where} AND (SELECT count(*) FROM dh) < ${lim}::int ORDER BY (dense <#> ${qHalf}::halfvec) + 0 LIMIT ${lim}::int)`);
      parts.push(`SELECT id FROM dh WHERE (SELECT count(*) FROM dh) >= ${lim}::int`, 'SELECT id FROM dx');
    }
    if (p.sparseRoute) {
      const lim = param(p.sparseCandidates);
      // The exact fallback, like HybridIndex's inverted index, recalls only documents that share a token with the query.
      ctes.push(`sh AS MATERIALIZED (SELECT id FROM ${T} WHERE ${where} ORDER BY sparse <#> ${qSp}::sparsevec LIMIT ${lim}::int)`,
        `sx AS (SELECT id FROM ${T} WHERE ${where} AND (SELECT count(*) FROM sh) < ${lim}::int AND ${sparseDistance} < 0 ORDER BY ${sparseDistance} LIMIT ${lim}::int)`);
      parts.push(`SELECT id FROM sh WHERE (SELECT count(*) FROM sh) >= ${lim}::int`, 'SELECT id FROM sx');
    }
    candidates = parts.join(' UNION ');
  }
  ctes.push(`c AS (${candidates})`);
  const scores = `d.id, d.id_is_number, d.text, d.metadata, -(d.dense::vector <#> ${qVec}::vector) AS dense_score,
      -((d.sparse <#> ${qSp}::sparsevec) + COALESCE(d.sparse_rest <#> ${qSp}::sparsevec, 0)) AS sparse_score`;
  let sql: string;
  if (withColbert && plan.colbertCandidates !== undefined) {
    // Only the best candidates by the dense and lexical part of the score read their ColBERT rows.
    const wd = param(p.wDense);
    const ws = param(p.wSparse);
    const r = param(plan.colbertCandidates);
    ctes.push(`s AS MATERIALIZED (SELECT ${scores} FROM ${T} d WHERE d.id IN (SELECT id FROM c))`,
      `r AS (SELECT id FROM s ORDER BY ${wd}::float8 * dense_score + ${ws}::float8 * sparse_score DESC, id COLLATE "C" LIMIT ${r}::int)`);
    sql = `WITH ${ctes.join(',\n')}
    SELECT s.*, t.colbert FROM s JOIN r ON r.id = s.id JOIN ${T} t ON t.id = s.id`;
  } else {
    sql = `WITH ${ctes.join(',\n')}
    SELECT ${scores}${withColbert ? ', d.colbert' : ''} FROM ${T} d WHERE d.id IN (SELECT id FROM c)`;
  }
  return { sql, values };
}
