/**
 * PgStore: BGE-M3's hybrid retrieval on PostgreSQL with pgvector, behind the same search API as
 * HybridIndex. The database recalls, the engine reranks:
 *
 * 1. Candidate routes in SQL: the dense route orders by `dense <#> q` (halfvec, HNSW), the sparse
 *    route by `sparse <#> q` (sparsevec, HNSW over each row's largest 1,000 weights). A metadata
 *    filter is applied inside both routes, with pgvector's iterative index scans, so a filtered
 *    search still finds k hits. A route whose index scan returns fewer rows than asked (a small
 *    table, a selective filter, or candidate counts that cover the corpus) is answered by an exact
 *    scan instead, in the same statement: with candidate counts that cover the corpus the search
 *    is exact.
 * 2. The union of the candidates comes back in the same round trip with its exact dense and
 *    lexical scores (computed in SQL over the stored vectors), text, metadata and ColBERT bytes.
 * 3. The engine scores ColBERT with the native MaxSim kernel and fuses the three scores with
 *    scoring/fusion.ts, the formula and default weights of HybridIndex.
 *
 * Connections: pglite:memory / pglite:DIR (PGlite in this process) or postgres://... (any server
 * with pgvector 0.7 or later, through a pg pool). Tables: schema.ts; column formats: codec.ts.
 */
import { M3Error, inputError } from '../base/errors';
import { checkBoolean, checkChoice, checkInteger, checkOptions, optionalInteger } from '../base/validate';
import { BGE_M3_VOCAB_SIZE, queryLength } from '../base/defaults';
import { EncodeOutput, type EncodeRow } from '../engine/outputs';
import { fuse } from '../scoring/fusion';
import { maxSimSync } from '../scoring/maxsim';
import { MetadataFilter } from '../retrieval/filter';
import { identityOf, type DocumentId, type ModelLike, type SearchHit } from '../retrieval/hybrid_index';
import type { ModelIdentity } from '../retrieval/index_store';
import { MAX_COUNT, searchParams, type SearchParamOptions, type SearchParams } from '../retrieval/search_params';
import { blobsAsDocuments, blobsAsFloats, colbertBlobs, mergeSparse, parseSparseText, parseVectorText, sparseColumns, vectorText, type ColbertFormat } from './codec';
import type { DocumentFields } from '../retrieval/document_fields';
import type { DocumentBatch } from '../retrieval/document_export';
import { checkAdd, idKey, type StoreDocument } from './documents';
import { hasIterativeScans, indexStatements, openSchema, recordModel, storeNames, type StoreNames, type StoreSettings } from './schema';
import { connect, type SqlClient, type SqlSession } from './sql';
import { candidateQuery, type SearchPlan } from './search_sql';
import { parseStoreUrl } from './url';

export type { StoreDocument } from './documents';

/** A model that can encode: what upsert() and search() use for texts. */
interface Encoder {
  encode(texts: readonly string[], options?: { colbert?: boolean; maxLength?: number }): Promise<EncodeOutput>;
  modelMaxLength: number;
}

function encoderOf(model: unknown): Encoder | undefined {
  const m = model as Partial<Encoder> | undefined;
  return m && typeof m.encode === 'function' && typeof m.modelMaxLength === 'number' ? (m as Encoder) : undefined;
}

/** Options of {@link PgStore.open}. */
export interface PgStoreOptions {
  /**
   * The model whose vectors the store holds: a loaded BGEM3 (then upsert() and search() also take
   * texts) or its identity. A store created with one model refuses another.
   */
  model?: ModelLike;
  /** Vector width, for a new store without a model (1024 for BGE-M3). */
  dim?: number;
  /** Token ids are below this (default 250002, BGE-M3's vocabulary; a new store only). */
  vocabSize?: number;
  /** ColBERT storage of a new store: 'bf16' (default), 'i8', 'f32', or false for none. */
  colbert?: ColbertFormat | false;
  /** Prefix of the store's tables (default 'bge_m3'): several stores can share a database. */
  table?: string;
  /** Create the store's tables when there are none (default true); false: a missing store is an ERR_STORE. */
  create?: boolean;
  /** HNSW build parameters of a new store (pgvector's defaults: m 16, efConstruction 64). */
  hnsw?: { m?: number; efConstruction?: number };
  /** postgres://: connections in the pool (default 4). */
  poolSize?: number;
  /** postgres://: how long to wait for a connection, in ms (default 10000). */
  connectTimeoutMs?: number;
  /**
   * postgres://: the server cancels a statement that runs longer, in ms (default 0: no limit), so
   * a search stuck behind a lock fails with ERR_STORE instead of waiting forever. Index builds
   * (createIndexes, the end of an ingest) are exempt.
   */
  statementTimeoutMs?: number;
}

/** Options of {@link PgStore.search}: HybridIndex's, plus the HNSW search width. */
export interface StoreSearchOptions extends SearchParamOptions {
  /** pgvector's hnsw.ef_search for both routes (default: the larger candidate count, 40 to 1000). */
  efSearch?: number;
  /**
   * Rerank with ColBERT only this many candidates, the best by the dense and lexical part of the
   * fused score; the others are dropped (default: every candidate, as HybridIndex does). A query
   * reads every reranked candidate's ColBERT rows, so on a large corpus this bounds its I/O.
   */
  colbertCandidates?: number;
  /** searchBatch(): queries run at once (default: the pool's size; 1 on pglite:). */
  concurrency?: number;
}

/** One hit: the id, the fused score and its three components, with the document's text and metadata (HybridIndex's SearchHit). */
export type StoreHit = SearchHit;

/** Rows per INSERT statement (8 parameters each; PostgreSQL allows 65535 per statement). */
const INSERT_ROWS = 256;

/** Documents in PostgreSQL with pgvector, searched with BGE-M3's hybrid recipe. */
export class PgStore {
  private closed = false;

  private constructor(
    private readonly db: SqlClient,
    private readonly names: StoreNames,
    private readonly settings: StoreSettings,
    private readonly iterativeScans: boolean,
    /** The model the vectors come from, when known. */
    readonly model: ModelIdentity | undefined,
    private readonly encoder: Encoder | undefined,
    private readonly poolSize: number,
  ) {}

  /**
   * Opens the store at `url`, creating its tables when there are none (that needs `model` or
   * `dim`). A store created with another model fails with ERR_MODEL_LAYOUT; a database that
   * cannot be reached, or that holds a store of a newer version, with ERR_STORE.
   */
  static async open(url: string, options: PgStoreOptions = {}): Promise<PgStore> {
    checkOptions(options, '{ model?, dim?, colbert?, table?, ... }');
    const where = parseStoreUrl(url);
    const names = storeNames(options.table ?? 'bge_m3');
    const model = options.model === undefined ? undefined : identityOf(options.model);
    const dim = options.dim === undefined ? model?.dim : checkInteger(options.dim, 'dim', 1, 4000);
    if (model && dim !== model.dim) throw new M3Error('ERR_INPUT', `dim ${dim} but the model has dim ${model.dim}`);
    const vocabSize = optionalInteger(options.vocabSize, 'vocabSize', model?.vocabSize ?? BGE_M3_VOCAB_SIZE, 1, 1e9);
    if (model && vocabSize !== model.vocabSize) throw new M3Error('ERR_INPUT', `vocabSize ${vocabSize} but the model has ${model.vocabSize} token ids`);
    const colbert = checkChoice(options.colbert, 'colbert', [false, 'f32', 'bf16', 'i8'] as const, 'bf16');
    const hnsw = {
      m: optionalInteger(options.hnsw?.m, 'hnsw.m', 16, 2, 100),
      efConstruction: optionalInteger(options.hnsw?.efConstruction, 'hnsw.efConstruction', 64, 4, 1000),
    };
    if (hnsw.efConstruction < 2 * hnsw.m) throw new M3Error('ERR_INPUT', `hnsw.efConstruction (${hnsw.efConstruction}) must be at least 2 * hnsw.m (${2 * hnsw.m})`);
    const poolSize = optionalInteger(options.poolSize, 'poolSize', 4, 1, 1000);
    const create = checkBoolean(options.create, 'create', true);
    const db = await connect(where, {
      poolSize,
      connectTimeoutMs: optionalInteger(options.connectTimeoutMs, 'connectTimeoutMs', 10_000, 1, 3_600_000),
      statementTimeoutMs: optionalInteger(options.statementTimeoutMs, 'statementTimeoutMs', 0, 0, 2 ** 31 - 1),
    });
    try {
      const opened = await db.transaction(async (s) => {
        const o = await openSchema(s, names, where.display, dim === undefined || !create ? undefined : () => ({ settings: { dim, vocabSize, colbert, hnsw }, model }));
        if (!o.created && model) {
          checkSameModel(o.settings, o.model, model, names, where.display);
          if (!o.model) await recordModel(s, names, model);
        }
        if (!o.created && options.dim !== undefined && options.dim !== o.settings.dim) {
          throw new M3Error('ERR_MODEL_LAYOUT', `The store '${names.prefix}' at ${where.display} holds vectors of dim ${o.settings.dim}, not ${options.dim}.`);
        }
        return o;
      });
      return new PgStore(db, names, opened.settings, hasIterativeScans(opened.vectorVersion), opened.model ?? model,
        encoderOf(options.model), where.kind === 'pglite' ? 1 : poolSize);
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
  }

  /** Vector width. */
  get dim(): number {
    return this.settings.dim;
  }

  /** Token ids are below this. */
  get vocabSize(): number {
    return this.settings.vocabSize;
  }

  /** ColBERT storage format, or false when the store keeps none. */
  get colbert(): ColbertFormat | false {
    return this.settings.colbert;
  }

  /** The database's URL, password masked. */
  get url(): string {
    return this.db.display;
  }

  /** The prefix of the store's tables. */
  get table(): string {
    return this.names.prefix;
  }

  private check(): void {
    if (this.closed) throw new M3Error('ERR_STORE', `The store at ${this.db.display} is closed.`);
  }

  /** Documents in the store. */
  async count(): Promise<number> {
    this.check();
    const r = await this.db.query(`SELECT count(*) AS n FROM ${this.names.documents}`);
    return Number(r.rows[0].n);
  }

  /**
   * Adds documents from encode() output (dense and sparse; ColBERT too when the store keeps it),
   * with optional text and metadata. Re-adding an id replaces its document. One transaction: a
   * failure writes nothing.
   */
  async add(ids: readonly DocumentId[], encoded: EncodeOutput, fields?: DocumentFields): Promise<void> {
    this.check();
    const rows = this.rows(ids, encoded, fields);
    await this.db.transaction(async (s) => this.write(s, rows));
  }

  /**
   * Adds or replaces documents given as { id, text, metadata }. Without `encoded`, their texts
   * are encoded with the store's model (open the store with a loaded BGEM3).
   */
  async upsert(documents: readonly StoreDocument[], encoded?: EncodeOutput): Promise<void> {
    this.check();
    if (!Array.isArray(documents)) throw inputError('an array of { id, text?, metadata? }', 'documents', documents);
    documents.forEach((d, i) => {
      if (!d || typeof d !== 'object') throw inputError('{ id, text?, metadata? }', `documents[${i}]`, d);
    });
    const fields = { texts: documents.map((d) => d.text), metadata: documents.map((d) => d.metadata) };
    const ids = documents.map((d) => d.id);
    if (encoded === undefined) {
      documents.forEach((d, i) => {
        if (typeof d.text !== 'string') throw new M3Error('ERR_INPUT', `documents[${i}] has no text to encode; give text, or pass encode() output`);
      });
      encoded = await this.encodeTexts(fields.texts as string[], false);
    }
    await this.add(ids, encoded, fields);
  }

  /** Encodes texts with the store's model: passages, or queries (shorter maximum length). */
  async encodeTexts(texts: string[], queries: boolean, colbert = !!this.colbert): Promise<EncodeOutput> {
    if (!this.encoder) {
      throw new M3Error('ERR_INPUT', 'this store was opened without a loaded model, so it cannot encode texts; open it with { model: await BGEM3.load(...) }, or pass encode() output');
    }
    return this.encoder.encode(texts, { colbert, ...(queries ? { maxLength: queryLength(this.encoder.modelMaxLength) } : {}) });
  }

  /** The checked rows of an add() call, as SQL parameters. */
  private rows(ids: readonly DocumentId[], encoded: EncodeOutput, fields?: DocumentFields): unknown[][] {
    const { keys, numeric, texts, metadata } = checkAdd(ids, encoded, fields, this.settings);
    const { dim, vocabSize, colbert } = this.settings;
    const blobs = colbert ? colbertBlobs(encoded.colbert!, ids.length, dim, colbert) : undefined;
    const sp = encoded.sparse!;
    return keys.map((key, i) => {
      const [sparse, rest] = sparseColumns(sp.ids, sp.weights, sp.offsets[i], sp.offsets[i + 1], vocabSize);
      return [key, numeric[i], texts[i], metadata[i], vectorText(encoded.dense!, i * dim, dim), sparse, rest, blobs ? blobs[i] : null];
    });
  }

  /** Writes rows (from rows()) in `s`, replacing documents with the same ids. */
  private async write(s: SqlSession, rows: unknown[][]): Promise<void> {
    const n = this.names;
    for (let at = 0; at < rows.length; at += INSERT_ROWS) {
      const chunk = rows.slice(at, at + INSERT_ROWS);
      const values = chunk.map((_, r) => {
        const p = (c: number) => `$${r * 8 + c + 1}`;
        return `(${p(0)}, ${p(1)}, ${p(2)}, ${p(3)}::jsonb, ${p(4)}::halfvec, ${p(5)}::sparsevec, ${p(6)}::sparsevec, ${p(7)}::bytea)`;
      });
      await s.query(`INSERT INTO ${n.documents} (id, id_is_number, text, metadata, dense, sparse, sparse_rest, colbert) VALUES ${values.join(', ')}
        ON CONFLICT (id) DO UPDATE SET id_is_number = EXCLUDED.id_is_number, text = EXCLUDED.text, metadata = EXCLUDED.metadata,
        dense = EXCLUDED.dense, sparse = EXCLUDED.sparse, sparse_rest = EXCLUDED.sparse_rest, colbert = EXCLUDED.colbert`, chunk.flat());
    }
  }

  /** Removes documents by id; unknown ids are ignored. Returns how many were removed. */
  async remove(ids: readonly DocumentId[]): Promise<number> {
    this.check();
    if (!Array.isArray(ids)) throw inputError('an array of ids', 'ids', ids);
    const keys = [...new Set(ids.map((id, i) => idKey(id, `ids[${i}]`)))];
    if (keys.length === 0) return 0;
    const r = await this.db.query(`WITH gone AS (DELETE FROM ${this.names.documents} WHERE id = ANY($1::text[]) RETURNING 1) SELECT count(*) AS n FROM gone`, [keys]);
    return Number(r.rows[0].n);
  }

  /** One document's id, text and metadata, or undefined. */
  async get(id: DocumentId): Promise<StoreDocument | undefined> {
    this.check();
    const r = await this.db.query(`SELECT id, id_is_number, text, metadata FROM ${this.names.documents} WHERE id = $1`, [idKey(id, 'id')]);
    return r.rows[0] ? documentOf(r.rows[0]) : undefined;
  }

  /** Which of `ids` the store holds (for resuming an interrupted ingest). */
  async existing(ids: readonly DocumentId[]): Promise<Set<string>> {
    this.check();
    const keys = ids.map((id, i) => idKey(id, `ids[${i}]`));
    if (keys.length === 0) return new Set();
    const r = await this.db.query(`SELECT id FROM ${this.names.documents} WHERE id = ANY($1::text[])`, [keys]);
    return new Set(r.rows.map((row) => row.id as string));
  }

  /**
   * Top-k documents for one query: an encode() row (dense and sparse; colbert to rerank with it)
   * or a text, encoded with the store's model.
   */
  async search(query: EncodeRow | string, options: StoreSearchOptions = {}): Promise<StoreHit[]> {
    this.check();
    const plan = this.searchOptions(options);
    const params = plan.params;
    if (typeof query === 'string') {
      query = (await this.encodeTexts([query], true, !!this.colbert && params.wColbert > 0)).row(0);
    }
    this.checkQuery(query, params, 'search');
    return this.db.transaction(async (s) => this.searchIn(s, query as EncodeRow, plan));
  }

  /** {@link search} for every text of an encode() result (or every string), in order. */
  async searchBatch(queries: EncodeOutput | readonly string[], options: StoreSearchOptions = {}): Promise<StoreHit[][]> {
    this.check();
    const plan = this.searchOptions(options);
    const params = plan.params;
    if (Array.isArray(queries)) {
      if (queries.length === 0) return [];
      queries = await this.encodeTexts(queries as string[], true, !!this.colbert && params.wColbert > 0);
    }
    const q = queries as EncodeOutput;
    if (!q || typeof q.row !== 'function' || !q.dense || !q.sparse) throw inputError('an encode() result with dense and sparse, or an array of strings', 'queries', queries);
    const rows = Array.from({ length: q.count }, (_, i) => q.row(i));
    rows.forEach((row) => this.checkQuery(row, params, 'searchBatch'));
    const concurrency = optionalInteger(options.concurrency, 'concurrency', this.poolSize, 1, 1000);
    const out: StoreHit[][] = new Array(rows.length);
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const i = next++;
        out[i] = await this.db.transaction(async (s) => this.searchIn(s, rows[i], plan));
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, rows.length) }, worker));
    return out;
  }

  private searchOptions(options: StoreSearchOptions): SearchPlan {
    checkOptions(options);
    const params = searchParams(options, !!this.colbert);
    const filter = options.filter === undefined ? undefined : MetadataFilter.parse(options.filter);
    const efSearch = options.efSearch === undefined ? undefined : checkInteger(options.efSearch, 'efSearch', 1, 1000);
    const colbertCandidates = options.colbertCandidates === undefined ? undefined
      : Math.max(params.k, checkInteger(options.colbertCandidates, 'colbertCandidates', 1, MAX_COUNT));
    return { params, filter, efSearch, colbertCandidates };
  }

  private checkQuery(query: EncodeRow, params: SearchParams, where: string): void {
    if (!query || !(query.dense instanceof Float32Array) || !query.sparse) {
      throw inputError('an encode() row with dense and sparse (out.row(i)), or a text', 'query', query);
    }
    if (query.dense.length !== this.dim) {
      throw new M3Error('ERR_INPUT', `${where}: the query has dim ${query.dense.length} but the store has dim ${this.dim} (a different model?)`);
    }
    if (this.colbert && params.wColbert > 0 && !(query.colbert instanceof Float32Array)) {
      throw new M3Error('ERR_INPUT', `${where}: this store reranks with ColBERT; encode the query with { colbert: true }, or pass weights with a ColBERT weight of 0`);
    }
    for (let i = 0; i < query.dense.length; i++) {
      if (!Number.isFinite(query.dense[i])) throw new M3Error('ERR_INPUT', `${where}: the query's dense vector holds ${query.dense[i]}`);
    }
    for (let i = 0; i < query.sparse.ids.length; i++) {
      if (!(query.sparse.ids[i] < this.vocabSize) || !Number.isFinite(query.sparse.weights[i]) || (i > 0 && query.sparse.ids[i] <= query.sparse.ids[i - 1])) {
        throw new M3Error('ERR_INPUT', `${where}: the query's sparse row must have ascending token ids below ${this.vocabSize} with finite weights`);
      }
    }
  }

  private async searchIn(s: SqlSession, query: EncodeRow, plan: SearchPlan): Promise<StoreHit[]> {
    const p = plan.params;
    const ef = plan.efSearch ?? Math.min(1000, Math.max(40, p.denseRoute ? p.denseCandidates : 0, p.sparseRoute ? p.sparseCandidates : 0));
    // Transaction-local settings, as parameters like every other value.
    await s.query(this.iterativeScans
      ? "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)"
      : "SELECT set_config('hnsw.ef_search', $1, true)", [String(ef)]);
    const useColbert = !!this.colbert && p.wColbert > 0 && query.colbert instanceof Float32Array;
    const { sql, values } = candidateQuery(this.names, plan, query, this.settings, useColbert);
    const rows = (await s.query(sql, values)).rows;
    if (rows.length === 0) return [];
    let colbert: Float32Array | undefined;
    if (useColbert) {
      const ids = rows.map((r) => r.id as string);
      const blobs = rows.map((r) => toBytes(r.colbert));
      colbert = maxSimSync(query.colbert!, blobsAsDocuments(blobs, ids, this.colbert as ColbertFormat, this.dim), { dim: this.dim, threads: p.threads });
    }
    const w: [number, number, number] = [p.wDense, p.wSparse, useColbert ? p.wColbert : 0];
    const hits = rows.map((r, i): StoreHit & { key: string } => {
      const dense = Number(r.dense_score);
      const sparse = Number(r.sparse_score);
      const c = colbert ? colbert[i] : 0;
      return { ...documentOf(r), key: r.id as string, score: fuse(w, dense, sparse, c), dense, sparse, colbert: c } as StoreHit & { key: string };
    });
    // Best first; equal scores by id (as text), so results do not depend on the database's row order.
    hits.sort((a, b) => b.score - a.score || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return hits.slice(0, p.k).map(({ key: _key, ...hit }) => hit);
  }

  /**
   * Every document in id order (the database's collation; pages walk the primary key), in batches of `batchSize`, as HybridIndex.add and PgStore.add take
   * them (dense as stored, in fp16 precision; ColBERT widened to f32).
   */
  async *documents(batchSize = 1000): AsyncGenerator<DocumentBatch> {
    this.check();
    checkInteger(batchSize, 'batchSize', 1, 1_000_000);
    const { dim, colbert } = this.settings;
    let after: string | null = null;
    for (;;) {
      const r = await this.db.query(`SELECT id, id_is_number, text, metadata, dense::text AS dense, sparse::text AS sparse,
        sparse_rest::text AS sparse_rest${colbert ? ', colbert' : ''} FROM ${this.names.documents}
        WHERE $1::text IS NULL OR id > $1::text ORDER BY id LIMIT $2::int`, [after, batchSize]);
      if (r.rows.length === 0) return;
      yield batchOf(r.rows, dim, colbert);
      if (r.rows.length < batchSize) return;
      after = r.rows[r.rows.length - 1].id as string;
    }
  }

  /** Drops the HNSW indexes (before a bulk load into an empty store: building them after is faster). */
  async dropIndexes(): Promise<void> {
    this.check();
    await this.db.transaction((s) => s.exec(`DROP INDEX IF EXISTS ${this.names.denseIndex}; DROP INDEX IF EXISTS ${this.names.sparseIndex};`));
  }

  /**
   * Bytes on disk: the table's rows (`table`, with the TOAST storage that holds large values such
   * as ColBERT bytes, in `toast`), and each HNSW index.
   */
  async storageBytes(): Promise<{ table: number; toast: number; denseIndex: number; sparseIndex: number }> {
    this.check();
    const n = this.names;
    const r = await this.db.query(`SELECT pg_relation_size($1::regclass) AS heap,
      COALESCE((SELECT pg_total_relation_size(reltoastrelid) FROM pg_class WHERE oid = $1::regclass AND reltoastrelid <> 0), 0) AS toast,
      COALESCE(pg_relation_size(to_regclass($2)), 0) AS dense, COALESCE(pg_relation_size(to_regclass($3)), 0) AS sparse`,
    [n.documents, n.denseIndex, n.sparseIndex]);
    const row = r.rows[0];
    return { table: Number(row.heap), toast: Number(row.toast), denseIndex: Number(row.dense), sparseIndex: Number(row.sparse) };
  }

  /** Whether both HNSW indexes exist. */
  async hasIndexes(): Promise<boolean> {
    this.check();
    const r = await this.db.query('SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS ok', [this.names.denseIndex, this.names.sparseIndex]);
    return r.rows[0].ok === true;
  }

  /** Builds the HNSW indexes if they are missing (after a bulk load). */
  async createIndexes(options: { maintenanceWorkMemMb?: number } = {}): Promise<void> {
    this.check();
    const mem = optionalInteger(options.maintenanceWorkMemMb, 'maintenanceWorkMemMb', 256, 1, 1 << 20);
    await this.db.transaction(async (s) => {
      // A build takes as long as it takes: no statement timeout for it.
      await s.query("SELECT set_config('maintenance_work_mem', $1, true), set_config('statement_timeout', '0', true)", [`${mem}MB`]);
      await s.exec(indexStatements(this.names, this.settings));
    });
  }

  /** Closes the connection (pool, or the PGlite database and its directory lock). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}

/** Refuses a model whose shape differs from the store's (ERR_MODEL_LAYOUT), naming both. */
function checkSameModel(settings: StoreSettings, stored: ModelIdentity | undefined, given: ModelIdentity, n: StoreNames, display: string): void {
  const have: ModelIdentity = stored ?? { dim: settings.dim, vocabSize: settings.vocabSize };
  if (given.dim === have.dim && given.vocabSize === have.vocabSize && !(given.layout && have.layout && given.layout !== have.layout)) return;
  const describe = (m: ModelIdentity) => `${m.name ? `'${m.name}' (` : ''}dim ${m.dim}, ${m.vocabSize} token ids${m.layout ? `, ${m.layout}` : ''}${m.name ? ')' : ''}`;
  const fix = have.name ? `open it with that model (--model ${have.name}), or use another table` : 'open it with the model it was built with, or use another table';
  throw new M3Error('ERR_MODEL_LAYOUT', `The store '${n.prefix}' at ${display} was built with the model ${describe(have)}, not the given one ${describe(given)}: ${fix}.`);
}

function toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (value === null || value === undefined) return new Uint8Array(0);
  throw new M3Error('ERR_STORE', `a ColBERT value in the store is not bytea (${typeof value})`);
}

function documentOf(r: Record<string, unknown>): StoreDocument {
  const doc: StoreDocument = { id: r.id_is_number ? Number(r.id) : (r.id as string) };
  if (typeof r.text === 'string') doc.text = r.text;
  if (r.metadata !== null && r.metadata !== undefined) doc.metadata = (typeof r.metadata === 'string' ? JSON.parse(r.metadata) : r.metadata) as Record<string, unknown>;
  return doc;
}

function batchOf(rows: Array<Record<string, unknown>>, dim: number, colbert: ColbertFormat | false): DocumentBatch {
  const dense = new Float32Array(rows.length * dim);
  const offsets = new Uint32Array(rows.length + 1);
  const sIds: number[] = [];
  const sWeights: number[] = [];
  rows.forEach((r, i) => {
    dense.set(parseVectorText(r.dense as string, dim), i * dim);
    const a: number[] = [], aw: number[] = [], b: number[] = [], bw: number[] = [];
    parseSparseText(r.sparse as string, a, aw);
    parseSparseText(r.sparse_rest as string | null, b, bw);
    const merged = mergeSparse(a, aw, b, bw);
    sIds.push(...merged.ids);
    sWeights.push(...merged.weights);
    offsets[i + 1] = sIds.length;
  });
  const ids = rows.map((r) => r.id as string);
  const multi = colbert ? blobsAsFloats(rows.map((r) => toBytes(r.colbert)), ids, colbert, dim) : undefined;
  const docs = rows.map(documentOf);
  return {
    ids: docs.map((d) => d.id),
    texts: docs.map((d) => d.text),
    metadata: docs.map((d) => d.metadata),
    encoded: new EncodeOutput(rows.length, dim, dense, { offsets, ids: Uint32Array.from(sIds), weights: Float32Array.from(sWeights) }, multi),
  };
}
