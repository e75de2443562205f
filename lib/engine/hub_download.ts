/**
 * One file from the hub into the cache, as huggingface_hub does it: streamed into
 * `blobs/<etag>.incomplete`, resumed from that file's size by an HTTP Range request, checked
 * (size, then the sha256 of an LFS file or the git blob id of another) and only then renamed to
 * `blobs/<etag>`, so an interrupted download never leaves a file that looks complete. A lock
 * per blob (in the repository's `.bge-m3/locks/`) keeps concurrent loads from writing it at once.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SingleBar } from 'cli-progress';
import { M3Error } from '../base/errors';
import { blobName, type RepoFile } from './hub_files';
import type { RepoCache } from './hub_cache';

/** What {@link LoadOptions.onProgress} receives while a model file downloads. */
export interface DownloadProgress {
  /** The file's path in the repository. */
  file: string;
  /** Bytes of it on disk so far (a resumed download starts at the partial size). */
  loaded: number;
  /** Its size. */
  total: number;
}

/** Reports progress to the caller's callback, else as a bar on a terminal's stderr, else not at all. */
export class ProgressReport {
  private bar?: SingleBar;

  constructor(private readonly onProgress?: (progress: DownloadProgress) => void) {}

  update(file: string, loaded: number, total: number, done = false): void {
    if (this.onProgress) {
      this.onProgress({ file, loaded, total });
      return;
    }
    if (!process.stderr.isTTY) return;
    if (!this.bar) {
      this.bar = new SingleBar({ stream: process.stderr, format: '{file} [{bar}] {percentage}% | {mb} MB | ETA {eta_formatted}',
        hideCursor: true, clearOnComplete: false });
      this.bar.start(Math.max(total, 1), loaded, { file, mb: mb(total) });
    }
    this.bar.update(loaded, { file, mb: mb(total) });
    if (done) this.stop();
  }

  /** Ends the bar (a finished or failed file). */
  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}

function mb(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** How the download reaches the hub: the file's URL and the fetch that adds the credentials. */
export interface DownloadSource {
  url: string;
  fetch: typeof fetch;
  /** Turns a failed response into the coded error that says what to do. */
  httpError(status: number, file: string): M3Error;
  /** Turns a network failure into the coded error that says what to do. */
  networkError(cause: unknown, file: string): M3Error;
}

/** Puts `file` into blobs/ (downloading or resuming it unless it is there) and links it into the snapshot. */
export async function downloadToCache(cache: RepoCache, commit: string, file: RepoFile, source: DownloadSource,
  progress: ProgressReport): Promise<void> {
  const blob = cache.blob(blobName(file));
  const present = () => {
    const stats = fs.statSync(blob, { throwIfNoEntry: false });
    return stats !== undefined && stats.isFile() && stats.size === file.size;
  };
  if (!present()) {
    fs.mkdirSync(cache.blob(''), { recursive: true });
    await withLock(path.join(cache.root, '.bge-m3', 'locks', blobName(file)), async () => {
      if (present()) return;  // another load finished it while this one waited
      const incomplete = `${blob}.incomplete`;
      await fetchInto(incomplete, file, source, progress);
      if (!(await contentMatches(incomplete, file))) {
        fs.rmSync(incomplete, { force: true });
        throw new M3Error('ERR_MODEL_FILES', `The download of '${file.path}' does not match the repository's hash ` +
          `(${file.lfsSha256 ? 'sha256' : 'git blob id'} ${blobName(file)}); the partial file was removed, load again to retry.`);
      }
      fs.renameSync(incomplete, blob);
    });
  }
  cache.link(commit, file.path, blobName(file));
}

/** A lock older than this without an owner's pid is a leftover of a crash between its two steps. */
const ORPHAN_LOCK_MS = 10_000;

/**
 * Runs `work` holding a lock (a directory holding its owner's pid) on one blob, so that loads
 * in several processes (or several loads in one) never write the same .incomplete file at once.
 * A lock whose owner is no longer running is taken over.
 */
async function withLock(lock: string, work: () => Promise<void>): Promise<void> {
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  for (;;) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (lockAbandoned(lock)) {
      fs.rmSync(lock, { recursive: true, force: true });
      continue;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  try {
    await work();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function lockAbandoned(lock: string): boolean {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(path.join(lock, 'pid'), 'utf8'));
  } catch {
    const stats = fs.statSync(lock, { throwIfNoEntry: false });
    return stats !== undefined && Date.now() - stats.mtimeMs > ORPHAN_LOCK_MS;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Streams the file's missing bytes into `incomplete` (from its current size, by a Range request). */
async function fetchInto(incomplete: string, file: RepoFile, source: DownloadSource, progress: ProgressReport): Promise<void> {
  let start = fs.statSync(incomplete, { throwIfNoEntry: false })?.size ?? 0;
  if (start > file.size) start = 0;
  if (start === file.size && file.size > 0) return;
  let response: Response;
  try {
    response = await source.fetch(source.url, { headers: start > 0 ? { Range: `bytes=${start}-` } : {} });
  } catch (err) {
    throw source.networkError(err, file.path);
  }
  if (response.status === 416 && start > 0) {
    await response.body?.cancel();
    fs.rmSync(incomplete, { force: true });
    return fetchInto(incomplete, file, source, progress);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw source.httpError(response.status, file.path);
  }
  if (response.status !== 206 || !(response.headers.get('content-range') ?? '').startsWith(`bytes ${start}-`)) start = 0;
  const handle = await fs.promises.open(incomplete, start > 0 ? 'a' : 'w');
  let loaded = start;
  try {
    progress.update(file.path, loaded, file.size);
    if (response.body) {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        loaded += chunk.length;
        if (loaded > file.size) {
          throw new M3Error('ERR_MODEL_FILES', `The hub sent more than the ${file.size} bytes of '${file.path}'; load again to retry.`);
        }
        await handle.write(chunk);
        progress.update(file.path, loaded, file.size);
      }
    }
  } catch (err) {
    progress.stop();
    if (err instanceof M3Error) throw err;
    throw source.networkError(err, `${file.path} (${loaded} of ${file.size} bytes kept; loading again resumes)`);
  } finally {
    await handle.close();
  }
  progress.update(file.path, loaded, file.size, true);
  if (loaded !== file.size) {
    throw new M3Error('ERR_MODEL_FILES', `The download of '${file.path}' ended after ${loaded} of ${file.size} bytes; ` +
      'load again to resume it.');
  }
}

/** Whether the file's bytes have the repository's hash: sha256 for LFS, else the git blob id. */
async function contentMatches(file: string, expected: RepoFile): Promise<boolean> {
  const size = fs.statSync(file).size;
  if (size !== expected.size) return false;
  const hash = createHash(expected.lfsSha256 ? 'sha256' : 'sha1');
  if (!expected.lfsSha256) hash.update(`blob ${size}\0`);
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex') === blobName(expected);
}
