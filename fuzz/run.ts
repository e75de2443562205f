/**
 * `npm run fuzz -- [options]`: replays the regression corpus, then fuzzes the targets, and exits
 * non-zero when any case crashed, hung or failed without a coded error. See fuzz/README.md.
 *
 *   --minutes N              cycle through the targets until N minutes are spent
 *   --seconds-per-target S   length of one target's turn (default 30)
 *   --cases N                exactly N cases per target instead of a time
 *   --first-case N           number of the first case (with --cases: rerun a stretch of a run)
 *   --seed K                 seed of the generated cases (default 1)
 *   --targets a,b            model-dir, index-dir, http, wire (default all)
 *   --jobs J                 child processes at once (default 1)
 *   --no-corpus              skip the corpus replay;  --corpus-only: replay it and stop
 *   --replay FILE|DIR ...    replay recipe files (findings or corpus entries) and print what they do
 *   --out DIR                fixtures, findings and summaries (default .cache/fuzz)
 *   --verbose                a line per case
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_OUT_DIR, FuzzHarnessError, replayRecipeFiles, reportLines, runFuzz } from './driver';

function positiveNumber(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new FuzzHarnessError(`${what} must be a positive number, got '${text}'`);
  return n;
}

/** Recipe files named on the command line: files, or every .json in a folder (recursively). */
function recipeFilesOf(paths: string[]): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    if (fs.statSync(p).isDirectory()) for (const name of fs.readdirSync(p).sort()) walk(path.join(p, name));
    else if (p.endsWith('.json')) out.push(p);
  };
  for (const p of paths) walk(path.resolve(p));
  return out;
}

async function replay(paths: string[], outDir: string): Promise<number> {
  const results = await replayRecipeFiles(recipeFilesOf(paths), { outDir });
  for (const r of results) {
    const { result } = r;
    console.log(`${r.problem ? '✗' : '✓'} ${path.relative(process.cwd(), r.file)}: ${result.outcome}` +
      `${result.status !== undefined ? ` ${result.status}` : ''}${result.code ? ` ${result.code}` : ''}${result.ms !== undefined ? ` (${result.ms} ms)` : ''}`);
    if (r.recipe.note) console.log(`  note: ${r.recipe.note}`);
    if (result.message) console.log(`  message: ${result.message}`);
    if (result.signal || result.exitCode !== undefined) console.log(`  ended: ${result.signal ?? `exit code ${result.exitCode}`}`);
    if (result.stack) console.log(`  stack: ${result.stack.split('\n').slice(0, 12).join('\n    ')}`);
    if (result.stderr) console.log(`  stderr:\n    ${result.stderr.split('\n').slice(-25).join('\n    ')}`);
    if (r.problem && r.recipe.expect) console.log(`  expected: ${JSON.stringify(r.recipe.expect)}; ${r.problem}`);
  }
  const failed = results.filter((r) => r.problem).length;
  console.log(`${results.length} replayed, ${failed} failing`);
  return failed ? 1 : 0;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      'seconds-per-target': { type: 'string' },
      cases: { type: 'string' },
      'first-case': { type: 'string' },
      seed: { type: 'string' },
      targets: { type: 'string' },
      jobs: { type: 'string' },
      'no-corpus': { type: 'boolean' },
      'corpus-only': { type: 'boolean' },
      replay: { type: 'string', multiple: true },
      out: { type: 'string' },
      verbose: { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const outDir = values.out ? path.resolve(values.out) : DEFAULT_OUT_DIR;
  if (values.replay) return replay(values.replay, outDir);
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new FuzzHarnessError(`--seed must be an integer, got '${values.seed}'`);
  const minutes = positiveNumber(values.minutes, '--minutes');
  const cases = positiveNumber(values.cases, '--cases');
  const summary = await runFuzz({
    seed,
    targets: values.targets?.split(',').map((t) => t.trim()).filter(Boolean),
    secondsPerTarget: positiveNumber(values['seconds-per-target'], '--seconds-per-target'),
    totalSeconds: minutes === undefined ? undefined : minutes * 60,
    casesPerTarget: cases === undefined ? undefined : Math.ceil(cases),
    firstCase: values['first-case'] === undefined ? undefined : Number(values['first-case']),
    jobs: positiveNumber(values.jobs, '--jobs'),
    corpus: !values['no-corpus'],
    fuzz: !values['corpus-only'],
    outDir,
    verbose: values.verbose,
  });
  for (const line of reportLines(summary)) console.log(line);
  return summary.ok ? 0 : 1;
}

main().then((code) => {
  process.exitCode = code;
}, (err) => {
  console.error(err instanceof FuzzHarnessError ? `fuzz: ${err.message}` : err);
  process.exitCode = 2;
});
