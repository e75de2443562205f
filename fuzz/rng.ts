/**
 * The fuzzer's pseudo-random numbers. Every case draws from a generator seeded by (run seed,
 * target, case number) alone, so case n of a target is the same whatever ran before it, however
 * many child processes share the work and however long the run lasts.
 */

/** FNV-1a over the UTF-16 units of `text`, folded into a 32-bit seed. */
function hashText(text: string, start: number): number {
  let h = start >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

import { mulberry32 } from '../lib/base/rng';

/** A seeded generator (the package's mulberry32) with the draws the mutators need. */
export class Random {
  private readonly draw: () => number;

  constructor(seed: number) {
    this.draw = mulberry32(seed);
  }

  /** The generator of one case: independent of every other case of the run. */
  static forCase(seed: number, target: string, caseNumber: number): Random {
    return new Random(hashText(`${target}#${caseNumber}`, hashText(String(seed), 0x811c9dc5)));
  }

  /** A float in [0, 1). */
  next(): number {
    return this.draw();
  }

  /** An integer in [0, n); 0 when n <= 0. */
  below(n: number): number {
    return n <= 0 ? 0 : Math.floor(this.next() * n);
  }

  /** An integer in [min, max]. */
  between(min: number, max: number): number {
    return min + this.below(max - min + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(list: readonly T[]): T {
    if (list.length === 0) throw new RangeError('pick from an empty list');
    return list[this.below(list.length)];
  }

  /** One of `choices`, each as likely as its weight. */
  weighted<T>(choices: ReadonlyArray<readonly [T, number]>): T {
    const total = choices.reduce((sum, [, w]) => sum + w, 0);
    let at = this.next() * total;
    for (const [value, w] of choices) {
      if ((at -= w) < 0) return value;
    }
    return choices[choices.length - 1][0];
  }

  /** Small counts are the most useful (one op pinpoints a fault); larger ones still occur. */
  smallCount(max: number): number {
    let n = 1;
    while (n < max && this.chance(0.4)) n++;
    return n;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.below(256);
    return out;
  }
}
