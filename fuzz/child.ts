/**
 * A fuzz child process: runs a batch of cases of one target and reports on file descriptor 3,
 * one JSON line as each case starts and one as it ends. The writes are synchronous, so when the
 * process dies (a signal, an abort in native code) or stops answering, the driver knows which
 * case was running. Arguments: the batch file ({ target, fixtures, cases: [{ id, recipe }] }) and
 * a folder for the cases' files.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CaseResult, Recipe } from './recipe';
import { TARGETS } from './registry';
import { RecipeError, judgeError } from './target';

/** Lines to the driver. */
const REPORT_FD = 3;

interface Batch {
  target: string;
  fixtures: string;
  cases: Array<{ id: number; recipe: Recipe }>;
}

function report(event: Record<string, unknown>): void {
  fs.writeSync(REPORT_FD, `${JSON.stringify(event)}\n`);
}

let current: number | undefined;
const warnings: string[] = [];

// An error nothing caught would end a real process too: reported as the case's crash.
const fatal = (err: unknown) => {
  const e = err as { message?: unknown; stack?: unknown };
  report({ ev: 'fatal', id: current, message: String(e?.message ?? err), stack: typeof e?.stack === 'string' ? e.stack : undefined });
  process.exit(70);
};
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);
process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`));

async function main(): Promise<void> {
  const batch = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as Batch;
  const target = TARGETS[batch.target];
  if (!target) throw new Error(`no fuzz target '${batch.target}'`);
  const session = await target.open(batch.fixtures);
  report({ ev: 'ready' });
  // The driver's folder for this child (removed by the driver, whatever becomes of the child), or a temporary one.
  const scratchRoot = process.argv[3] ?? fs.mkdtempSync(path.join(os.tmpdir(), `bge-m3-fuzz-${batch.target}-`));
  try {
    for (const { id, recipe } of batch.cases) {
      current = id;
      warnings.length = 0;
      // A marker in stderr, so that the driver can tell which case wrote what (a panic message).
      fs.writeSync(2, `\n[fuzz case ${id}]\n`);
      report({ ev: 'start', id });
      const scratch = path.join(scratchRoot, String(id));
      fs.mkdirSync(scratch);
      const started = process.hrtime.bigint();
      let result: CaseResult;
      try {
        result = await session.run(recipe, scratch);
      } catch (err) {
        if (err instanceof RecipeError) {
          report({ ev: 'recipe-error', id, message: err.message });
          continue;
        }
        result = judgeError(err);
      }
      result.ms = Number((process.hrtime.bigint() - started) / 1_000_000n);
      // Collect what the case left behind while it is still the case running: a native finalizer
      // that crashes (a tokenizer's drop overflowing the stack) would otherwise strike during
      // some later case. Finalizers and process.emitWarning deliver on a later tick.
      if (target.collectAfterEachCase ?? true) (globalThis as { gc?: () => void }).gc?.();
      await new Promise((resolve) => setImmediate(resolve));
      if (warnings.length && result.outcome !== 'clean-error') result.message ??= warnings.join('; ').slice(0, 500);
      fs.rmSync(scratch, { recursive: true, force: true });
      report({ ev: 'end', id, result });
      current = undefined;
    }
  } finally {
    fs.rmSync(scratchRoot, { recursive: true, force: true });
  }
  await session.close?.();
}

main().then(() => process.exit(0), (err) => {
  report({ ev: 'setup-failed', message: String((err as Error)?.stack ?? err) });
  process.exit(71);
});
