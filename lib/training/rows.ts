/**
 * The {query, pos, neg} rows that evaluation and fine-tuning read: from a JSONL file (errors name
 * the line) or given as an array (errors name the index).
 */
import { readTextInput } from '../base/files';
import { M3Error, inputError } from '../base/errors';
import { isStringArray } from '../base/validate';

/** One training/evaluation row. */
export interface EvalRow {
  query: string;
  pos: string[];
  neg?: string[];
}

/** Throws (naming `where`) unless `row` is {query: string, pos: [string], neg?: [string]}. */
export function checkEvalRow(row: EvalRow, where: string): void {
  if (!row || typeof row.query !== 'string' || !isStringArray(row.pos) || (row.neg !== undefined && !isStringArray(row.neg))) {
    throw new M3Error('ERR_INPUT', `${where}: expected {"query": string, "pos": [string], "neg": [string]}`);
  }
}

/**
 * Reads a JSONL file of {query, pos, neg} rows, with errors naming the line; `check` adds rules
 * (it throws with the `where` it is given).
 */
export function readEvalRows(file: string, check?: (row: EvalRow, where: string) => void): EvalRow[] {
  const text = readTextInput(file, 'Data file');
  return text.split(/\r?\n/).flatMap((line, i) => {
    if (!line.trim()) return [];
    let row: EvalRow;
    try {
      row = JSON.parse(line);
    } catch (err) {
      throw new M3Error('ERR_INPUT', `${file}:${i + 1}: not valid JSON (${(err as Error).message})`);
    }
    checkEvalRow(row, `${file}:${i + 1}`);
    check?.(row, `${file}:${i + 1}`);
    return [row];
  });
}

/** Reads and checks training rows (a JSONL path or rows): every row needs a query and at least one positive. */
export function readTrainingRows(data: string | EvalRow[]): EvalRow[] {
  const check = (row: EvalRow, where: string) => {
    if (row.query.length === 0) throw new M3Error('ERR_INPUT', `${where}: "query" is empty`);
    if (row.pos.length === 0) throw new M3Error('ERR_INPUT', `${where}: "pos" is empty; each training row needs at least one positive passage`);
  };
  if (typeof data === 'string') return readEvalRows(data, check);
  if (!Array.isArray(data)) throw inputError('a JSONL path or an array of {query, pos, neg} rows', 'data', data);
  data.forEach((row, i) => {
    checkEvalRow(row, `data[${i}]`);
    check(row, `data[${i}]`);
  });
  return data;
}
