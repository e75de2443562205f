/** What the commands read (texts, corpora) and print (search hits, progress bars). */
import { SingleBar } from 'cli-progress';
import { M3Error } from '../base/errors';
import { readTextInput } from '../base/files';
import type { DocumentId, SearchHit } from '../retrieval/hybrid_index';

/** Texts from the arguments, else from --file (one per line, or JSON lines with a "text" field), else stdin. */
export function readTexts(args: string[], file?: string): string[] {
  if (args.length > 0) return args;
  const source = readTextInput(file === undefined ? '-' : file, 'Text file');
  const lines = source.split(/\r?\n/).filter((l) => l.length > 0);
  const isJsonl = file !== undefined && /\.jsonl$/i.test(file);
  return lines.map((line, i) => {
    if (!isJsonl) return line;
    let row: { text?: unknown };
    try {
      row = JSON.parse(line) as { text?: unknown };
    } catch (err) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof row.text !== 'string') throw new M3Error('ERR_INPUT', `${file}:${i + 1}: expected an object with a "text" string`);
    return row.text;
  });
}

/** A progress bar with rate and ETA on a terminal (nothing otherwise). */
export function progressReporter(enabled: boolean, unit: string): ((done: number, total: number) => void) | undefined {
  if (!enabled || !process.stderr.isTTY) return undefined;
  let bar: SingleBar | undefined;
  return (done, total) => {
    if (!bar) {
      bar = new SingleBar({ format: `{bar} {value}/{total} ${unit} | {rate}/s | ETA {eta}s`, stream: process.stderr, hideCursor: true });
      bar.start(total, 0, { rate: '0' });
    }
    const elapsed = process.uptime();
    bar.update(done, { rate: (done / Math.max(elapsed, 1e-3)).toFixed(1) });
    if (done >= total) bar.stop();
  };
}

/** One document of a corpus JSONL, with the line it came from. */
export interface CorpusDocument {
  id: DocumentId;
  text: string;
  metadata?: Record<string, unknown>;
  line: number;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A corpus JSONL: {"id"?: string | number, "text": string, "metadata"?: object} per line (id
 * defaults to the line number; a null metadata is none).
 */
export function readCorpus(file: string): CorpusDocument[] {
  const lines = readTextInput(file, 'Corpus file').split(/\r?\n/);
  const lineOf = new Map<DocumentId, number>();
  return lines.flatMap((line, i) => {
    if (!line.trim()) return [];
    let row: { id?: unknown; text?: unknown; metadata?: unknown };
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (!isPlainObject(row) || typeof row.text !== 'string') throw new M3Error('ERR_INPUT', `${file}:${i + 1}: expected {"id"?, "text": string, "metadata"?: object}`);
    const id = row.id ?? i + 1;
    if (typeof id !== 'string' && !(typeof id === 'number' && Number.isSafeInteger(id))) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: "id" must be a string or an integer`);
    }
    if (row.metadata !== undefined && row.metadata !== null && !isPlainObject(row.metadata)) {
      const got = Array.isArray(row.metadata) ? 'an array' : JSON.stringify(row.metadata);
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: "metadata" must be an object such as {"lang": "en"}, got ${got}`);
    }
    const first = lineOf.get(id as DocumentId);
    if (first !== undefined) throw new M3Error('ERR_INPUT', `${file}:${i + 1}: id ${JSON.stringify(id)} is already used on line ${first}`);
    lineOf.set(id as DocumentId, i + 1);
    const doc: CorpusDocument = { id: id as DocumentId, text: row.text, line: i + 1 };
    if (isPlainObject(row.metadata)) doc.metadata = row.metadata;
    return [doc];
  });
}

/** A text on one line, cut to `max` characters (for listing hits). */
export function snippet(text: string, max = 100): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= max ? line : `${line.slice(0, max - 1)}\u2026`;
}

export function formatHits<H extends SearchHit>(hits: H[], label: (id: DocumentId, hit: H) => string): string {
  return hits.map((h, i) => `${String(i + 1).padStart(3)}. ${h.score.toFixed(4)}  (dense ${h.dense.toFixed(4)}, sparse ${h.sparse.toFixed(4)}, ` +
    `colbert ${h.colbert.toFixed(4)})  ${label(h.id, h)}`).join('\n') + '\n';
}
