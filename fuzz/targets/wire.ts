/**
 * wire: decodeWire on mutated binary encode results (encodeWire of the demo model's real
 * outputs). A decode either fails with a coded M3Error or gives a result whose offsets frame its
 * arrays; what it gives is then handed to the consumers of encode results (rows, lexical and
 * MaxSim scoring, an index), which must not crash on it either.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HybridIndex } from '../../lib/retrieval/hybrid_index';
import { lexicalScoresSync } from '../../lib/scoring/lexical';
import { maxSimSync } from '../../lib/scoring/maxsim';
import { BGEM3 } from '../../lib/engine/model';
import { OUTPUT_COLBERT, OUTPUT_DENSE, OUTPUT_SPARSE, type EncodeOutput } from '../../lib/engine/outputs';
import { decodeWire, encodeWire } from '../../lib/serve/wire';
import { applyByteOp, randomByteOps } from '../mutate';
import type { ByteOp, CaseResult, Recipe } from '../recipe';
import type { Random } from '../rng';
import { ROOT, RecipeError, fromRecipe, judgeError, misleading, type Target } from '../target';

const FIXTURE_VERSION = 1;
const HEADER_FIELDS = [8, 12, 16, 20, 24, 28];
const TEXTS = ['hello world', '東京は日本の首都です', 'a longer text about retrieval with lexical matching and several words'];

/** Which outputs each base holds, and of how many texts. */
export const WIRE_BASES: Record<string, { texts: string[]; dense: boolean; sparse: boolean; colbert: boolean }> = {
  all: { texts: TEXTS, dense: true, sparse: true, colbert: true },
  one: { texts: TEXTS.slice(0, 1), dense: true, sparse: true, colbert: true },
  empty: { texts: [], dense: true, sparse: true, colbert: true },
  dense: { texts: TEXTS, dense: true, sparse: false, colbert: false },
  sparse: { texts: TEXTS, dense: false, sparse: true, colbert: false },
  colbert: { texts: TEXTS, dense: false, sparse: false, colbert: true },
  'dense+sparse': { texts: TEXTS, dense: true, sparse: true, colbert: false },
};

function fixtureFile(fixtures: string, base: string): string {
  return path.join(fixtures, `wire-v${FIXTURE_VERSION}`, `${base}.bin`);
}

/** Offsets where the sections start, from the header of an unmutated encoding. */
function sectionStarts(bytes: Buffer): number[] {
  const count = bytes.readUInt32LE(12);
  const dim = bytes.readUInt32LE(16);
  const flags = bytes.readUInt32LE(20);
  const nnz = bytes.readUInt32LE(24);
  const starts = [32];
  let at = 32 + 4 * count;
  if (flags & OUTPUT_DENSE) starts.push(at), at += 4 * count * dim;
  if (flags & OUTPUT_SPARSE) starts.push(at, at + 4 * count), at += 4 * (count + 1) + 8 * nnz;
  if (flags & OUTPUT_COLBERT) starts.push(at, at + 4 * count);
  return starts;
}

/** What is wrong with the structure of a decoded result, if anything: offsets must frame the arrays. */
function structureProblem(out: EncodeOutput): string | undefined {
  const framed = (offsets: Uint32Array, end: number, what: string) => {
    if (offsets.length !== out.count + 1) return `${what} has ${offsets.length} offsets for ${out.count} texts`;
    if (offsets[0] !== 0) return `${what} offsets start at ${offsets[0]}, not 0`;
    for (let i = 0; i < out.count; i++) if (offsets[i + 1] < offsets[i]) return `${what} offsets decrease at text ${i}: ${offsets[i]} then ${offsets[i + 1]}`;
    if (offsets[out.count] !== end) return `${what} offsets end at ${offsets[out.count]}, but there are ${end} entries`;
    return undefined;
  };
  if (out.tokens && out.tokens.length !== out.count) return `${out.tokens.length} token counts for ${out.count} texts`;
  if (out.dense && out.dense.length !== out.count * out.dim) return `dense has ${out.dense.length} values, not ${out.count} x ${out.dim}`;
  if (out.sparse) {
    if (out.sparse.ids.length !== out.sparse.weights.length) return 'sparse ids and weights differ in length';
    const bad = framed(out.sparse.offsets, out.sparse.ids.length, 'sparse');
    if (bad) return bad;
  }
  if (out.colbert) {
    if (out.dim === 0 && out.colbert.data.length === 0 && out.colbert.offsets[out.count] !== 0) return `ColBERT claims ${out.colbert.offsets[out.count]} vectors of dim 0`;
    const rows = out.dim === 0 ? out.colbert.offsets[out.count] : out.colbert.data.length / out.dim;
    const bad = framed(out.colbert.offsets, rows, 'ColBERT');
    if (bad) return bad;
  }
  return undefined;
}

/** Uses a decoded result the way callers do. */
function consume(out: EncodeOutput): void {
  for (let i = 0; i < Math.min(out.count, 4); i++) out.row(i);
  if (out.count === 0) return;
  const first = out.row(0);
  if (out.sparse && first.sparse) lexicalScoresSync(first.sparse, out.sparse);
  if (out.colbert && first.colbert) maxSimSync(first.colbert, out.colbert, { dim: out.dim });
  if (out.dense && out.sparse) {
    const index = HybridIndex.create({ dim: out.dim, vocabSize: 250002, colbert: out.colbert ? 'f32' : false });
    index.add(Array.from({ length: out.count }, (_, i) => i), out);
    index.search(first, { k: 3, weights: out.colbert ? [1, 1, 1] : [1, 1, 0] });
  }
}

export const wireTarget: Target = {
  name: 'wire',
  caseTimeoutMs: 10_000,
  batchSize: 50,
  setupTimeoutMs: 20_000,

  async prepare(fixtures: string): Promise<string> {
    const digest = crypto.createHash('sha256');
    const missing = Object.keys(WIRE_BASES).filter((b) => !fs.existsSync(fixtureFile(fixtures, b)));
    if (missing.length) {
      const model = await BGEM3.load(path.join(ROOT, 'demo-model'), { threads: 1, releaseMemoryAfterMs: 0 });
      try {
        for (const name of missing) {
          const { texts, ...outputs } = WIRE_BASES[name];
          const file = fixtureFile(fixtures, name);
          fs.mkdirSync(path.dirname(file), { recursive: true });
          // Written aside and renamed: runs started at the same time may build the same fixture.
          const aside = `${file}.${process.pid}.tmp`;
          fs.writeFileSync(aside, encodeWire(await model.encode(texts, outputs)));
          fs.renameSync(aside, file);
        }
      } finally {
        await model.dispose();
      }
    }
    for (const base of Object.keys(WIRE_BASES)) digest.update(base).update(fs.readFileSync(fixtureFile(fixtures, base)));
    return digest.digest('hex').slice(0, 12);
  },

  generate(rng: Random, fixtures: string): Recipe {
    const base = rng.pick(Object.keys(WIRE_BASES));
    const bytes = fs.readFileSync(fixtureFile(fixtures, base));
    const count = bytes.readUInt32LE(12);
    const dim = bytes.readUInt32LE(16);
    const nnz = bytes.readUInt32LE(24);
    const rows = bytes.readUInt32LE(28);
    let ops: ByteOp[];
    if (rng.chance(0.5)) {
      const starts = sectionStarts(bytes);
      const field = rng.chance(0.6) ? rng.pick(HEADER_FIELDS) : rng.pick(starts) + 4 * rng.below(Math.max(1, count + 1));
      const near = (n: number) => [n - 1, n + 1, n * 2, n + 0x40000000];
      const value = rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 0xffffffff, 0x7fffffff, 0x40000000, 0x3fffffff, ...near(count), ...near(dim), ...near(nnz), ...near(rows)]);
      ops = [{ op: 'set-int', at: field, width: 4, value: String(value >>> 0) }];
      if (rng.chance(0.3)) ops.push(...randomByteOps(rng, bytes.length, { hot: starts }, 2));
    } else {
      ops = randomByteOps(rng, bytes.length, { hot: [...HEADER_FIELDS, ...sectionStarts(bytes)], floats: { start: 32, end: bytes.length } });
    }
    return { target: 'wire', base, ops };
  },

  async open(fixtures: string) {
    return {
      async run(recipe: Recipe): Promise<CaseResult> {
        const bytes = fromRecipe(() => {
          if (!WIRE_BASES[recipe.base]) throw new RecipeError(`wire has no base '${recipe.base}' (${Object.keys(WIRE_BASES).join(', ')})`);
          let mutated: Buffer = fs.readFileSync(fixtureFile(fixtures, recipe.base));
          for (const op of recipe.ops) mutated = applyByteOp(mutated, op as ByteOp);
          return mutated;
        });
        // At an odd offset of a larger buffer, as a slice of a network read can be.
        const data = Buffer.concat([Buffer.alloc(1), bytes]).subarray(1);
        const out = decodeWire(data);
        const problem = structureProblem(out);
        let consumed: CaseResult = { outcome: 'clean-ok' };
        try {
          consume(out);
        } catch (err) {
          consumed = judgeError(err);
          if (consumed.outcome !== 'clean-error') return consumed;
        }
        if (problem) return misleading(`decodeWire accepted it: ${problem}`);
        // What decoded must encode back to the same bytes.
        if (consumed.outcome === 'clean-ok' && !encodeWire(out).equals(bytes)) return misleading('decodeWire accepted it, but it does not encode back to the same bytes');
        return consumed;
      },
    };
  },
};

