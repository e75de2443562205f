/**
 * Shared pieces of the store tests: a generated corpus with metadata, an fp16 rounding written
 * independently of pgvector (to build the in-process oracle from the values a halfvec column
 * holds), and a PGlite served over the PostgreSQL wire protocol for the `pg` client path.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { EncodeOutput } from '../lib';
import { mulberry32 } from '../lib/base/rng';
import { ROOT } from './helpers';

const seedText = fs.readFileSync(path.join(ROOT, 'data', 'seed-examples.jsonl'), 'utf8');
const WORDS = [...new Set(seedText.toLowerCase().match(/\p{L}+/gu) ?? [])];

export const LANGS = ['en', 'de', 'fr'] as const;

export interface Corpus {
  ids: Array<string | number>;
  texts: string[];
  metadata: Array<{ lang: string; year: number; group: number; n: number; tags: string[] }>;
  queries: string[];
}

/** `count` passages of 6 to 30 words and `queries` short queries, with metadata, from `seed`. */
export function generateCorpus(seed: number, count: number, queries: number): Corpus {
  const next = mulberry32(seed);
  const words = (lo: number, hi: number) =>
    Array.from({ length: lo + Math.floor(next() * (hi - lo + 1)) }, () => WORDS[Math.floor(next() * WORDS.length)]).join(' ');
  const texts = Array.from({ length: count }, () => words(6, 30));
  return {
    ids: texts.map((_, i) => (i % 3 === 0 ? i : `doc-${i}`)),
    texts,
    metadata: texts.map((_, i) => ({
      lang: LANGS[Math.floor(next() * LANGS.length)],
      year: 2000 + Math.floor(next() * 25),
      group: i % 7,
      n: i,
      tags: ['a', 'b', 'c'].filter(() => next() < 0.4),
    })),
    queries: Array.from({ length: queries }, () => words(2, 6)),
  };
}

/** x rounded to the nearest fp16 value, ties to even (IEEE 754 binary16, subnormals included). */
export function roundToHalf(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  const q = a / ulp;
  const fl = Math.floor(q);
  const diff = q - fl;
  const r = diff > 0.5 ? fl + 1 : diff < 0.5 ? fl : fl % 2 === 0 ? fl : fl + 1;
  return Math.sign(x) * r * ulp;
}

/** The same encode() output with its dense vectors rounded to fp16 (what a halfvec column keeps). */
export function withHalfDense(out: EncodeOutput): EncodeOutput {
  return new EncodeOutput(out.count, out.dim, out.dense!.map(roundToHalf), out.sparse, out.colbert);
}

/** A PGlite with pgvector behind a PostgreSQL wire-protocol server on a free local port. */
export async function servePglite(port = 0): Promise<{ url: string; port: number; stop(): Promise<void>; close(): Promise<void>; restart(): Promise<void> }> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { vector } = await import('@electric-sql/pglite-pgvector');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const db = await PGlite.create({ extensions: { vector } });
  let server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', maxConnections: 4 });
  await server.start();
  const bound = Number(server.getServerConn().split(':').pop());
  return {
    url: `postgres://postgres:secret@127.0.0.1:${bound}/postgres`,
    port: bound,
    stop: () => server.stop(),
    async restart() {
      server = new PGLiteSocketServer({ db, port: bound, host: '127.0.0.1', maxConnections: 4 });
      await server.start();
    },
    async close() {
      await server.stop().catch(() => {});
      await db.close();
    },
  };
}
