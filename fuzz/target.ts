/**
 * What a fuzz target is: a generator of recipes (run by the driver) and a session that runs
 * them (run in a child process, where a crash or a hang costs only the child), plus how its
 * outcomes are judged.
 */
import * as path from 'node:path';
import { M3Error, M3_ERROR_CODES } from '../lib/base/errors';
import type { CaseResult, Recipe } from './recipe';
import type { Random } from './rng';

/** The repository root (this file runs as dist/fuzz/target.js). */
export const ROOT = path.resolve(__dirname, '..', '..');

export interface Target {
  name: string;
  /** Longest a case may run before it counts as a hang. */
  caseTimeoutMs: number;
  /** Cases one child process runs before the driver starts another (fewer when one crashes). */
  batchSize: number;
  /** Longest a child may take to set up (load a model, build bases) before its first case. */
  setupTimeoutMs: number;
  /**
   * Whether the child collects garbage after each case (default true), so that a native
   * finalizer that crashes does so within the case that left the object behind. Off where cases
   * create no native objects and a collection would cost more than the case.
   */
  collectAfterEachCase?: boolean;
  /**
   * Driver side, once per run: builds what the cases start from that the repository does not
   * hold (under `fixtures`, kept between runs) and returns a digest of it, so that a finding
   * records which bytes its offsets refer to.
   */
  prepare?(fixtures: string): Promise<string | undefined> | string | undefined;
  /** Driver side: one case, drawn from `rng` alone (and the fixtures). */
  generate(rng: Random, fixtures: string): Recipe;
  /** Child side: sets up once, then runs cases. */
  open(fixtures: string): Promise<TargetSession>;
}

export interface TargetSession {
  /**
   * Runs one case in `scratch` (an empty folder of its own). Returns its result; a thrown error
   * is judged by {@link judgeError}.
   */
  run(recipe: Recipe, scratch: string): Promise<CaseResult>;
  close?(): Promise<void>;
}

const CODES = new Set<string>(M3_ERROR_CODES);

/** A thrown error: clean when it is an M3Error with one of the documented codes, uncoded otherwise. */
export function judgeError(err: unknown): CaseResult {
  const e = err as { message?: unknown; stack?: unknown; code?: unknown } | null | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (err instanceof M3Error && CODES.has(err.code)) return { outcome: 'clean-error', code: err.code, message: clip(message) };
  return {
    outcome: 'uncoded', message: clip(message), stack: typeof e?.stack === 'string' ? clip(e.stack, 4000) : undefined,
    code: typeof e?.code === 'string' ? e.code : undefined,
  };
}

/** A result that was accepted but cannot be right (NaN scores, offsets past the data): as bad as an uncoded error. */
export function misleading(what: string): CaseResult {
  return { outcome: 'uncoded', message: `accepted, but misleading: ${what}` };
}

/** Where `values` holds a NaN or an infinity, or -1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return i;
  return -1;
}

/** Keeps messages (which may quote a megabyte of mutated input) readable. */
export function clip(text: string, max = 1000): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}

/** A recipe that cannot be replayed (an unknown base, a step that names no file): a fault of the recipe, not a finding. */
export class RecipeError extends Error {
  override name = 'RecipeError';
}

/** Runs the part of a case that builds its input from the recipe, so that its failures are told apart from the engine's. */
export function fromRecipe<T>(build: () => T): T {
  try {
    return build();
  } catch (err) {
    throw err instanceof RecipeError ? err : new RecipeError(`the recipe cannot be replayed: ${(err as Error)?.message ?? String(err)}`);
  }
}
