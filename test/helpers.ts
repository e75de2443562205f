/** Shared test helpers: fixture paths, the golden file and closeness checks. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Repository root (dist/test/helpers.js -> ../..). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
export const DEMO_MODEL = path.join(ROOT, 'demo-model');

/** Every fixture model directory, by layout; all share the same weights and golden outputs. */
export const MODEL_DIRS: Record<string, string> = {
  'snapshot (.pt heads)': DEMO_MODEL,
  'snapshot (.safetensors heads)': path.join(FIXTURES, 'tiny-m3-safetensors'),
  'heads-baked': path.join(FIXTURES, 'tiny-m3-baked'),
  'heads-baked (alt names)': path.join(FIXTURES, 'tiny-m3-baked-alt'),
  // int32 input_ids / attention_mask, cast to int64 inside the graph (write_int32_inputs).
  'snapshot (int32 inputs)': path.join(FIXTURES, 'tiny-m3-int32-inputs'),
  // Attention exported as SDPA does (q and k pre-scaled, mask on the left) and with a Mul scale
  // (write_attention_variants); and one whose block 1 the fused attention must leave alone.
  'snapshot (SDPA-style attention)': path.join(FIXTURES, 'tiny-m3-attention-sdpa'),
  'snapshot (one block not fusable)': path.join(FIXTURES, 'tiny-m3-attention-partial'),
  // Layer 0's Linears as MatMul(x, Transpose(W)), layer 1's as Gemm(transB) on 2-D x (write_linear_variants).
  'snapshot (Transpose / Gemm dense layers)': path.join(FIXTURES, 'tiny-m3-linear-variants'),
};

export interface GoldenCase {
  name: string;
  text: string;
  maxLength: number | null;
  ids: number[];
  tokens: string[];
  dense: number[];
  sparse: Record<string, number>;
  colbert: number[][];
}

export interface GoldenScores {
  weights: [number, number, number];
  maxQueryLength: number;
  maxPassageLength: number;
  pairs: Array<[string, string]>;
  dense: number[];
  sparse: number[];
  colbert: number[];
  'sparse+dense': number[];
  'colbert+sparse+dense': number[];
}

export interface Golden {
  dim: number;
  defaultMaxLength: number;
  cases: GoldenCase[];
  scores: GoldenScores;
  scoresDefault: GoldenScores;
}

export const golden: Golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'golden.json'), 'utf8'));

export const TOLERANCE = 1e-5;

/** Asserts |actual[i] - expected[i]| <= tol for all i, naming the first offender. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = TOLERANCE): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    const diff = Math.abs(actual[i] - expected[i]);
    if (!(diff <= tol)) assert.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (|diff| ${diff} > ${tol})`);
  }
}

/** Asserts that a promise rejects with an M3Error of the given code (and message pattern). */
export async function rejectsWith(promise: Promise<unknown> | (() => unknown), code: string, message?: RegExp): Promise<void> {
  await assert.rejects(async () => (typeof promise === 'function' ? promise() : promise), (err: unknown) => {
    const e = err as { name?: string; code?: string; message?: string };
    assert.equal(e.name, 'M3Error', `expected an M3Error, got ${String(err)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    if (message) assert.match(e.message ?? '', message);
    return true;
  });
}

/** A text of many sentences, long enough to be truncated by any fixture model. */
export function longText(words = 400): string {
  const base = 'the model reads a long passage about retrieval and lexical matching with many words';
  const parts: string[] = [];
  for (let i = 0; parts.length < words; i++) parts.push(...base.split(' '));
  return parts.slice(0, words).join(' ');
}

/** softmax(scale * q · kt + mask) · v in float64, per (b, h, i). */
export function attentionReference(q: Float32Array, kt: Float32Array, v: Float32Array, mask: Float32Array | null,
  [B, H, Sq, Skv, d, dv]: number[], [sb, sh, sq]: number[], scale: number): Float64Array {
  const out = new Float64Array(B * H * Sq * dv);
  const s = new Float64Array(Skv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h;
      for (let i = 0; i < Sq; i++) {
        let max = -Infinity;
        for (let j = 0; j < Skv; j++) {
          let dot = 0;
          for (let k = 0; k < d; k++) dot += q[(bh * Sq + i) * d + k] * kt[(bh * d + k) * Skv + j];
          s[j] = dot * scale + (mask ? mask[b * sb + h * sh + i * sq + j] : 0);
          max = Math.max(max, s[j]);
        }
        let sum = 0;
        for (let j = 0; j < Skv; j++) { s[j] = Math.exp(s[j] - max); sum += s[j]; }
        for (let j = 0; j < Skv; j++) {
          for (let c = 0; c < dv; c++) out[(bh * Sq + i) * dv + c] += (s[j] / sum) * v[(bh * Skv + j) * dv + c];
        }
      }
    }
  }
  return out;
}

/**
 * MaxSim in float64, a plain loop: the oracle of the native kernels. Query rows `q` against each
 * document (rows offsets[i] .. offsets[i+1] of `d`): the mean over query rows of the best inner
 * product; an empty query or document scores 0.
 */
export function maxSimReference(q: Float32Array, d: Float32Array, offsets: Uint32Array, dim: number): number[] {
  const nq = q.length / dim;
  const scores: number[] = [];
  for (let i = 0; i + 1 < offsets.length; i++) {
    if (nq === 0 || offsets[i + 1] === offsets[i]) { scores.push(0); continue; }
    let total = 0;
    for (let a = 0; a < nq; a++) {
      let best = -Infinity;
      for (let j = offsets[i]; j < offsets[i + 1]; j++) {
        let dot = 0;
        for (let k = 0; k < dim; k++) dot += q[a * dim + k] * d[j * dim + k];
        best = Math.max(best, dot);
      }
      total += best;
    }
    scores.push(total / nq);
  }
  return scores;
}

/** The ColBERT score of one query-passage pair in float64 ({@link maxSimReference} of one document). */
export function colbertReference(query: Float32Array, passage: Float32Array, dim: number): number {
  return maxSimReference(query, passage, Uint32Array.of(0, passage.length / dim), dim)[0];
}
