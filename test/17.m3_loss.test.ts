/**
 * The M3 training objective against PyTorch autograd on the same formulas
 * (scripts/gen_loss_golden.py -> test/fixtures/m3-loss-golden.json): every term and every
 * gradient to 1e-6, in four option variants; a finite-difference check; the errors.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { m3Loss, type M3LossOptions } from '../lib';
import { FIXTURES } from './helpers';

interface Case {
  queries: number;
  passages: number;
  options: M3LossOptions;
  dense: number[];
  lex: number[];
  colbert: number[];
  target: number[];
  loss: number;
  l: number;
  lDistill: number;
  terms: Record<'dense' | 'lex' | 'colbert' | 'inter', number>;
  distill: Record<'dense' | 'lex' | 'colbert', number>;
  grad: Record<'dense' | 'lex' | 'colbert', number[]>;
}

const golden: { cases: Case[] } = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'm3-loss-golden.json'), 'utf8'));

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= 1e-6 * Math.max(1, Math.abs(expected)), `${what}: ${actual} vs ${expected}`);
}

const scoresOf = (c: Case) => ({ dense: Float32Array.from(c.dense), lex: Float32Array.from(c.lex), colbert: Float32Array.from(c.colbert) });

describe('m3Loss', () => {
  it('equals the PyTorch reference: loss, every term and every gradient', () => {
    for (const [i, c] of golden.cases.entries()) {
      const r = m3Loss(scoresOf(c), c.target, c.options);
      const tag = `case ${i} (${c.queries}x${c.passages}, ${JSON.stringify(c.options)})`;
      close(r.loss, c.loss, `${tag} loss`);
      close(r.l, c.l, `${tag} L`);
      close(r.lDistill, c.lDistill, `${tag} L'`);
      for (const k of ['dense', 'lex', 'colbert', 'inter'] as const) close(r.terms[k], c.terms[k], `${tag} InfoNCE ${k}`);
      for (const k of ['dense', 'lex', 'colbert'] as const) {
        close(r.distill[k], c.distill[k], `${tag} distill ${k}`);
        c.grad[k].forEach((g, j) => close(r.grad[k][j], g, `${tag} grad ${k}[${j}]`));
      }
    }
  });

  it('its gradients match finite differences (teacher held fixed only in the distillation term)', () => {
    const c = golden.cases.find((x) => x.queries === 3 && Object.keys(x.options).length === 0)!;
    const base = scoresOf(c);
    const r = m3Loss(base, c.target);
    // Without self-distillation the loss is a plain function of the scores: check it exactly,
    // at a temperature that spreads the softmax, on the entries with the largest gradients.
    const opts = { selfDistill: false, temperature: 0.2 };
    const plain = m3Loss(base, c.target, opts);
    for (const k of ['dense', 'lex', 'colbert'] as const) {
      const largest = Array.from(plain.grad[k].keys()).sort((x, y) => Math.abs(plain.grad[k][y]) - Math.abs(plain.grad[k][x])).slice(0, 4);
      for (const j of largest) {
        const h = 1e-3;
        const up = { ...base, [k]: Float32Array.from(base[k]) };
        const down = { ...base, [k]: Float32Array.from(base[k]) };
        up[k][j] += h;
        down[k][j] -= h;
        const numeric = (m3Loss(up, c.target, opts).loss - m3Loss(down, c.target, opts).loss) /
          (up[k][j] - down[k][j]);
        assert.ok(Math.abs(numeric - plain.grad[k][j]) <= 1e-3 * Math.max(1, Math.abs(numeric)), `${k}[${j}]: ${plain.grad[k][j]} vs ${numeric}`);
      }
    }
    assert.ok(r.loss > 0 && r.terms.inter > 0);
  });

  it('refuses bad input with ERR_INPUT', () => {
    const c = golden.cases[0];
    const s = scoresOf(c);
    const bad = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: { code?: string; message?: string }) => e.code === 'ERR_INPUT' && pattern.test(e.message ?? ''));
    bad(() => m3Loss(s, [5]), /target\[0\] is 5, outside the 2 passages/);
    bad(() => m3Loss(s, [0, 0, 0]), /target.length \(3\)/);
    bad(() => m3Loss({ ...s, lex: new Float32Array(1) }, c.target), /scores/);
    bad(() => m3Loss(s, c.target, { temperature: 0 }), /temperature/);
    bad(() => m3Loss(s, c.target, { weights: [1, -1, 1] }), /weights/);
    bad(() => m3Loss({ ...s, dense: Float32Array.of(NaN, 0) }, c.target), /not finite/);
    bad(() => m3Loss(s, [0.5]), /target/);
  });
});
