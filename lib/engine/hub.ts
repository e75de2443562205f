/**
 * Models by hub id: `BGEM3.load('BAAI/bge-m3')` downloads the files the engine needs (hub_files.ts)
 * into the Hugging Face cache (hub_cache.ts) and loads the snapshot directory. The listing and the
 * commit come from @huggingface/hub; the files are streamed by hub_download.ts, which resumes.
 * HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are read as huggingface_hub reads them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { M3Error } from '../base/errors';
import { COMMIT_HASH, RepoCache, hubCacheDir, hubOffline, loadView, notCachedError } from './hub_cache';
import { ProgressReport, downloadToCache, type DownloadProgress, type DownloadSource } from './hub_download';
import { checkRepoPath, externalDataFiles, missingFiles, selectRepoFiles, type RepoFile } from './hub_files';

export type { DownloadProgress } from './hub_download';

/** The load options that concern a model named by hub id. */
export interface HubOptions {
  revision?: string;
  cacheDir?: string;
  token?: string;
  onnxFile?: string;
  onProgress?: (progress: DownloadProgress) => void;
}

const NAME = '[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?';
const HUB_ID = new RegExp(`^(${NAME}/${NAME})(?:@([^\\s@]{1,255}))?$`);

/** `ORG/NAME` or `ORG/NAME@revision`, or undefined for a string that is no hub id. */
export function parseHubId(id: string): { repo: string; revision?: string } | undefined {
  const match = HUB_ID.exec(id);
  if (!match || match[1].includes('--') || match[1].includes('..')) return undefined;
  return { repo: match[1], revision: match[2] };
}

/**
 * What `BGEM3.load` was given, as a model directory: an existing directory as is, a hub id
 * (that is no existing path) as its snapshot in the cache, downloaded where needed; undefined
 * for a path that does not exist and is no hub id.
 */
export async function resolveHubModel(arg: string, options: HubOptions): Promise<string | undefined> {
  const abs = path.resolve(arg);
  const stats = fs.statSync(abs, { throwIfNoEntry: false });
  if (stats?.isDirectory() && options.revision !== undefined) {
    throw new M3Error('ERR_INPUT', `revision applies to a model named by hub id, but '${abs}' is a directory; drop the option`);
  }
  if (stats?.isDirectory() || (stats && !stats.isFile())) return abs;  // a FIFO or device: model_dir.ts says what it is
  if (stats) {
    throw new M3Error('ERR_INPUT', `'${abs}' is a file; pass the model directory (the folder that holds config.json, ` +
      'tokenizer.json and onnx/model.onnx) or a hub id such as BAAI/bge-m3.');
  }
  const id = parseHubId(arg);
  if (!id) return undefined;
  if (options.revision !== undefined && (typeof options.revision !== 'string' || !/^[^\s]{1,255}$/.test(options.revision))) {
    throw new M3Error('ERR_INPUT', `revision must be a branch, tag or commit hash, got ${JSON.stringify(options.revision)}`);
  }
  if (id.revision && options.revision && id.revision !== options.revision) {
    throw new M3Error('ERR_INPUT', `'${arg}' names revision ${id.revision} but the revision option says ${options.revision}; pass one`);
  }
  const revision = id.revision ?? options.revision ?? 'main';
  if (revision.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new M3Error('ERR_INPUT', `revision '${revision}' is not a branch, tag or commit hash`);
  }
  const onnxFile = options.onnxFile === undefined ? undefined : checkRepoPath(options.onnxFile, 'onnxFile');
  const cache = new RepoCache(hubCacheDir(options.cacheDir), id.repo);
  let commit: string;
  if (hubOffline()) {
    commit = fromCache(cache, revision, onnxFile, 'HF_HUB_OFFLINE is set');
  } else if (COMMIT_HASH.test(revision) && cachedFiles(cache, revision, onnxFile).missing.length === 0) {
    commit = revision;  // a commit's files never change: no request needed
  } else {
    commit = await download(cache, revision, onnxFile, options);
  }
  return loadView(cache, commit);
}

/** The commit of `revision` whose snapshot in the cache has the model, or ERR_MODEL_FILES naming what it lacks. */
function fromCache(cache: RepoCache, revision: string, onnxFile: string | undefined, why: string): string {
  const commit = cache.commitOf(revision);
  if (!commit || !fs.existsSync(cache.snapshot(commit))) throw notCachedError(cache.repo, revision, cache, ['the snapshot'], why);
  const { missing } = cachedFiles(cache, commit, onnxFile);
  if (missing.length > 0) throw notCachedError(cache.repo, revision, cache, missing, why);
  return commit;
}

/** The files a cached snapshot lacks: its graph, the graph's external data, the tokenizer. */
function cachedFiles(cache: RepoCache, commit: string, onnxFile: string | undefined): { missing: string[] } {
  const has = (file: string) => cache.hasFile(commit, file);
  const graph = onnxFile ?? ['onnx/model.onnx', 'model.onnx'].find(has);
  const missing: string[] = [];
  if (!graph || !has(graph)) missing.push(onnxFile ?? 'onnx/model.onnx');
  else missing.push(...graphData(path.join(cache.snapshot(commit), ...graph.split('/')), graph).filter((f) => !has(f)));
  if (!['tokenizer.json', 'onnx/tokenizer.json'].some(has)) missing.push('tokenizer.json');
  return { missing };
}

/** The external data files a graph file names, read in chunks (a graph without external data may be large). */
function graphData(file: string, graph: string): string[] {
  const CHUNK = 64 << 20;
  const OVERLAP = 2048;
  const found = new Set<string>();
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(CHUNK + OVERLAP);
    for (let offset = 0; ; offset += CHUNK) {
      const read = fs.readSync(fd, buffer, 0, CHUNK + OVERLAP, offset);
      for (const name of externalDataFiles(buffer.subarray(0, read), graph)) found.add(name);
      if (read < CHUNK + OVERLAP) break;
    }
  } finally {
    fs.closeSync(fd);
  }
  return [...found].sort();
}

/** Where requests go: $HF_ENDPOINT, else @huggingface/hub's default. */
function hubEndpoint(defaultUrl: string): string {
  return (process.env.HF_ENDPOINT || defaultUrl).replace(/\/+$/, '');
}

/** The access token: the option, else $HF_TOKEN, else the token file huggingface_hub's login writes. */
function hubToken(option?: string): string | undefined {
  if (option) return option;
  const env = process.env;
  if (env.HF_TOKEN) return env.HF_TOKEN.trim() || undefined;
  if (env.HUGGING_FACE_HUB_TOKEN) return env.HUGGING_FACE_HUB_TOKEN.trim() || undefined;
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  try {
    return fs.readFileSync(env.HF_TOKEN_PATH ?? path.join(home, 'token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** A network failure (no HTTP answer), kept apart from the hub's refusals. */
class NetworkFailure extends Error {}

/** Downloads what the engine needs of `revision` into the cache and returns its commit. */
async function download(cache: RepoCache, revision: string, onnxFile: string | undefined, options: HubOptions): Promise<string> {
  const hub = await import('@huggingface/hub');
  const endpoint = hubEndpoint(hub.HUB_URL);
  const token = hubToken(options.token);
  const authFetch: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    if (token) headers.set('Authorization', `Bearer ${token}`);
    try {
      return await fetch(input, { ...init, headers });
    } catch (err) {
      throw new NetworkFailure((err as Error)?.message ?? String(err), { cause: err });
    }
  };
  const errors = hubErrors(cache.repo, revision, endpoint, token !== undefined);
  let commit: string;
  const files = new Map<string, RepoFile>();
  try {
    const info = await hub.modelInfo({ name: cache.repo, revision, hubUrl: endpoint, fetch: authFetch, additionalFields: ['sha'] });
    commit = String((info as { sha?: unknown }).sha ?? '');
    if (!COMMIT_HASH.test(commit)) throw new M3Error('ERR_MODEL_FILES', `${endpoint} gave no commit for ${cache.repo} at ${revision}`);
    for await (const entry of hub.listFiles({ repo: cache.repo, revision: commit, recursive: true, hubUrl: endpoint, fetch: authFetch })) {
      if (entry.type !== 'file') continue;
      files.set(entry.path, { path: entry.path, size: entry.lfs?.size ?? entry.size, oid: entry.oid ?? '', lfsSha256: entry.lfs?.oid,
        xetOnly: !entry.lfs && !!entry.xetHash });
    }
  } catch (err) {
    if (err instanceof M3Error) throw err;
    if (err instanceof NetworkFailure) {
      return fromCache(cache, revision, onnxFile, `Could not reach the model hub at ${endpoint} (${networkCause(err)})`);
    }
    const status = (err as { statusCode?: unknown }).statusCode;
    if (typeof status === 'number') throw errors.http(status, undefined);
    throw new M3Error('ERR_MODEL_FILES', `The model hub at ${endpoint} gave an answer this package cannot read for ${cache.repo}: ` +
      `${(err as Error)?.message}`, { cause: err });
  }
  const names = new Set(files.keys());
  const selection = selectRepoFiles(names, cache.repo, onnxFile);
  const progress = new ProgressReport(options.onProgress);
  const fetchFile = async (name: string) => {
    const file = files.get(name);
    if (!file) throw missingFiles(cache.repo, [name], names);
    const url = `${endpoint}/${cache.repo}/resolve/${commit}/${name.split('/').map(encodeURIComponent).join('/')}`;
    if (file.xetOnly) await readLinkedEtag(file, url, authFetch, errors);
    checkListed(file, endpoint);
    const source: DownloadSource = { url, fetch: authFetch, httpError: errors.http, networkError: errors.network };
    await downloadToCache(cache, commit, file, source, progress);
  };
  await fetchFile(selection.graph);
  const data = graphData(path.join(cache.snapshot(commit), ...selection.graph.split('/')), selection.graph);
  const lacking = data.filter((f) => !names.has(f));
  if (lacking.length > 0) throw missingFiles(cache.repo, lacking, names);
  for (const name of [...data, ...selection.required, ...selection.optional]) await fetchFile(name);
  cache.writeRef(revision, commit);
  return commit;
}

/** The sha256 (and size) of a Xet file listed without them, from the hub's answer to a HEAD of its URL. */
async function readLinkedEtag(file: RepoFile, url: string, authFetch: typeof fetch, errors: ReturnType<typeof hubErrors>): Promise<void> {
  let response: Response;
  try {
    response = await authFetch(url, { method: 'HEAD', redirect: 'manual' });
  } catch (err) {
    throw errors.network(err, file.path);
  }
  if (response.status >= 400) throw errors.http(response.status, file.path);
  const etag = (response.headers.get('x-linked-etag') ?? '').replace(/^W\//, '').replace(/"/g, '');
  const size = Number(response.headers.get('x-linked-size') ?? file.size);
  if (!/^[0-9a-f]{64}$/.test(etag) || !Number.isSafeInteger(size)) {
    throw new M3Error('ERR_MODEL_FILES', `The hub gave no sha256 (X-Linked-Etag) for the Xet file '${file.path}'; check HF_ENDPOINT`);
  }
  file.lfsSha256 = etag;
  file.size = size;
}

/** A listed file's size and ids as the download needs them (the listing is untrusted). */
function checkListed(file: RepoFile, endpoint: string): void {
  if (!Number.isSafeInteger(file.size) || file.size < 0 || !/^[0-9a-f]{40}$/.test(file.oid) ||
      (file.lfsSha256 !== undefined && !/^[0-9a-f]{64}$/.test(file.lfsSha256))) {
    throw new M3Error('ERR_MODEL_FILES', `${endpoint} listed '${file.path}' without a valid size and hash; check HF_ENDPOINT`);
  }
}

function networkCause(err: unknown): string {
  const cause = (err as { cause?: { cause?: { code?: string; message?: string }; message?: string } }).cause;
  return cause?.cause?.code ?? cause?.cause?.message ?? cause?.message ?? String(err);
}

/** The coded errors of the hub's answers, each saying what to do. */
function hubErrors(repo: string, revision: string, endpoint: string, withToken: boolean) {
  const local = fs.existsSync(repo) ? '' : ` (nor is there a directory '${repo}' here)`;
  return {
    http(status: number, file?: string): M3Error {
      const what = file ? `'${file}' of ${repo}` : repo;
      if (status === 401 || status === 403) {
        return new M3Error('ERR_MODEL_FILES', `The model hub refused ${what} (HTTP ${status}): the repository is private or gated, ` +
          `or does not exist${local}. ${withToken ? 'The token in HF_TOKEN was refused or cannot read it: set HF_TOKEN to a token that can'
            : 'For a private or gated model set HF_TOKEN to an access token that can read it'} (and accept the model's terms on its page).`);
      }
      if (status === 404) {
        return new M3Error('ERR_MODEL_FILES', `No ${file ? `file '${file}' in ` : ''}model repository '${repo}' at revision '${revision}' ` +
          `on ${endpoint} (HTTP 404)${local}. Check the id and the revision (a branch, tag or commit hash).`);
      }
      return new M3Error('ERR_MODEL_FILES', `The model hub at ${endpoint} answered HTTP ${status} for ${what}; try again later.`);
    },
    network(cause: unknown, file: string): M3Error {
      return new M3Error('ERR_MODEL_FILES', `Could not download '${file}' of ${repo} from ${endpoint} (${networkCause(cause)}). ` +
        'Check the network (or HF_ENDPOINT) and load again; set HF_HUB_OFFLINE=1 to use only the cache.', { cause });
    },
  };
}
