/**
 * Stable error codes. Every error this package raises is an {@link M3Error} with one of them.
 * - `ERR_MODEL_FILES`: a model file is missing, unreadable, corrupted or refused (e.g. a pickle
 *   that is not a plain state dict).
 * - `ERR_MODEL_LAYOUT`: the files are readable but do not form a BGE-M3 model (unknown outputs,
 *   wrong shapes, a tokenizer that does not match the model).
 * - `ERR_INPUT`: an argument is invalid; the message names it and what was expected.
 * - `ERR_ABORTED`: the caller's AbortSignal fired.
 * - `ERR_DISPOSED`: the model was disposed.
 * - `ERR_DEVICE`: the requested device (CUDA) cannot be used.
 * - `ERR_QUEUE_FULL`: a batcher's or server's queue is full; retry later.
 * - `ERR_TOO_LONG`: a text has more tokens than allowed and truncation was turned off.
 * - `ERR_RUNTIME`: ONNX Runtime failed while running the model.
 * - `ERR_NATIVE`: the native addon could not be loaded.
 * - `ERR_STORE`: the database behind a store failed, could not be reached, or holds something
 *   else than this version's store; the message names the database (without its password).
 */
export const M3_ERROR_CODES = [
  'ERR_MODEL_FILES', 'ERR_MODEL_LAYOUT', 'ERR_INPUT', 'ERR_ABORTED', 'ERR_DISPOSED', 'ERR_DEVICE',
  'ERR_QUEUE_FULL', 'ERR_TOO_LONG', 'ERR_RUNTIME', 'ERR_NATIVE', 'ERR_STORE',
] as const;

/** One of {@link M3_ERROR_CODES}. */
export type M3ErrorCode = typeof M3_ERROR_CODES[number];

/** The error class of this package: check `code`, not the message. */
export class M3Error extends Error {
  readonly code: M3ErrorCode;
  constructor(code: M3ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'M3Error';
    this.code = code;
  }
}

/** "Expected X for Y but received Z", the one template for argument errors. */
export function inputError(expected: string, what: string, received: unknown): M3Error {
  return new M3Error('ERR_INPUT', `Expected ${expected} for ${what} but received ${describe(received)}`);
}

/** A short, safe description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return value.length > 40 ? `a string of length ${value.length}` : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as { length: number }).length}`;
  if (typeof value === 'function') return 'a function';
  return `an object (${Object.prototype.toString.call(value).slice(8, -1)})`;
}

const KNOWN_CODES = new Set<string>(M3_ERROR_CODES);

/**
 * Turns an error from the native addon (a plain Error with a `code`) into an M3Error whose stack
 * is the caller's (the native one ends in the addon's thread, which says nothing useful).
 */
export function fromNative(err: unknown, callerStack?: string): M3Error {
  if (err instanceof M3Error) return err;
  const code = (err as { code?: unknown })?.code;
  const message = (err as { message?: unknown })?.message;
  const out = new M3Error(
    typeof code === 'string' && KNOWN_CODES.has(code) ? (code as M3ErrorCode) : 'ERR_RUNTIME',
    typeof message === 'string' ? message : String(err),
    { cause: err },
  );
  if (callerStack) out.stack = `${out.name}: ${out.message}\n${callerStack.split('\n').slice(1).join('\n')}`;
  return out;
}

/** ERR_ABORTED for work whose AbortSignal fired (`what` names it: "encode"). */
export function abortedError(what = 'encode'): M3Error {
  return new M3Error('ERR_ABORTED', `${what} was aborted by its AbortSignal`);
}
