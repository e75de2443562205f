/**
 * Retrieval evaluation on {query, pos, neg} data (the fine-tuning format): every passage of the
 * dataset goes into one HybridIndex, every query is searched exhaustively in each mode, and the
 * ranks of its positives give MRR@10, nDCG@10 and Recall@1/10/100.
 */
import { queryLength } from '../base/defaults';
import { M3Error, inputError } from '../base/errors';
import { DEFAULT_WEIGHTS } from '../scoring/fusion';
import { HybridIndex } from '../retrieval/hybrid_index';
import type { BGEM3 } from '../engine/model';
import { checkEvalRow, readEvalRows, type EvalRow } from './rows';

/** Metrics of one mode, averaged over queries. */
export interface ModeMetrics {
  mrr10: number;
  ndcg10: number;
  recall1: number;
  recall10: number;
  recall100: number;
}

/** The modes and their [dense, sparse, colbert] weights (the paper's combinations: the default triple, and its dense and sparse part). */
export const EVAL_MODES: Record<string, [number, number, number]> = {
  dense: [1, 0, 0],
  sparse: [0, 1, 0],
  colbert: [0, 0, 1],
  'dense+sparse': [DEFAULT_WEIGHTS[0], DEFAULT_WEIGHTS[1], 0],
  all: [...DEFAULT_WEIGHTS] as [number, number, number],
};

export interface EvaluateOptions {
  /** Query and passage truncation (defaults: 512 and the model's maxLength). */
  maxQueryLength?: number;
  maxPassageLength?: number;
  batchSize?: number;
  /** Called with (done, total) passages while encoding. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvaluateResult {
  queries: number;
  passages: number;
  modes: Record<string, ModeMetrics>;
}

/** nDCG@10 with binary relevance. */
function ndcgAt10(ranks: number[], relevant: number): number {
  let dcg = 0;
  for (const r of ranks) if (r < 10) dcg += 1 / Math.log2(r + 2);
  let ideal = 0;
  for (let i = 0; i < Math.min(relevant, 10); i++) ideal += 1 / Math.log2(i + 2);
  return ideal > 0 ? dcg / ideal : 0;
}

/** Evaluates a model on {query, pos, neg} rows in every mode of {@link EVAL_MODES}. */
export async function evaluate(model: BGEM3, dataset: EvalRow[] | string, options: EvaluateOptions = {}): Promise<EvaluateResult> {
  const rows = typeof dataset === 'string' ? readEvalRows(dataset) : dataset;
  if (!Array.isArray(rows)) throw inputError('rows or a JSONL path', 'dataset', dataset);
  rows.forEach((row, i) => checkEvalRow(row, `dataset[${i}]`));
  const withPositives = rows.filter((r) => r.pos.length > 0);
  if (withPositives.length === 0) throw new M3Error('ERR_INPUT', 'evaluate: no row has a positive passage');
  const passages = [...new Set(rows.flatMap((r) => [...r.pos, ...(r.neg ?? [])]))];
  const id = new Map(passages.map((p, i) => [p, i]));
  const index = HybridIndex.create({ dim: model.dim, vocabSize: model.info().vocabSize, colbert: 'f32', model });
  const chunk = 256;
  for (let start = 0; start < passages.length; start += chunk) {
    const part = passages.slice(start, start + chunk);
    const encoded = await model.encode(part, { dense: true, sparse: true, colbert: true, maxLength: options.maxPassageLength, batchSize: options.batchSize });
    index.add(part.map((_, i) => start + i), encoded);
    options.onProgress?.(Math.min(start + chunk, passages.length), passages.length);
  }
  const queries = await model.encode(withPositives.map((r) => r.query), {
    dense: true, sparse: true, colbert: true, maxLength: options.maxQueryLength ?? queryLength(model.modelMaxLength), batchSize: options.batchSize,
  });
  const modes: Record<string, ModeMetrics> = {};
  for (const [mode, weights] of Object.entries(EVAL_MODES)) {
    const sum: ModeMetrics = { mrr10: 0, ndcg10: 0, recall1: 0, recall10: 0, recall100: 0 };
    withPositives.forEach((row, qi) => {
      const hits = index.search(queries.row(qi), { k: passages.length, weights, exhaustive: true });
      const relevant = new Set(row.pos.map((p) => id.get(p)!));
      // Pessimistic ranks: a positive ranks behind every other passage with an equal or higher
      // score, so ties (common in sparse mode, where most passages score 0) never flatter it.
      const ranks = hits.filter((h) => relevant.has(h.id as number))
        .map((p) => hits.filter((h) => h.id !== p.id && h.score >= p.score).length)
        .sort((a, b) => a - b);
      const first = ranks.length ? ranks[0] : Infinity;
      sum.mrr10 += first < 10 ? 1 / (first + 1) : 0;
      sum.ndcg10 += ndcgAt10(ranks, relevant.size);
      sum.recall1 += ranks.filter((r) => r < 1).length / relevant.size;
      sum.recall10 += ranks.filter((r) => r < 10).length / relevant.size;
      sum.recall100 += ranks.filter((r) => r < 100).length / relevant.size;
    });
    const n = withPositives.length;
    modes[mode] = {
      mrr10: sum.mrr10 / n, ndcg10: sum.ndcg10 / n, recall1: sum.recall1 / n, recall10: sum.recall10 / n, recall100: sum.recall100 / n,
    };
  }
  return { queries: withPositives.length, passages: passages.length, modes };
}

/** The metrics as an aligned text table. */
export function formatMetricsTable(result: EvaluateResult): string {
  const header = ['mode', 'MRR@10', 'nDCG@10', 'R@1', 'R@10', 'R@100'];
  const lines = Object.entries(result.modes).map(([mode, m]) =>
    [mode, m.mrr10, m.ndcg10, m.recall1, m.recall10, m.recall100].map((v) => (typeof v === 'number' ? v.toFixed(4) : v)));
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [fmt(header), ...lines.map(fmt)].join('\n');
}
