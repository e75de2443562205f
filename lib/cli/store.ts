/**
 * What the commands that use a PostgreSQL store share: the --store and --store-table flags,
 * opening the store they name with the command's model, and the --filter argument.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { M3Error } from '../base/errors';
import type { BGEM3 } from '../engine/model';
import { MetadataFilter, type Filter } from '../retrieval/filter';
import type { ColbertFormat } from '../store/codec';
import { PgStore } from '../store/pg_store';
import { storeNames } from '../store/schema';
import { parseStoreUrl } from '../store/url';

export interface StoreFlags {
  store?: string;
  storeTable?: string;
}

export const STORE_URLS = 'pglite:DIR (PostgreSQL in this process, kept in a directory) or postgres://USER:PASSWORD@HOST:PORT/DB (pgvector 0.7+)';

/** --store URL and --store-table NAME, `what` saying what the store is for. */
export function addStoreFlags(cmd: Command, what: string): Command {
  return cmd
    .option('--store <url>', `${what}: ${STORE_URLS}`)
    .option('--store-table <name>', "prefix of the store's tables, so several stores can share a database (default bge_m3)");
}

/** Refuses both or neither of two flags that name where the documents are. */
export function exactlyOne(command: string, a: [string, unknown], b: [string, unknown]): void {
  if ((a[1] === undefined) === (b[1] === undefined)) {
    throw new M3Error('ERR_INPUT', `${command} takes exactly one of ${a[0]} and ${b[0]}, ${a[1] === undefined ? 'got neither' : 'not both'}`);
  }
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Create the store when it does not exist (index build, serve); false: it must exist (search). */
  create: boolean;
  /** ColBERT storage of a new store (PgStore's default, bf16, when undefined). */
  colbert?: ColbertFormat | false;
  /** Refuse pglite:memory, which is gone when the command ends. */
  persistent?: boolean;
}

/** The checks of the store flags that need no model or database (run them before loading the model). */
export function checkStoreFlags(flags: StoreFlags, options: OpenStoreOptions): void {
  if (flags.storeTable !== undefined && flags.store === undefined) throw new M3Error('ERR_INPUT', '--store-table applies to --store');
  if (flags.store === undefined) return;
  const where = parseStoreUrl(flags.store);
  if (flags.storeTable !== undefined) storeNames(flags.storeTable);
  if (options.persistent && where.kind === 'pglite' && where.dir === undefined) {
    throw new M3Error('ERR_INPUT', '--store pglite:memory is gone when this command ends; use pglite:DIR or a postgres:// URL');
  }
  if (!options.create && where.kind === 'pglite' && where.dir !== undefined && !fs.existsSync(where.dir)) {
    throw new M3Error('ERR_INPUT', `There is no store at ${where.display} (no such directory); build one with ` +
      `bge-m3 index build --in corpus.jsonl --store ${flags.store}`);
  }
}

/** Opens the store the flags name with `model` (a store records its model and refuses another). */
export async function openStore(flags: StoreFlags, model: BGEM3, options: OpenStoreOptions): Promise<PgStore> {
  checkStoreFlags(flags, options);
  try {
    return await PgStore.open(flags.store!, {
      model, create: options.create,
      ...(flags.storeTable !== undefined ? { table: flags.storeTable } : {}),
      ...(options.colbert !== undefined ? { colbert: options.colbert } : {}),
    });
  } catch (err) {
    // A store that must exist and does not: say which command builds it.
    if (!options.create && err instanceof M3Error && err.code === 'ERR_STORE' && / does not exist;/.test(err.message)) {
      const table = flags.storeTable === undefined ? '' : ` --store-table ${flags.storeTable}`;
      throw new M3Error('ERR_STORE', `${err.message.replace(/ does not exist;.*$/, ' does not exist')}; build it with ` +
        `bge-m3 index build --in corpus.jsonl --store ${flags.store}${table}`);
    }
    throw err;
  }
}

/** The --filter argument: JSON, checked as a metadata filter (ERR_INPUT naming what is wrong). */
export function parseFilter(json: string): Filter {
  let filter: unknown;
  try {
    filter = JSON.parse(json);
  } catch (err) {
    throw new M3Error('ERR_INPUT', `--filter is not valid JSON (${(err as Error).message}); pass an object such as '{"lang": "en"}'`);
  }
  MetadataFilter.parse(filter);
  return filter as Filter;
}
