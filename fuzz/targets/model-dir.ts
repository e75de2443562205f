/**
 * model-dir: a fixture model directory with one file (sometimes two) mutated, or replaced by
 * a directory, a FIFO or a link. The case loads it, encodes texts that reach every part of the
 * pipeline with all three outputs, and scores a pair: each step either works, with finite
 * outputs, or fails with a coded M3Error.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3 } from '../../lib/engine/model';
import type { EncodeOutput } from '../../lib/engine/outputs';
import { applyFileSteps, copyFixture } from '../apply';
import { safetensorsHeader, safetensorsTensors } from '../formats';
import { FILE_KINDS, INTERESTING_FLOATS, randomByteOps, randomJsonOps, type ByteHints, type JsonFocus } from '../mutate';
import type { CaseResult, JsonOp, Recipe, Step } from '../recipe';
import type { Random } from '../rng';
import { ROOT, RecipeError, firstNonFinite, fromRecipe, misleading, type Target, type TargetSession } from '../target';

/** The fixture directories a case starts from: .pt heads, .safetensors heads, heads baked into the graph. */
export const MODEL_BASES: Record<string, string> = {
  demo: path.join(ROOT, 'demo-model'),
  safetensors: path.join(ROOT, 'test', 'fixtures', 'tiny-m3-safetensors'),
  baked: path.join(ROOT, 'test', 'fixtures', 'tiny-m3-baked'),
};

/** Texts that reach every part of the pipeline: truncation, prefix tokenization, unknown pieces, special tokens. */
const TEXTS = [
  'hello world',
  'the model reads a long passage about retrieval and lexical matching with many words '.repeat(40),
  'x'.repeat(3000),
  '東京は日本の首都です。'.repeat(200),
  '👩🏽‍💻🎉🇯🇵 e\u0301 ﬁ Ａ\u200d',
  '',
  '<s> </s> <pad> <unk> <mask>',
];
const PAIRS: Array<[string, string]> = [['what is bge-m3?', 'BGE-M3 is an embedding model with dense, lexical and multi-vector outputs.'], ['東京', '👩🏽‍💻']];

/** Type names and tokens of tokenizer.json, for values that a parser takes for real ones. */
const TOKENIZER_WORDS = [
  'Sequence', 'NFC', 'NFD', 'NFKC', 'NFKD', 'Lowercase', 'Precompiled', 'Replace', 'Strip', 'StripAccents', 'Prepend', 'BertNormalizer',
  'Metaspace', 'WhitespaceSplit', 'Whitespace', 'ByteLevel', 'Split', 'Punctuation', 'Digits', 'BertPreTokenizer', 'UnicodeScripts',
  'TemplateProcessing', 'RobertaProcessing', 'BertProcessing', 'ByteLevel', 'Unigram', 'BPE', 'WordPiece', 'WordLevel',
  '<s>', '</s>', '<unk>', '<pad>', '<mask>', 'A', 'B', '$A', '$B', 'first', 'always', 'never', '▁', 'Isolated', 'Removed',
  'MergedWithPrevious', 'Contiguous', 'Regex', 'String',
];
const TOKENIZER_FOCUS: JsonFocus = [
  [['normalizer'], 3], [['pre_tokenizer'], 2], [['post_processor'], 3], [['post_processor', 'special_tokens'], 2], [['model', 'vocab'], 2],
  [['added_tokens'], 2], [['model'], 1], [['decoder'], 1], [[], 1], [['truncation'], 0.5], [['padding'], 0.5],
];
const CONFIG_WORDS = ['XLMRobertaModel', 'xlm-roberta', 'gelu', 'absolute', 'float32', 'bfloat16'];
const CONFIG_FOCUS: JsonFocus = [
  [[], 1], [['max_position_embeddings'], 2], [['vocab_size'], 2], [['num_attention_heads'], 2], [['pad_token_id'], 2], [['hidden_size'], 1],
];

/** The mutable files of each base, relative to it (sorted, so that a seed picks the same file everywhere). */
function filesOf(base: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(MODEL_BASES[base], rel)).sort()) {
      const child = path.join(rel, name);
      if (fs.statSync(path.join(MODEL_BASES[base], child)).isDirectory()) walk(child);
      else if (name !== 'README.md') out.push(child);
    }
  };
  walk('');
  return out;
}

const fileCache = new Map<string, Buffer>();
function fixtureBytes(base: string, file: string): Buffer {
  const key = `${base}/${file}`;
  let bytes = fileCache.get(key);
  if (!bytes) fileCache.set(key, bytes = fs.readFileSync(path.join(MODEL_BASES[base], file)));
  return bytes;
}
const jsonCache = new Map<string, unknown>();
function fixtureJson(base: string, file: string): unknown {
  const key = `${base}/${file}`;
  if (!jsonCache.has(key)) jsonCache.set(key, JSON.parse(fixtureBytes(base, file).toString('utf8')));
  return jsonCache.get(key);
}

/** Offsets of a zip's record signatures (the .pt heads are zip archives of a pickle and tensor data). */
function zipHotSpots(bytes: Buffer): number[] {
  const hot: number[] = [];
  for (let at = bytes.indexOf('PK'); at >= 0 && hot.length < 64; at = bytes.indexOf('PK', at + 2)) hot.push(at, at + 18, at + 22, at + 26, at + 28);
  return hot;
}

/** A Precompiled normalizer whose charsmap is random bytes (the library trusts its offsets). */
function randomPrecompiled(rng: Random): Record<string, unknown> {
  const bytes = rng.bytes(rng.pick([0, 3, 4, 8, 12, 64, 257]));
  // A plausible trie size in the first word, so the bytes reach the trie walk more often.
  if (bytes.length >= 4 && rng.chance(0.6)) bytes.writeUInt32LE(rng.pick([0, 4, 8, bytes.length - 4, 0xffffffff]) >>> 0, 0);
  return { type: 'Precompiled', precompiled_charsmap: bytes.toString('base64') };
}

/** Mutations aimed at what the tokenizers library is known to trust: charsmaps, template special tokens, ids. */
function tokenizerStructureOps(rng: Random, doc: Record<string, unknown>): JsonOp[] {
  const choice = rng.below(8);
  switch (choice) {
    case 0:
      return [{ op: 'json-set', path: ['normalizer'], value: randomPrecompiled(rng) }];
    case 1:
      return [{ op: 'json-set', path: ['normalizer'], value: { type: 'Sequence', normalizers: [randomPrecompiled(rng), doc.normalizer ?? null] } }];
    case 2:
      return [{ op: 'json-delete', path: ['post_processor', 'special_tokens', rng.pick(['</s>', '<s>'])] }];
    case 3:
      return [{ op: 'json-set', path: ['post_processor', 'special_tokens', rng.pick(['</s>', '<s>']), rng.pick(['ids', 'tokens'])],
        value: rng.pick<unknown>([[], [999999], [-1], [0, 2], ['<s>', '</s>'], null]) }];
    case 4:
      return [{ op: 'json-set', path: ['post_processor', rng.pick(['single', 'pair']), rng.below(3), rng.pick(['SpecialToken', 'Sequence'])],
        value: rng.pick<unknown>([{ id: '<nope>', type_id: 0 }, { id: 'C', type_id: 0 }, { id: '</s>', type_id: 4294967296 }, null]) }];
    case 5:
      return [{ op: 'json-set', path: ['added_tokens', rng.below(8), 'id'], value: rng.pick([838, 999999, -1, 2 ** 32, 0.5, 1]) }];
    case 6: {
      // Very long pieces: the library builds (and later drops) a trie as deep as a piece's bytes.
      const piece = { $repeat: rng.pick(['a', '▁a', '東', '\ufffd']), count: rng.pick([1000, 100_000, 300_000]) };
      return [{ op: 'json-set', path: rng.chance(0.7) ? ['model', 'vocab', rng.below(838), 0] : ['added_tokens', rng.below(5), 'content'], value: piece }];
    }
    default:
      return [{ op: 'json-set', path: ['model', rng.pick(['unk_id', 'byte_fallback'])], value: rng.pick<unknown>([null, 838, 999999, -1, 0.5, 'x', true]) }];
  }
}

function generateFileSteps(rng: Random, base: string, file: string): Step[] {
  const bytes = fixtureBytes(base, file);
  const onFile = (ops: Array<Step>) => ops.map((op) => ({ ...op, file }));
  if (file.endsWith('.json')) {
    const doc = fixtureJson(base, file);
    if (rng.chance(0.2)) return onFile(randomByteOps(rng, bytes.length));
    if (file === 'tokenizer.json') {
      if (rng.chance(0.35)) return onFile(tokenizerStructureOps(rng, doc as Record<string, unknown>));
      return onFile(randomJsonOps(rng, doc, TOKENIZER_FOCUS, TOKENIZER_WORDS));
    }
    return onFile(randomJsonOps(rng, doc, CONFIG_FOCUS, CONFIG_WORDS));
  }
  if (file.endsWith('.safetensors')) {
    const roll = rng.next();
    const tensors = safetensorsTensors(bytes);
    if (roll < 0.3 && tensors.length) {
      return onFile([{ op: 'safetensors-value', tensor: rng.pick(tensors), index: rng.below(64), value: rng.pick(INTERESTING_FLOATS) }]);
    }
    if (roll < 0.6) {
      const header = safetensorsHeader(bytes) ?? {};
      return onFile([{ op: 'safetensors-header', ops: randomJsonOps(rng, header, [[[], 1]], ['F32', 'F16', 'BF16', 'I64', 'U8', 'weight', 'bias']) }]);
    }
    return onFile(randomByteOps(rng, bytes.length, { hot: [0, 8] }));
  }
  if (file.endsWith('.onnx_data')) {
    const hints: ByteHints = { floats: { start: 0, end: bytes.length } };
    return onFile(rng.chance(0.5) ? [{ op: 'set-f32', at: 4 * rng.below(bytes.length / 4), value: rng.pick(INTERESTING_FLOATS) }] : randomByteOps(rng, bytes.length, hints));
  }
  if (file.endsWith('.pt')) return onFile(randomByteOps(rng, bytes.length, { hot: zipHotSpots(bytes) }));
  return onFile(randomByteOps(rng, bytes.length));
}

function pickFile(rng: Random, files: string[]): string {
  return rng.weighted(files.map((f) => [f, f === 'tokenizer.json' ? 6 : f === 'config.json' ? 4 : /linear/.test(f) ? 2 : 2.5] as const));
}

function checkLayout(out: EncodeOutput, texts: number, what: string): CaseResult | undefined {
  if (out.count !== texts) return misleading(`${what} gave ${out.count} rows for ${texts} texts`);
  if (out.dense) {
    if (out.dense.length !== out.count * out.dim) return misleading(`${what}: dense has ${out.dense.length} values, not ${out.count} x ${out.dim}`);
    const bad = firstNonFinite(out.dense);
    if (bad >= 0) return misleading(`${what}: dense value ${bad} is ${out.dense[bad]}`);
  }
  if (out.sparse) {
    const { offsets, ids, weights } = out.sparse;
    if (offsets[0] !== 0 || offsets[out.count] !== ids.length || ids.length !== weights.length) return misleading(`${what}: sparse offsets do not frame the ids`);
    const bad = firstNonFinite(weights);
    if (bad >= 0) return misleading(`${what}: sparse weight ${bad} is ${weights[bad]}`);
  }
  if (out.colbert) {
    const { offsets, data } = out.colbert;
    if (offsets[0] !== 0 || offsets[out.count] * out.dim !== data.length) return misleading(`${what}: ColBERT offsets do not frame the vectors`);
    const bad = firstNonFinite(data);
    if (bad >= 0) return misleading(`${what}: ColBERT value ${bad} is ${data[bad]}`);
  }
  return undefined;
}

export const modelDirTarget: Target = {
  name: 'model-dir',
  caseTimeoutMs: 20_000,
  batchSize: 20,
  setupTimeoutMs: 30_000,

  generate(rng: Random): Recipe {
    const base = rng.weighted([['demo', 4.5], ['safetensors', 3.5], ['baked', 2]] as const);
    const files = filesOf(base);
    if (rng.chance(0.05)) {
      const file = rng.chance(0.15) ? (base === 'baked' ? 'model.onnx' : 'onnx') : rng.pick(files);
      return { target: 'model-dir', base, ops: [{ op: 'replace-with', kind: rng.pick(FILE_KINDS), file }] };
    }
    const ops = generateFileSteps(rng, base, pickFile(rng, files));
    if (rng.chance(0.1)) ops.push(...generateFileSteps(rng, base, pickFile(rng, files)));
    return { target: 'model-dir', base, ops };
  },

  async open(): Promise<TargetSession> {
    return {
      async run(recipe: Recipe, scratch: string): Promise<CaseResult> {
        const dir = path.join(scratch, 'model');
        fromRecipe(() => {
          const from = MODEL_BASES[recipe.base];
          if (!from) throw new RecipeError(`model-dir has no base '${recipe.base}' (${Object.keys(MODEL_BASES).join(', ')})`);
          copyFixture(from, dir);
          applyFileSteps(dir, recipe.ops, scratch);
        });
        const model = await BGEM3.load(dir, { threads: 1, releaseMemoryAfterMs: 0 });
        try {
          const out = await model.encode(TEXTS, { dense: true, sparse: true, colbert: true });
          const wrong = checkLayout(out, TEXTS.length, 'encode');
          if (wrong) return wrong;
          if (out.sparse) {
            const vocab = model.info().vocabSize;
            const outside = out.sparse.ids.findIndex((id) => id >= vocab);
            if (outside >= 0) return misleading(`encode: sparse id ${out.sparse.ids[outside]} is outside the vocabulary of ${vocab}`);
          }
          const scores = await model.computeScore(PAIRS);
          for (const [name, values] of Object.entries(scores)) {
            const bad = firstNonFinite(values as ArrayLike<number>);
            if (bad >= 0) return misleading(`computeScore: ${name}[${bad}] is ${(values as ArrayLike<number>)[bad]}`);
          }
          return { outcome: 'clean-ok' };
        } finally {
          await model.dispose();
        }
      },
    };
  },
};
