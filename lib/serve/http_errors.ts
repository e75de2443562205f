/**
 * The server's errors as HTTP answers: every M3Error, fastify error or other failure becomes a
 * status and an OpenAI-style body { error: { message, type, code } }, with Retry-After on a 503
 * that a retry may cure.
 */
import type { FastifyError, FastifyReply } from 'fastify';
import type { M3Error } from '../base/errors';

export interface HttpError {
  status: number;
  type: string;
  code: string;
  message: string;
  retryAfter?: boolean;
}

/** An error that is already an HTTP answer (a status and code the M3 codes have no name for). */
export class HttpFailure extends Error {
  constructor(readonly answer: HttpError) {
    super(answer.message);
  }
}

/** A 400 (or `status`) invalid_request_error with `code`. */
export function httpFailure(code: string, message: string, status = 400): HttpFailure {
  return new HttpFailure({ status, type: 'invalid_request_error', code, message });
}

/** What the 413 of an over-long text adds: the two ways to have it cut instead. */
const TRUNCATE_HINT = 'Send "truncate": true, or start the server with --auto-truncate, to cut such texts instead.';

/** An M3Error, fastify error or anything else, as a status and an OpenAI-style error body. */
export function classify(err: FastifyError | M3Error | Error, options: { bodyLimit: number; requestTimeoutMs: number }): HttpError {
  if (err instanceof HttpFailure) return err.answer;
  const e = err as FastifyError & { code?: string; validation?: Array<{ keyword?: string; instancePath: string; message?: string; params?: Record<string, unknown> }> };
  if (e.validation) {
    // A value that fits none of a field's shapes: say what the shapes are, not each mismatch.
    const choice = e.validation.find((v) => v.keyword === 'anyOf');
    if (choice) {
      const where = `body${choice.instancePath}`;
      const shapes = /^\/documents\/\d+$/.test(choice.instancePath)
        ? 'a string or an object { text }'
        : 'a string or a non-empty array of strings (token-id arrays are not accepted: send the text)';
      return { status: 400, type: 'invalid_request_error', code: 'invalid_body', message: `${where} must be ${shapes}` };
    }
    const v = e.validation[0];
    const field = v.params?.additionalProperty ? `: unknown field '${String(v.params.additionalProperty)}'` : '';
    return { status: 400, type: 'invalid_request_error', code: 'invalid_body', message: `${e.message}${field}` };
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, type: 'invalid_request_error', code: 'body_too_large', message: `The request body is over the ${options.bodyLimit}-byte limit; send fewer or shorter texts per request.` };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, type: 'invalid_request_error', code: 'invalid_json', message: `The request body is not valid JSON: ${e.message}` };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, type: 'invalid_request_error', code: 'unsupported_media_type', message: `${e.message}; send Content-Type: application/json` };
    case 'ERR_INPUT':
      return { status: 400, type: 'invalid_request_error', code: 'invalid_input', message: e.message };
    case 'ERR_TOO_LONG':
      return { status: 413, type: 'invalid_request_error', code: 'text_too_long', message: `${e.message} ${TRUNCATE_HINT}` };
    case 'ERR_QUEUE_FULL':
      return { status: 503, type: 'overloaded', code: 'queue_full', message: e.message, retryAfter: true };
    case 'ERR_ABORTED':
      return { status: 503, type: 'overloaded', code: 'timeout', message: `The request was not answered within ${options.requestTimeoutMs} ms; retry later.`, retryAfter: true };
    case 'ERR_DISPOSED':
      return { status: 503, type: 'unavailable', code: 'shutting_down', message: 'The server is shutting down.', retryAfter: true };
    case 'ERR_STORE':
      return { status: 503, type: 'unavailable', code: 'store_unavailable', message: e.message, retryAfter: true };
    default:
      break;
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { status: e.statusCode, type: 'invalid_request_error', code: String(e.code ?? 'bad_request').toLowerCase(), message: e.message };
  }
  return { status: 500, type: 'server_error', code: e.code ? String(e.code).toLowerCase() : 'internal_error', message: e.message };
}

/** Sends `err` as the answer; `retryAfter` is the Retry-After value in seconds. */
export function sendError(reply: FastifyReply, err: HttpError, retryAfter: string): FastifyReply {
  if (err.retryAfter) reply.header('Retry-After', retryAfter);
  return reply.code(err.status).send({ error: { message: err.message, type: err.type, code: err.code } });
}
