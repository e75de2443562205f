/**
 * Output agreement between encoder engines: every engine of the encode benchmark records what it
 * computed on each workload (all texts' dense vectors and lexical weights, and the ColBERT rows
 * of the first COLBERT_SAMPLE texts), and each peer is compared with this package on all three
 * before its speed is compared. A peer that disagrees beyond the tolerances is left out of the
 * ratios, with the reason.
 */

/** ColBERT rows are recorded for this many texts per workload (the rest would make the files large). */
export const COLBERT_SAMPLE = 8;

/**
 * The largest difference allowed for an fp32 peer running the same weights: each dense and
 * ColBERT component (unit vectors) and each lexical weight. Different runtimes, thread counts
 * and summation orders stay near 1e-6; 1e-4 leaves room and still catches a wrong head.
 */
export const AGREEMENT_TOLERANCE = 1e-4;

/** What one engine computed on one workload, as written to JSON. */
export interface RecordedOutputs {
  dim: number;
  texts: number;
  /** Float32 little-endian, texts x dim, base64. */
  dense: string;
  /** Per text: token ids and their weights (absent for a dense-only engine). */
  sparse?: Array<[number[], number[]]>;
  /** The first COLBERT_SAMPLE texts: rows per text and their float32 rows, base64. */
  colbert?: { rows: number[]; data: string };
}

export interface EngineOutputs {
  dense: Float32Array[];
  sparse?: Array<Map<number, number>>;
  colbert?: Float32Array[];
}

const toBase64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  const out = new Float32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readFloatLE(4 * i);
  return out;
}

export function recordOutputs(o: EngineOutputs): RecordedOutputs {
  const dim = o.dense[0]?.length ?? 0;
  const dense = new Float32Array(o.dense.length * dim);
  o.dense.forEach((v, i) => dense.set(v, i * dim));
  const rec: RecordedOutputs = { dim, texts: o.dense.length, dense: toBase64(dense) };
  if (o.sparse) rec.sparse = o.sparse.map((m) => [[...m.keys()], [...m.values()]]);
  if (o.colbert) {
    const sample = o.colbert.slice(0, COLBERT_SAMPLE);
    const data = new Float32Array(sample.reduce((n, r) => n + r.length, 0));
    let at = 0;
    for (const r of sample) { data.set(r, at); at += r.length; }
    rec.colbert = { rows: sample.map((r) => r.length / dim), data: toBase64(data) };
  }
  return rec;
}

export interface Agreement {
  /** Largest differences per output; null where the peer does not compute that output. */
  dense: number;
  sparse: number | null;
  colbert: number | null;
  /** Empty when the peer agrees within AGREEMENT_TOLERANCE; else why not. */
  problem: string;
}

/** A peer's recorded outputs against this package's on the same workload. */
export function compareOutputs(ours: RecordedOutputs, peer: RecordedOutputs, tolerance = AGREEMENT_TOLERANCE): Agreement {
  const problems: string[] = [];
  if (ours.texts !== peer.texts || ours.dim !== peer.dim) {
    return { dense: Infinity, sparse: null, colbert: null, problem: `${peer.texts} texts of dim ${peer.dim}, not ${ours.texts} of dim ${ours.dim}` };
  }
  const maxDiff = (a: Float32Array, b: Float32Array) => {
    let worst = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i] - b[i]);
      worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
    }
    return worst;
  };
  const dense = maxDiff(fromBase64(ours.dense), fromBase64(peer.dense));
  if (!(dense <= tolerance)) problems.push(`dense differs by ${dense.toExponential(2)}`);
  let sparse: number | null = null;
  if (ours.sparse && peer.sparse) {
    sparse = 0;
    ours.sparse.forEach(([ids, weights], t) => {
      const theirs = new Map(peer.sparse![t][0].map((id, k) => [id, peer.sparse![t][1][k]]));
      const mine = new Map(ids.map((id, k) => [id, weights[k]]));
      for (const id of new Set([...mine.keys(), ...theirs.keys()])) sparse = Math.max(sparse!, Math.abs((mine.get(id) ?? 0) - (theirs.get(id) ?? 0)));
    });
    if (!(sparse <= tolerance)) problems.push(`lexical weights differ by ${sparse.toExponential(2)}`);
  }
  let colbert: number | null = null;
  if (ours.colbert && peer.colbert) {
    if (ours.colbert.rows.join() !== peer.colbert.rows.join()) {
      colbert = Infinity;
      problems.push(`ColBERT row counts ${peer.colbert.rows.join(',')} where this package has ${ours.colbert.rows.join(',')}`);
    } else {
      colbert = maxDiff(fromBase64(ours.colbert.data), fromBase64(peer.colbert.data));
      if (!(colbert <= tolerance)) problems.push(`ColBERT rows differ by ${colbert.toExponential(2)}`);
    }
  }
  return { dense, sparse, colbert, problem: problems.join('; ') };
}
