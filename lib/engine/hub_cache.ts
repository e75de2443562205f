/**
 * The Hugging Face cache as huggingface_hub (Python) lays it out, so that either side can use
 * what the other downloaded: `<cache>/models--ORG--NAME/` holds `blobs/<etag>` (the file
 * contents, named by the LFS sha256 or the git blob id), `snapshots/<commit>/<path>` (relative
 * symbolic links into blobs/) and `refs/<revision>` (the commit a branch or tag pointed at).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { M3Error } from '../base/errors';

/** A full commit hash: a revision that needs no refs/ lookup. */
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/**
 * The cache directory: `cacheDir` when given, else $HF_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (huggingface_hub's order).
 */
export function hubCacheDir(cacheDir?: string): string {
  const env = process.env;
  if (cacheDir) return path.resolve(cacheDir);
  if (env.HF_HUB_CACHE) return path.resolve(env.HF_HUB_CACHE);
  if (env.HUGGINGFACE_HUB_CACHE) return path.resolve(env.HUGGINGFACE_HUB_CACHE);
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.resolve(home, 'hub');
}

/** HF_HUB_OFFLINE as huggingface_hub reads it: 1, ON, YES or TRUE (any case). */
export function hubOffline(): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env.HF_HUB_OFFLINE ?? '').trim().toUpperCase());
}

/** One model repository's folder in the cache. */
export class RepoCache {
  readonly root: string;

  constructor(cacheDir: string, readonly repo: string) {
    this.root = path.join(cacheDir, `models--${repo.split('/').join('--')}`);
  }

  blob(name: string): string {
    return path.join(this.root, 'blobs', name);
  }

  snapshot(commit: string): string {
    return path.join(this.root, 'snapshots', commit);
  }

  /** The commit `revision` names in this cache: itself when a commit hash, else refs/<revision>. */
  commitOf(revision: string): string | undefined {
    if (COMMIT_HASH.test(revision)) return revision;
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.root, 'refs', ...revision.split('/')), 'utf8').trim();
    } catch {
      return undefined;
    }
    return COMMIT_HASH.test(text) ? text : undefined;
  }

  /** Records that `revision` (a branch or tag) points at `commit`, as huggingface_hub does. */
  writeRef(revision: string, commit: string): void {
    if (revision === commit) return;
    const file = path.join(this.root, 'refs', ...revision.split('/'));
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, commit);
    fs.renameSync(tmp, file);
  }

  /** Whether the snapshot has `file` (a link that resolves to a regular file). */
  hasFile(commit: string, file: string): boolean {
    return fs.statSync(path.join(this.snapshot(commit), ...file.split('/')), { throwIfNoEntry: false })?.isFile() ?? false;
  }

  /** Links snapshots/<commit>/<file> to blobs/<blob> by a relative link (a copy where links are refused). */
  link(commit: string, file: string, blob: string): void {
    const target = this.blob(blob);
    const pointer = path.join(this.snapshot(commit), ...file.split('/'));
    fs.mkdirSync(path.dirname(pointer), { recursive: true });
    fs.rmSync(pointer, { force: true });
    try {
      fs.symlinkSync(path.relative(path.dirname(pointer), target), pointer);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      fs.copyFileSync(target, pointer);
    }
  }
}

/**
 * The directory the engine loads a snapshot from. ONNX Runtime refuses external data whose real
 * path leaves the graph's folder, and a snapshot's files are links into blobs/; so the snapshot's
 * files are hard-linked (no copy, no extra space) into `<repo>/.bge-m3/<commit>/`, where every
 * file is itself. huggingface_hub ignores that folder; deleting the repository's folder deletes
 * it. Where hard links are refused (another file system), the snapshot itself is used: it loads,
 * but the rewritten graphs (fused attention, bf16) fall back to the graph as exported.
 */
export function loadView(cache: RepoCache, commit: string): string {
  const snapshot = cache.snapshot(commit);
  const view = path.join(cache.root, '.bge-m3', commit);
  try {
    linkTree(snapshot, view);
  } catch {
    return snapshot;
  }
  return view;
}

/** Hard-links every file under `from` (following its links) to the same path under `to`. */
function linkTree(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    const stats = fs.statSync(source, { throwIfNoEntry: false });
    if (stats?.isDirectory()) {
      linkTree(source, target);
    } else if (stats?.isFile()) {
      if (fs.statSync(target, { throwIfNoEntry: false })?.ino === stats.ino) continue;
      const tmp = `${target}.${process.pid}.tmp`;
      fs.rmSync(tmp, { force: true });
      fs.linkSync(fs.realpathSync(source), tmp);
      fs.renameSync(tmp, target);
    }
  }
}

/**
 * ERR_MODEL_FILES for a load that may not (HF_HUB_OFFLINE) or could not reach the hub and finds
 * the model's files missing from the cache.
 */
export function notCachedError(repo: string, revision: string, cache: RepoCache, missing: string[], why: string): M3Error {
  return new M3Error('ERR_MODEL_FILES', `${why}, and the cache '${cache.root}' lacks ${missing.join(', ')} of ${repo} ` +
    `(revision ${revision}). Download it while online (unset HF_HUB_OFFLINE and load '${repo}' once, or run ` +
    `huggingface-cli download ${repo}), or pass the model directory instead.`);
}
