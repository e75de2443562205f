/**
 * The fuzz driver: replays the regression corpus, then generates cases for each target from the
 * seed and runs them in child processes (fuzz/child.ts), a batch per child. A child that dies
 * takes only the case it was running with it (a crash), one that stops answering is killed (a
 * hang), and a fresh child runs the rest of the batch. Findings are written as recipes.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { meetsExpectation, readRecipe, recipeDigest, type CaseResult, type FindingFile, type Outcome, type Recipe } from './recipe';
import { TARGETS, TARGET_NAMES } from './registry';
import { Random } from './rng';
import { ROOT, clip, type Target } from './target';

export interface FuzzOptions {
  /** Seed of the generated cases (default 1). */
  seed?: number;
  /** Targets to fuzz, in this order (default all). */
  targets?: string[];
  /** Length of one target's turn, in seconds (default 30, or the total split evenly, at most 60). */
  secondsPerTarget?: number;
  /** Cycle through the targets, a turn each, until this many seconds are spent (default: one turn each). */
  totalSeconds?: number;
  /** Instead of time: exactly this many cases per target, in one turn each. */
  casesPerTarget?: number;
  /** Number of each target's first case (default 0): with casesPerTarget, reruns a stretch of an earlier run. */
  firstCase?: number;
  /** Child processes at once (default 1). */
  jobs?: number;
  /** Replay the regression corpus first (default true). */
  corpus?: boolean;
  /** Fuzz after the corpus (default true). */
  fuzz?: boolean;
  /** Where the corpus is (default fuzz/corpus). */
  corpusDir?: string;
  /** Where fixtures, findings and summaries go (default .cache/fuzz). */
  outDir?: string;
  /** Progress lines (default: console.log). */
  log?: (line: string) => void;
  /** A line per case: its number, outcome, code and message. */
  verbose?: boolean;
}

/** What one target's cases ended as. */
export interface TargetCounts {
  cases: number;
  cleanOk: number;
  cleanError: number;
  uncoded: number;
  crash: number;
  hang: number;
  seconds: number;
  casesPerSecond: number;
  /** Clean errors by code (M3Error code, or HTTP error code). */
  codes: Record<string, number>;
}

/** One kind of failure (same outcome, same message once numbers and paths are blanked), with a recipe on disk. */
export interface Finding {
  target: string;
  outcome: Outcome;
  message: string;
  signature: string;
  /** How many cases failed this way. */
  count: number;
  /** The recipes written (the first few cases). */
  files: string[];
  stack?: string;
  stderr?: string;
}

export interface CorpusFailure {
  file: string;
  result: CaseResult;
  problem: string;
}

export interface FuzzSummary {
  seed: number;
  startedAt: string;
  seconds: number;
  corpus: { cases: number; failures: CorpusFailure[] };
  targets: Record<string, TargetCounts>;
  findings: Finding[];
  /** No crash, hang or uncoded case, and every corpus recipe as expected. */
  ok: boolean;
  summaryFile?: string;
}

const BAD: ReadonlySet<Outcome> = new Set(['uncoded', 'crash', 'hang']);
const RECIPES_PER_FINDING = 3;
/** How long a child may linger after its last case (closing a server) before it is killed. */
const EXIT_GRACE_MS = 10_000;
const STDERR_TAIL = 4000;

export const DEFAULT_OUT_DIR = path.join(ROOT, '.cache', 'fuzz');
export const DEFAULT_CORPUS_DIR = path.join(ROOT, 'fuzz', 'corpus');
const CHILD = path.join(__dirname, 'child.js');

interface PendingCase {
  id: number;
  recipe: Recipe;
}

/** A fault of the fuzzer or of a recipe (not of the engine): the run stops. */
export class FuzzHarnessError extends Error {
  override name = 'FuzzHarnessError';
}

/** The end of a child's stderr since the marker of case `id`. */
function stderrOf(text: string, id: number | undefined): string | undefined {
  const marker = id === undefined ? -1 : text.lastIndexOf(`[fuzz case ${id}]`);
  const own = (marker >= 0 ? text.slice(marker + `[fuzz case ${id}]`.length) : text).trim();
  return own ? own.slice(-STDERR_TAIL) : undefined;
}

interface ChildRun {
  results: Map<number, CaseResult>;
  /** The child could not set up, or failed outside any case. */
  setupProblem?: string;
  recipeProblem?: { id: number; message: string };
}

/** Runs cases in one child until it finishes them, dies or hangs. */
function runChild(target: Target, fixtures: string, cases: PendingCase[], batchFile: string): Promise<ChildRun> {
  fs.writeFileSync(batchFile, JSON.stringify({ target: target.name, fixtures, cases }));
  // The cases' files (FIFOs among them) go here, and are removed even when the child dies.
  const scratch = `${batchFile}.cases`;
  fs.rmSync(scratch, { recursive: true, force: true });
  fs.mkdirSync(scratch);
  const child = spawn(process.execPath, ['--no-warnings', '--expose-gc', CHILD, batchFile, scratch], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], cwd: ROOT });
  const run: ChildRun = { results: new Map() };
  let ready = false;
  let current: number | undefined;
  let lastEnded: number | undefined;
  const ended: number[] = [];
  let hung: { id: number | undefined; ms: number } | undefined;
  let fatal: { id?: number; message: string; stack?: string } | undefined;
  let stderr = '';
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number, id: number | undefined) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      hung = { id, ms };
      child.kill('SIGKILL');
    }, ms);
  };
  arm(target.setupTimeoutMs, undefined);
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-64 * 1024);
  });
  let pending = '';
  const reports = child.stdio[3] as Readable;
  reports.setEncoding('utf8');
  reports.on('data', (chunk: string) => {
    pending += chunk;
    for (let nl; (nl = pending.indexOf('\n')) >= 0;) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let event: { ev: string; id?: number; result?: CaseResult; message?: string; stack?: string };
      try {
        event = JSON.parse(line);
      } catch {
        continue;
      }
      switch (event.ev) {
        case 'ready':
          ready = true;
          clearTimeout(timer);
          break;
        case 'start':
          current = event.id;
          arm(target.caseTimeoutMs, event.id);
          break;
        case 'end':
          run.results.set(event.id!, event.result!);
          lastEnded = event.id;
          ended.push(event.id!);
          current = undefined;
          // The child exits on its own after its last case; give it a while to close what it opened.
          arm(run.results.size === cases.length ? EXIT_GRACE_MS : target.caseTimeoutMs, undefined);
          break;
        case 'fatal':
          fatal = { id: event.id, message: event.message ?? 'an uncaught error', stack: event.stack };
          break;
        case 'recipe-error':
          run.recipeProblem = { id: event.id!, message: event.message ?? '' };
          current = undefined;
          break;
        case 'setup-failed':
          run.setupProblem = event.message ?? 'setup failed';
          break;
      }
    }
  });
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      fs.rmSync(scratch, { recursive: true, force: true });
      const before = (id: number) => {
        const earlier = ended.filter((e) => e !== id);
        return earlier.length ? earlier : undefined;
      };
      const how = signal ?? `exit code ${code}`;
      if (run.results.size === cases.length) {
        // Every case had its result; the exit after them only matters when it was not clean.
        if ((code !== 0 || signal) && !hung && lastEnded !== undefined) {
          run.results.set(lastEnded, { outcome: 'crash', signal: signal ?? undefined, exitCode: code ?? undefined,
            message: fatal?.message ?? `the process ended (${how}) after this, the batch's last case, had its result`, stack: fatal?.stack, stderr: stderrOf(stderr, lastEnded),
            after: before(lastEnded) });
        }
        return resolve(run);
      }
      if (hung && hung.id !== undefined) {
        run.results.set(hung.id, { outcome: 'hang', message: `no result after ${hung.ms} ms`, stderr: stderrOf(stderr, hung.id), after: before(hung.id) });
      } else if (current !== undefined) {
        run.results.set(current, {
          outcome: 'crash', signal: signal ?? undefined, exitCode: code ?? undefined,
          message: fatal?.message ?? `the process ended (${how}) while this case ran`, stack: fatal?.stack, stderr: stderrOf(stderr, current),
          after: before(current),
        });
      } else if (ready && lastEnded !== undefined && !run.recipeProblem && !run.setupProblem) {
        // Between cases: something the last case left behind (a timer, a finalizer) ended the process.
        run.results.set(lastEnded, {
          outcome: hung ? 'hang' : 'crash', signal: signal ?? undefined, exitCode: code ?? undefined,
          message: fatal?.message ?? (hung ? `the process stopped answering after this case had its result` : `the process ended (${how}) after this case had its result`),
          stack: fatal?.stack, stderr: stderrOf(stderr, lastEnded), after: before(lastEnded),
        });
      } else if (!run.recipeProblem) {
        run.setupProblem ??= `the ${target.name} child ended (${how}${hung ? ', timed out' : ''}) before its first case: ${clip(stderr.trim().slice(-2000), 2000)}`;
      }
      resolve(run);
    });
  });
}

let batchCounter = 0;

/** Runs cases of one target, in as many children as it takes. */
async function runCases(target: Target, fixtures: string, cases: PendingCase[], workDir: string): Promise<Map<number, CaseResult>> {
  const results = new Map<number, CaseResult>();
  let rest = cases;
  const batchFile = path.join(workDir, `batch-${process.pid}-${batchCounter++}.json`);
  try {
    while (rest.length) {
      const run = await runChild(target, fixtures, rest, batchFile);
      for (const [id, result] of run.results) results.set(id, result);
      if (run.recipeProblem) {
        const bad = cases.find((c) => c.id === run.recipeProblem!.id);
        throw new FuzzHarnessError(`${run.recipeProblem.message}\nrecipe: ${JSON.stringify(bad?.recipe)}`);
      }
      if (run.setupProblem) throw new FuzzHarnessError(run.setupProblem);
      rest = rest.filter((c) => !results.has(c.id));
    }
  } finally {
    fs.rmSync(batchFile, { force: true });
  }
  return results;
}

function emptyCounts(): TargetCounts {
  return { cases: 0, cleanOk: 0, cleanError: 0, uncoded: 0, crash: 0, hang: 0, seconds: 0, casesPerSecond: 0, codes: {} };
}

function count(counts: TargetCounts, result: CaseResult): void {
  counts.cases++;
  switch (result.outcome) {
    case 'clean-ok': counts.cleanOk++; break;
    case 'clean-error': counts.cleanError++; break;
    case 'uncoded': counts.uncoded++; break;
    case 'crash': counts.crash++; break;
    case 'hang': counts.hang++; break;
  }
  if (result.outcome === 'clean-error') {
    const key = result.status !== undefined ? `${result.status} ${result.code ?? ''}`.trim() : result.code ?? 'no code';
    counts.codes[key] = (counts.codes[key] ?? 0) + 1;
  }
}

/** A failure's kind: its outcome and message with the case-specific parts (numbers, paths, quotes) blanked. */
function signatureOf(result: CaseResult): string {
  const panic = /panicked at ([^\n]*)/.exec(result.stderr ?? '')?.[1];
  const text = `${result.signal ?? ''} ${panic ?? (result.message ?? '').split('\n')[0]}`;
  const blanked = text.replace(/'[^']*'/g, "'…'").replace(/"[^"]*"/g, '"…"').replace(/\/\S+/g, '/…').replace(/\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N');
  return `${result.outcome}: ${blanked.trim().slice(0, 200)}`;
}

/** The command that replays a recipe file, for people. */
export function replayCommand(file: string): string {
  return `npm run fuzz -- --replay ${path.relative(process.cwd(), file) || file}`;
}

/** The command that runs a stretch of generated cases again, in one child, for a failure that needs what ran before it. */
export function rerunCommand(seed: number, target: string, caseNumbers: number[]): string {
  const first = Math.min(...caseNumbers);
  const count = Math.max(...caseNumbers) - first + 1;
  return `npm run fuzz -- --no-corpus --seed ${seed} --targets ${target} --first-case ${first} --cases ${count}`;
}

/** Builds each target's fixtures (once per run); returns their digests. */
async function prepareTargets(names: string[], fixtures: string): Promise<Record<string, string | undefined>> {
  fs.mkdirSync(fixtures, { recursive: true });
  const digests: Record<string, string | undefined> = {};
  for (const name of names) digests[name] = await TARGETS[name].prepare?.(fixtures);
  return digests;
}

function checkTargets(names: string[]): void {
  for (const name of names) if (!TARGETS[name]) throw new FuzzHarnessError(`no fuzz target '${name}'; the targets are ${TARGET_NAMES.join(', ')}`);
}

/** The corpus recipes of the given targets: fuzz/corpus/<target>/*.json, sorted. */
export function corpusFiles(targets: string[], corpusDir = DEFAULT_CORPUS_DIR): string[] {
  const files: string[] = [];
  for (const target of targets) {
    const dir = path.join(corpusDir, target);
    if (!fs.existsSync(dir)) continue;
    for (const name of fs.readdirSync(dir).sort()) if (name.endsWith('.json')) files.push(path.join(dir, name));
  }
  return files;
}

/** What replaying one recipe gave, and what is wrong with that (undefined: nothing). */
export interface RecipeRun {
  recipe: Recipe;
  result: CaseResult;
  problem?: string;
}

/** What a replay of one recipe file gave. */
export interface ReplayResult extends RecipeRun {
  file: string;
}

/**
 * Runs recipes (each target's in one batch of child processes) and judges each result: a
 * crash, hang or uncoded error, or another outcome than the recipe expects, is a problem.
 * Results come in the order of `recipes`.
 */
export async function runRecipes(recipes: Recipe[], options: { outDir?: string } = {}): Promise<RecipeRun[]> {
  const outDir = options.outDir ?? DEFAULT_OUT_DIR;
  const names = [...new Set(recipes.map((r) => r.target))];
  checkTargets(names);
  const fixtures = path.join(outDir, 'fixtures');
  await prepareTargets(names, fixtures);
  const work = path.join(outDir, 'work');
  fs.mkdirSync(work, { recursive: true });
  const out: RecipeRun[] = new Array(recipes.length);
  for (const name of names) {
    const mine = recipes.map((recipe, id) => ({ id, recipe })).filter((c) => c.recipe.target === name);
    const results = await runCases(TARGETS[name], fixtures, mine, work);
    for (const { id, recipe } of mine) {
      const result = results.get(id)!;
      const problem = BAD.has(result.outcome) ? `${result.outcome}: ${result.message ?? ''}` : meetsExpectation(result, recipe.expect);
      out[id] = { recipe, result, problem };
    }
  }
  return out;
}

/** Replays recipe files (corpus entries or findings); see {@link runRecipes}. */
export async function replayRecipeFiles(files: string[], options: { outDir?: string } = {}): Promise<ReplayResult[]> {
  const runs = await runRecipes(files.map((file) => readRecipe(file)), options);
  return runs.map((run, i) => ({ ...run, file: files[i] }));
}

function formatCounts(name: string, c: TargetCounts): string {
  return `${name.padEnd(10)} ${String(c.cases).padStart(6)} cases (${c.casesPerSecond.toFixed(1)}/s): ${c.cleanOk} clean-ok, ${c.cleanError} clean-error, ` +
    `${c.uncoded} uncoded, ${c.crash} crashes, ${c.hang} hangs`;
}

/** Replays the corpus, fuzzes each target for its turns, writes findings and a summary; see {@link FuzzOptions}. */
export async function runFuzz(options: FuzzOptions = {}): Promise<FuzzSummary> {
  const log = options.log ?? ((line: string) => console.log(line));
  const seed = options.seed ?? 1;
  const names = options.targets ?? TARGET_NAMES;
  checkTargets(names);
  const jobs = Math.max(1, Math.floor(options.jobs ?? 1));
  const outDir = options.outDir ?? DEFAULT_OUT_DIR;
  const fixtures = path.join(outDir, 'fixtures');
  const work = path.join(outDir, 'work');
  fs.mkdirSync(work, { recursive: true });
  const started = Date.now();
  const summary: FuzzSummary = { seed, startedAt: new Date(started).toISOString(), seconds: 0, corpus: { cases: 0, failures: [] }, targets: {}, findings: [], ok: true };

  const digests = await prepareTargets(names, fixtures);

  if (options.corpus ?? true) {
    const files = corpusFiles(names, options.corpusDir);
    const replayed = files.length ? await replayRecipeFiles(files, { outDir }) : [];
    summary.corpus.cases = replayed.length;
    for (const r of replayed) {
      if (!r.problem) continue;
      summary.corpus.failures.push({ file: path.relative(ROOT, r.file), result: r.result, problem: r.problem });
      log(`corpus ✗ ${path.relative(ROOT, r.file)}: ${clip(r.problem, 400)}`);
    }
    log(`corpus: ${replayed.length} recipes replayed, ${summary.corpus.failures.length} failing`);
  }

  const findings = new Map<string, Finding>();
  const record = (target: Target, caseNumber: number, recipe: Recipe, result: CaseResult) => {
    if (!BAD.has(result.outcome)) return;
    const signature = `${target.name} ${signatureOf(result)}`;
    let finding = findings.get(signature);
    if (!finding) {
      finding = { target: target.name, outcome: result.outcome, message: result.message ?? '', signature, count: 0, files: [], stack: result.stack, stderr: result.stderr };
      findings.set(signature, finding);
    }
    finding.count++;
    if (finding.files.length < RECIPES_PER_FINDING) {
      const dir = path.join(outDir, 'findings', target.name);
      fs.mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `${result.outcome}-${recipeDigest(recipe)}.json`);
      const body: FindingFile = { ...recipe, finding: { ...result, seed, caseNumber, fixtureDigest: digests[target.name] } };
      fs.writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
      finding.files.push(file);
      if (finding.files.length === 1) {
        log(`  ✗ ${target.name} ${result.outcome}: ${clip(result.message ?? '', 300)}`);
        log(`    recipe: ${path.relative(process.cwd(), file)}`);
        log(`    replay: ${replayCommand(file)}`);
        if (result.after?.length) log(`    with the cases its child ran before it: ${rerunCommand(seed, target.name, [...result.after, caseNumber])}`);
      }
    }
  };

  if (options.fuzz ?? true) {
    const turns: Array<{ name: string; seconds?: number; cases?: number }> = [];
    if (options.casesPerTarget !== undefined) {
      for (const name of names) turns.push({ name, cases: options.casesPerTarget });
    } else {
      const total = options.totalSeconds;
      const turn = options.secondsPerTarget ?? (total !== undefined ? Math.min(60, total / names.length) : 30);
      if (total === undefined) for (const name of names) turns.push({ name, seconds: turn });
      else for (let left = total, i = 0; left > 0; left -= turn, i++) turns.push({ name: names[i % names.length], seconds: Math.min(turn, left) });
    }
    const nextCase: Record<string, number> = {};
    for (const turn of turns) {
      const target = TARGETS[turn.name];
      const counts = (summary.targets[turn.name] ??= emptyCounts());
      const turnStarted = Date.now();
      const deadline = turn.seconds !== undefined ? turnStarted + turn.seconds * 1000 : Infinity;
      let left = turn.cases ?? Infinity;
      const take = (): number[] => {
        if (left <= 0 || Date.now() >= deadline) return [];
        const n = Math.min(target.batchSize, left);
        left -= n;
        const first = nextCase[turn.name] ?? Math.max(0, Math.floor(options.firstCase ?? 0));
        nextCase[turn.name] = first + n;
        return Array.from({ length: n }, (_, i) => first + i);
      };
      const worker = async () => {
        for (let numbers = take(); numbers.length; numbers = take()) {
          const cases = numbers.map((n) => ({ id: n, recipe: target.generate(Random.forCase(seed, target.name, n), fixtures) }));
          const results = await runCases(target, fixtures, cases, work);
          for (const c of cases) {
            const result = results.get(c.id)!;
            count(counts, result);
            record(target, c.id, c.recipe, result);
            if (options.verbose) {
              log(`${target.name} #${c.id} ${result.outcome}${result.status !== undefined ? ` ${result.status}` : ''}${result.code ? ` ${result.code}` : ''}` +
                ` ${result.ms ?? '-'} ms: ${clip((result.message ?? '').replace(/\s+/g, ' '), 200)}`);
            }
          }
        }
      };
      await Promise.all(Array.from({ length: jobs }, worker));
      counts.seconds += (Date.now() - turnStarted) / 1000;
      counts.casesPerSecond = counts.seconds > 0 ? counts.cases / counts.seconds : 0;
      log(formatCounts(turn.name, counts));
    }
  }

  summary.findings = [...findings.values()];
  summary.seconds = (Date.now() - started) / 1000;
  summary.ok = summary.corpus.failures.length === 0 && summary.findings.length === 0;
  fs.mkdirSync(outDir, { recursive: true });
  summary.summaryFile = path.join(outDir, `summary-${new Date(started).toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(summary.summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  return summary;
}

/** The lines that close a run: totals per target, each finding with how to replay it and keep it. */
export function reportLines(summary: FuzzSummary): string[] {
  const lines = ['', `seed ${summary.seed}, ${summary.seconds.toFixed(0)} s`];
  for (const [name, c] of Object.entries(summary.targets)) {
    lines.push(formatCounts(name, c));
    const codes = Object.entries(c.codes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
    if (codes) lines.push(`${' '.repeat(11)}clean errors: ${codes}`);
  }
  lines.push(`corpus: ${summary.corpus.cases} recipes, ${summary.corpus.failures.length} failing`);
  for (const f of summary.corpus.failures) lines.push(`  ✗ ${f.file}: ${clip(f.problem, 300)}`);
  if (summary.findings.length) {
    lines.push(`${summary.findings.length} kind${summary.findings.length === 1 ? '' : 's'} of failure:`);
    for (const f of summary.findings) {
      lines.push(`  ✗ ${f.target} ${f.outcome} x${f.count}: ${clip(f.message, 300)}`);
      const file = path.relative(process.cwd(), f.files[0]);
      lines.push(`    replay:  ${replayCommand(f.files[0])}`);
      lines.push(`    keep it: cp ${file} fuzz/corpus/${f.target}/<what-it-is>.json  (then add "expect" once it is fixed)`);
    }
  }
  if (summary.summaryFile) lines.push(`summary: ${path.relative(process.cwd(), summary.summaryFile)}`);
  lines.push(summary.ok ? 'no crash, hang or uncoded error' : 'FAILED: see above');
  return lines;
}
