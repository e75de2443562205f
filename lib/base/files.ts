/**
 * Opening the files this package reads (index files, model files) so that a path which is not a
 * regular file is refused with a clear error instead of hanging or failing obscurely: open(2) of
 * a FIFO blocks until a writer appears (a blocking open on the event loop stalls the whole
 * process), a directory fails later with a bare EISDIR, and devices and sockets are no files to
 * read at all. And writing the files this package keeps (index directories, checkpoints, model
 * heads) durably: flushed to disk, and replaced by rename.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M3Error } from './errors';

// O_NONBLOCK makes open(2) of a FIFO return at once; O_NOCTTY keeps a terminal from becoming the
// process's controlling terminal. Both do nothing to a regular file. (Windows has neither.)
const NEVER_BLOCK = (fs.constants.O_NONBLOCK ?? 0) | (fs.constants.O_NOCTTY ?? 0);

/** What a file system entry is, in words ("a FIFO (named pipe)", "a directory", ...), for messages. */
export function describeFileKind(stats: fs.Stats): string {
  if (stats.isFile()) return 'a regular file';
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

function notRegular(file: string, what: string, kind: string): M3Error {
  return new M3Error('ERR_MODEL_FILES', `${what} '${file}' is ${kind}, not a regular file; put the file itself at this path.`);
}

function cannotRead(file: string, what: string, err: unknown): M3Error {
  return new M3Error('ERR_MODEL_FILES', `${what} '${file}' cannot be read (${(err as Error).message}); check that it exists and is readable.`,
    { cause: err });
}

/**
 * The stats of `file` when it is a regular file (a symbolic link is followed), or undefined when
 * nothing is there. Anything else (a FIFO, a directory, a socket, a device, or a link to one of
 * those) is refused with an M3Error (ERR_MODEL_FILES) naming the file and what it is; `what`
 * says what the file is for ("Index file", "Model file").
 */
export function regularFileStats(file: string, what = 'File'): fs.Stats | undefined {
  let stats: fs.Stats;
  try {
    stats = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw cannotRead(file, what, err);
  }
  if (stats.isFile()) return stats;
  // stat followed the link; say so, or "is a FIFO" would puzzle someone who sees a link there.
  const viaLink = (() => {
    try {
      return fs.lstatSync(file).isSymbolicLink();
    } catch {
      return false;
    }
  })();
  throw notRegular(file, what, `${viaLink ? 'a symbolic link to ' : ''}${describeFileKind(stats)}`);
}

/**
 * Throws unless `file` is a regular file (see {@link regularFileStats}); a missing file is an
 * M3Error (ERR_MODEL_FILES) too.
 */
export function assertRegularFile(file: string, what = 'File'): fs.Stats {
  const stats = regularFileStats(file, what);
  if (!stats) throw new M3Error('ERR_MODEL_FILES', `${what} '${file}' is missing.`);
  return stats;
}

/**
 * Opens `file` (for reading, or with `readWrite` for reading and writing) and returns its
 * descriptor and stats, refusing anything but a regular file with an M3Error (ERR_MODEL_FILES)
 * that names the file and what it is. The path is checked before the open, so that no FIFO or
 * device is ever opened; the open itself cannot block (O_NONBLOCK); and the descriptor is checked
 * after it, so that a file swapped in between is caught too. Close the descriptor with
 * fs.closeSync.
 */
export function openRegularFile(file: string, what = 'File', { readWrite = false } = {}): { fd: number; stats: fs.Stats } {
  assertRegularFile(file, what);
  let fd: number;
  try {
    fd = fs.openSync(file, (readWrite ? fs.constants.O_RDWR : fs.constants.O_RDONLY) | NEVER_BLOCK);
  } catch (err) {
    throw cannotRead(file, what, err);
  }
  try {
    const stats = fs.fstatSync(fd);
    if (!stats.isFile()) throw notRegular(file, what, describeFileKind(stats));
    return { fd, stats };
  } catch (err) {
    fs.closeSync(fd);
    throw err instanceof M3Error ? err : cannotRead(file, what, err);
  }
}

/**
 * Reads a whole regular file (any size up to a Buffer's limit; readFileSync stops at 2 GiB),
 * refusing anything else as {@link openRegularFile} does. With `maxBytes`, a larger file is
 * refused before anything is allocated.
 */
export function readRegularFile(file: string, what = 'File', maxBytes?: number): Buffer {
  const { fd, stats } = openRegularFile(file, what);
  try {
    const size = stats.size;
    if (maxBytes !== undefined && size > maxBytes) {
      throw new M3Error('ERR_MODEL_FILES', `${what} '${file}' has ${size} bytes, more than the ${maxBytes} such a file can have; it is not the right file.`);
    }
    let out: Buffer;
    try {
      out = Buffer.allocUnsafe(size);
    } catch (err) {
      throw new M3Error('ERR_MODEL_FILES', `${what} '${file}' has ${size} bytes, more than this process can hold in one buffer.`, { cause: err });
    }
    let done = 0;
    try {
      while (done < size) {
        const n = fs.readSync(fd, out, done, Math.min(1 << 30, size - done), done);
        if (n === 0) break;
        done += n;
      }
    } catch (err) {
      throw cannotRead(file, what, err);
    }
    return done === size ? out : out.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A path under which `file`, open at `fd`, can be opened again by code that takes only a path
 * (a native library): on Linux the descriptor's own /proc entry, which is the very file that was
 * opened whatever happened to the path since; elsewhere the path itself, after checking that it
 * still names that file. An M3Error (ERR_MODEL_FILES) when it no longer does.
 */
export function pathOfOpenFile(fd: number, file: string, what = 'File'): string {
  const opened = fs.fstatSync(fd);
  const same = (candidate: string) => {
    try {
      const now = fs.statSync(candidate);
      return now.isFile() && now.dev === opened.dev && now.ino === opened.ino;
    } catch {
      return false;
    }
  };
  const own = `/proc/self/fd/${fd}`;
  if (process.platform === 'linux' && same(own)) return own;
  if (same(file)) return file;
  throw new M3Error('ERR_MODEL_FILES', `${what} '${file}' was replaced while it was being read; load again.`);
}

// ---------------------------------------------------------------------------------------------
// Durable writes: what is written is on disk before anyone is told so.

/**
 * Writes `data` to `file` and flushes it to disk before returning. By default the file must be
 * new ('wx': fails rather than open whatever is there, a FIFO would block); `replace` overwrites.
 */
export function writeFileSynced(file: string, data: string | Buffer | readonly Buffer[], { replace = false } = {}): void {
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : Buffer.isBuffer(data) ? [data] : data;
  const fd = fs.openSync(file, replace ? 'w' : 'wx');
  try {
    for (const chunk of chunks) {
      let done = 0;
      while (done < chunk.length) done += fs.writeSync(fd, chunk, done, chunk.length - done);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes a directory's entries (a rename or a new file in it) to disk. */
export function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes a regular file that someone else wrote (a native library, by name) to disk. */
export function fsyncFile(file: string, what = 'File'): void {
  const { fd } = openRegularFile(file, what, { readWrite: true });
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Replaces `file` atomically and durably: the data goes to a uniquely named temp file beside it
 * (`<file>.<pid>.<random>.tmp`), which is flushed, renamed over `file`, and the rename flushed.
 * A crash at any moment leaves the old file or the new one.
 */
export function replaceFileSynced(file: string, data: string | Buffer | readonly Buffer[]): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  writeFileSynced(tmp, data);
  fs.renameSync(tmp, file);
  fsyncDirectory(path.dirname(file));
}

/** Offset of the first byte of `b` that does not start or continue a valid UTF-8 sequence, or -1. */
function firstInvalidUtf8(b: Buffer): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    const extra = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
    if (extra < 0 || i + extra >= b.length) return i;
    for (let k = 1; k <= extra; k++) if ((b[i + k] & 0xc0) !== 0x80) return i;
    // Overlong forms, UTF-16 surrogates and code points above U+10FFFF.
    const next = b[i + 1];
    if ((c === 0xe0 && next < 0xa0) || (c === 0xed && next >= 0xa0) || (c === 0xf0 && next < 0x90) || (c === 0xf4 && next >= 0x90)) return i;
    i += extra + 1;
  }
  return -1;
}

/**
 * `bytes` as UTF-8 text, strictly: bytes that are not UTF-8 are an M3Error (ERR_INPUT) naming
 * `source`, the line and the byte offset, rather than U+FFFD characters inside the texts.
 */
export function decodeUtf8(bytes: Buffer, source: string): string {
  const at = firstInvalidUtf8(bytes);
  if (at < 0) return new TextDecoder('utf-8').decode(bytes);
  let line = 1;
  for (let i = 0; i < at; i++) if (bytes[i] === 0x0a) line++;
  throw new M3Error('ERR_INPUT', `${source} is not valid UTF-8 (line ${line}, byte ${at}: 0x${bytes[at].toString(16).padStart(2, '0')}); ` +
    'convert it to UTF-8 first, e.g. iconv -f LATIN1 -t UTF-8');
}

/**
 * An input the user named (texts, a corpus, training rows): a file, or standard input for '-',
 * read whole and decoded as strict UTF-8. FIFOs and devices are read too (`<(command)`); a
 * missing file or a folder is an M3Error (ERR_INPUT) that says so.
 */
export function readTextInput(file: string, what = 'Input file'): string {
  if (file === '-') return decodeUtf8(fs.readFileSync(0), 'standard input');
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new M3Error('ERR_INPUT', `${what} '${file}' does not exist.`, { cause: err });
    if (code === 'EISDIR') throw new M3Error('ERR_INPUT', `${what} '${file}' is a folder; pass a file.`, { cause: err });
    throw new M3Error('ERR_INPUT', `${what} '${file}' cannot be read: ${(err as Error).message}`, { cause: err });
  }
  return decodeUtf8(bytes, `${what} '${file}'`);
}
