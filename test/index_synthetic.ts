/** Deterministic synthetic indexes for the persistence tests (no model needed). */
import { EncodeOutput, HybridIndex } from '../lib';

export const SYNTH_DIM = 64;

/** An encode()-shaped corpus of `count` documents, seeded. */
export function syntheticEncoded(seed: number, count: number, dim = SYNTH_DIM): EncodeOutput {
  let s = seed * 2654435761 >>> 0 || 1;
  const next = () => ((s ^= s << 13, s >>>= 0, s ^= s >>> 17, s ^= s << 5, s >>>= 0) / 0x100000000);
  const dense = new Float32Array(count * dim).map(() => next() - 0.5);
  const sOff = new Uint32Array(count + 1);
  const ids: number[] = [];
  const weights: number[] = [];
  const cOff = new Uint32Array(count + 1);
  for (let i = 0; i < count; i++) {
    let id = 4 + Math.floor(next() * 20);
    const n = 1 + Math.floor(next() * 12);
    for (let k = 0; k < n; k++) {
      ids.push(id);
      weights.push(next());
      id += 1 + Math.floor(next() * 50);
    }
    sOff[i + 1] = ids.length;
    cOff[i + 1] = cOff[i] + 1 + Math.floor(next() * 20);
  }
  const colbert = new Float32Array(cOff[count] * dim).map(() => next() - 0.5);
  return new EncodeOutput(count, dim, dense, { offsets: sOff, ids: Uint32Array.from(ids), weights: Float32Array.from(weights) },
    { offsets: cOff, data: colbert });
}

/** Index A (seed 1) or B (seed 2): different sizes and contents. */
export function buildSynthetic(seed: number, colbert: 'f32' | 'bf16' | 'i8' = 'f32'): HybridIndex {
  const count = seed === 1 ? 1500 : 1700;
  const index = HybridIndex.create({ dim: SYNTH_DIM, vocabSize: 1000, colbert, model: { dim: SYNTH_DIM, vocabSize: 1000, layout: 'synthetic' } });
  index.add(Array.from({ length: count }, (_, i) => (i % 2 ? `doc-${seed}-${i}` : seed * 100000 + i)), syntheticEncoded(seed, count));
  return index;
}
