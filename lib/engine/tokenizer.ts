/**
 * Tokenization with Hugging Face's own tokenizers library (the npm package `tokenizers`) from the
 * model's tokenizer.json. Truncation is done here rather than by the tokenizer's own state, so
 * concurrent calls with different `maxLength`s cannot interfere.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { M3Error, describe } from '../base/errors';
import { readRegularFile } from '../base/files';
import { checkTokenizerJson } from './tokenizer_check';

/** XLM-RoBERTa's special ids, which BGE-M3's heads and the native code rely on. */
export const CLS_ID = 0;
export const PAD_ID = 1;
export const EOS_ID = 2;
export const UNK_ID = 3;

/**
 * Long texts are tokenized by prefix, so that the work follows maxLength rather than the text's
 * length. A text of over PREFIX_CHARS_PER_TOKEN x maxLength characters (and PREFIX_MIN_CHARS)
 * is cut near that length, in one of two ways:
 * - A word cut, just before an ASCII space that follows an ASCII letter or digit (looked for
 *   up to twice the wanted length). Where the tokenizer splits words at spaces before its model
 *   sees them (Metaspace, as XLM-R's does) and nothing before that acts across a space, the
 *   prefix's tokens are exactly the first tokens of the whole text.
 * - Otherwise (no spaces, CJK, emoji, a run of symbols) a character cut, between two grapheme
 *   clusters. The last word is then cut in two, and the model's best segmentation of its start
 *   could depend on how it goes on; so a character cut counts only when a second, about twice
 *   as long prefix gives the same first tokens, and the prefix keeps doubling until two agree.
 * Once a prefix settles PREFIX_MARGIN_TOKENS more than maxLength tokens, truncation (or the
 * too-long error) is decided without tokenizing the rest. A prefix too short for that grows
 * fourfold, up to the whole text. A megabyte text with maxLength 512 then costs the
 * tokenization of a few tens of KB instead of seconds and a gigabyte.
 *
 * Where a character cut can still differ from the whole text: the best segmentation of a long
 * repetition of one short unit ("whowhowho…") can change with the repetition's length, when the
 * vocabulary splits it in more than one phase at nearly the same score (with the fixture
 * vocabulary, 'who' x 43,000 starts ▁who|who and 'who' x 44,000 starts ▁w|how); prefixes shorter
 * than such a change agree with each other and not with the whole text. No prefix can settle
 * that short of the whole repetition. What can still cost the whole text: a run of characters
 * the vocabulary lacks is fused into a single <unk>, however long, so a prefix must reach past
 * it to see what follows.
 */
const PREFIX_CHARS_PER_TOKEN = 16;
const PREFIX_MIN_CHARS = 16384;
const PREFIX_MARGIN_TOKENS = 64;
/** How far past the wanted length a character cut looks for a grapheme cluster boundary. */
const CHAR_CUT_SEARCH = 256;

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

/** Just before an ASCII space that follows an ASCII letter or digit, in [from, to); -1 if none. */
function wordCut(text: string, from: number, to: number): number {
  const end = Math.min(to, text.length);
  for (let i = Math.max(1, from); i < end; i++) {
    if (text.charCodeAt(i) !== 32) continue;
    const c = text.charCodeAt(i - 1);
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) return i;
  }
  return -1;
}

/**
 * Code points that belong with the one before them: combining marks (variation selectors
 * among them), emoji skin-tone modifiers, joiners, emoji tag characters, Hangul vowel and final
 * jamo, and the halfwidth kana sound marks that NFKC turns into combining ones.
 */
const JOINS_PREVIOUS = /^[\p{M}\p{Emoji_Modifier}\u200C\u200D\u1160-\u11FF\uD7B0-\uD7FF\uFF9E\uFF9F\u{E0020}-\u{E007F}]/u;
/**
 * Code points that belong with the one after them: ZWJ, the viramas that join Indic conjuncts,
 * Hangul initial jamo, prepended marks.
 */
const JOINS_NEXT = /^[\u200D\u094D\u09CD\u0ACD\u0B4D\u0C4D\u0D4D\u1100-\u115F\uA960-\uA97F\u0600-\u0605\u06DD\u070F\u0890\u0891\u08E2\u0D4E\u{110BD}\u{110CD}]/u;
const REGIONAL_INDICATOR = /^[\u{1F1E6}-\u{1F1FF}]/u;

/** Whether index `i` of `text` falls between the two halves of a surrogate pair. */
function insidePair(text: string, i: number): boolean {
  const high = text.charCodeAt(i - 1);
  const low = text.charCodeAt(i);
  return high >= 0xd800 && high <= 0xdbff && low >= 0xdc00 && low <= 0xdfff;
}

/** Whether `text` may be cut before index `i` without splitting a grapheme cluster. */
function clusterBoundary(text: string, i: number): boolean {
  if (i <= 0 || i >= text.length) return true;
  if (insidePair(text, i)) return false;
  const after = String.fromCodePoint(text.codePointAt(i)!);
  const before = i >= 2 && insidePair(text, i - 1) ? text.slice(i - 2, i) : text[i - 1];
  if (JOINS_PREVIOUS.test(after) || JOINS_NEXT.test(before)) return false;
  if (before === '\r' && after === '\n') return false;
  return !(REGIONAL_INDICATOR.test(before) && REGIONAL_INDICATOR.test(after));
}

/**
 * A cut of `text` at or soon after `at`: a word cut if one is near, else a character cut at the
 * first grapheme cluster boundary (or, in a run of joined characters longer than
 * CHAR_CUT_SEARCH, at least between whole code points). `exact` says that the prefix's tokens
 * are the text's own: a word cut, or the whole text.
 */
export function prefixCut(text: string, at: number): { end: number; exact: boolean } {
  if (at >= text.length) return { end: text.length, exact: true };
  const word = wordCut(text, at, 2 * at);
  if (word > 0) return { end: word, exact: true };
  const limit = Math.min(text.length, at + CHAR_CUT_SEARCH);
  let end = at;
  while (end < limit && !clusterBoundary(text, end)) end++;
  if (end === limit && end < text.length) {
    end = insidePair(text, at) ? at + 1 : at;
  }
  return end >= text.length ? { end: text.length, exact: true } : { end, exact: false };
}

/** Whether two id lists agree on their first `count` ids. */
function sameStart(a: readonly number[], b: readonly number[], count: number): boolean {
  for (let k = 0; k < count; k++) if (a[k] !== b[k]) return false;
  return true;
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
  /**
   * Characters handed to the tokenizers library so far, by every call: the measure of the
   * tokenization work, which long texts keep in proportion to maxLength (see PREFIX_MIN_CHARS).
   */
  charsTokenized = 0;

  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly file: string,
    readonly vocabSize: number,
    /** Long texts may be tokenized by prefix (prefixTokenizable). */
    readonly byPrefix: boolean,
  ) {}

  /**
   * Loads and checks tokenizer.json: nothing the tokenizers library would crash on
   * (checkTokenizerJson), XLM-R special ids and the `<s> … </s>` template.
   */
  static async load(file: string): Promise<M3Tokenizer> {
    let text: string;
    let json: unknown;
    try {
      text = readRegularFile(file, 'Tokenizer file').toString('utf8');
      json = JSON.parse(text);
    } catch (err) {
      if (err instanceof M3Error) throw err;
      throw new M3Error('ERR_MODEL_FILES', `Could not read tokenizer '${file}': ${(err as Error).message}`, { cause: err });
    }
    checkTokenizerJson(json, file);
    let tokenizer: Tokenizer;
    try {
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
    // XLM-R's Unigram model maps characters it lacks to <unk>; without unk_id the library fails on them.
    const model = (json as { model?: { type?: unknown; unk_id?: unknown } } | null)?.model;
    if (model?.type === 'Unigram' && model.unk_id !== UNK_ID) {
      throw new M3Error('ERR_MODEL_LAYOUT', `Tokenizer '${file}' has a Unigram model whose unk_id is ${describe(model.unk_id)}, ` +
        `not ${UNK_ID} (<unk>): characters outside its vocabulary could not be encoded. Use the tokenizer.json that came with the model.`);
    }
    const probe = (await tokenizer.encode('')).getIds();
    if (probe[0] !== CLS_ID || probe[probe.length - 1] !== EOS_ID) {
      throw new M3Error('ERR_MODEL_LAYOUT', `Tokenizer '${file}' does not add <s> … </s> around a text (an empty text ` +
        `gave [${probe.join(', ')}]); its post_processor must be XLM-RoBERTa's template.`);
    }
    return new M3Tokenizer(tokenizer, file, tokenizer.getVocabSize(true), prefixTokenizable(json));
  }

  /** The library's ids for one text, counted in charsTokenized. */
  private async tokenizeOne(text: string): Promise<number[]> {
    this.charsTokenized += text.length;
    return (await this.library(() => this.tokenizer.encode(text))).getIds();
  }

  /**
   * A call into the tokenizers library, its errors as ERR_MODEL_FILES naming the file: the texts
   * are plain strings, so what fails there is the tokenizer.json (say, a model that meets an
   * unknown character without an unk_id).
   */
  private async library<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw new M3Error('ERR_MODEL_FILES', `Tokenizer '${this.file}' failed on a text: ${(err as Error)?.message ?? String(err)}. ` +
        'Use the tokenizer.json that came with the model.', { cause: err });
    }
  }

  /**
   * Tokenizes texts as `<s> pieces </s>`, each truncated to at most `maxLength` tokens (keeping
   * `<s>` and `</s>`, like the tokenizer's own truncation). With `truncate` false a longer text
   * is an ERR_TOO_LONG error instead.
   */
  async encode(texts: readonly string[], maxLength: number, truncate = true): Promise<TokenizedBatch> {
    const offsets = new Uint32Array(texts.length + 1);
    if (texts.length === 0) return { ids: new Int32Array(0), offsets };
    // Long texts start as prefixes (see PREFIX_CHARS_PER_TOKEN); `cuts` holds theirs.
    const inputs = texts.slice();
    const cuts: Array<{ end: number; exact: boolean } | undefined> = new Array(texts.length);
    const first = Math.max(PREFIX_MIN_CHARS, PREFIX_CHARS_PER_TOKEN * maxLength);
    if (this.byPrefix) {
      for (let i = 0; i < texts.length; i++) {
        if (texts[i].length <= first) continue;
        const cut = prefixCut(texts[i], first);
        if (cut.end < texts[i].length) {
          inputs[i] = texts[i].slice(0, cut.end);
          cuts[i] = cut;
        }
      }
    }
    for (const input of inputs) this.charsTokenized += input.length;
    const encodings = await this.library(() => this.tokenizer.encodeBatch(inputs));
    const rows: number[][] = new Array(texts.length);
    let total = 0;
    for (let i = 0; i < encodings.length; i++) {
      let ids = encodings[i].getIds();
      let partial = false;
      const cut = cuts[i];
      if (cut) ({ ids, partial } = await this.settlePrefix(texts[i], cut, ids, maxLength + PREFIX_MARGIN_TOKENS));
      if (ids.length > maxLength) {
        if (!truncate) {
          throw new M3Error('ERR_TOO_LONG', `text ${i} has ${partial ? 'at least ' : ''}${ids.length} tokens, more than the limit of ${maxLength}; ` +
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

  /**
   * Grows the prefix of a long text (cut at `cut`, tokenized as `ids`) until its first `settle`
   * ids are settled: by a word cut, or by two character cuts that agree on them (see
   * PREFIX_CHARS_PER_TOKEN). `partial` when the ids returned are still those of a prefix.
   */
  private async settlePrefix(text: string, cut: { end: number; exact: boolean }, ids: number[], settle: number): Promise<{ ids: number[]; partial: boolean }> {
    // The ids of an earlier character-cut prefix long enough to be compared with.
    let unconfirmed: number[] | undefined;
    for (;;) {
      if (cut.end >= text.length) return { ids, partial: false };
      // More than `settle` ids, so that those compared or kept are not the closing </s>.
      const enough = ids.length > settle;
      if (enough) {
        if (cut.exact || (unconfirmed !== undefined && sameStart(unconfirmed, ids, settle))) return { ids, partial: true };
        unconfirmed = ids;
      }
      cut = prefixCut(text, cut.end * (enough ? 2 : 4));
      ids = await this.tokenizeOne(cut.end >= text.length ? text : text.slice(0, cut.end));
    }
  }

  /** The piece of an id with the SentencePiece word marker removed (FlagEmbedding's decode). */
  piece(id: number): string {
    const token = this.tokenizer.idToToken(id);
    return token === null ? '' : token.replace(/\u2581/g, ' ').trim();
  }
}
