/**
 * Store URLs: where a PgStore's database is.
 *
 *   pglite:memory              PostgreSQL (PGlite, WebAssembly) in this process, in memory
 *   pglite:./data/store        PGlite in this process, persistent in a directory
 *   postgres://user:pw@host:5432/db   any PostgreSQL server with pgvector >= 0.7 (also postgresql://)
 *
 * Messages name a database by its URL with the password masked.
 */
import * as path from 'node:path';
import { M3Error } from '../base/errors';

export type StoreLocation =
  | { kind: 'pglite'; dir?: string; display: string }
  | { kind: 'postgres'; url: string; display: string };

const FORMS = "pglite:memory, pglite:DIR (a directory) or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE";

function malformed(url: string, problem: string): M3Error {
  return new M3Error('ERR_INPUT', `store URL ${JSON.stringify(mask(url))}: ${problem}. Expected ${FORMS}.`);
}

/** The URL with any password replaced by '***' (for messages and logs). */
export function mask(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
}

/** Parses a store URL; an M3Error (ERR_INPUT) names what is wrong and the accepted forms. */
export function parseStoreUrl(url: unknown): StoreLocation {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new M3Error('ERR_INPUT', `Expected a store URL (${FORMS}) but received ${url === '' ? 'an empty string' : JSON.stringify(url)}`);
  }
  if (/^pglite:/i.test(url)) {
    const rest = url.slice('pglite:'.length).replace(/^\/\//, '');
    if (rest === '') throw malformed(url, "no directory after 'pglite:' (use pglite:memory for a store in memory)");
    if (rest === 'memory') return { kind: 'pglite', display: 'pglite:memory' };
    if (rest.includes('\0')) throw malformed(url, 'the directory name holds a NUL byte');
    const dir = path.resolve(rest);
    return { kind: 'pglite', dir, display: `pglite:${dir}` };
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw malformed(url, 'it is not a valid URL');
    }
    if (!parsed.hostname && !parsed.searchParams.get('host')) throw malformed(url, 'no host');
    if (parsed.port && !(Number(parsed.port) >= 1 && Number(parsed.port) <= 65535)) throw malformed(url, `port ${parsed.port} is out of range`);
    return { kind: 'postgres', url, display: mask(url) };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw malformed(url, scheme ? `unknown scheme '${scheme}:'` : 'no scheme');
}
