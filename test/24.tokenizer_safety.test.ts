/**
 * Tokenizer safety. (1) A malformed tokenizer.json that would make Hugging Face's tokenizers
 * library panic (which aborts the whole process) is refused with ERR_MODEL_FILES instead, and
 * valid ones load as before. (2) Long texts without word cuts (no spaces, CJK, emoji) are
 * tokenized by prefix with work in proportion to maxLength, and give the ids of the whole text.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { M3Tokenizer, prefixCut } from '../lib/engine/tokenizer';
import { charsmapProblem, tokenizerJsonProblem } from '../lib/engine/tokenizer_check';
import { DEMO_MODEL, FIXTURES } from './helpers';

const DEMO_TOKENIZER = path.join(DEMO_MODEL, 'tokenizer.json');
const demoJson = () => JSON.parse(fs.readFileSync(DEMO_TOKENIZER, 'utf8'));

/** Texts that reach every part of the pipeline: normalizers, special tokens, unknown characters. */
const PROBE_TEXTS = ['', 'hello world', 'Ａｂｃ ﬁne e\u0301 naïve 東京は日本の首都です 👩🏽‍💻 <mask> </s>', '\u00e9\u0301\u0302x\r\n\ty'];

/**
 * A precompiled_charsmap as SentencePiece writes it (the layout is described in
 * lib/engine/tokenizer_check.ts): a darts-clone double array over the UTF-8 bytes of each `from`,
 * packed with every node's children at `base ^ byte` and its value unit at `base`, followed by
 * the NUL-terminated replacement strings.
 */
function buildCharsmap(rules: ReadonlyArray<readonly [string, string]>): Buffer {
  interface TrieNode { children: Map<number, TrieNode>; value: number }
  const root: TrieNode = { children: new Map(), value: -1 };
  const strings: Buffer[] = [];
  const stringOffsets = new Map<string, number>();
  let stringBytes = 0;
  for (const [from, to] of rules) {
    let node = root;
    for (const byte of Buffer.from(from, 'utf8')) {
      let child = node.children.get(byte);
      if (!child) node.children.set(byte, child = { children: new Map(), value: -1 });
      node = child;
    }
    let offset = stringOffsets.get(to);
    if (offset === undefined) {
      offset = stringBytes;
      stringOffsets.set(to, offset);
      const bytes = Buffer.from(`${to}\0`, 'utf8');
      strings.push(bytes);
      stringBytes += bytes.length;
    }
    node.value = offset;
  }
  let units = new Uint32Array(1 << 12);
  let used = new Uint8Array(1 << 12);
  const reserve = (size: number) => {
    while (size > units.length) {
      const moreUnits = new Uint32Array(units.length * 2);
      moreUnits.set(units);
      units = moreUnits;
      const moreUsed = new Uint8Array(used.length * 2);
      moreUsed.set(used);
      used = moreUsed;
    }
  };
  used[0] = 1;  // the root's own unit
  // Two nodes with one base would each see the other's children as their own.
  const bases = new Set<number>();
  let firstFree = 1;
  let lastBase = 0;
  let highest = 0xff;
  const queue: Array<{ node: TrieNode; at: number; label: number }> = [{ node: root, at: 0, label: 0 }];
  for (let head = 0; head < queue.length; head++) {
    const { node, at, label } = queue[head];
    const labels = [...node.children.keys()];
    const slots = node.value >= 0 ? [0, ...labels] : labels;
    while (used[firstFree]) firstFree++;
    // Try the bases that put the first slot on a free unit, lowest first (though not far below
    // the last one placed, where the holes left are mostly unusable).
    let base = 0;
    for (let free = Math.max(firstFree, lastBase - 0x400); ; free++) {
      reserve(free + 0x200);
      if (used[free]) continue;
      base = free ^ slots[0];
      if (base !== 0 && !bases.has(base) && slots.every((c) => !used[base ^ c])) break;
    }
    reserve((base | 0xff) + 1);
    bases.add(base);
    lastBase = base;
    for (const c of slots) used[base ^ c] = 1;
    const offset = at ^ base;
    assert.ok(offset < 1 << 21, 'offsets fit the unshifted encoding');
    units[at] = ((offset << 10) | (node.value >= 0 ? 0x100 : 0) | label) >>> 0;
    if (node.value >= 0) units[base] = (0x80000000 | node.value) >>> 0;
    for (const c of labels) queue.push({ node: node.children.get(c)!, at: base ^ c, label: c });
    highest = Math.max(highest, base | 0xff);
  }
  const trie = Buffer.from(units.buffer, 0, (highest + 1) * 4);
  const size = Buffer.alloc(4);
  size.writeUInt32LE(trie.length);
  return Buffer.concat([size, trie, ...strings]);
}

/** The unit array and strings of a charsmap, to be damaged and put back together. */
function splitCharsmap(charsmap: Buffer): { units: Uint32Array; strings: Buffer } {
  const count = charsmap.readUInt32LE(0) / 4;
  const units = new Uint32Array(count);
  for (let i = 0; i < count; i++) units[i] = charsmap.readUInt32LE(4 + 4 * i);
  return { units, strings: charsmap.subarray(4 + 4 * count) };
}

function joinCharsmap(units: Uint32Array, strings: Buffer): Buffer {
  const out = Buffer.alloc(4 + 4 * units.length + strings.length);
  out.writeUInt32LE(4 * units.length, 0);
  for (let i = 0; i < units.length; i++) out.writeUInt32LE(units[i], 4 + 4 * i);
  strings.copy(out, 4 + 4 * units.length);
  return out;
}

/** The unit that the lookup of `bytes` ends on, and the node index it moves to. */
function unitOf(units: Uint32Array, bytes: number[]): { at: number; next: number } {
  const offset = (u: number) => (u >>> 10) << ((u & 0x200) >>> 6);
  let node = offset(units[0]);
  let at = -1;
  for (const c of bytes) {
    at = node ^ c;
    assert.equal(units[at] & 0x800000ff, c, 'the path exists');
    node = at ^ offset(units[at]);
  }
  return { at, next: node };
}

/**
 * Rules like SentencePiece's nmt_nfkc: every code point NFKC changes, and every decomposed
 * letter or Hangul syllable it composes (about the size of XLM-R's charsmap).
 */
function nfkcRules(): Array<[string, string]> {
  const rules: Array<[string, string]> = [];
  for (let cp = 0xa0; cp < 0x30000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const s = String.fromCodePoint(cp);
    const nfkc = s.normalize('NFKC');
    if (nfkc !== s) rules.push([s, nfkc]);
    const nfd = s.normalize('NFD');
    if (nfd !== s && nfd.length > 1) rules.push([nfd, nfkc]);
  }
  return rules;
}

/** The demo tokenizer with a Precompiled normalizer in place of NFKC, as XLM-R's has. */
function withCharsmap(charsmap: Buffer | string): object {
  const json = demoJson();
  const encoded = typeof charsmap === 'string' ? charsmap : charsmap.toString('base64');
  json.normalizer.normalizers[0] = { type: 'Precompiled', precompiled_charsmap: encoded };
  return json;
}

interface BrokenCase {
  name: string;
  json: object;
  /** The part of the JSON the message must name, and what it must say is wrong. */
  where: string;
  what: RegExp;
  /** Whether the tokenizers library itself aborts on it (some are refused without that). */
  aborts: boolean;
}

function brokenCases(): BrokenCase[] {
  const small = buildCharsmap([['Ａ', 'A'], ['ｂ', 'b'], ['ﬁ', 'fi'], ['e\u0301', 'é'], ['\u00a0', ' ']]);
  const { units, strings } = splitCharsmap(small);
  const damaged = (change: (u: Uint32Array) => void) => {
    const copy = new Uint32Array(units);
    change(copy);
    return joinCharsmap(copy, strings);
  };
  const fullwidthA = [...Buffer.from('Ａ', 'utf8')];
  const charsmapAt = 'normalizer.normalizers[0].precompiled_charsmap';
  const withSize = (size: number) => {
    const copy = Buffer.from(small);
    copy.writeUInt32LE(size, 0);
    return copy;
  };
  const json = demoJson();
  const template = json.post_processor;
  return [
    { name: 'charsmap not base64', json: withCharsmap('not base64!'), where: charsmapAt, what: /not canonical base64/, aborts: true },
    { name: 'charsmap of 2 bytes', json: withCharsmap(Buffer.from([1, 0])), where: charsmapAt, what: /2 bytes, fewer than the 4/, aborts: true },
    { name: 'trie size past the end', json: withCharsmap(withSize(small.length)), where: charsmapAt, what: /trie size of \d+ bytes, but only \d+ follow/, aborts: true },
    { name: 'trie size of 4 GB', json: withCharsmap(withSize(0xfffffffc)), where: charsmapAt, what: /trie size of 4294967292 bytes/, aborts: true },
    { name: 'trie size not whole units', json: withCharsmap(withSize(small.readUInt32LE(0) - 2)), where: charsmapAt, what: /not a whole number of 4-byte units/, aborts: false },
    { name: 'strings not UTF-8', json: withCharsmap(Buffer.concat([small, Buffer.from([0xff, 0])])), where: charsmapAt, what: /not valid UTF-8/, aborts: true },
    {
      name: 'Precompiled without a charsmap', json: { ...json, normalizer: { type: 'Precompiled' } },
      where: 'normalizer.precompiled_charsmap', what: /is missing/, aborts: true,
    },
    { name: 'empty trie', json: withCharsmap(Buffer.alloc(4)), where: charsmapAt, what: /empty trie/, aborts: true },
    {
      name: 'root past the end', json: withCharsmap(damaged((u) => { u[0] = (u.length + 0x400) << 10; })),
      where: charsmapAt, what: /root whose children lie past the end/, aborts: true,
    },
    {
      name: 'a node past the end',
      json: withCharsmap(damaged((u) => {
        const { at } = unitOf(u, fullwidthA.slice(0, 1));
        u[at] = (((at ^ (u.length + 0x300)) << 10) | fullwidthA[0]) >>> 0;
      })),
      where: charsmapAt, what: /sends bytes ef to a node whose children lie past the end/, aborts: true,
    },
    {
      name: 'a value unit past the end',
      json: withCharsmap(damaged((u) => {
        const { at } = unitOf(u, fullwidthA);
        u[at] = (((at ^ (u.length + 0x100)) << 10) | 0x100 | fullwidthA[2]) >>> 0;
      })),
      where: charsmapAt, what: /value unit for bytes ef bc a1 past the end/, aborts: true,
    },
    {
      name: 'a value past the strings',
      json: withCharsmap(damaged((u) => { u[unitOf(u, fullwidthA).next] = (0x80000000 | 4096) >>> 0; })),
      where: charsmapAt, what: /maps bytes ef bc a1 to string offset 4096, past the last NUL-terminated string/, aborts: true,
    },
    {
      name: 'a value inside a UTF-8 sequence',
      json: withCharsmap(damaged((u) => { u[unitOf(u, fullwidthA).next] = (0x80000000 | (strings.indexOf(Buffer.from('é')) + 1)) >>> 0; })),
      where: charsmapAt, what: /maps bytes ef bc a1 to string offset \d+, inside a UTF-8 sequence/, aborts: true,
    },
    {
      name: 'a value without its NUL', json: withCharsmap(joinCharsmap(units, strings.subarray(0, strings.length - 1))),
      where: charsmapAt, what: /past the last NUL-terminated string/, aborts: false,
    },
    {
      name: 'template naming a token special_tokens lacks',
      json: { ...json, post_processor: { ...template, special_tokens: { '<s>': template.special_tokens['<s>'] } } },
      where: 'post_processor.single[2]', what: /names the special token "<\/s>", which post_processor.special_tokens does not define/, aborts: true,
    },
    {
      name: 'template without `type` naming a missing token',
      json: { ...json, post_processor: { single: [{ SpecialToken: { id: '<x>', type_id: 0 } }], pair: template.pair, special_tokens: {} } },
      where: 'post_processor.single[0]', what: /names the special token "<x>"/, aborts: true,
    },
    {
      name: 'pair template naming a missing token',
      json: { ...json, post_processor: { ...template, pair: [...template.pair, { SpecialToken: { id: '<sep>', type_id: 1 } }] } },
      where: 'post_processor.pair[6]', what: /names the special token "<sep>"/, aborts: true,
    },
    {
      name: 'single template using sequence B',
      json: { ...json, post_processor: { ...template, single: [...template.single, { Sequence: { id: 'B', type_id: 1 } }] } },
      where: 'post_processor.single[3]', what: /uses sequence "B", but a single text has only sequence A/, aborts: true,
    },
    {
      name: 'template after a template',
      json: { ...json, post_processor: { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false }, template, template] } },
      where: 'post_processor.processors[2]', what: /runs after the one at post_processor.processors\[1\]/, aborts: true,
    },
    {
      name: 'special token with more ids than tokens',
      json: { ...json, post_processor: { ...template, special_tokens: { ...template.special_tokens, '</s>': { id: '</s>', ids: [2, 2], tokens: ['</s>'] } } } },
      where: 'post_processor.special_tokens["</s>"]', what: /has 2 ids but 1 tokens/, aborts: false,
    },
    {
      name: 'BPE merge longer than the vocabulary',
      json: { ...json, model: { type: 'BPE', vocab: { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3, '▁abc': 4, de: 5 }, merges: ['▁abc de'], unk_token: '<unk>' } },
      where: 'model.merges[0]', what: /merges "▁abc" and "de" into 8 bytes, longer than every vocabulary token \(at most 6 bytes\)/, aborts: true,
    },
    {
      name: 'FixedLength of length 0',
      json: { ...json, pre_tokenizer: { type: 'Sequence', pretokenizers: [json.pre_tokenizer, { type: 'FixedLength', length: 0 }] } },
      where: 'pre_tokenizer.pretokenizers[1].length', what: /is 0; a FixedLength pre-tokenizer needs a length of at least 1/, aborts: true,
    },
  ];
}

describe('a tokenizer.json the tokenizers library would crash on', () => {
  let dir: string;
  let cases: BrokenCase[];
  const fileOf = (name: string) => path.join(dir, `${name.replace(/[^a-z0-9]+/gi, '-')}.json`);
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tokenizer-'));
    cases = brokenCases();
    for (const c of cases) fs.writeFileSync(fileOf(c.name), JSON.stringify(c.json));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('aborts the process when handed to the library directly (the reason for the checks)', () => {
    const script = `const { Tokenizer } = require(${JSON.stringify(require.resolve('tokenizers'))});
      const tokenizer = Tokenizer.fromString(require('fs').readFileSync(process.argv[1], 'utf8'));
      (async () => {
        for (const text of ${JSON.stringify(PROBE_TEXTS)}) await tokenizer.encode(text);
        await tokenizer.encode('a b', 'c d');
      })().catch(() => process.exit(3));`;
    for (const c of cases.filter((x) => x.aborts)) {
      const r = spawnSync(process.execPath, ['-e', script, fileOf(c.name)], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.signal, 'SIGABRT', `${c.name}: expected the library to abort, got status ${r.status} ${r.stderr.slice(0, 300)}`);
      assert.match(r.stderr, /panicked at/, c.name);
    }
  });

  it('is refused at load with ERR_MODEL_FILES naming the file, the part of the JSON and the fault', () => {
    // In a child process, so that a tokenizer that gets through aborts that process and not the
    // test runner.
    const script = `const { M3Tokenizer } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'engine', 'tokenizer.js'))});
      (async () => {
        for (const file of process.argv.slice(1)) {
          try {
            const tokenizer = await M3Tokenizer.load(file);
            await tokenizer.encode(${JSON.stringify(PROBE_TEXTS)}, 64);
            console.log(JSON.stringify({ file, code: 'loaded' }));
          } catch (err) {
            console.log(JSON.stringify({ file, code: err.code, message: err.message }));
          }
        }
      })();`;
    const r = spawnSync(process.execPath, ['-e', script, ...cases.map((c) => fileOf(c.name))], { encoding: 'utf8', timeout: 120_000 });
    const results = r.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
    assert.equal(r.signal, null, `aborted after ${results.length} of ${cases.length} tokenizers ` +
      `(at '${cases[results.length]?.name}'): ${r.stderr.slice(0, 400)}`);
    assert.equal(r.status, 0, r.stderr);
    for (const [i, c] of cases.entries()) {
      const got = results[i];
      assert.equal(got.code, 'ERR_MODEL_FILES', `${c.name}: ${JSON.stringify(got)}`);
      assert.ok(got.message.includes(fileOf(c.name)), `${c.name}: the message names the file: ${got.message}`);
      assert.ok(got.message.includes(`at ${c.where}:`), `${c.name}: the message names ${c.where}: ${got.message}`);
      assert.match(got.message, c.what, c.name);
    }
  });
});

describe('valid tokenizer.json files', () => {
  it('pass the checks and load with the library\'s own output: every fixture tokenizer', async () => {
    const files = [DEMO_TOKENIZER, ...fs.readdirSync(FIXTURES).map((d) => path.join(FIXTURES, d, 'tokenizer.json')).filter((f) => fs.existsSync(f))];
    assert.ok(files.length >= 10);
    for (const file of files) {
      assert.equal(tokenizerJsonProblem(JSON.parse(fs.readFileSync(file, 'utf8'))), null, file);
      const tokenizer = await M3Tokenizer.load(file);
      const library = Tokenizer.fromFile(file);
      library.setTruncation(64);
      const got = await tokenizer.encode(PROBE_TEXTS, 64);
      for (const [i, text] of PROBE_TEXTS.entries()) {
        assert.deepEqual(Array.from(got.ids.subarray(got.offsets[i], got.offsets[i + 1])), (await library.encode(text)).getIds(), `${file}: ${JSON.stringify(text)}`);
      }
    }
  });

  it('pass the checks and load with the library\'s own output: a Precompiled normalizer', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tokenizer-'));
    try {
      const charsmap = buildCharsmap([['Ａ', 'A'], ['ｂ', 'b'], ['ｃ', 'c'], ['ﬁ', 'fi'], ['e\u0301', 'é'], ['\u00a0', ' '], ['™', 'TM'], ['\u00ad', '']]);
      assert.equal(charsmapProblem(charsmap), null);
      const file = path.join(dir, 'tokenizer.json');
      fs.writeFileSync(file, JSON.stringify(withCharsmap(charsmap)));
      const tokenizer = await M3Tokenizer.load(file);
      const library = Tokenizer.fromFile(file);
      const texts = [...PROBE_TEXTS, 'Ａｂｃ ﬁne', 'Abc fine', '\u00adsoft\u00adhyphen™'];
      const got = await tokenizer.encode(texts, 512);
      const row = (i: number) => Array.from(got.ids.subarray(got.offsets[i], got.offsets[i + 1]));
      for (const [i, text] of texts.entries()) assert.deepEqual(row(i), (await library.encode(text)).getIds(), JSON.stringify(text));
      assert.deepEqual(row(texts.length - 3), row(texts.length - 2), 'the charsmap normalizes full-width letters and the ligature');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('checks a charsmap the size of XLM-R\'s in one linear pass', () => {
    const charsmap = buildCharsmap(nfkcRules());
    assert.ok(charsmap.length > 150_000, `a charsmap of ${charsmap.length} bytes`);
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const start = performance.now();
      assert.equal(charsmapProblem(charsmap), null);
      best = Math.min(best, performance.now() - start);
    }
    // A linear walk takes milliseconds; a quadratic one over 150 kB would take minutes, so the
    // bound only separates the two, with room for a loaded machine.
    assert.ok(best < 2000, `${best.toFixed(1)} ms for ${charsmap.length} bytes`);
  });
});

/** A deterministic random text of about `chars` UTF-16 units drawn from `pool`, without periods. */
function randomText(seed: number, chars: number, pool: readonly string[]): string {
  let s = seed * 2654435761 >>> 0 || 1;
  const next = () => ((s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0) / 0x100000000);
  const parts: string[] = [];
  let length = 0;
  while (length < chars) {
    const piece = pool[Math.floor(next() * pool.length)];
    parts.push(piece);
    length += piece.length;
  }
  return parts.join('');
}

const POOLS = {
  latin: ['the', 'of', 'model', 'retrieval', 'dense', 'sparse', 'x', 'q', 'z', 'BGE', 'M3', '8192', 'abc', 'ing', 'tion', 'who', 'how', '.', ','],
  cjk: ['東京', 'は', '日本', 'の', '首都', 'です', '。', '北', '京', '是', '中国', '的', '人', '我', '在', '有', 'を', 'に', 'が', '、'],
  emoji: ['👩🏽‍💻', '👨‍👩‍👧‍👦', '🦜', '🇯🇵', '❤️', '✌🏿', '🏳️‍🌈', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', 'の', 'は', 'a', 'b', '東京', '日本', 'で', 'す'],
  combining: ['e\u0301', 'a\u0308\u0323', 'o\u0302', 'n\u0303', 'x', 'क्षि', 'नम', 'ｶﾞ', 'ﾊﾟ', '\u1100\u1161\u11a8', '한국어', 'i', 'て\u3099'],
  mixed: ['Привет', 'мир', 'αβγ', 'مرحبا', 'नमस्ते', '東京', 'model', '8192', '①', 'Ａｂｃ', 'ﬁ', '<mask>', '</s>', '\u00a0', '\u3000', '\t', '\r\n', ' ', '-', 'ß', 'İ'],
} as const;

/** The library's own truncation of the whole text, from its untruncated ids. */
function truncated(ids: readonly number[], maxLength: number): number[] {
  return ids.length <= maxLength ? [...ids] : [...ids.slice(0, maxLength - 1), 2];
}

describe('long texts without word cuts', () => {
  let demo: M3Tokenizer;
  let demoLibrary: Tokenizer;
  let precompiled: M3Tokenizer;
  let precompiledLibrary: Tokenizer;
  let dir: string;
  before(async () => {
    demo = await M3Tokenizer.load(DEMO_TOKENIZER);
    demoLibrary = Tokenizer.fromFile(DEMO_TOKENIZER);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm3-tokenizer-'));
    const file = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(file, JSON.stringify(withCharsmap(buildCharsmap(nfkcRules()))));
    precompiled = await M3Tokenizer.load(file);
    precompiledLibrary = Tokenizer.fromFile(file);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const encodeOne = async (tokenizer: M3Tokenizer, text: string, maxLength: number) => Array.from((await tokenizer.encode([text], maxLength)).ids);

  it('are cut between grapheme clusters: never inside a surrogate pair, before a mark, modifier or joiner, or after a joiner', () => {
    const clusters = ['👨‍👩‍👧‍👦', '👩🏽‍💻', '✌🏿', '🇯🇵', '❤️', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', 'e\u0301\u0302\u0323', 'क्षि', '\u1100\u1161\u11a8', 'ｶﾞ', '\r\n', '🦜'];
    for (const cluster of clusters) {
      for (let shift = 0; shift <= cluster.length + 1; shift++) {
        const start = 1000 - shift;
        const text = `${'x'.repeat(start)}${cluster}${'y'.repeat(2000)}`;
        const { end, exact } = prefixCut(text, 1000);
        assert.equal(exact, false);
        assert.ok(end >= 1000 && end < 1000 + 64, `${JSON.stringify(cluster)} shift ${shift}: cut at ${end}`);
        assert.ok(end <= start || end >= start + cluster.length, `${JSON.stringify(cluster)} shift ${shift}: cut at ${end} splits the cluster at ${start}`);
      }
    }
    assert.deepEqual(prefixCut(`${'x'.repeat(1500)} ${'y'.repeat(2000)}`, 1000), { end: 1500, exact: true }, 'a word cut when there is one');
    assert.deepEqual(prefixCut('x'.repeat(1000), 1000), { end: 1000, exact: true }, 'the whole text');
  });

  it('give the whole text\'s ids on each fixture tokenizer, for every script and around the thresholds', async () => {
    for (const [name, tokenizer, library] of [['demo', demo, demoLibrary], ['Precompiled', precompiled, precompiledLibrary]] as const) {
      for (const [kind, pool] of Object.entries(POOLS)) {
        const long = randomText(kind.length * 7 + name.length, 70_000, pool);
        const whole = new Map<number, number[]>();
        for (const maxLength of [2, 64, 1100]) {
          const first = Math.max(16384, 16 * maxLength);
          for (const length of [first - 1, first + 1, first + 3, 2 * first + 1, 4 * first + 2]) {
            const text = long.slice(0, length);
            if (!whole.has(text.length)) whole.set(text.length, (await library.encode(text)).getIds());
            assert.deepEqual(await encodeOne(tokenizer, text, maxLength), truncated(whole.get(text.length)!, maxLength),
              `${name} ${kind} length ${text.length} maxLength ${maxLength}`);
          }
        }
      }
    }
  });

  it('still raise ERR_TOO_LONG without truncation, and grow past a run the vocabulary lacks', async () => {
    const text = randomText(3, 100_000, POOLS.cjk);
    await assert.rejects(demo.encode([text], 64, false),
      (e: { code?: string; message?: string }) => e.code === 'ERR_TOO_LONG' && /text 0 has at least \d+ tokens, more than the limit of 64/.test(e.message ?? ''));
    // 40,000 unknown characters fuse into one <unk>: the prefix must reach past them.
    const fused = `${'🦜'.repeat(20_000)}東京は日本の首都です`;
    const ids = (await demoLibrary.encode(fused)).getIds();
    assert.ok(ids.length < 64);
    assert.deepEqual(Array.from((await demo.encode([fused], 64, false)).ids), ids);
  });

  it('of several MB cost work in proportion to maxLength, with the whole text\'s ids', async () => {
    const MB4 = 4_000_000;
    for (const [kind, pool] of Object.entries(POOLS).filter(([k]) => ['latin', 'cjk', 'emoji'].includes(k))) {
      const text = randomText(kind.length, MB4, pool);
      for (const maxLength of [64, 2048]) {
        const bound = 8 * Math.max(16384, 16 * maxLength);
        const startChars = demo.charsTokenized;
        const ids = await encodeOne(demo, text, maxLength);
        const handed = demo.charsTokenized - startChars;
        assert.ok(handed <= bound, `${kind} maxLength ${maxLength}: ${handed} characters tokenized for a text of ${text.length}`);
        // The same work and ids for any text that begins the same way, however long.
        const doubled = demo.charsTokenized;
        assert.deepEqual(await encodeOne(demo, text + text, maxLength), ids, `${kind} maxLength ${maxLength}: twice the text`);
        assert.equal(demo.charsTokenized - doubled, handed);
        // The whole text's ids: for Latin the 4 MB text itself; CJK and emoji take the library
        // several seconds per MB, so their reference is a 600 K-character text that begins the same way.
        const reference = kind === 'latin' ? text : text.slice(0, 600_000);
        if (maxLength === 64) {
          const whole = (await demoLibrary.encode(reference)).getIds();
          for (const m of [64, 2048]) {
            assert.deepEqual(await encodeOne(demo, reference, m), truncated(whole, m), `${kind} reference of ${reference.length} maxLength ${m}`);
          }
        }
        assert.deepEqual(ids, await encodeOne(demo, reference, maxLength), `${kind} maxLength ${maxLength}: the 4 MB text and its reference`);
      }
    }
  });
});
