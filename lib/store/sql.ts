/**
 * One face for the two ways a store reaches PostgreSQL: PGlite in this process (WebAssembly
 * PostgreSQL with pgvector) and a server through `pg` with a pool. Every failure of the database
 * becomes an M3Error (ERR_STORE) that names the database (password masked) and, for a lost or
 * refused connection, says that the next call reconnects.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M3Error } from '../base/errors';
import { native } from '../addon/native';
import type { StoreLocation } from './url';

/** Rows of a query, as plain objects keyed by column. */
export interface SqlResult {
  rows: Array<Record<string, unknown>>;
}

/** One connection, held for the duration of a {@link SqlClient.session} call. */
export interface SqlSession {
  /** One statement with $1.. parameters (values are never spliced into the SQL). */
  query(sql: string, params?: readonly unknown[]): Promise<SqlResult>;
  /** Several statements without parameters (schema and settings). */
  exec(sql: string): Promise<void>;
}

export interface SqlClient {
  readonly kind: 'pglite' | 'postgres';
  /** The database's URL, password masked. */
  readonly display: string;
  /** Runs `fn` on one connection inside a transaction (rolled back if `fn` throws). */
  transaction<T>(fn: (s: SqlSession) => Promise<T>): Promise<T>;
  /** A single statement on any connection, outside a transaction. */
  query(sql: string, params?: readonly unknown[]): Promise<SqlResult>;
  close(): Promise<void>;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** postgres://: connections in the pool (default 4). */
  poolSize?: number;
  /** postgres://: how long to wait for a connection, in ms (default 10000). */
  connectTimeoutMs?: number;
  /** postgres://: the server cancels a statement that runs longer, in ms (default 0: no limit). */
  statementTimeoutMs?: number;
}

/** SQLSTATE classes and socket errors that mean the connection, not the statement, failed. */
function isConnectionLoss(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  return /^(08|57P0|53)/.test(code) || /^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|NOTFOUND|HOSTUNREACH|AI_AGAIN)$/.test(code) ||
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|PGlite is closed/i.test(message);
}

/** A database failure as an M3Error (ERR_STORE); M3Errors pass through. */
export function storeError(err: unknown, display: string, doing: string): M3Error {
  if (err instanceof M3Error) return err;
  const e = err as { message?: unknown; code?: unknown };
  const detail = typeof e?.message === 'string' && e.message ? e.message : String(err);
  const code = typeof e?.code === 'string' ? ` [${e.code}]` : '';
  const hint = isConnectionLoss(err)
    ? ' Check that the database is running and reachable; the next call connects again.'
    : '';
  return new M3Error('ERR_STORE', `The store at ${display} failed while ${doing}: ${detail}${code}.${hint}`, { cause: err });
}

/** Opens a connection to the database at `where`. */
export async function connect(where: StoreLocation, options: ConnectOptions = {}): Promise<SqlClient> {
  return where.kind === 'pglite' ? openPglite(where.dir, where.display) : openPostgres(where.url, where.display, options);
}

// ---------------------------------------------------------------------------------------------
// PGlite (in process)

const BYTEA_OID = 17;

function parseByteaHex(text: string): Buffer {
  if (!text.startsWith('\\x')) throw new M3Error('ERR_STORE', "bytea arrived in the 'escape' format; the store reads bytea_output = 'hex' (the default)");
  return Buffer.from(text.slice(2), 'hex');
}

/** The lock file a process holds while it has a PGlite directory open. */
const PGLITE_LOCK = 'bge-m3.lock';

async function openPglite(dir: string | undefined, display: string): Promise<SqlClient> {
  // Loaded on first use: PGlite is large, and a server on postgres:// never needs it.
  const { PGlite } = require('@electric-sql/pglite') as typeof import('@electric-sql/pglite');
  const { vector } = require('@electric-sql/pglite-pgvector') as typeof import('@electric-sql/pglite-pgvector');
  let lockFd = -1;
  let lockFile = '';
  if (dir !== undefined) {
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new M3Error('ERR_STORE', `Cannot create the store directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    // PGlite is one PostgreSQL backend without a postmaster: two processes on one directory
    // would corrupt it, so the directory is held with an exclusive lock while open.
    lockFile = path.join(dir, PGLITE_LOCK);
    lockFd = native().tryLockFile(lockFile);
    if (lockFd < 0) {
      throw new M3Error('ERR_STORE', `The store ${display} is open elsewhere (another PgStore, in this process or another, holds ${lockFile}). ` +
        'PGlite serves one process: stop the other one, or serve the store to several processes with a PostgreSQL server (postgres://).');
    }
  }
  let db: InstanceType<typeof PGlite>;
  try {
    // bytea arrives as hex text; Buffer decodes it natively (PGlite's own parser is ~10x slower,
    // and a search reads every candidate's ColBERT bytes).
    db = await PGlite.create(dir ?? 'memory://', { extensions: { vector }, parsers: { [BYTEA_OID]: parseByteaHex } });
  } catch (err) {
    if (lockFd >= 0) native().unlockFile(lockFd, lockFile, true);
    throw storeError(err, display, 'opening it');
  }
  let closed = false;
  const session = (tx: { query: (sql: string, params?: unknown[]) => Promise<{ rows: unknown[] }>; exec: (sql: string) => Promise<unknown> }): SqlSession => ({
    query: async (sql, params) => ({ rows: (await tx.query(sql, params ? [...params] : undefined)).rows as Array<Record<string, unknown>> }),
    exec: async (sql) => {
      await tx.exec(sql);
    },
  });
  const checkOpen = () => {
    if (closed) throw new M3Error('ERR_STORE', `The store at ${display} is closed.`);
  };
  return {
    kind: 'pglite',
    display,
    async transaction(fn) {
      checkOpen();
      try {
        return await db.transaction((tx) => fn(session(tx)));
      } catch (err) {
        throw storeError(err, display, 'running a transaction');
      }
    },
    async query(sql, params) {
      checkOpen();
      try {
        return await session(db).query(sql, params);
      } catch (err) {
        throw storeError(err, display, 'running a query');
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await db.close();
      } finally {
        if (lockFd >= 0) native().unlockFile(lockFd, lockFile, true);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL server (pg)

async function openPostgres(url: string, display: string, options: ConnectOptions): Promise<SqlClient> {
  const pg = require('pg') as typeof import('pg');
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize ?? 4,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle connection that the server drops emits 'error' on the pool; unheard, it would end
  // the process. The pool discards that connection and the next call opens a fresh one.
  pool.on('error', () => {});
  // Set on each new connection (a startup parameter would be ignored by some proxies); queued
  // before the connection's first query. The value is a checked integer.
  const timeout = options.statementTimeoutMs ?? 0;
  if (timeout > 0) {
    pool.on('connect', (client) => {
      client.query(`SET statement_timeout = ${Math.floor(timeout)}`).catch(() => {});
    });
  }
  let closed = false;
  const session = (client: import('pg').PoolClient): SqlSession => ({
    query: async (sql, params) => ({ rows: (await client.query(sql, params ? [...params] : undefined)).rows }),
    exec: async (sql) => {
      await client.query(sql);
    },
  });
  const checkOpen = () => {
    if (closed) throw new M3Error('ERR_STORE', `The store at ${display} is closed.`);
  };
  return {
    kind: 'postgres',
    display,
    async transaction(fn) {
      checkOpen();
      let client: import('pg').PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw storeError(err, display, 'connecting');
      }
      let broken: unknown;
      // A checked-out connection that the server drops emits 'error' on the client (not the
      // pool); unheard, it would end the process. The query in progress fails on its own.
      const onError = (err: Error) => {
        broken = err;
      };
      client.on('error', onError);
      try {
        await client.query('BEGIN');
        const result = await fn(session(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        if (isConnectionLoss(err)) broken = err;
        if (!broken) {
          try {
            await client.query('ROLLBACK');
          } catch (rollbackError) {
            broken = rollbackError;
          }
        }
        throw storeError(err, display, 'running a transaction');
      } finally {
        client.off('error', onError);
        // A connection that failed is not returned to the pool for reuse.
        client.release(broken instanceof Error ? broken : broken ? new Error(String(broken)) : undefined);
      }
    },
    async query(sql, params) {
      checkOpen();
      try {
        return { rows: (await pool.query(sql, params ? [...params] : undefined)).rows };
      } catch (err) {
        throw storeError(err, display, 'running a query');
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
