/**
 * Encoder workloads shared by every engine of the benchmark (this package and its peers), so
 * each one encodes exactly the same texts with the same truncation.
 *
 * - uniform-L: texts of more than L tokens truncated to L (every text is exactly L tokens);
 * - mixed: 4 to 300 words per text, shuffled, truncated at 512 tokens.
 */

import { mulberry32 } from '../lib/base/rng';

export interface Workload {
  name: string;
  texts: string[];
  maxLength: number;
}

const WORDS = ('the of and to in is a that for it as with was on be by this are from at or an which but not have has can more ' +
  'one all their they we you what how when where who why will would there retrieval model dense sparse lexical vector ' +
  'passage query document search index score language multilingual encoder token weight matching embedding granularity ' +
  'distillation knowledge training data corpus benchmark results performance system method approach large small').split(' ');

function words(n: number, next: () => number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(next() * WORDS.length)]);
  return out.join(' ');
}

/** Sizes: how many texts each workload has, by mode. */
export const COUNTS = {
  quick: { 32: 8, 128: 4, 512: 2, mixed: 8 },
  full: { 32: 256, 128: 64, 512: 16, mixed: 48 },
} as const;

/** `length` is capped by the model's positions (the tiny test model has 64). */
export function uniform(length: number, count: number, modelMaxLength: number, seed = length): Workload {
  const next = mulberry32(seed);
  // Every word is at least one token, so `length` words always reach `length` tokens.
  return {
    name: `uniform-${length}`, texts: Array.from({ length: count }, () => words(length, next)), maxLength: Math.min(length, modelMaxLength),
  };
}

export function mixed(count: number, modelMaxLength: number, seed = 99): Workload {
  const next = mulberry32(seed);
  const texts = Array.from({ length: count }, () => words(4 + Math.floor(next() * 297), next));
  for (let i = texts.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [texts[i], texts[j]] = [texts[j], texts[i]];
  }
  return { name: 'mixed', texts, maxLength: Math.min(512, modelMaxLength) };
}

export function workloads(mode: 'quick' | 'full', modelMaxLength: number, names?: string[]): Workload[] {
  const c = COUNTS[mode];
  const all = [uniform(32, c[32], modelMaxLength), uniform(128, c[128], modelMaxLength), uniform(512, c[512], modelMaxLength),
    mixed(c.mixed, modelMaxLength)];
  return names ? all.filter((w) => names.includes(w.name)) : all;
}
