/**
 * Refusal of tokenizer.json files that Hugging Face's tokenizers library (npm `tokenizers`
 * 0.23.x, over the Rust crate and `spm_precompiled` 0.1.4) would not reject with an error but
 * panic on. A Rust panic inside the addon aborts the whole Node process (SIGABRT), at load or
 * at the first encode on a libuv thread, so these inputs must be caught before
 * `Tokenizer.fromString` sees them. Each check is at least as strict as the library's code
 * where it panics. It refuses a little more where matching that code exactly would mean
 * modelling more of the library (a charsmap lookup with any bytes rather than the UTF-8 of one
 * grapheme; any template after another), and where the library would go on with nonsense (a
 * trie size that is not whole units, a special token whose ids and tokens differ in number, a
 * charsmap value without its NUL).
 *
 * The panicking places (permalinks into the sources the npm package is built from):
 * - A `Precompiled` normalizer whose `precompiled_charsmap` is not canonical base64, is
 *   shorter than its trie size, or whose strings are not UTF-8: `.expect("Precompiled")` at
 *   load, https://github.com/huggingface/tokenizers/blob/3ba8ad0061a885baf052bbb7bbd22857e73e0c4e/tokenizers/src/normalizers/mod.rs#L143
 * - A charsmap that parses but whose double-array sends a traversal out of bounds, or whose
 *   value points past the strings or inside a UTF-8 sequence: unchecked `self.array[node_pos]`
 *   and `&self.normalized[index..index2]` at the first normalization,
 *   https://github.com/huggingface/spm_precompiled/blob/3795b14343d25782df654b49f5c3e9f2a7db7d6f/src/lib.rs#L111-L131
 *   and https://github.com/huggingface/spm_precompiled/blob/3795b14343d25782df654b49f5c3e9f2a7db7d6f/src/lib.rs#L178-L194
 * - A `TemplateProcessing` naming a special token that its `special_tokens` lacks, or whose
 *   single-text template uses `$B`: deserialization skips the builder's validation, and
 *   `apply_template` indexes the map and the encodings unchecked,
 *   https://github.com/huggingface/tokenizers/blob/3ba8ad0061a885baf052bbb7bbd22857e73e0c4e/tokenizers/src/processors/template.rs#L551-L565
 * - A `TemplateProcessing` after another one in a `Sequence` of post-processors: it gets one
 *   encoding per piece of the first template and reaches `todo!()`,
 *   https://github.com/huggingface/tokenizers/blob/3ba8ad0061a885baf052bbb7bbd22857e73e0c4e/tokenizers/src/processors/template.rs#L678-L682
 * - A `FixedLength` pre-tokenizer of length 0: `chunks(0)`,
 *   https://github.com/huggingface/tokenizers/blob/3ba8ad0061a885baf052bbb7bbd22857e73e0c4e/tokenizers/src/pre_tokenizers/fixed_length.rs#L34
 * - A `BPE` model with a merge of two vocabulary tokens that is longer than every token in the
 *   vocabulary, or whose second token is shorter than `continuing_subword_prefix`: the merge is
 *   copied into a buffer of the longest token's size before it is looked up, at load,
 *   https://github.com/huggingface/tokenizers/blob/3ba8ad0061a885baf052bbb7bbd22857e73e0c4e/tokenizers/src/models/bpe/model.rs#L251-L267
 *
 * - A vocabulary piece or added token tens of kilobytes long: the Unigram model's trie is freed
 *   by recursion, one call per byte of the longest piece, so a 100 KB piece loads and encodes
 *   but overflows the stack (SIGSEGV) when the tokenizer is garbage-collected.
 *
 * Not checked, because the library fails cleanly there or the engine never reaches them:
 * Unigram, WordPiece and WordLevel vocabularies and unknown-token settings (errors at load or
 * encode), added tokens, regex patterns (errors at load), the other post-processors, decoders
 * (never run), and `truncation` / `padding` (turned off right after load).
 */
import { isUtf8 } from 'node:buffer';
import { M3Error } from '../base/errors';

type JsonObject = Record<string, unknown>;

/** A reason to refuse a tokenizer.json: where in the JSON, and what is wrong there. */
export interface TokenizerJsonProblem {
  where: string;
  what: string;
}

/**
 * serde_json refuses documents nested deeper than 128 levels, so deeper normalizer,
 * pre-tokenizer or post-processor sequences never reach the library; the limit also keeps the
 * walk below off the stack's edge.
 */
const MAX_NESTING = 128;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function hasOwn(object: JsonObject, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(object, key);
}

/**
 * Throws ERR_MODEL_FILES, naming `file`, the place in the JSON and the fault, when the parsed
 * tokenizer.json holds something the tokenizers library would panic on (see the file comment).
 */
export function checkTokenizerJson(json: unknown, file: string): void {
  const problem = tokenizerJsonProblem(json);
  if (problem) {
    throw new M3Error('ERR_MODEL_FILES', `Tokenizer '${file}' is malformed at ${problem.where}: ${problem.what}. ` +
      'The tokenizers library would abort the process on it; use the tokenizer.json that came with the model.');
  }
}

/** The first part of a parsed tokenizer.json that the tokenizers library would panic on, or null. */
export function tokenizerJsonProblem(json: unknown): TokenizerJsonProblem | null {
  if (!isObject(json)) return null;  // the library refuses it with an error of its own
  return normalizerProblem(json.normalizer, 'normalizer', 0) ??
    preTokenizerProblem(json.pre_tokenizer, 'pre_tokenizer', 0) ??
    postProcessorProblem(json.post_processor) ??
    bpeProblem(json.model) ??
    pieceLengthProblem(json);
}

/**
 * Longest vocabulary piece or added token accepted, in UTF-8 bytes. Real vocabularies stay far
 * below (XLM-R's longest piece has a few dozen bytes); the recursion that frees a trie of this
 * depth takes well under a megabyte of stack.
 */
const MAX_PIECE_BYTES = 1024;

/** A piece (vocabulary entry of any model type, or added token) longer than MAX_PIECE_BYTES. */
function pieceLengthProblem(json: JsonObject): TokenizerJsonProblem | null {
  const tooLong = (piece: unknown) => typeof piece === 'string' && piece.length > MAX_PIECE_BYTES / 3 &&
    Buffer.byteLength(piece) > MAX_PIECE_BYTES;
  const what = (piece: string) => `a piece of ${Buffer.byteLength(piece)} bytes, longer than the ${MAX_PIECE_BYTES} bytes allowed`;
  const model = json.model;
  if (isObject(model)) {
    if (Array.isArray(model.vocab)) {
      for (let i = 0; i < model.vocab.length; i++) {
        const entry = model.vocab[i];
        const piece = Array.isArray(entry) ? entry[0] : undefined;
        if (tooLong(piece)) return { where: `model.vocab[${i}]`, what: what(piece as string) };
      }
    } else if (isObject(model.vocab)) {
      for (const piece of Object.keys(model.vocab)) {
        if (tooLong(piece)) return { where: 'model.vocab', what: what(piece) };
      }
    }
  }
  if (Array.isArray(json.added_tokens)) {
    for (let i = 0; i < json.added_tokens.length; i++) {
      const content = (json.added_tokens[i] as JsonObject | null)?.content;
      if (tooLong(content)) return { where: `added_tokens[${i}].content`, what: what(content as string) };
    }
  }
  return null;
}

/** The library reads a model without `type` as BPE when it has merges. */
function bpeProblem(model: unknown): TokenizerJsonProblem | null {
  if (!isObject(model) || !Array.isArray(model.merges) || !isObject(model.vocab)) return null;
  if (model.type !== 'BPE' && model.type !== undefined) return null;
  const vocab = model.vocab;
  let longest = 0;
  for (const token of Object.keys(vocab)) longest = Math.max(longest, Buffer.byteLength(token));
  const prefix = typeof model.continuing_subword_prefix === 'string' ? Buffer.byteLength(model.continuing_subword_prefix) : 0;
  for (let i = 0; i < model.merges.length; i++) {
    const merge = model.merges[i];
    const pair = typeof merge === 'string' ? merge.split(' ') : merge;
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') continue;
    const [first, second] = pair as [string, string];
    // Merges of tokens outside the vocabulary are the library's own (clean) error.
    if (!hasOwn(vocab, first) || !hasOwn(vocab, second)) continue;
    const secondBytes = Buffer.byteLength(second);
    if (secondBytes < prefix) {
      return { where: `model.merges[${i}]`, what: `merges ${JSON.stringify(second)}, shorter than the continuing_subword_prefix` };
    }
    const merged = Buffer.byteLength(first) + secondBytes - prefix;
    if (merged > longest) {
      return { where: `model.merges[${i}]`, what: `merges ${JSON.stringify(first)} and ${JSON.stringify(second)} into ${merged} bytes, ` +
        `longer than every vocabulary token (at most ${longest} bytes)` };
    }
  }
  return null;
}

function normalizerProblem(node: unknown, where: string, depth: number): TokenizerJsonProblem | null {
  if (depth > MAX_NESTING) return { where, what: 'normalizers are nested too deeply' };
  if (!isObject(node)) return null;
  // Any object carrying a charsmap is checked, typed or not: the library picks normalizer
  // variants by their fields as well as by `type`.
  if (node.type === 'Precompiled' || hasOwn(node, 'precompiled_charsmap')) {
    const charsmap = node.precompiled_charsmap;
    if (typeof charsmap !== 'string') {
      return { where: `${where}.precompiled_charsmap`, what: charsmap === undefined ? 'is missing' : 'is not a string' };
    }
    const bytes = Buffer.from(charsmap, 'base64');
    // The library's decoder takes only canonical, padded base64; Node's takes anything.
    if (bytes.toString('base64') !== charsmap) {
      return { where: `${where}.precompiled_charsmap`, what: 'is not canonical base64' };
    }
    const what = charsmapProblem(bytes);
    if (what) return { where: `${where}.precompiled_charsmap`, what };
  }
  if (Array.isArray(node.normalizers)) {
    for (let i = 0; i < node.normalizers.length; i++) {
      const problem = normalizerProblem(node.normalizers[i], `${where}.normalizers[${i}]`, depth + 1);
      if (problem) return problem;
    }
  }
  return null;
}

function preTokenizerProblem(node: unknown, where: string, depth: number): TokenizerJsonProblem | null {
  if (depth > MAX_NESTING) return { where, what: 'pre-tokenizers are nested too deeply' };
  if (!isObject(node)) return null;
  if (node.type === 'FixedLength' && hasOwn(node, 'length')) {
    const length = node.length;
    if (typeof length === 'number' && Number.isInteger(length) && length < 1) {
      return { where: `${where}.length`, what: `is ${length}; a FixedLength pre-tokenizer needs a length of at least 1` };
    }
  }
  if (Array.isArray(node.pretokenizers)) {
    for (let i = 0; i < node.pretokenizers.length; i++) {
      const problem = preTokenizerProblem(node.pretokenizers[i], `${where}.pretokenizers[${i}]`, depth + 1);
      if (problem) return problem;
    }
  }
  return null;
}

/** The post-processors in the order they run, `Sequence`s flattened. */
function flattenProcessors(node: unknown, where: string, depth: number, out: Array<{ node: JsonObject; where: string }>): TokenizerJsonProblem | null {
  if (depth > MAX_NESTING) return { where, what: 'post-processors are nested too deeply' };
  if (!isObject(node)) return null;
  if (Array.isArray(node.processors)) {
    for (let i = 0; i < node.processors.length; i++) {
      const problem = flattenProcessors(node.processors[i], `${where}.processors[${i}]`, depth + 1, out);
      if (problem) return problem;
    }
  }
  out.push({ node, where });
  return null;
}

/** The library tells post-processors apart by their fields (it does not read `type`). */
function looksLikeTemplate(node: JsonObject): boolean {
  return hasOwn(node, 'single') || hasOwn(node, 'pair') || hasOwn(node, 'special_tokens');
}

function postProcessorProblem(root: unknown): TokenizerJsonProblem | null {
  const chain: Array<{ node: JsonObject; where: string }> = [];
  const nesting = flattenProcessors(root, 'post_processor', 0, chain);
  if (nesting) return nesting;
  let earlierTemplate: string | undefined;
  for (const { node, where } of chain) {
    if (!looksLikeTemplate(node)) continue;
    if (earlierTemplate !== undefined) {
      return { where, what: `is a TemplateProcessing that runs after the one at ${earlierTemplate}, which hands it one ` +
        'encoding per template piece instead of the one or two it can take' };
    }
    earlierTemplate = where;
    const problem = templateProblem(node, where);
    if (problem) return problem;
  }
  return null;
}

function templateProblem(node: JsonObject, where: string): TokenizerJsonProblem | null {
  const special = node.special_tokens;
  if (!isObject(special)) return { where: `${where}.special_tokens`, what: 'is not an object of special tokens' };
  for (const key of Object.keys(special)) {
    const token = special[key];
    if (!isObject(token) || !Array.isArray(token.ids) || !Array.isArray(token.tokens)) {
      return { where: `${where}.special_tokens[${JSON.stringify(key)}]`, what: 'is not an object with lists `ids` and `tokens`' };
    }
    if (token.ids.length !== token.tokens.length) {
      return { where: `${where}.special_tokens[${JSON.stringify(key)}]`, what: `has ${token.ids.length} ids but ${token.tokens.length} tokens` };
    }
  }
  for (const name of ['single', 'pair'] as const) {
    const template = node[name];
    if (template === undefined) continue;  // a missing field is the library's own error
    if (!Array.isArray(template)) return { where: `${where}.${name}`, what: 'is not a list of template pieces' };
    for (let i = 0; i < template.length; i++) {
      const piece = template[i];
      if (!isObject(piece)) continue;  // not a piece: the library's own error
      if (isObject(piece.SpecialToken)) {
        const id = piece.SpecialToken.id;
        if (typeof id !== 'string' || !hasOwn(special, id)) {
          return { where: `${where}.${name}[${i}]`, what: `names the special token ${JSON.stringify(id)}, which ${where}.special_tokens does not define` };
        }
      }
      if (name === 'single' && isObject(piece.Sequence) && piece.Sequence.id !== 'A') {
        return { where: `${where}.single[${i}]`, what: `uses sequence ${JSON.stringify(piece.Sequence.id)}, but a single text has only sequence A` };
      }
    }
  }
  return null;
}

/*
 * spm_precompiled's charsmap: a little-endian u32 byte size of the trie, the trie as that many
 * bytes of little-endian u32 units (a darts-clone double array), then NUL-terminated UTF-8
 * replacement strings. A unit holds a label (bits 0-7, with bit 31 set on value units so that
 * they match no byte), a has-leaf flag (bit 8) and an offset (bits 10-31, shifted left by 8
 * when bit 9 is set). The lookup of a key starts at the offset of unit 0; for each byte c it
 * reads the unit at `node ^ c` (unchecked), stops unless that unit's label is c, moves to
 * `node ^ c ^ offset` and, with the leaf flag, reads the value unit there (unchecked). The
 * value is a byte index into the strings, sliced up to the next NUL (unchecked too).
 */
const UNIT_LEAF = 0x100;
const UNIT_LABEL_MASK = 0x800000ff;
const UNIT_VALUE_MASK = 0x7fffffff;

function unitOffset(unit: number): number {
  return (unit >>> 10) << ((unit & 0x200) >>> 6);
}

/** The largest unit index `node ^ c` for any byte c from 1 to 255 (0 ends a key). */
function highestChild(node: number): number {
  return (node & 0xff) === 0xff ? node - 1 : node | 0xff;
}

/**
 * What is wrong with a decoded `precompiled_charsmap` that would make the tokenizers library
 * panic, or null. The double-array is walked from its root through every unit a lookup can
 * reach with any bytes (not only UTF-8), so every index a lookup can compute is known to be in
 * bounds and every value it can return to name a NUL-terminated string starting at a character
 * boundary. Linear in the trie's size: a few milliseconds for the 240 KB charsmap of XLM-R.
 */
export function charsmapProblem(bytes: Uint8Array): string | null {
  if (bytes.length < 4) return `has ${bytes.length} bytes, fewer than the 4 of the trie size`;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const trieBytes = view.getUint32(0, true);
  if (trieBytes % 4 !== 0) return `gives a trie size of ${trieBytes} bytes, not a whole number of 4-byte units`;
  if (trieBytes > bytes.length - 4) return `gives a trie size of ${trieBytes} bytes, but only ${bytes.length - 4} follow`;
  const count = trieBytes / 4;
  if (count === 0) return 'has an empty trie';
  const units = new Uint32Array(count);
  for (let i = 0; i < count; i++) units[i] = view.getUint32(4 + 4 * i, true);
  const strings = bytes.subarray(4 + trieBytes);
  if (!isUtf8(strings)) return 'has replacement strings that are not valid UTF-8';
  const lastNul = strings.lastIndexOf(0);

  // Every node index that passes the bounds check is at most `count`.
  const parent = new Int32Array(count + 1).fill(-1);
  const label = new Uint8Array(count + 1);
  const queue = new Int32Array(count + 1);
  let queued = 0;
  const root = unitOffset(units[0]);
  // The bytes a lookup follows to reach `node` and then byte `c`, for messages.
  const key = (node: number, c: number): string => {
    const bytes = [c];
    for (let n = node; n !== root && bytes.length < 16; n = parent[n]) bytes.push(label[n]);
    return `bytes ${bytes.reverse().map((b) => b.toString(16).padStart(2, '0')).join(' ')}`;
  };
  if (highestChild(root) >= count) return `has a root whose children lie past the end of its ${count} units`;
  parent[root] = root;
  queue[queued++] = root;
  for (let head = 0; head < queued; head++) {
    const node = queue[head];
    for (let c = 1; c <= 0xff; c++) {
      const at = node ^ c;
      const unit = units[at];
      if ((unit & UNIT_LABEL_MASK) !== c) continue;
      const next = at ^ unitOffset(unit);
      if (unit & UNIT_LEAF) {
        if (next >= count) return `has a value unit for ${key(node, c)} past the end of its ${count} units`;
        const value = units[next] & UNIT_VALUE_MASK;
        if (value > lastNul) {
          return `maps ${key(node, c)} to string offset ${value}, past the last ` +
            `NUL-terminated string (${strings.length} bytes of strings)`;
        }
        if ((strings[value] & 0xc0) === 0x80) {
          return `maps ${key(node, c)} to string offset ${value}, inside a UTF-8 sequence`;
        }
      }
      if (highestChild(next) >= count) {
        return `sends ${key(node, c)} to a node whose children lie past the end of its ${count} units`;
      }
      if (parent[next] === -1) {
        parent[next] = node;
        label[next] = c;
        queue[queued++] = next;
      }
    }
  }
  return null;
}
