/**
 * What identifies a fine-tuning run's inputs, so that a cache or a checkpoint is only reused for
 * the same model and data: hashes of the source model's files and of the training rows.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readRegularFile } from '../base/files';
import type { EvalRow } from './rows';

export function sha256(...parts: (string | Buffer)[]): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** What identifies the source model: its graph's size and time, and the heads' bytes. */
export function modelFingerprint(info: { onnx: string; colbertHead: string; sparseHead: string }): string {
  const graph = fs.statSync(info.onnx);
  return sha256(path.resolve(info.onnx), String(graph.size), String(graph.mtimeMs),
    readRegularFile(info.colbertHead, 'Model file'), readRegularFile(info.sparseHead, 'Model file'));
}

/** What identifies the training data. */
export function dataHash(rows: readonly EvalRow[]): string {
  return sha256(JSON.stringify(rows.map((r) => [r.query, r.pos, r.neg ?? []])));
}
