/**
 * Tokenization with Hugging Face's own tokenizers library (the npm package `tokenizers`) from the
 * model's tokenizer.json. Truncation is done here rather than by the tokenizer's own state, so
 * concurrent calls with different `maxLength`s cannot interfere.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { M3Error } from './errors';

/** XLM-RoBERTa's special ids, which BGE-M3's heads and the native code rely on. */
export const CLS_ID = 0;
export const PAD_ID = 1;
export const EOS_ID = 2;
export const UNK_ID = 3;

/**
 * Long texts are tokenized by prefix: a text of over PREFIX_CHARS_PER_TOKEN x maxLength
 * characters (and PREFIX_MIN_CHARS) is cut first at an ASCII space that follows an ASCII letter
 * or digit. Where the tokenizer splits words at spaces before its model sees them (Metaspace,
 * as XLM-R's does) and nothing before that acts across a space, the prefix's tokens are exactly
 * the first tokens of the whole text; once the prefix has PREFIX_MARGIN_TOKENS more than
 * maxLength, truncation (or the too-long error) is decided without tokenizing the rest. A
 * shorter prefix is grown fourfold until it suffices or is the whole text. A megabyte text with
 * maxLength 512 then costs a tokenization of about 8 KB instead of seconds.
 */
const PREFIX_CHARS_PER_TOKEN = 16;
const PREFIX_MIN_CHARS = 16384;
const PREFIX_MARGIN_TOKENS = 64;

type JsonObject = Record<string, unknown>;

/** Normalizers that act within runs of non-space characters (or on spaces alone). */
function prefixSafeNormalizer(n: unknown): boolean {
  if (n === null || n === undefined) return true;
  const node = n as JsonObject;
  switch (node.type) {
    case 'Sequence':
      return Array.isArray(node.normalizers) && node.normalizers.every(prefixSafeNormalizer);
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': case 'Lowercase': case 'Precompiled': case 'Strip': case 'StripAccents':
      return true;
    case 'Replace': {
      // Only patterns that match whitespace alone (XLM-R's ' {2,}' and '[\t\n\r]'): with
      // quantifier braces and whitespace escapes taken out, nothing but whitespace, [ ] + * is left.
      const p = node.pattern as JsonObject | undefined;
      const text = typeof p?.String === 'string' ? p.String : typeof p?.Regex === 'string' ? p.Regex : undefined;
      if (text === undefined) return false;
      const bare = text.replace(/\{\d*,?\d*\}/g, '').replace(/\\[tnrs]/g, ' ');
      return /^[ \t\n\r[\]+*]+$/.test(bare) && /\s/.test(bare);
    }
    default:
      return false;
  }
}

/** Pre-tokenizers that split at every space (so a word never spans one). */
function prefixSafePreTokenizer(p: unknown): boolean {
  const node = p as JsonObject | null | undefined;
  if (!node) return false;
  if (node.type === 'Metaspace') return node.split !== false;
  if (node.type === 'WhitespaceSplit') return true;
  if (node.type === 'Sequence') {
    const list = node.pretokenizers;
    return Array.isArray(list) && list.length > 0 && list.some(prefixSafePreTokenizer) &&
      list.every((x) => ['Metaspace', 'WhitespaceSplit'].includes((x as JsonObject)?.type as string) && (x as JsonObject).split !== false);
  }
  return false;
}

/**
 * Whether a tokenizer.json allows tokenizing long texts by prefix (see PREFIX_CHARS_PER_TOKEN):
 * words split at spaces, normalization that stays within words, no added token with a space.
 */
export function prefixTokenizable(json: unknown): boolean {
  const t = json as JsonObject | null;
  if (!t || typeof t !== 'object') return false;
  const added = Array.isArray(t.added_tokens) ? t.added_tokens as JsonObject[] : [];
  return prefixSafePreTokenizer(t.pre_tokenizer) && prefixSafeNormalizer(t.normalizer) &&
    added.every((a) => typeof a.content === 'string' && !/\s/.test(a.content));
}

/** Just before an ASCII space that follows an ASCII letter or digit, at or after `from`; -1 if none. */
function cutPoint(text: string, from: number): number {
  for (let i = text.indexOf(' ', Math.max(1, from)); i !== -1; i = text.indexOf(' ', i + 1)) {
    const c = text.charCodeAt(i - 1);
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) return i;
  }
  return -1;
}

/** Token ids of many texts, flattened: text i is ids[offsets[i] .. offsets[i+1]). */
export interface TokenizedBatch {
  ids: Int32Array;
  offsets: Uint32Array;
}

/** The tokenizer.json of a model directory (root first, then onnx/). */
export function findTokenizerFile(dir: string): string {
  for (const candidate of [path.join(dir, 'tokenizer.json'), path.join(dir, 'onnx', 'tokenizer.json')]) {
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new M3Error('ERR_MODEL_FILES', `No tokenizer.json in '${dir}' (looked at tokenizer.json and onnx/tokenizer.json). ` +
    'The BAAI/bge-m3 snapshot has it at its root; copy it next to the model.');
}

/** A loaded tokenizer with BGE-M3's conventions checked. */
export class M3Tokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly file: string,
    readonly vocabSize: number,
    /** Long texts may be tokenized by prefix (prefixTokenizable). */
    readonly byPrefix: boolean,
  ) {}

  /** Loads and checks tokenizer.json: XLM-R special ids and the `<s> … </s>` template. */
  static async load(file: string): Promise<M3Tokenizer> {
    let tokenizer: Tokenizer;
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
      tokenizer = Tokenizer.fromString(text);
    } catch (err) {
      throw new M3Error('ERR_MODEL_FILES', `Could not read tokenizer '${file}': ${(err as Error).message}`, { cause: err });
    }
    tokenizer.disableTruncation();
    tokenizer.disablePadding();
    const expected: Array<[string, number]> = [['<s>', CLS_ID], ['<pad>', PAD_ID], ['</s>', EOS_ID], ['<unk>', UNK_ID]];
    for (const [token, id] of expected) {
      const got = tokenizer.tokenToId(token);
      if (got !== id) {
        throw new M3Error('ERR_MODEL_LAYOUT', `Tokenizer '${file}' maps ${token} to ${got ?? 'nothing'}, but BGE-M3 ` +
          `(XLM-RoBERTa) uses id ${id}. Use the tokenizer.json that came with the model.`);
      }
    }
    const probe = (await tokenizer.encode('')).getIds();
    if (probe[0] !== CLS_ID || probe[probe.length - 1] !== EOS_ID) {
      throw new M3Error('ERR_MODEL_LAYOUT', `Tokenizer '${file}' does not add <s> … </s> around a text (an empty text ` +
        `gave [${probe.join(', ')}]); its post_processor must be XLM-RoBERTa's template.`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;  // the library parsed it; without our own parse, no prefix tokenization
    }
    return new M3Tokenizer(tokenizer, file, tokenizer.getVocabSize(true), prefixTokenizable(json));
  }

  /**
   * Tokenizes texts as `<s> pieces </s>`, each truncated to at most `maxLength` tokens (keeping
   * `<s>` and `</s>`, like the tokenizer's own truncation). With `truncate` false a longer text
   * is an ERR_TOO_LONG error instead.
   */
  async encode(texts: readonly string[], maxLength: number, truncate = true): Promise<TokenizedBatch> {
    const offsets = new Uint32Array(texts.length + 1);
    if (texts.length === 0) return { ids: new Int32Array(0), offsets };
    // Long texts start as prefixes (see PREFIX_CHARS_PER_TOKEN); `cut` marks those.
    const inputs = texts.slice();
    const cut = new Uint8Array(texts.length);
    const longest = Math.max(PREFIX_MIN_CHARS, PREFIX_CHARS_PER_TOKEN * maxLength);
    if (this.byPrefix) {
      for (let i = 0; i < texts.length; i++) {
        const at = texts[i].length > longest ? cutPoint(texts[i], longest) : -1;
        if (at > 0) {
          inputs[i] = texts[i].slice(0, at);
          cut[i] = 1;
        }
      }
    }
    const encodings = await this.tokenizer.encodeBatch(inputs);
    const rows: number[][] = new Array(texts.length);
    let total = 0;
    for (let i = 0; i < encodings.length; i++) {
      let ids = encodings[i].getIds();
      // A prefix too short to settle the text's first maxLength tokens grows, up to the whole text.
      while (cut[i] && ids.length < maxLength + PREFIX_MARGIN_TOKENS) {
        const at = cutPoint(texts[i], inputs[i].length * 4);
        inputs[i] = at > 0 ? texts[i].slice(0, at) : texts[i];
        cut[i] = at > 0 ? 1 : 0;
        ids = (await this.tokenizer.encode(inputs[i])).getIds();
      }
      if (ids.length > maxLength) {
        if (!truncate) {
          throw new M3Error('ERR_TOO_LONG', `text ${i} has ${cut[i] ? 'at least ' : ''}${ids.length} tokens, more than the limit of ${maxLength}; ` +
            'shorten it, or allow truncation');
        }
        ids = ids.slice(0, maxLength - 1);
        ids.push(EOS_ID);
      }
      rows[i] = ids;
      total += ids.length;
      offsets[i + 1] = total;
    }
    const flat = new Int32Array(total);
    for (let i = 0; i < rows.length; i++) flat.set(rows[i], offsets[i]);
    return { ids: flat, offsets };
  }

  /** The piece of an id with the SentencePiece word marker removed (FlagEmbedding's decode). */
  piece(id: number): string {
    const token = this.tokenizer.idToToken(id);
    return token === null ? '' : token.replace(/\u2581/g, ' ').trim();
  }
}
