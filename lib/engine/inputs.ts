/**
 * What BGEM3's methods take, checked: texts, tokenized texts, query-passage pairs and a row of
 * lexical weights. Each failure is an M3Error (ERR_INPUT) naming the argument.
 */
import { M3Error, inputError } from '../base/errors';
import type { SparseRow } from './outputs';
import { CLS_ID, EOS_ID, type TokenizedBatch } from './tokenizer';

/** One text or an array of texts, as an array. */
export function normalizeTexts(texts: unknown): string[] {
  if (typeof texts === 'string') return [texts];
  if (!Array.isArray(texts)) throw inputError('a string or an array of strings', 'texts', texts);
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') throw inputError('a string', `texts[${i}]`, texts[i]);
  }
  return texts as string[];
}

/** Tokenized texts as encodeTokens takes them: the shapes, and ids within the vocabulary. */
export function checkTokens(tokens: TokenizedBatch, vocabSize: number, modelMaxLength: number): void {
  if (!tokens || !(tokens.ids instanceof Int32Array) || !(tokens.offsets instanceof Uint32Array) || tokens.offsets.length < 1) {
    throw inputError('{ ids: Int32Array, offsets: Uint32Array } (as tokenize() returns)', 'tokens', tokens);
  }
  const { ids, offsets } = tokens;
  if (offsets[0] !== 0 || offsets[offsets.length - 1] !== ids.length) {
    throw new M3Error('ERR_INPUT', `tokens.offsets must start at 0 and end at ids.length (${ids.length}); got ${offsets[0]} .. ${offsets[offsets.length - 1]}`);
  }
  for (let i = 0; i + 1 < offsets.length; i++) {
    const n = offsets[i + 1] - offsets[i];
    if (offsets[i + 1] < offsets[i] || n < 2 || n > modelMaxLength) {
      throw new M3Error('ERR_INPUT', `tokens: text ${i} has ${offsets[i + 1] < offsets[i] ? 'decreasing offsets' : `${n} tokens`}; ` +
        `each text needs 2 to ${modelMaxLength} tokens, <s> and </s> included (tokenize() with maxLength truncates)`);
    }
    // The heads read <s> as the dense row and drop it from the ColBERT rows: a text must be framed.
    if (ids[offsets[i]] !== CLS_ID || ids[offsets[i + 1] - 1] !== EOS_ID) {
      throw new M3Error('ERR_INPUT', `tokens: text ${i} is [${ids[offsets[i]]} … ${ids[offsets[i + 1] - 1]}]; each text must start with ` +
        `<s> (id ${CLS_ID}) and end with </s> (id ${EOS_ID}), as tokenize() gives`);
    }
  }
  for (let j = 0; j < ids.length; j++) {
    if (ids[j] < 0 || ids[j] >= vocabSize) {
      throw new M3Error('ERR_INPUT', `tokens.ids[${j}] is ${ids[j]}, outside this model's vocabulary [0, ${vocabSize})`);
    }
  }
}

/** The token count of each text of a batch. */
export function textLengths(tokens: TokenizedBatch): Uint32Array {
  const count = tokens.offsets.length - 1;
  const lengths = new Uint32Array(count);
  for (let i = 0; i < count; i++) lengths[i] = tokens.offsets[i + 1] - tokens.offsets[i];
  return lengths;
}

/** One [query, passage] pair or an array of them, as an array. */
export function normalizePairs(pairs: unknown): ReadonlyArray<readonly [string, string]> {
  if (!Array.isArray(pairs)) throw inputError('an array of [query, passage] pairs', 'pairs', pairs);
  const list = (pairs.length === 2 && typeof pairs[0] === 'string' && typeof pairs[1] === 'string'
    ? [pairs] : pairs) as ReadonlyArray<readonly [string, string]>;
  list.forEach((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      throw inputError('a [query, passage] pair of strings', `pairs[${i}]`, pair);
    }
  });
  return list;
}

/** A row of lexical weights: ids and weights of equal lengths. */
export function checkSparseRow(row: SparseRow): SparseRow {
  if (!row || !(row.ids instanceof Uint32Array) || !(row.weights instanceof Float32Array) || row.ids.length !== row.weights.length) {
    throw inputError('{ ids: Uint32Array, weights: Float32Array } of equal lengths', 'row', row);
  }
  return row;
}
