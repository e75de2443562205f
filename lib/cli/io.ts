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

/** A corpus JSONL: {"id"?: string | number, "text": string} per line (id defaults to the line number). */
export function readCorpus(file: string): Array<{ id: DocumentId; text: string }> {
  const lines = readTextInput(file, 'Corpus file').split(/\r?\n/);
  const lineOf = new Map<DocumentId, number>();
  return lines.flatMap((line, i) => {
    if (!line.trim()) return [];
    let row: { id?: unknown; text?: unknown };
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof row.text !== 'string') throw new M3Error('ERR_INPUT', `${file}:${i + 1}: expected {"id"?, "text": string}`);
    const id = row.id ?? i + 1;
    if (typeof id !== 'string' && !(typeof id === 'number' && Number.isSafeInteger(id))) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: "id" must be a string or an integer`);
    }
    const first = lineOf.get(id as DocumentId);
    if (first !== undefined) throw new M3Error('ERR_INPUT', `${file}:${i + 1}: id ${JSON.stringify(id)} is already used on line ${first}`);
    lineOf.set(id as DocumentId, i + 1);
    return [{ id: id as DocumentId, text: row.text }];
  });
}

export function formatHits(hits: SearchHit[], label: (id: DocumentId) => string): string {
  return hits.map((h, i) => `${String(i + 1).padStart(3)}. ${h.score.toFixed(4)}  (dense ${h.dense.toFixed(4)}, sparse ${h.sparse.toFixed(4)}, ` +
    `colbert ${h.colbert.toFixed(4)})  ${label(h.id)}`).join('\n') + '\n';
}
