/**
 * The hidden-state cache of fine-tuning: every distinct text of the data (keyed by role and
 * content) is encoded once and its last_hidden_state rows are kept in `cache/hidden.f32`, which
 * the native trainer maps. A cache made for the same model, texts and truncation is reused.
 *
 * Files: hidden.f32 (rows of `hidden` floats, text after text), ids.i32 and offsets.u32 (the
 * texts' token ids), keys.json (the texts' keys in cache order) and index.json, written last: its
 * presence marks a complete cache.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assertRegularFile, readRegularFile } from '../base/files';
import type { BGEM3 } from '../engine/model';
import { sha256 } from './identity';
import type { EvalRow } from './rows';

const CACHE_VERSION = 1;
/** Tokens per encode call while building the cache (bounds its memory). */
const CACHE_CHUNK_TOKENS = 1 << 15;

/** A distinct text of the data: its content and whether it is a query (queries and passages truncate apart). */
export interface CacheText {
  text: string;
  query: boolean;
}

/** The texts of the data by key (role and content), in the order the rows name them. */
export function distinctTexts(rows: readonly EvalRow[]): Map<string, CacheText> {
  const texts = new Map<string, CacheText>();
  for (const r of rows) {
    texts.set(textKey(r.query, true), { text: r.query, query: true });
    for (const p of [...r.pos, ...(r.neg ?? [])]) texts.set(textKey(p, false), { text: p, query: false });
  }
  return texts;
}

/** A text's key: its role and content. */
export function textKey(text: string, query: boolean): string {
  return `${query ? 'q' : 'p'}:${text}`;
}

/** The truncation of the cached texts. */
export interface CacheLengths {
  maxQueryLength: number;
  maxPassageLength: number;
}

interface CacheIndex extends CacheLengths {
  version: number;
  model: string;
  hidden: number;
  keysHash: string;
  texts: number;
  tokens: number;
}

/** A complete cache: the token ids it holds, each text's row, and what building it took. */
export interface Cache {
  dir: string;
  ids: Int32Array;
  offsets: Uint32Array;
  hidden: number;
  /** Key -> the text's index in the cache. */
  index: Map<string, number>;
  /** Texts encoded by this call (0 when an existing cache was reused) and the seconds it took. */
  encoded: number;
  seconds: number;
}

/**
 * The cache in `dir` for these texts: reused when it was made for the same model (`fingerprint`),
 * texts and truncation, else built: every text encoded once, longest first in chunks.
 */
export async function buildCache(model: BGEM3, texts: Map<string, CacheText>, lengths: CacheLengths, dir: string,
  fingerprint: string, signal: AbortSignal | undefined, progress: (done: number, total: number) => void): Promise<Cache> {
  const keys = [...texts.keys()];
  const want: CacheIndex = {
    version: CACHE_VERSION, model: fingerprint, hidden: model.info().hidden,
    maxQueryLength: lengths.maxQueryLength, maxPassageLength: lengths.maxPassageLength, keysHash: sha256(JSON.stringify(keys)), texts: 0, tokens: 0,
  };
  const reused = reuseCache(dir, want);
  if (reused) return reused;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const started = performance.now();
  const { all, ids, offsets } = await tokenizeTexts(model, keys, texts, lengths);
  await writeHiddenRows(model, ids, offsets, path.join(dir, 'hidden.f32.partial'), want.hidden, signal, progress);
  fs.writeFileSync(path.join(dir, 'ids.i32'), Buffer.from(ids.buffer));
  fs.writeFileSync(path.join(dir, 'offsets.u32'), Buffer.from(offsets.buffer));
  fs.writeFileSync(path.join(dir, 'keys.json'), JSON.stringify(all));
  fs.renameSync(path.join(dir, 'hidden.f32.partial'), path.join(dir, 'hidden.f32'));
  const meta: CacheIndex = { ...want, texts: all.length, tokens: ids.length };
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify(meta));  // last: its presence marks a complete cache
  return { dir, ids, offsets, hidden: want.hidden, index: new Map(all.map((k, i) => [k, i])), encoded: all.length,
    seconds: (performance.now() - started) / 1000 };
}

/** The complete cache in `dir` when it was made as `want` says; undefined when absent, different or unreadable. */
function reuseCache(dir: string, want: CacheIndex): Cache | undefined {
  const metaFile = path.join(dir, 'index.json');
  if (!fs.existsSync(metaFile)) return undefined;
  const read = (name: string) => readRegularFile(path.join(dir, name), 'Cache file');
  try {
    const meta = JSON.parse(read('index.json').toString('utf8')) as CacheIndex;
    if (meta.version !== want.version || meta.model !== want.model || meta.keysHash !== want.keysHash || meta.hidden !== want.hidden ||
        meta.maxQueryLength !== want.maxQueryLength || meta.maxPassageLength !== want.maxPassageLength) return undefined;
    const order = JSON.parse(read('keys.json').toString('utf8')) as string[];
    const ids = new Int32Array(new Uint8Array(read('ids.i32')).buffer);
    const offsets = new Uint32Array(new Uint8Array(read('offsets.u32')).buffer);
    const size = assertRegularFile(path.join(dir, 'hidden.f32'), 'Cache file').size;
    if (order.length === meta.texts && offsets.length === meta.texts + 1 && ids.length === meta.tokens && size === meta.tokens * want.hidden * 4) {
      return { dir, ids, offsets, hidden: want.hidden, index: new Map(order.map((k, i) => [k, i])), encoded: 0, seconds: 0 };
    }
  } catch { /* unreadable: rebuild */ }
  return undefined;
}

/** The texts tokenized (queries and passages with their own truncation), longest first: their keys in that order, ids and offsets. */
async function tokenizeTexts(model: BGEM3, keys: string[], texts: Map<string, CacheText>, lengths: CacheLengths):
  Promise<{ all: string[]; ids: Int32Array; offsets: Uint32Array }> {
  const queries = keys.filter((k) => texts.get(k)!.query);
  const passages = keys.filter((k) => !texts.get(k)!.query);
  const tq = await model.tokenize(queries.map((k) => texts.get(k)!.text), { maxLength: lengths.maxQueryLength });
  const tp = await model.tokenize(passages.map((k) => texts.get(k)!.text), { maxLength: lengths.maxPassageLength });
  const all = [...queries.map((k, i) => ({ key: k, ids: tq.ids.subarray(tq.offsets[i], tq.offsets[i + 1]) })),
    ...passages.map((k, i) => ({ key: k, ids: tp.ids.subarray(tp.offsets[i], tp.offsets[i + 1]) }))];
  all.sort((a, b) => b.ids.length - a.ids.length || (a.key < b.key ? -1 : 1));
  const ids = new Int32Array(all.reduce((n, t) => n + t.ids.length, 0));
  const offsets = new Uint32Array(all.length + 1);
  all.forEach((t, i) => {
    ids.set(t.ids, offsets[i]);
    offsets[i + 1] = offsets[i] + t.ids.length;
  });
  return { all: all.map((t) => t.key), ids, offsets };
}

/** Encodes the texts in chunks of about CACHE_CHUNK_TOKENS tokens and writes their hidden rows to `file`, flushed. */
async function writeHiddenRows(model: BGEM3, ids: Int32Array, offsets: Uint32Array, file: string, hidden: number,
  signal: AbortSignal | undefined, progress: (done: number, total: number) => void): Promise<void> {
  const count = offsets.length - 1;
  const fd = fs.openSync(file, 'w');
  try {
    for (let start = 0; start < count;) {
      let end = start + 1;
      while (end < count && offsets[end + 1] - offsets[start] <= CACHE_CHUNK_TOKENS) end++;
      const chunk = { ids: ids.subarray(offsets[start], offsets[end]), offsets: offsets.slice(start, end + 1).map((o) => o - offsets[start]) };
      const { rows } = await model.hiddenStates(chunk, { signal });
      fs.writeSync(fd, Buffer.from(rows.buffer, rows.byteOffset, rows.byteLength), 0, rows.byteLength, offsets[start] * hidden * 4);
      progress(end, count);
      start = end;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
