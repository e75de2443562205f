/**
 * selftest: cases whose base says how they end (ok, a coded or uncoded error, a signal, an
 * abort, an exit, a hang, a rejection nobody handles), to check that the driver judges and
 * attributes each one right. Not part of a normal run; name it in --targets to run it.
 */
import { M3Error } from '../../lib/base/errors';
import type { CaseResult, Recipe } from '../recipe';
import type { Random } from '../rng';
import type { Target } from '../target';

export const SELFTEST_BASES = ['ok', 'coded', 'uncoded', 'segv', 'abort', 'exit', 'hang', 'unhandled'] as const;

export const selftestTarget: Target = {
  name: 'selftest',
  caseTimeoutMs: 1500,
  batchSize: 10,
  setupTimeoutMs: 10_000,

  generate(rng: Random): Recipe {
    // Mostly cases that end well, so that a batch goes on past the ones that do not.
    return { target: 'selftest', base: rng.chance(0.7) ? 'ok' : rng.pick(SELFTEST_BASES), ops: [] };
  },

  async open() {
    return {
      async run(recipe: Recipe): Promise<CaseResult> {
        switch (recipe.base) {
          case 'ok': return { outcome: 'clean-ok' };
          case 'coded': throw new M3Error('ERR_INPUT', 'a coded error');
          case 'uncoded': throw new TypeError('an uncoded error');
          case 'segv': process.kill(process.pid, 'SIGSEGV'); break;
          case 'abort': process.abort(); break;
          case 'exit': process.exit(3); break;
          case 'hang': for (;;) { /* never answers */ }
          case 'unhandled': void Promise.reject(new Error('a rejection nobody handles')); break;
        }
        // Give a signal or a rejection time to arrive.
        await new Promise((resolve) => setTimeout(resolve, 500));
        return { outcome: 'clean-ok' };
      },
    };
  },
};
