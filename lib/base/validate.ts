/**
 * The argument checks that every surface shares (the model, the batcher, the scoring functions,
 * the index, training, the server). Each throws an M3Error (ERR_INPUT) in the one template,
 * "Expected X for Y but received Z", and returns the checked value, or the fallback when the
 * value is undefined (an option left out). The predicates (`is...`) serve callers that word
 * their own message, such as the CLI's argument parsers.
 */
import { inputError } from './errors';

/** Whether `value` is an integer in [min, max]. */
export function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

/** Whether `value` is a finite number in [min, max]. */
export function isNumberIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= min && value <= max;
}

/** Whether `value` is three finite non-negative numbers, such as [dense, sparse, colbert] weights. */
export function isWeightTriple(value: unknown): value is [number, number, number] {
  return Array.isArray(value) && value.length === 3 && value.every((w) => isNumberIn(w, 0, Infinity));
}

/** Whether `value` is an array of strings. */
export function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((s) => typeof s === 'string');
}

/** An options argument: any object (not null). `expected` says what it should hold. */
export function checkOptions<T>(options: T, expected = 'an options object'): T {
  if (options === null || typeof options !== 'object') throw inputError(expected, 'options', options);
  return options;
}

/** An integer in [min, max]. */
export function checkInteger(value: unknown, what: string, min: number, max: number): number {
  if (!isIntegerIn(value, min, max)) throw inputError(`an integer in [${min}, ${max}]`, what, value);
  return value;
}

/** An integer in [min, max], or `fallback` when undefined. */
export function optionalInteger(value: unknown, what: string, fallback: number, min: number, max: number): number {
  return value === undefined ? fallback : checkInteger(value, what, min, max);
}

/** A finite number in [min, max], or `fallback` when undefined. */
export function optionalNumber(value: unknown, what: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!isNumberIn(value, min, max)) throw inputError(`a number in [${min}, ${max}]`, what, value);
  return value;
}

/** A finite number above 0. */
export function checkPositive(value: unknown, what: string): number {
  if (!isNumberIn(value, Number.MIN_VALUE, Infinity)) throw inputError('a positive number', what, value);
  return value;
}

/** A boolean, or `fallback` when undefined. */
export function checkBoolean(value: unknown, what: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw inputError('a boolean', what, value);
  return value;
}

/** An AbortSignal, or undefined. */
export function checkSignal(value: unknown, what = 'signal'): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) throw inputError('an AbortSignal', what, value);
  return value;
}

/** A non-empty string, such as a path; `expected` says what it names ("a model directory path"). */
export function checkNonEmptyString(value: unknown, what: string, expected: string): string {
  if (typeof value !== 'string' || value.length === 0) throw inputError(expected, what, value);
  return value;
}

/** One of `choices` ("'cpu' or 'cuda'"), or `fallback` when undefined and one is given. */
export function checkChoice<T extends string | boolean>(value: unknown, what: string, choices: readonly T[], fallback?: T): T {
  if (value === undefined && fallback !== undefined) return fallback;
  if (!choices.includes(value as T)) throw inputError(listOf(choices), what, value);
  return value as T;
}

/** Three finite non-negative numbers; `names` says what they weigh ("[dense, sparse, colbert]"). */
export function checkWeightTriple(value: unknown, what: string, names: string): [number, number, number] {
  if (!isWeightTriple(value)) throw inputError(`three finite non-negative numbers ${names}`, what, value);
  return value;
}

/** "'a', 'b' or 'c'" (strings quoted, false as it is). */
function listOf(choices: readonly unknown[]): string {
  const words = choices.map((c) => (typeof c === 'string' ? `'${c}'` : String(c)));
  return words.length === 1 ? words[0] : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`;
}
