/**
 * BGE-M3's training objective (docs/semantics.md, "Training"; the paper's self-knowledge
 * distillation), computed natively with its gradients with respect to the scores.
 *
 * For a group of queries scored against in-batch passages (each query's positive among them):
 *   per mode m in {dense, lex, colbert}: L_m = InfoNCE(s_m / temperature)
 *   teacher: s_inter = s_dense + 0.3 s_lex + s_colbert (on the scaled scores), L_inter its InfoNCE
 *   L  = (L_dense + 0.1 L_lex + L_colbert + L_inter) / 4
 *   L' = (KD_dense + 0.1 KD_lex + KD_colbert) / 3, KD_m = -sum softmax(s_inter) log_softmax(s_m)
 *        with the teacher distribution detached
 *   loss = (L + L') / 2, or L without self-distillation.
 */
import { fromNative, inputError } from '../base/errors';
import { checkBoolean, checkPositive, checkWeightTriple } from '../base/validate';
import { native } from '../addon/native';
import { DEFAULT_WEIGHTS } from '../scoring/fusion';

/** Score matrices of one group: queries x passages each, row-major. */
export interface M3LossScores {
  dense: Float32Array;
  lex: Float32Array;
  colbert: Float32Array;
}

export interface M3LossOptions {
  /** InfoNCE temperature (default 0.02). */
  temperature?: number;
  /** Mode weights in L and L': [dense, lex, colbert] (default [1, 0.1, 1]). */
  weights?: [number, number, number];
  /** The teacher's mix: [dense, lex, colbert] (default DEFAULT_WEIGHTS, the paper's [1, 0.3, 1]). */
  teacherWeights?: [number, number, number];
  /** Add the distillation term L' (default true). */
  selfDistill?: boolean;
}

export interface M3LossResult {
  /** The objective: (L + L') / 2, or L without self-distillation. */
  loss: number;
  l: number;
  lDistill: number;
  /** InfoNCE per mode and of the teacher (means over queries). */
  terms: { dense: number; lex: number; colbert: number; inter: number };
  /** Soft cross-entropy against the teacher per mode (means over queries). */
  distill: { dense: number; lex: number; colbert: number };
  /** d(loss)/d(score), queries x passages per mode (the teacher treated as a constant in L'). */
  grad: { dense: Float64Array; lex: Float64Array; colbert: Float64Array };
}

function triple(value: unknown, what: string, fallback: [number, number, number]): [number, number, number] {
  return value === undefined ? fallback : [...checkWeightTriple(value, what, '[dense, lex, colbert]')];
}

/** The objective's options checked, with the defaults filled in (shared with fine-tuning). */
export function checkLossOptions(options: M3LossOptions): Required<M3LossOptions> {
  const temperature = options.temperature === undefined ? 0.02 : checkPositive(options.temperature, 'temperature');
  const selfDistill = checkBoolean(options.selfDistill, 'selfDistill', true);
  return {
    temperature, selfDistill,
    weights: triple(options.weights, 'weights', [1, 0.1, 1]),
    teacherWeights: triple(options.teacherWeights, 'teacherWeights', [...DEFAULT_WEIGHTS]),
  };
}

/** Checked options in the native layout (native/binding/train_wrap.cc, LossOptions). */
export function nativeLossOptions(o: Required<M3LossOptions>): Record<string, number | boolean> {
  return {
    temperature: o.temperature, selfDistill: o.selfDistill,
    wDense: o.weights[0], wLex: o.weights[1], wColbert: o.weights[2],
    tDense: o.teacherWeights[0], tLex: o.teacherWeights[1], tColbert: o.teacherWeights[2],
  };
}

/**
 * The M3 objective of one group. `target[q]` is the index of query q's positive passage;
 * passages = scores.dense.length / target.length.
 */
export function m3Loss(scores: M3LossScores, target: Int32Array | readonly number[], options: M3LossOptions = {}): M3LossResult {
  if (!scores || !(scores.dense instanceof Float32Array) || !(scores.lex instanceof Float32Array) || !(scores.colbert instanceof Float32Array)) {
    throw inputError('{ dense, lex, colbert } Float32Arrays (queries x passages each)', 'scores', scores);
  }
  const t = target instanceof Int32Array ? target : Int32Array.from(Array.isArray(target) ? target : []);
  if (!(target instanceof Int32Array) && (!Array.isArray(target) || target.some((x) => !Number.isInteger(x)))) {
    throw inputError('an Int32Array or an array of integers (the positive passage of each query)', 'target', target);
  }
  const queries = t.length;
  const cells = scores.dense.length;
  if (queries === 0 || cells === 0 || cells % queries !== 0 || scores.lex.length !== cells || scores.colbert.length !== cells) {
    throw inputError(`three score matrices of target.length (${queries}) x passages values`, 'scores',
      `lengths ${scores.dense.length}, ${scores.lex.length}, ${scores.colbert.length}`);
  }
  const checked = nativeLossOptions(checkLossOptions(options ?? {}));
  try {
    const r = native().m3Loss(scores.dense, scores.lex, scores.colbert, t, queries, cells / queries, checked);
    return {
      loss: r.loss, l: r.l, lDistill: r.lDistill,
      terms: { dense: r.dense, lex: r.lex, colbert: r.colbert, inter: r.inter },
      distill: { dense: r.distillDense, lex: r.distillLex, colbert: r.distillColbert },
      grad: { dense: r.gradDense, lex: r.gradLex, colbert: r.gradColbert },
    };
  } catch (err) {
    throw fromNative(err);
  }
}
