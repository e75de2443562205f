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
  private constructor(private readonly tokenizer: Tokenizer, readonly file: string, readonly vocabSize: number) {}

  /** Loads and checks tokenizer.json: XLM-R special ids and the `<s> … </s>` template. */
  static async load(file: string): Promise<M3Tokenizer> {
    let tokenizer: Tokenizer;
    try {
      tokenizer = Tokenizer.fromFile(file);
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
    return new M3Tokenizer(tokenizer, file, tokenizer.getVocabSize(true));
  }

  /**
   * Tokenizes texts as `<s> pieces </s>`, each truncated to at most `maxLength` tokens (keeping
   * `<s>` and `</s>`, like the tokenizer's own truncation). With `truncate` false a longer text
   * is an ERR_TOO_LONG error instead.
   */
  async encode(texts: readonly string[], maxLength: number, truncate = true): Promise<TokenizedBatch> {
    const offsets = new Uint32Array(texts.length + 1);
    if (texts.length === 0) return { ids: new Int32Array(0), offsets };
    const encodings = await this.tokenizer.encodeBatch(texts as string[]);
    const rows: number[][] = new Array(texts.length);
    let total = 0;
    for (let i = 0; i < encodings.length; i++) {
      let ids = encodings[i].getIds();
      if (ids.length > maxLength) {
        if (!truncate) {
          throw new M3Error('ERR_TOO_LONG', `text ${i} has ${ids.length} tokens, more than the limit of ${maxLength}; ` +
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
