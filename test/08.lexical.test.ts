/**
 * Lexical scores (one query against many documents): every kernel tier against the sorted-merge
 * oracle and a float64 JS reference on random shapes, thread-count and sync/async invariance,
 * every validation rule, the single-pair lexicalScore, and real encode() output.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, capabilities, lexicalScore, lexicalScores, lexicalScoresSync } from '../lib';
import type { LexicalKernel, SparseRow, SparseVectors } from '../lib';
import type { IsaTierName } from '../lib/addon/native';
import { mulberry32 } from '../lib/base/rng';
import { DEMO_MODEL, rejectsWith } from './helpers';

const ORDER: IsaTierName[] = ['serial', 'avx2', 'avx512'];
const DETECTED = capabilities().detected;
/** Every tier the CPU has, and the AVX-512 table kernel alone (its tier may prefer intersection). */
const TIERS: LexicalKernel[] = [...ORDER.slice(0, ORDER.indexOf(DETECTED) + 1), ...(DETECTED === 'avx512' ? ['avx512-gather' as const] : [])];
const KERNELS: LexicalKernel[] = [...TIERS, 'merge'];
const BGE_VOCAB = 250002;

/** `n` distinct ids below `vocab`, ascending; weights in [-1, 1) with some exact zeros. */
function randomRow(n: number, vocab: number, random: () => number): { ids: number[]; weights: number[] } {
  const count = Math.min(n, vocab);
  const seen = new Set<number>();
  // Half the rows crowd the low ids (as frequent tokens do), so rows share many ids.
  const span = random() < 0.5 ? Math.min(vocab, Math.max(count * 2, 64)) : vocab;
  while (seen.size < count) seen.add(Math.floor(random() * span));
  const ids = [...seen].sort((a, b) => a - b);
  return { ids, weights: ids.map(() => (random() < 0.1 ? 0 : random() * 2 - 1)) };
}

/**
 * Typed arrays placed at an odd element offset inside a larger buffer, so rows start at every
 * alignment and the kernels' loads are unaligned.
 */
function placed<T extends Uint32Array | Float32Array>(make: (n: number) => T, values: number[], shift: number): T {
  const backing = make(values.length + shift + 3);
  backing.fill(0xdead as never);
  const view = backing.subarray(shift, shift + values.length) as T;
  view.set(values);
  return view;
}

interface Case {
  query: SparseRow;
  docs: SparseVectors;
  vocab: number;
}

/** Lengths that hit every vector tail (0, 1, lane widths and their neighbours) plus random ones. */
const EDGE_LENGTHS = [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 100, 255, 256, 300];

function randomCase(seed: number, vocab: number, docCount: number, qLen: number): Case {
  const random = mulberry32(seed);
  const q = randomRow(qLen, vocab, random);
  const offsets = [0];
  const ids: number[] = [];
  const weights: number[] = [];
  for (let d = 0; d < docCount; d++) {
    const n = d < EDGE_LENGTHS.length && random() < 0.7 ? EDGE_LENGTHS[d] : Math.floor(random() * 301);
    const row = randomRow(n, vocab, random);
    // Mix in the query's ids so that matches are common, not only chance collisions.
    for (let k = 0; k < q.ids.length; k++) {
      if (random() < 0.3 && !row.ids.includes(q.ids[k]) && row.ids.length < vocab) {
        row.ids.push(q.ids[k]);
        row.weights.push(random());
      }
    }
    const order = row.ids.map((_, k) => k).sort((a, b) => row.ids[a] - row.ids[b]);
    ids.push(...order.map((k) => row.ids[k]));
    weights.push(...order.map((k) => row.weights[k]));
    offsets.push(ids.length);
  }
  const shift = seed % 5;
  return {
    query: { ids: placed((n) => new Uint32Array(n), q.ids, shift + 1), weights: placed((n) => new Float32Array(n), q.weights, shift) },
    docs: {
      offsets: placed((n) => new Uint32Array(n), offsets, shift + 2),
      ids: placed((n) => new Uint32Array(n), ids, shift),
      weights: placed((n) => new Float32Array(n), weights, (shift + 3) % 5),
    },
    vocab,
  };
}

/** The float64 reference: per document, the exact products summed in ascending id order. */
function reference(c: Case): { scores: Float64Array; magnitude: Float64Array } {
  const weightOf = new Map<number, number>();
  c.query.ids.forEach((id, k) => weightOf.set(id, c.query.weights[k]));
  const count = c.docs.offsets.length - 1;
  const scores = new Float64Array(count);
  const magnitude = new Float64Array(count);
  for (let d = 0; d < count; d++) {
    for (let j = c.docs.offsets[d]; j < c.docs.offsets[d + 1]; j++) {
      const w = weightOf.get(c.docs.ids[j]);
      if (w === undefined) continue;
      const p = w * c.docs.weights[j];
      scores[d] += p;
      magnitude[d] += Math.abs(p);
    }
  }
  return { scores, magnitude };
}

function assertNear(actual: Float32Array, ref: { scores: Float64Array; magnitude: Float64Array }, what: string): void {
  assert.equal(actual.length, ref.scores.length, `${what}: length`);
  for (let d = 0; d < actual.length; d++) {
    // The kernels sum exact double products and round once: within 1e-6 of the sum of |terms|.
    const tol = 1e-6 * ref.magnitude[d] + 1e-30;
    const diff = Math.abs(actual[d] - ref.scores[d]);
    if (!(diff <= tol)) assert.fail(`${what}: doc ${d}: ${actual[d]} vs ${ref.scores[d]} (|diff| ${diff} > ${tol})`);
  }
}

/** Query lengths around the vector widths, and past the 64 ids that intersection takes. */
const QUERY_LENGTHS = [0, 1, 15, 16, 17, 40, 64, 65, 100, 300];
const CASES: Array<[string, Case]> = [];
for (const qLen of QUERY_LENGTHS) {
  for (const vocab of [50, BGE_VOCAB]) {
    const seed = CASES.length + 1;
    CASES.push([`query ${qLen} ids, vocab ${vocab}, seed ${seed}`, randomCase(seed, vocab, 3 + (seed * 7) % 40, qLen)]);
  }
}

describe('lexicalScores on every tier', () => {
  it('the merge oracle equals the float64 reference rounded once to float32', () => {
    for (const [name, c] of CASES) {
      const oracle = lexicalScoresSync(c.query, c.docs, { vocabSize: c.vocab, isa: 'merge' });
      const ref = reference(c);
      for (let d = 0; d < oracle.length; d++) {
        assert.equal(oracle[d], Math.fround(ref.scores[d]), `${name}: doc ${d}`);
      }
    }
  });

  for (const isa of TIERS) {
    it(`${isa}: matches the oracle and the float64 reference on random shapes`, () => {
      for (const [name, c] of CASES) {
        const got = lexicalScoresSync(c.query, c.docs, { vocabSize: c.vocab, isa });
        const oracle = lexicalScoresSync(c.query, c.docs, { vocabSize: c.vocab, isa: 'merge' });
        const ref = reference(c);
        assertNear(got, ref, `${isa} ${name}`);
        for (let d = 0; d < got.length; d++) {
          // The serial tier adds in the oracle's order, so it must match exactly; the vector
          // tiers add the same exact products in another order.
          if (isa === 'serial') assert.equal(got[d], oracle[d], `${name}: doc ${d}`);
          else assert.ok(Math.abs(got[d] - oracle[d]) <= 1e-6 * ref.magnitude[d], `${isa} ${name}: doc ${d}: ${got[d]} vs oracle ${oracle[d]}`);
        }
      }
    });
  }

  it('an empty query, empty documents and no documents score 0', () => {
    const docs = { offsets: Uint32Array.of(0, 0, 2, 2), ids: Uint32Array.of(3, 4), weights: Float32Array.of(1, 1) };
    const none = { ids: new Uint32Array(0), weights: new Float32Array(0) };
    const one = { ids: Uint32Array.of(4), weights: Float32Array.of(0.5) };
    for (const isa of KERNELS) {
      assert.deepEqual([...lexicalScoresSync(none, docs, { isa })], [0, 0, 0], isa);
      assert.deepEqual([...lexicalScoresSync(one, docs, { isa })], [0, 0.5, 0], isa);
      const empty = { offsets: Uint32Array.of(0), ids: new Uint32Array(0), weights: new Float32Array(0) };
      assert.equal(lexicalScoresSync(one, empty, { isa }).length, 0, isa);
    }
  });

  it('the largest id of a vocabulary is scored; ids may fall across rows', () => {
    const query = { ids: Uint32Array.of(0, BGE_VOCAB - 1), weights: Float32Array.of(2, 3) };
    // Row 1 starts below row 0's last id: rows are independent.
    const docs = { offsets: Uint32Array.of(0, 2, 4), ids: Uint32Array.of(7, BGE_VOCAB - 1, 0, 1), weights: Float32Array.of(1, 1, 1, 1) };
    for (const isa of KERNELS) assert.deepEqual([...lexicalScoresSync(query, docs, { isa })], [3, 2], isa);
  });
});

describe('lexicalScores threads and async', () => {
  // Enough documents for several work blocks, so two threads really split them.
  const big = randomCase(99, BGE_VOCAB, 3500, 40);
  const bigLong = randomCase(98, BGE_VOCAB, 2100, 90);

  it('1, 2 and 3 threads give bit-identical scores on every tier', () => {
    for (const c of [big, bigLong]) {
      for (const isa of KERNELS) {
        const one = lexicalScoresSync(c.query, c.docs, { isa, threads: 1 });
        assert.deepEqual(lexicalScoresSync(c.query, c.docs, { isa, threads: 2 }), one, `${isa}, 2 threads`);
        assert.deepEqual(lexicalScoresSync(c.query, c.docs, { isa, threads: 3 }), one, `${isa}, 3 threads`);
      }
    }
    assertNear(lexicalScoresSync(big.query, big.docs, { threads: 2 }), reference(big), 'default tier, 2 threads');
  });

  it('async equals sync, also with concurrent calls sharing the query tables', async () => {
    const queries = [big.query, CASES[1][1].query, CASES[3][1].query, { ids: new Uint32Array(0), weights: new Float32Array(0) }];
    const results = await Promise.all(queries.map((query, k) => lexicalScores(query, big.docs, { threads: 1 + (k % 2) })));
    queries.forEach((query, k) => {
      assert.deepEqual(results[k], lexicalScoresSync(query, big.docs), `query ${k}`);
    });
  });

  it('a call leaves no trace of its query for the next one, even when it fails', () => {
    const docs = { offsets: Uint32Array.of(0, 3), ids: Uint32Array.of(1, 2, 3), weights: Float32Array.of(1, 1, 1) };
    const broken = { offsets: Uint32Array.of(0, 3, 5), ids: Uint32Array.of(1, 2, 3, 9, 8), weights: new Float32Array(5) };
    for (const isa of TIERS) {
      assert.deepEqual([...lexicalScoresSync({ ids: Uint32Array.of(1, 2), weights: Float32Array.of(5, 7) }, docs, { isa })], [12]);
      assert.throws(() => lexicalScoresSync({ ids: Uint32Array.of(2, 3), weights: Float32Array.of(1, 1) }, broken, { isa }));
      assert.deepEqual([...lexicalScoresSync({ ids: Uint32Array.of(3), weights: Float32Array.of(0.5) }, docs, { isa })], [0.5], isa);
    }
  });
});

/** Rows violating one rule each, and what the message must say. */
function invalidDocs(): Array<[string, SparseVectors, RegExp]> {
  const docs = (offsets: number[], ids: number[], weights?: number[]) => ({
    offsets: Uint32Array.from(offsets), ids: Uint32Array.from(ids), weights: Float32Array.from(weights ?? ids.map(() => 1)),
  });
  const long = Array.from({ length: 40 }, (_, k) => k * 3);
  const swapped = [...long];
  [swapped[20], swapped[21]] = [swapped[21], swapped[20]];
  const nanAt = long.map((_, k) => (k === 33 ? NaN : 1));
  return [
    ['offsets not starting at 0', docs([1, 2], [1, 2]), /offsets\[0\] is 1; offsets must start at 0/],
    ['decreasing offsets', docs([0, 2, 1, 3], [1, 2, 3]), /offsets\[2\] = 1 is below offsets\[1\] = 2; offsets must not decrease/],
    ['offsets ending short of the ids', docs([0, 2], [1, 2, 3]), /last offset is 2 but ids and weights hold 3 entries/],
    ['offsets running past the ids', docs([0, 4], [1, 2, 3]), /last offset is 4 but ids and weights hold 3 entries/],
    ['descending ids', docs([0, 1, 3], [5, 9, 4]), /docs row 1, position 1 \(ids\[2\]\): id 4 follows 9; the ids of a row must be ascending and unique/],
    ['a duplicate id', docs([0, 3], [4, 4, 5]), /docs row 0, position 1 \(ids\[1\]\): id 4 follows 4/],
    ['descending ids in a vector body', docs([0, 40], swapped), /docs row 0, position 21 \(ids\[21\]\): id 60 follows 63/],
    ['an id beyond the vocabulary', docs([0, 2], [1, BGE_VOCAB]), /docs row 0, position 1 \(ids\[1\]\): id 250002 is not below the vocabulary size 250002; pass the model's vocabulary size as the vocabSize option/],
    ['an id of 2^32 - 1', docs([0, 1], [0xffffffff]), /id 4294967295 is not below the vocabulary size/],
    ['a NaN weight', docs([0, 40], long, nanAt), /docs row 0, position 33 \(weights\[33\]\): the weight is NaN; weights must be finite/],
    ['an infinite weight', docs([0, 1, 2], [1, 2], [1, -Infinity]), /docs row 1, position 0 \(weights\[1\]\): the weight is -Infinity/],
  ];
}

describe('lexicalScores validation', () => {
  const query = { ids: Uint32Array.of(1, 4, 60), weights: Float32Array.of(1, 1, 1) };

  for (const [name, docs, message] of invalidDocs()) {
    it(`rejects ${name} on every tier, sync and async`, async () => {
      for (const isa of KERNELS) {
        await rejectsWith(() => lexicalScoresSync(query, docs, { isa }), 'ERR_INPUT', message);
      }
      await rejectsWith(lexicalScores(query, docs, { threads: 2 }), 'ERR_INPUT', message);
    });
  }

  for (const qLen of [17, 90]) {
    it(`names the first broken document even when threads find a later one first (query of ${qLen} ids)`, async () => {
      const c = randomCase(7, BGE_VOCAB, 3000, qLen);
      const ids = c.docs.ids.slice();
      const weights = c.docs.weights.slice();
      const length = (d: number) => c.docs.offsets[d + 1] - c.docs.offsets[d];
      // One error late in the last work block, one early in the first: the first in order wins.
      let earlyRow = 900;
      while (length(earlyRow) < 1) earlyRow++;
      let lateRow = 2900;
      while (length(lateRow) < 3) lateRow++;
      weights[c.docs.offsets[lateRow] + 1] = Infinity;
      ids[c.docs.offsets[earlyRow]] = BGE_VOCAB + 5;
      const docs = { offsets: c.docs.offsets, ids, weights };
      for (const isa of KERNELS) {
        await rejectsWith(() => lexicalScoresSync(c.query, docs, { isa, threads: 2 }), 'ERR_INPUT',
          new RegExp(`docs row ${earlyRow}, position 0 .*id 250007`));
      }
    });
  }

  const docs = { offsets: Uint32Array.of(0, 2), ids: Uint32Array.of(1, 4), weights: Float32Array.of(1, 1) };
  const badQueries: Array<[string, SparseRow, RegExp]> = [
    ['descending ids', { ids: Uint32Array.of(4, 1), weights: Float32Array.of(1, 1) }, /query, position 1 \(ids\[1\]\): id 1 follows 4; the ids of a row must be ascending and unique/],
    ['a duplicate id', { ids: Uint32Array.of(4, 4), weights: Float32Array.of(1, 1) }, /query, position 1 .*id 4 follows 4/],
    ['an id beyond the vocabulary', { ids: Uint32Array.of(10), weights: Float32Array.of(1) }, /query, position 0 \(ids\[0\]\): id 10 is not below the vocabulary size 10; pass the model's vocabulary size as the vocabSize option/],
    ['a NaN weight', { ids: Uint32Array.of(1, 2), weights: Float32Array.of(1, NaN) }, /query, position 1 \(weights\[1\]\): the weight is NaN; weights must be finite/],
    ['an infinite weight', { ids: Uint32Array.of(1), weights: Float32Array.of(Infinity) }, /the weight is Infinity/],
  ];
  for (const [name, query, message] of badQueries) {
    it(`rejects a query with ${name}`, async () => {
      for (const isa of KERNELS) await rejectsWith(() => lexicalScoresSync(query, docs, { isa, vocabSize: 10 }), 'ERR_INPUT', message);
      await rejectsWith(lexicalScores(query, docs, { vocabSize: 10 }), 'ERR_INPUT', message);
    });
  }

  const badArgs: Array<[string, () => unknown, RegExp]> = [
    ['a plain array of ids', () => lexicalScoresSync({ ids: [1] as never, weights: Float32Array.of(1) }, docs), /Expected \{ ids: Uint32Array, weights: Float32Array \}.* for query/],
    ['query lengths that differ', () => lexicalScoresSync({ ids: Uint32Array.of(1, 2), weights: Float32Array.of(1) }, docs), /a Float32Array of length 2 \(as query\.ids\) for query\.weights/],
    ['Float64Array weights in docs', () => lexicalScoresSync(query, { ...docs, weights: Float64Array.of(1, 1) as never }), /for docs but received/],
    ['docs lengths that differ', () => lexicalScoresSync(query, { ...docs, weights: Float32Array.of(1) }), /a Float32Array of length 2 \(as docs\.ids\) for docs\.weights/],
    ['empty offsets', () => lexicalScoresSync(query, { ...docs, offsets: new Uint32Array(0) }), /count \+ 1 entries .* for docs\.offsets/],
    ['null docs', () => lexicalScoresSync(query, null as never), /for docs but received null/],
    ['threads 0', () => lexicalScoresSync(query, docs, { threads: 0 }), /integer in \[1, 256\] for threads but received number 0/],
    ['threads 1.5', () => lexicalScoresSync(query, docs, { threads: 1.5 }), /for threads/],
    ['threads 257', () => lexicalScoresSync(query, docs, { threads: 257 }), /for threads/],
    ['vocabSize 0', () => lexicalScoresSync(query, docs, { vocabSize: 0 }), /for vocabSize but received number 0/],
    ['a fractional vocabSize', () => lexicalScoresSync(query, docs, { vocabSize: 10.5 }), /for vocabSize/],
    ['a vocabSize of 2^31 + 1', () => lexicalScoresSync(query, docs, { vocabSize: 2 ** 31 + 1 }), /integer in \[1, 2147483648\] for vocabSize/],
    ['an unknown isa', () => lexicalScoresSync(query, docs, { isa: 'sse' as never }), /'serial', 'avx2', 'avx512', 'avx512-gather' or 'merge' for isa/],
  ];
  for (const [name, call, message] of badArgs) {
    it(`rejects ${name}`, async () => {
      await rejectsWith(call, 'ERR_INPUT', message);
    });
  }

  it('the async call rejects argument errors too', async () => {
    await rejectsWith(lexicalScores(query, docs, { threads: -1 }), 'ERR_INPUT', /threads/);
  });

  it('a vocabSize other than the default is honoured', () => {
    const small = { ids: Uint32Array.of(1, 4), weights: Float32Array.of(2, 3) };
    assert.deepEqual([...lexicalScoresSync(small, docs, { vocabSize: 5 })], [5]);
    assert.throws(() => lexicalScoresSync(small, docs, { vocabSize: 4 }), /vocabulary size 4/);
  });
});

describe('lexicalScore (one pair)', () => {
  it('matches the float64 reference on random pairs', () => {
    for (const [name, c] of CASES) {
      const ref = reference(c);
      for (let d = 0; d + 1 < c.docs.offsets.length; d++) {
        const row = { ids: c.docs.ids.subarray(c.docs.offsets[d], c.docs.offsets[d + 1]), weights: c.docs.weights.subarray(c.docs.offsets[d], c.docs.offsets[d + 1]) };
        assert.equal(lexicalScore(c.query, row), ref.scores[d], `${name}: doc ${d}`);
        assert.equal(lexicalScore(row, c.query), ref.scores[d], `${name}: doc ${d}, swapped`);
      }
    }
  });
});

describe('lexicalScores on encode() output', () => {
  it('equals lexicalScore for every pair', async () => {
    const config = JSON.parse(fs.readFileSync(path.join(DEMO_MODEL, 'config.json'), 'utf8')) as { vocab_size: number };
    const model = await BGEM3.load(DEMO_MODEL);
    try {
      const out = await model.encode([
        'What is BGE-M3?',
        'BGE-M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.',
        'BM25 is a bag-of-words retrieval function that ranks documents by the query terms appearing in each.',
        'The quick brown fox jumps over the lazy dog.',
        'What is BGE-M3? BGE-M3 is a model.',
      ], { dense: false, sparse: true });
      const sparse = out.sparse!;
      for (let qi = 0; qi < out.count; qi++) {
        const query = out.row(qi).sparse!;
        const expected = Array.from({ length: out.count }, (_, d) => Math.fround(lexicalScore(query, out.row(d).sparse!)));
        assert.ok(expected.some((s, d) => d !== qi && s > 0), 'the texts share some tokens');
        assert.deepEqual([...lexicalScoresSync(query, sparse)], expected, `query ${qi}`);
        assert.deepEqual([...await lexicalScores(query, sparse, { vocabSize: config.vocab_size, threads: 2 })], expected, `query ${qi}, async`);
      }
    } finally {
      await model.dispose();
    }
  });
});
