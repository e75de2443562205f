/**
 * The mutation fuzzer as a test (fuzz/): the driver judges and blames each way a case can end,
 * the regression corpus replays as each recipe expects, and a short fuzz pass with a fixed seed
 * finds no crash, hang or uncoded error in any target. `npm run fuzz` runs the same for longer.
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { corpusFiles, replayRecipeFiles, runFuzz, runRecipes } from '../fuzz/driver';
import type { Recipe } from '../fuzz/recipe';
import { TARGET_NAMES } from '../fuzz/registry';

// Fixtures, findings and summaries of these runs; kept apart from those of `npm run fuzz`.
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-fuzz-test-'));
after(() => fs.rmSync(outDir, { recursive: true, force: true }));

/** Cases per target of the fixed-seed pass: a few seconds each on two busy cores. */
const CASES_PER_TARGET = 200;

describe('fuzz driver', () => {
  it('tells every ending apart and blames the case that was running, then goes on with the rest', async () => {
    const bases = ['ok', 'segv', 'ok', 'abort', 'coded', 'hang', 'ok', 'exit', 'uncoded', 'unhandled', 'ok'];
    const runs = await runRecipes(bases.map((base): Recipe => ({ target: 'selftest', base, ops: [] })), { outDir });
    const seen = runs.map((r) => `${r.recipe.base}:${r.result.outcome}${r.result.signal ? `:${r.result.signal}` : ''}${r.result.code ? `:${r.result.code}` : ''}`);
    assert.deepEqual(seen, [
      'ok:clean-ok', 'segv:crash:SIGSEGV', 'ok:clean-ok', 'abort:crash:SIGABRT', 'coded:clean-error:ERR_INPUT', 'hang:hang', 'ok:clean-ok',
      'exit:crash', 'uncoded:uncoded', 'unhandled:crash', 'ok:clean-ok',
    ]);
    assert.equal(runs[7].result.exitCode, 3);
    assert.match(runs[9].result.message ?? '', /a rejection nobody handles/);
    assert.match(runs[3].result.stderr ?? '', /selftest/, 'the crash keeps the end of its own stderr');
  });
});

describe('fuzz regression corpus', () => {
  it('has recipes for every target, and each replays as it expects', async () => {
    const files = corpusFiles(TARGET_NAMES);
    for (const target of TARGET_NAMES) assert.ok(files.some((f) => f.includes(`${path.sep}${target}${path.sep}`)), `fuzz/corpus/${target} has recipes`);
    const replayed = await replayRecipeFiles(files, { outDir });
    const problems = replayed.filter((r) => r.problem).map((r) => `${path.basename(r.file)}: ${r.problem}`);
    assert.deepEqual(problems, [], problems.join('\n'));
  });
});

describe('fuzz pass (seed 1)', () => {
  it(`runs ${CASES_PER_TARGET} cases per target without a crash, hang or uncoded error`, async () => {
    const summary = await runFuzz({ seed: 1, casesPerTarget: CASES_PER_TARGET, corpus: false, outDir, log: () => undefined });
    for (const target of TARGET_NAMES) {
      const counts = summary.targets[target];
      assert.equal(counts.cases, CASES_PER_TARGET, `${target} ran every case`);
      // A pass that never gets past the first check proves nothing: some cases must work.
      assert.ok(counts.cleanOk > 0 && counts.cleanError > 0, `${target}: ${JSON.stringify(counts)}`);
    }
    // The recipe itself, not its path: the folder is removed after the test.
    const findings = summary.findings.map((f) => `${f.signature} (x${f.count})\n${f.message}\n${f.stack ?? ''}${f.stderr ?? ''}\nrecipe: ${fs.readFileSync(f.files[0], 'utf8')}`);
    assert.deepEqual(findings, [], findings.join('\n\n'));
    assert.ok(summary.ok);
  });
});
