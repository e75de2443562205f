/**
 * Recipes: what one fuzz case is, as data. A recipe names a target, a base fixture and the list
 * of mutations applied to it, each with every parameter spelled out, so that replaying it needs
 * neither the run's seed nor its generator. Findings are written as recipes, and the regression
 * corpus (fuzz/corpus/<target>/*.json) is a folder of them.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

/** A path into a JSON document: object keys and array indexes, from the root. */
export type JsonPath = Array<string | number>;

/** A float as JSON can carry it (JSON has no NaN or infinities). */
export type FloatValue = number | 'NaN' | 'Infinity' | '-Infinity';

/** Mutations of a file's bytes. Offsets past the end (after earlier ops shrank the file) wrap around. */
export type ByteOp =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set-byte'; at: number; value: number }
  /** A little-endian two's-complement integer of `width` bytes; `value` in decimal (u64 does not fit a double). */
  | { op: 'set-int'; at: number; width: 1 | 2 | 4 | 8; value: string }
  | { op: 'set-f32'; at: number; value: FloatValue }
  /** `hex` bytes, or `length` copies of `fill`. */
  | { op: 'insert'; at: number; hex?: string; fill?: number; length?: number }
  | { op: 'delete'; at: number; length: number }
  | { op: 'truncate'; length: number }
  /** The `length` bytes at `at`, `times` more times right after them. */
  | { op: 'repeat'; at: number; length: number; times: number };

/**
 * Mutations of a JSON document. A value may hold three stand-ins that JSON.stringify cannot
 * write or that would bloat the recipe: `{ "$raw": "1e309" }` (text written verbatim),
 * `{ "$repeat": "ab", "count": n }` (a long string) and `{ "$nest": depth, "leaf": value }`
 * (arrays nested `depth` deep).
 */
export type JsonOp =
  | { op: 'json-set'; path: JsonPath; value: unknown }
  | { op: 'json-delete'; path: JsonPath }
  /** The array element at `path`, inserted again right after itself. */
  | { op: 'json-duplicate'; path: JsonPath }
  | { op: 'json-copy'; from: JsonPath; to: JsonPath };

/** What stands where a file should be. */
export type FileKind = 'missing' | 'empty' | 'directory' | 'fifo' | 'symlink-to-fifo' | 'symlink-to-directory' | 'dangling-symlink' | 'symlink-loop';

export type KindOp = { op: 'replace-with'; kind: FileKind };

/** Fields of an HNSW graph file (see lib/retrieval/hnsw_graph_check.ts for the layout). */
export type HnswField = 'rows' | 'rowBytes' | 'present' | 'dimensions' | 'nodes' | 'connectivity' | 'connectivityBase' | 'maxLevel' | 'entry'
  | 'levelsTable' | 'nodeKey' | 'nodeLevel' | 'neighbourCount' | 'neighbour' | 'vector';

/** Mutations that know a file format, so that they hit its fields on purpose. */
export type FormatOp =
  /** Sub-mutations of one section of an index segment, which is then laid out again with that section's length and CRC-32 fixed. */
  | { op: 'section'; section: string; ops: Array<ByteOp | JsonOp> }
  /** Recomputes what checksums an index directory holds: each segment section's CRC-32, and MANIFEST's sizes and CRC-32s. */
  | { op: 'fix-checksums' }
  /** One field of an HNSW graph file; `node`, `level` and `k` say which node, level and neighbour where it matters. */
  | { op: 'hnsw-set'; field: HnswField; node?: number; level?: number; k?: number; value: string }
  /** Element `index` of a safetensors tensor. */
  | { op: 'safetensors-value'; tensor: string; index: number; value: FloatValue }
  /** JSON mutations of a safetensors header, written back with its length prefix fixed. */
  | { op: 'safetensors-header'; ops: JsonOp[] };

/** Mutations of an HTTP request other than its body. */
export type RequestOp =
  | { op: 'route'; value: string }
  /** Sets a header, or removes it (null). */
  | { op: 'header'; name: string; value: string | null };

export type Op = ByteOp | JsonOp | KindOp | FormatOp | RequestOp;

/** An op, and for targets whose case is a directory, the file (relative path or role) it applies to. */
export type Step = Op & { file?: string };

/** What a case ended as. */
export type Outcome = 'clean-ok' | 'clean-error' | 'uncoded' | 'crash' | 'hang';

/** What a corpus recipe is known to give; a replay that gives anything else fails. */
export interface Expectation {
  outcome: 'clean-ok' | 'clean-error';
  /** The M3Error code, or for HTTP the error body's code. */
  code?: string;
  /** HTTP status. */
  status?: number;
  /** A regular expression the message must match. */
  message?: string;
}

export interface Recipe {
  target: string;
  /** Which base fixture (per target: a model directory, an index variant, a request, an encoding). */
  base: string;
  ops: Step[];
  /** For people: what the recipe does. */
  note?: string;
  expect?: Expectation;
}

/** How one case ended, as the child (or, for a crash or hang, the driver) saw it. */
export interface CaseResult {
  outcome: Outcome;
  /** M3Error code or HTTP error code. */
  code?: string;
  status?: number;
  message?: string;
  stack?: string;
  /** For a crash: the signal or exit code, and the end of the child's stderr. */
  signal?: string;
  exitCode?: number;
  stderr?: string;
  /** For a crash or hang: the cases the same child process ran before it (state they left may matter). */
  after?: number[];
  ms?: number;
}

/** A finding as written to disk: the recipe, then what happened. */
export interface FindingFile extends Recipe {
  finding: CaseResult & { seed?: number; caseNumber?: number; fixtureDigest?: string };
}

/** A short stable name for a recipe's content. */
export function recipeDigest(recipe: Recipe): string {
  const { target, base, ops } = recipe;
  return crypto.createHash('sha256').update(JSON.stringify({ target, base, ops })).digest('hex').slice(0, 12);
}

/** Reads a recipe (or finding) file, checking its shape enough to replay it. */
export function readRecipe(file: string): Recipe {
  const json: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
  const r = json as Partial<Recipe>;
  if (!r || typeof r !== 'object' || typeof r.target !== 'string' || typeof r.base !== 'string' || !Array.isArray(r.ops)) {
    throw new Error(`${file} is not a fuzz recipe: it needs "target", "base" and "ops"`);
  }
  for (const [i, step] of r.ops.entries()) {
    if (!step || typeof step !== 'object' || typeof (step as { op?: unknown }).op !== 'string') throw new Error(`${file}: ops[${i}] has no "op"`);
  }
  return { target: r.target, base: r.base, ops: r.ops, note: r.note, expect: r.expect };
}

/** Whether a replayed result is what the recipe expects (always, without an expectation). */
export function meetsExpectation(result: CaseResult, expect: Expectation | undefined): string | undefined {
  if (!expect) return undefined;
  const problems: string[] = [];
  if (result.outcome !== expect.outcome) problems.push(`outcome ${result.outcome}, expected ${expect.outcome}`);
  if (expect.code !== undefined && result.code !== expect.code) problems.push(`code ${result.code ?? 'none'}, expected ${expect.code}`);
  if (expect.status !== undefined && result.status !== expect.status) problems.push(`status ${result.status ?? 'none'}, expected ${expect.status}`);
  if (expect.message !== undefined && !new RegExp(expect.message).test(result.message ?? '')) {
    problems.push(`message ${JSON.stringify(result.message ?? '')} does not match /${expect.message}/`);
  }
  return problems.length ? problems.join('; ') : undefined;
}
