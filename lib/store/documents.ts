/**
 * What a document is when it is written to a store: an id, optional text and metadata, and a
 * row of encode() output. The checks here run before anything is written, so a bad document
 * stops the whole call and nothing is half-written.
 */
import { M3Error, inputError } from '../base/errors';
import type { EncodeOutput } from '../engine/outputs';
import type { StoredDocument } from '../retrieval/hybrid_index';
import { checkFields, checkMetadata, type DocumentFields, type DocumentMetadata } from '../retrieval/document_fields';
import { HALF_MAX } from './codec';

/** A document as a store holds it (HybridIndex's StoredDocument). */
export type StoreDocument = StoredDocument;

/** Longest id a store takes, in characters (ids are a btree key). */
export const MAX_ID_LENGTH = 512;

/** An id as the store's text key: numbers in decimal, so 5 and '5' are one document. */
export function idKey(id: unknown, where: string): string {
  if (typeof id === 'number' && Number.isSafeInteger(id)) return String(id);
  if (typeof id !== 'string') throw inputError('a string or a safe integer', where, id);
  if (id.length === 0 || id.length > MAX_ID_LENGTH) throw new M3Error('ERR_INPUT', `${where}: an id is 1 to ${MAX_ID_LENGTH} characters, got ${id.length}`);
  checkText(id, where);
  return id;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate: refuse both. */
function checkText(text: string, where: string): void {
  if (text.includes('\0')) throw new M3Error('ERR_INPUT', `${where} holds a NUL character, which PostgreSQL's text and jsonb cannot store; remove it`);
  if (LONE_SURROGATE.test(text)) throw new M3Error('ERR_INPUT', `${where} holds a lone UTF-16 surrogate (not valid Unicode); fix the string's encoding`);
}

/** Checked metadata (document_fields.ts) as the JSON the store writes, or null for none. */
function metadataJson(value: DocumentMetadata | undefined, where: string): string | null {
  if (value === undefined) return null;
  checkStrings(value, where);
  return JSON.stringify(value);
}

/** checkText on every key and string of a JSON value (JSON.stringify would escape what jsonb refuses). */
function checkStrings(value: unknown, where: string): void {
  if (typeof value === 'string') {
    checkText(value, where);
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkStrings(item, `${where}[${i}]`));
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      checkText(key, `${where} (a key)`);
      checkStrings(item, `${where}.${key}`);
    }
  }
}

/**
 * Checks one document as a store would take it (id, text, metadata), naming each field with
 * `name` (a file and line, a request path); returns the id's key.
 */
export function checkStoreDocument(id: unknown, text: unknown, metadata: unknown, name: (field: 'id' | 'text' | 'metadata') => string): string {
  const key = idKey(id, name('id'));
  if (text !== undefined && text !== null) {
    if (typeof text !== 'string') throw inputError('a string', name('text'), text);
    checkText(text, name('text'));
  }
  metadataJson(checkMetadata(metadata, name('metadata')), name('metadata'));
  return key;
}

/** The checks of an add() call: ids, fields and the encoded arrays. Returns the id keys. */
export function checkAdd(ids: unknown, encoded: EncodeOutput, fields: DocumentFields | undefined,
  store: { dim: number; vocabSize: number; colbert: string | false }): { keys: string[]; numeric: boolean[]; texts: Array<string | null>; metadata: Array<string | null> } {
  if (!Array.isArray(ids)) throw inputError('an array of ids', 'ids', ids);
  if (!encoded || typeof encoded !== 'object' || typeof encoded.count !== 'number') throw inputError('an encode() result', 'encoded', encoded);
  if (ids.length !== encoded.count) throw new M3Error('ERR_INPUT', `add: ${ids.length} ids for ${encoded.count} encoded texts`);
  if (encoded.dim !== store.dim) throw new M3Error('ERR_INPUT', `add: vectors have dim ${encoded.dim} but the store has dim ${store.dim} (a different model?)`);
  if (!encoded.dense || !encoded.sparse) throw new M3Error('ERR_INPUT', 'add: encode with { dense: true, sparse: true }');
  if (store.colbert && !encoded.colbert) throw new M3Error('ERR_INPUT', 'add: this store keeps ColBERT vectors; encode with { colbert: true }');
  if (encoded.dense.length !== ids.length * store.dim || encoded.sparse.offsets.length !== ids.length + 1 ||
      (store.colbert && encoded.colbert!.offsets.length !== ids.length + 1)) {
    throw new M3Error('ERR_INPUT', `add: the encoded arrays do not hold ${ids.length} texts of dim ${store.dim}`);
  }
  const checked = checkFields(fields, ids.length);
  const keys: string[] = [];
  const seen = new Map<string, unknown>();
  ids.forEach((id, i) => {
    const key = idKey(id, `ids[${i}]`);
    if (seen.has(key)) {
      throw new M3Error('ERR_INPUT', `add: ids ${JSON.stringify(seen.get(key))} and ${JSON.stringify(id)} name the same document ` +
        '(a store keeps ids as text, so 5 and "5" are one id); give each document one id');
    }
    seen.set(key, id);
    keys.push(key);
  });
  const d = encoded.dense;
  for (let i = 0; i < d.length; i++) {
    if (!(Math.abs(d[i]) <= HALF_MAX)) {
      throw new M3Error('ERR_INPUT', `add: text ${Math.floor(i / store.dim)}'s dense vector holds ${d[i]}; a store keeps dense vectors as fp16 (finite, |x| <= ${HALF_MAX})`);
    }
  }
  const { offsets, ids: tokens, weights } = encoded.sparse;
  for (let t = 0; t < ids.length; t++) {
    for (let j = offsets[t]; j < offsets[t + 1]; j++) {
      if (!(tokens[j] < store.vocabSize) || (j > offsets[t] && tokens[j] <= tokens[j - 1])) {
        throw new M3Error('ERR_INPUT', `add: text ${t}'s sparse token ids must ascend, each below ${store.vocabSize}; got ${tokens[j]}`);
      }
      if (!Number.isFinite(weights[j])) throw new M3Error('ERR_INPUT', `add: text ${t}'s sparse weights hold ${weights[j]}`);
    }
  }
  if (store.colbert) {
    const c = encoded.colbert!.data;
    for (let i = 0; i < c.length; i++) {
      if (!Number.isFinite(c[i])) throw new M3Error('ERR_INPUT', `add: a ColBERT vector holds ${c[i]} (row ${Math.floor(i / store.dim)})`);
    }
  }
  return {
    keys,
    numeric: ids.map((id) => typeof id === 'number'),
    texts: checked.texts.map((text, i) => {
      if (text !== undefined) checkText(text, `fields.texts[${i}]`);
      return text ?? null;
    }),
    metadata: checked.metadata.map((m, i) => metadataJson(m, `fields.metadata[${i}]`)),
  };
}
