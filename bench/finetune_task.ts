/**
 * A synthetic retrieval task whose answer is known, for showing that fine-tuning the heads works
 * (bench/finetune.ts, test/18): relevance depends on "topic" words only, while every hard
 * negative shares as many words with the query as the positive does, most of them "filler"
 * words. Heads that weight tokens without regard to their class rank the positive no better than
 * its hard negatives; heads trained on the task learn to weight topic words up and fillers down.
 *
 *   query    = 3 topic words + 3 fillers
 *   positive = the query's 3 topic words + 6 other fillers
 *   negative = 1 of the query's topic words + 2 of its fillers + 2 other topic words + 4 other
 *              fillers (x negatives)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BGEM3, type EvalRow } from '../lib';
import { writeSafetensors } from '../lib/training/safetensors';
import { native } from '../lib/addon/native';
import { mulberry32, shuffle } from '../lib/base/rng';

export interface SyntheticTaskOptions {
  trainRows: number;
  heldOutRows: number;
  topics?: number;
  fillers?: number;
  negatives?: number;
  seed?: number;
}

export interface SyntheticTask {
  train: EvalRow[];
  heldOut: EvalRow[];
  topicWords: string[];
  fillerWords: string[];
}

/** Whole words that are one piece of a tokenizer.json's Unigram vocabulary ("▁word", a-z only). */
export function singlePieceWords(tokenizerFile: string): string[] {
  const json = JSON.parse(fs.readFileSync(tokenizerFile, 'utf8')) as { model: { vocab: [string, number][] } };
  return json.model.vocab.map(([piece]) => piece).filter((p) => /^▁[a-z]{3,}$/.test(p)).map((p) => p.slice(1));
}

export function syntheticTask(words: string[], options: SyntheticTaskOptions): SyntheticTask {
  const random = mulberry32(options.seed ?? 7);
  const pick = <T>(list: T[]) => list[Math.floor(random() * list.length)];
  const shuffled = <T>(list: T[]) => shuffle([...list], random);
  const topics = options.topics ?? 40;
  const fillers = options.fillers ?? 40;
  if (words.length < topics + fillers) throw new Error(`the vocabulary has ${words.length} single-piece words; the task needs ${topics + fillers}`);
  const pool = shuffled(words);
  const topicWords = pool.slice(0, topics);
  const fillerWords = pool.slice(topics, topics + fillers);
  const distinct = (from: string[], n: number, not: string[]) => {
    const out: string[] = [];
    while (out.length < n) {
      const w = pick(from);
      if (!out.includes(w) && !not.includes(w)) out.push(w);
    }
    return out;
  };
  const row = (): EvalRow => {
    const topic = distinct(topicWords, 3, []);
    const qFill = distinct(fillerWords, 3, []);
    const query = shuffled([...topic, ...qFill]).join(' ');
    const pos = shuffled([...topic, ...distinct(fillerWords, 6, qFill)]).join(' ');
    const neg = Array.from({ length: options.negatives ?? 7 }, () => shuffled([
      pick(topic), ...shuffled(qFill).slice(0, 2), ...distinct(topicWords, 2, topic), ...distinct(fillerWords, 4, qFill),
    ]).join(' '));
    return { query, pos: [pos], neg };
  };
  return {
    train: Array.from({ length: options.trainRows }, row),
    heldOut: Array.from({ length: options.heldOutRows }, row),
    topicWords, fillerWords,
  };
}

/**
 * A copy of a generated model (encoder files hard-linked) whose sparse head is the generated one
 * scaled and shifted so that 99% of the tokens of `texts` get a positive weight and the median
 * weight is 0.15. A randomly generated sparse head gives about half of all tokens a weight of
 * zero through its ReLU, and no gradient reaches a token whose weight is zero; the published
 * model's head weights nearly every token positively, on that scale (its README example: 0.04 to
 * 0.27). That is the starting point this reproduces, with weights that still ignore relevance.
 */
export async function withLiveSparseHead(modelDir: string, outDir: string, texts: string[]): Promise<void> {
  const model = await BGEM3.load(modelDir);
  try {
    const info = model.info();
    const head = native().readTensorFile(info.sparseHead);
    const w = head.weight.data;
    const tokens = await model.tokenize(texts);
    const { rows, hidden } = await model.hiddenStates(tokens);
    const dots: number[] = [];
    for (let t = 0; t < rows.length / hidden; t++) {
      let d = 0;
      for (let k = 0; k < hidden; k++) d += rows[t * hidden + k] * w[k];
      dots.push(d);
    }
    dots.sort((a, b) => a - b);
    const low = dots[Math.floor(dots.length * 0.01)];
    const scale = 0.15 / (dots[dots.length >> 1] - low);
    fs.mkdirSync(outDir, { recursive: true });
    for (const entry of fs.readdirSync(modelDir, { recursive: true }) as string[]) {
      const from = path.join(modelDir, entry);
      const to = path.join(outDir, entry);
      if (fs.statSync(from).isDirectory()) fs.mkdirSync(to, { recursive: true });
      else if (!/^sparse_linear\./.test(entry)) {
        try {
          fs.linkSync(from, to);
        } catch {
          fs.copyFileSync(from, to);
        }
      }
    }
    writeSafetensors(path.join(outDir, 'sparse_linear.safetensors'), {
      weight: { shape: [1, hidden], data: w.map((x) => x * scale) }, bias: { shape: [1], data: Float32Array.of(-low * scale) },
    });
  } finally {
    await model.dispose();
  }
}
