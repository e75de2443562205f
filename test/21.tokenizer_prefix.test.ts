/**
 * Long texts are tokenized by prefix (lib/engine/tokenizer.ts): the ids must be exactly those of the
 * whole text tokenized and truncated by Hugging Face's tokenizers library itself, for texts
 * built to stress the cut (whitespace runs of every kind, special tokens, words without spaces,
 * texts whose first prefix is too short).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { BGEM3 } from '../lib';
import { prefixTokenizable } from '../lib/engine/tokenizer';
import { DEMO_MODEL } from './helpers';

const TOKENIZER = path.join(DEMO_MODEL, 'tokenizer.json');

/** The library's own truncation of the whole text: the reference. */
async function reference(text: string, maxLength: number): Promise<number[]> {
  const tokenizer = Tokenizer.fromFile(TOKENIZER);
  tokenizer.setTruncation(maxLength);
  return (await tokenizer.encode(text)).getIds();
}

function randomText(seed: number, chars: number): string {
  let s = seed * 2654435761 >>> 0 || 1;
  const next = () => ((s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0) / 0x100000000);
  const pick = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)];
  const words = ['retrieval', 'model', 'BGE', 'M3', '8192', 'x1', 'Привет', 'мир', '東京は日本の首都です', 'مرحبا', 'नमस्ते',
    '🦜', 'ﬁne', '①②', 'Ａｂｃ', 'e\u0301', '<mask>', '</s>', '<s>', 'don\'t', 'a.b,c;', '———', 'ß', 'İ'];
  const gaps = [' ', ' ', ' ', '  ', '\t', '\n', ' \n ', '\u3000', '\u00a0', '', '     '];
  const parts: string[] = [];
  let length = 0;
  while (length < chars) {
    const w = next() < 0.02 ? ' '.repeat(1 + Math.floor(next() * 3000)) : pick(words);
    const gap = pick(gaps);
    parts.push(w, gap);
    length += w.length + gap.length;
  }
  return parts.join('');
}

describe('tokenizing long texts by prefix', () => {
  let model: BGEM3;
  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
  });
  after(() => model.dispose());

  it('applies to the XLM-R layout of tokenizer.json, and not where a word could span a space', () => {
    const json = JSON.parse(fs.readFileSync(TOKENIZER, 'utf8'));
    assert.equal(prefixTokenizable(json), true);
    assert.equal(prefixTokenizable({ ...json, pre_tokenizer: { ...json.pre_tokenizer, split: false } }), false);
    assert.equal(prefixTokenizable({ ...json, pre_tokenizer: { type: 'ByteLevel' } }), false);
    assert.equal(prefixTokenizable({ ...json, added_tokens: [...json.added_tokens, { content: 'new york' }] }), false);
    const replacing = (pattern: object) => ({ ...json, normalizer: { type: 'Replace', pattern, content: ' ' } });
    assert.equal(prefixTokenizable(replacing({ Regex: ' {2,}' })), true);
    assert.equal(prefixTokenizable(replacing({ Regex: '\\s+' })), true);
    assert.equal(prefixTokenizable(replacing({ String: 'n ' })), false, 'a pattern with a letter and a space');
    assert.equal(prefixTokenizable(replacing({ Regex: '[ 1]' })), false);
  });

  it('gives the ids of the whole text, truncated, for random long texts', async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const text = randomText(seed, 20_000 + seed * 15_000);
      for (const maxLength of [2, 3, 17, 64]) {
        const got = await model.tokenize([text, 'short'], { maxLength });
        const ids = Array.from(got.ids.subarray(got.offsets[0], got.offsets[1]));
        assert.deepEqual(ids, await reference(text, maxLength), `seed ${seed} maxLength ${maxLength}`);
      }
    }
  });

  it('grows a prefix that is too short, and tokenizes whole a text it cannot cut', async () => {
    // The first cut (after 16,384 characters) leaves two words: the prefix must grow.
    const sparse = `alpha${' '.repeat(20_000)}beta ${'gamma delta '.repeat(3000)}`;
    // No ASCII letter or digit before a space anywhere: no cut point at all.
    const uncut = '東京は日本の首都です。'.repeat(3000);
    for (const text of [sparse, uncut]) {
      const got = await model.tokenize([text]);
      assert.deepEqual(Array.from(got.ids), await reference(text, 64));
    }
  });

  it('refuses an over-long text with truncate: false, saying it has at least so many tokens', async () => {
    const text = randomText(9, 50_000);
    await assert.rejects(model.tokenize([text], { truncate: false }),
      (e: { code?: string; message?: string }) => e.code === 'ERR_TOO_LONG' && /text 0 has at least \d+ tokens, more than the limit of 64/.test(e.message ?? ''));
  });
});
