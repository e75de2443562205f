/**
 * Replays the file steps of a recipe on a directory: each step names a file (relative to the
 * directory) and mutates it in place. A step that no longer applies (its file was replaced by a
 * FIFO, its JSON no longer parses) does nothing, so any list of steps replays.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fixIndexChecksums, mutateSafetensorsHeader, mutateSection, setGraphField, setSafetensorsValue } from './formats';
import { applyByteOp, applyJsonOpsToBytes, readIfRegular, replaceWithKind } from './mutate';
import type { ByteOp, JsonOp, Step } from './recipe';

/** Whether `file` is a regular file itself (not a link to one: writing through a link would reach outside the case). */
function isPlainFile(file: string): boolean {
  try {
    return fs.lstatSync(file).isFile();
  } catch {
    return false;
  }
}

/** Applies `steps` to the files of `dir`; `scratch` (outside `dir`) holds what links point to. */
export function applyFileSteps(dir: string, steps: readonly Step[], scratch: string): void {
  for (const step of steps) {
    if (step.op === 'fix-checksums') {
      fixIndexChecksums(dir);
      continue;
    }
    if (typeof step.file !== 'string') throw new Error(`step ${JSON.stringify(step)} names no file`);
    const file = path.resolve(dir, step.file);
    if (path.relative(dir, file).startsWith('..')) throw new Error(`step names a file outside the case: ${step.file}`);
    if (step.op === 'replace-with') {
      replaceWithKind(file, step.kind, scratch);
      continue;
    }
    if (!isPlainFile(file)) continue;
    const before = readIfRegular(file);
    if (before === undefined) continue;
    let after: Buffer;
    switch (step.op) {
      case 'json-set': case 'json-delete': case 'json-duplicate': case 'json-copy':
        after = applyJsonOpsToBytes(before, [step as JsonOp]);
        break;
      case 'section':
        after = mutateSection(before, step.section, step.ops);
        break;
      case 'hnsw-set':
        after = setGraphField(before, step.field, step.value, step.node, step.level, step.k);
        break;
      case 'safetensors-value':
        after = setSafetensorsValue(before, step.tensor, step.index, step.value);
        break;
      case 'safetensors-header':
        after = mutateSafetensorsHeader(before, step.ops);
        break;
      case 'flip': case 'set-byte': case 'set-int': case 'set-f32': case 'insert': case 'delete': case 'truncate': case 'repeat':
        after = applyByteOp(before, step as ByteOp);
        break;
      default:
        throw new Error(`step ${JSON.stringify(step)} does not apply to a file`);
    }
    if (after !== before) fs.writeFileSync(file, after);
  }
}

/** Copies a fixture directory (regular files and folders only) to `to`. */
export function copyFixture(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true, filter: (src) => !src.endsWith('README.md') });
}
