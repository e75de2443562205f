/**
 * The tables a store owns, created and migrated when it is opened.
 *
 *   <table>_meta       key text, value jsonb: schema_version, settings, model
 *   <table>_documents  id text PRIMARY KEY, id_is_number, text, metadata jsonb,
 *                      dense halfvec(dim), sparse sparsevec(vocab), sparse_rest sparsevec(vocab),
 *                      colbert bytea
 *   HNSW indexes: <table>_dense_hnsw (halfvec_ip_ops), <table>_sparse_hnsw (sparsevec_ip_ops)
 *
 * Opening takes a transaction-scoped advisory lock on the table name, so processes that open
 * one store at once create it once. A store written by a newer version (a higher schema_version)
 * is refused, not guessed at; an older one is brought up to date by the migrations below, in
 * the same transaction.
 */
import { M3Error } from '../base/errors';
import type { ModelIdentity } from '../retrieval/index_store';
import type { ColbertFormat } from './codec';
import type { SqlSession } from './sql';

/** The schema this version writes. */
export const SCHEMA_VERSION = 1;

/** What a store is, fixed when it is created. */
export interface StoreSettings {
  dim: number;
  vocabSize: number;
  colbert: ColbertFormat | false;
  /** HNSW build parameters of both indexes. */
  hnsw: { m: number; efConstruction: number };
}

/** The names of a store's tables and indexes (all derived from one checked prefix). */
export interface StoreNames {
  prefix: string;
  meta: string;
  documents: string;
  denseIndex: string;
  sparseIndex: string;
}

const PREFIX = /^[a-z_][a-z0-9_]{0,39}$/;

export function storeNames(prefix: string): StoreNames {
  if (typeof prefix !== 'string' || !PREFIX.test(prefix)) {
    throw new M3Error('ERR_INPUT', `table ${JSON.stringify(prefix)}: a store's table prefix is 1 to 40 lowercase letters, digits or '_', not starting with a digit`);
  }
  return { prefix, meta: `${prefix}_meta`, documents: `${prefix}_documents`, denseIndex: `${prefix}_dense_hnsw`, sparseIndex: `${prefix}_sparse_hnsw` };
}

/** The HNSW index statements (IF NOT EXISTS: safe to repeat, e.g. after a bulk load). */
export function indexStatements(n: StoreNames, s: StoreSettings): string {
  const w = `WITH (m = ${s.hnsw.m}, ef_construction = ${s.hnsw.efConstruction})`;
  return `CREATE INDEX IF NOT EXISTS ${n.denseIndex} ON ${n.documents} USING hnsw (dense halfvec_ip_ops) ${w};\n` +
    `CREATE INDEX IF NOT EXISTS ${n.sparseIndex} ON ${n.documents} USING hnsw (sparse sparsevec_ip_ops) ${w};`;
}

/** Each migration brings a store from version `to - 1` to `to`. Version 1 creates it. */
const MIGRATIONS: Array<{ to: number; sql: (n: StoreNames, s: StoreSettings) => string }> = [
  {
    to: 1,
    sql: (n, s) => `
      CREATE TABLE ${n.meta} (key text PRIMARY KEY, value jsonb NOT NULL);
      CREATE TABLE ${n.documents} (
        id text PRIMARY KEY,
        id_is_number boolean NOT NULL,
        text text,
        metadata jsonb,
        dense halfvec(${s.dim}) NOT NULL,
        sparse sparsevec(${s.vocabSize}) NOT NULL,
        sparse_rest sparsevec(${s.vocabSize}),
        colbert bytea
      );
      -- ColBERT bytes barely compress: keep them out of line without trying.
      ALTER TABLE ${n.documents} ALTER COLUMN colbert SET STORAGE EXTERNAL;
      ${indexStatements(n, s)}`,
  },
];

/** What {@link openSchema} found or created. */
export interface OpenedSchema {
  settings: StoreSettings;
  model?: ModelIdentity;
  created: boolean;
  /** pgvector's version, e.g. '0.8.7'. */
  vectorVersion: string;
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a, b] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/** Whether pgvector has iterative index scans (0.8.0 and later). */
export function hasIterativeScans(vectorVersion: string): boolean {
  return versionAtLeast(vectorVersion, 0, 8);
}

async function ensureVector(s: SqlSession, display: string): Promise<string> {
  let version = (await s.query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).rows[0]?.extversion as string | undefined;
  if (version === undefined) {
    try {
      await s.exec('CREATE EXTENSION IF NOT EXISTS vector');
    } catch (err) {
      throw new M3Error('ERR_STORE', `The database at ${display} has no pgvector extension, and creating it failed (${(err as Error).message}). ` +
        'Install pgvector 0.7 or later on the server and run CREATE EXTENSION vector as a user allowed to.', { cause: err });
    }
    version = (await s.query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).rows[0]?.extversion as string;
  }
  if (!versionAtLeast(version, 0, 7)) {
    throw new M3Error('ERR_STORE', `The database at ${display} has pgvector ${version}; a store needs 0.7 or later (halfvec and sparsevec): ALTER EXTENSION vector UPDATE.`);
  }
  return version;
}

async function readMeta(s: SqlSession, n: StoreNames): Promise<Map<string, unknown>> {
  const rows = (await s.query(`SELECT key, value FROM ${n.meta}`)).rows;
  return new Map(rows.map((r) => [r.key as string, r.value]));
}

async function writeMeta(s: SqlSession, n: StoreNames, key: string, value: unknown): Promise<void> {
  await s.query(`INSERT INTO ${n.meta} (key, value) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
    [key, JSON.stringify(value)]);
}

function checkSettings(value: unknown, where: string): StoreSettings {
  const s = value as StoreSettings;
  const ok = s && Number.isInteger(s.dim) && s.dim > 0 && Number.isInteger(s.vocabSize) && s.vocabSize > 0 &&
    (s.colbert === false || s.colbert === 'f32' || s.colbert === 'bf16' || s.colbert === 'i8') &&
    s.hnsw && Number.isInteger(s.hnsw.m) && Number.isInteger(s.hnsw.efConstruction);
  if (!ok) throw new M3Error('ERR_STORE', `${where}: its settings row is damaged (${JSON.stringify(value)?.slice(0, 200)})`);
  return s;
}

/**
 * Opens the store's tables in `s` (a transaction), creating them with `create` when there are
 * none. `create` undefined: the store must exist.
 */
export async function openSchema(s: SqlSession, n: StoreNames, display: string,
  create: (() => { settings: StoreSettings; model?: ModelIdentity }) | undefined): Promise<OpenedSchema> {
  const where = `The store '${n.prefix}' at ${display}`;
  await s.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`bge-m3 store ${n.prefix}`]);
  const vectorVersion = await ensureVector(s, display);
  const found = (await s.query('SELECT to_regclass($1) IS NOT NULL AS meta, to_regclass($2) IS NOT NULL AS documents', [n.meta, n.documents])).rows[0];
  if (!found.meta) {
    if (found.documents) {
      throw new M3Error('ERR_STORE', `${where}: a table ${n.documents} exists but ${n.meta} does not, so it was not made by bge-m3; ` +
        'open the store under another name (the table option, --store-table) or drop that table.');
    }
    if (!create) throw new M3Error('ERR_STORE', `${where} does not exist; create it with the model (or dim) it will hold.`);
    const { settings, model } = create();
    for (const m of MIGRATIONS) await s.exec(m.sql(n, settings));
    await writeMeta(s, n, 'schema_version', SCHEMA_VERSION);
    await writeMeta(s, n, 'settings', settings);
    if (model) await writeMeta(s, n, 'model', model);
    return { settings, model, created: true, vectorVersion };
  }
  const meta = await readMeta(s, n);
  const version = meta.get('schema_version');
  if (!Number.isInteger(version) || (version as number) < 1) {
    throw new M3Error('ERR_STORE', `${where}: its schema_version is ${JSON.stringify(version)}, not a version bge-m3 writes; the table was not made by bge-m3 or is damaged.`);
  }
  if ((version as number) > SCHEMA_VERSION) {
    throw new M3Error('ERR_STORE', `${where} has schema version ${version}, written by a newer bge-m3 (this one reads up to ${SCHEMA_VERSION}); upgrade bge-m3 to open it.`);
  }
  const settings = checkSettings(meta.get('settings'), where);
  for (const m of MIGRATIONS) {
    if (m.to > (version as number)) await s.exec(m.sql(n, settings));
  }
  if ((version as number) < SCHEMA_VERSION) await writeMeta(s, n, 'schema_version', SCHEMA_VERSION);
  const model = meta.get('model') as ModelIdentity | undefined;
  return { settings, model: model ?? undefined, created: false, vectorVersion };
}

/** Records the model of a store that had none (one created from dimensions only). */
export async function recordModel(s: SqlSession, n: StoreNames, model: ModelIdentity): Promise<void> {
  await writeMeta(s, n, 'model', model);
}
