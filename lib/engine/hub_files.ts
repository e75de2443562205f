/**
 * Which files of a model repository the engine needs, decided from the repository's listing the
 * way the loader looks for them (native/core/model_files.cc, tokenizer.ts): the graph
 * (`onnxFile`, else onnx/model.onnx, else model.onnx) and the external data files it names, the
 * two head files (.pt before .safetensors), tokenizer.json (root, else onnx/), and the small
 * JSON files next to it. Never the PyTorch weights or the other graphs of the repository.
 */
import * as path from 'node:path';
import { M3Error } from '../base/errors';

/** One file of a repository's listing. */
export interface RepoFile {
  path: string;
  size: number;
  /** The git blob id (sha1 of "blob <size>\0" + content) of a file kept in git. */
  oid: string;
  /** sha256 of the content of a file kept in LFS (or Xet). */
  lfsSha256?: string;
  /** A Xet file listed without its sha256: the hub's X-Linked-Etag header gives it, as huggingface_hub reads it. */
  xetOnly?: boolean;
}

/** The name huggingface_hub gives the file's blob in the cache: the LFS sha256, else the git blob id. */
export function blobName(file: RepoFile): string {
  return file.lfsSha256 ?? file.oid;
}

/** What the load needs first: the graph, and the files wanted next to it. */
export interface RepoSelection {
  graph: string;
  /** Needed: the tokenizer. Then what is used when present: heads, config.json, tokenizer extras. */
  required: string[];
  optional: string[];
}

const OPTIONAL_ROOT_FILES = ['config.json', 'tokenizer_config.json', 'special_tokens_map.json'];

/** Chooses the files to download from the names the repository holds. */
export function selectRepoFiles(names: ReadonlySet<string>, repo: string, onnxFile?: string): RepoSelection {
  const has = (name: string) => names.has(name);
  let graph: string | undefined;
  if (onnxFile !== undefined) {
    graph = checkRepoPath(onnxFile, 'onnxFile');
    if (!has(graph)) throw missingFiles(repo, [graph], names);
  } else {
    graph = ['onnx/model.onnx', 'model.onnx'].find(has);
    if (!graph) throw missingFiles(repo, ['onnx/model.onnx (or model.onnx)'], names);
  }
  const tokenizer = ['tokenizer.json', 'onnx/tokenizer.json'].find(has);
  if (!tokenizer) throw missingFiles(repo, ['tokenizer.json'], names);
  const optional: string[] = [];
  for (const head of ['colbert_linear', 'sparse_linear']) {
    const file = [`${head}.pt`, `${head}.safetensors`].find(has);
    if (file) optional.push(file);
  }
  const tokenizerDir = path.posix.dirname(tokenizer);
  for (const name of OPTIONAL_ROOT_FILES) {
    const file = tokenizerDir === '.' || name === 'config.json' ? name : `${tokenizerDir}/${name}`;
    if (has(file)) optional.push(file);
  }
  return { graph, required: [tokenizer], optional };
}

/** ERR_MODEL_FILES: the repository lacks files the engine needs. */
export function missingFiles(repo: string, files: string[], names: ReadonlySet<string>): M3Error {
  const listing = [...names].sort();
  const shown = listing.slice(0, 20).join(', ') + (listing.length > 20 ? `, ... (${listing.length - 20} more)` : '');
  return new M3Error('ERR_MODEL_FILES', `The model repository '${repo}' has no ${files.join(', ')}, which the engine needs ` +
    `(it holds: ${shown || 'nothing'}). Use a repository with an ONNX export of BGE-M3 (such as BAAI/bge-m3), or pass onnxFile ` +
    'for a graph with another name.');
}

/** A path inside a repository: relative, '/'-separated, with no '.' or '..' steps. */
export function checkRepoPath(name: string, what: string): string {
  const parts = name.split('/');
  if (name.length === 0 || name.length > 1024 || name.includes('\\') || name.includes('\0') ||
      parts.some((p) => p === '' || p === '.' || p === '..')) {
    throw new M3Error('ERR_INPUT', `${what} '${name}' is not a path inside the model repository; pass a relative path such as ` +
      'onnx/model.onnx');
  }
  return name;
}

/** The bytes of an ONNX StringStringEntryProto key "location" (field 1, length 8) then the value's tag (field 2). */
const LOCATION_KEY = Buffer.from([0x0a, 0x08, ...Buffer.from('location'), 0x12]);

/**
 * The external data files an ONNX graph names (its tensors' `external_data` entries with key
 * "location"), as repository paths next to the graph. The graph is untrusted: a location that
 * leaves the graph's folder is an ERR_MODEL_FILES.
 */
export function externalDataFiles(graphBytes: Buffer, graphPath: string): string[] {
  const found = new Set<string>();
  const folder = path.posix.dirname(graphPath);
  for (let at = graphBytes.indexOf(LOCATION_KEY); at >= 0; at = graphBytes.indexOf(LOCATION_KEY, at + 1)) {
    let pos = at + LOCATION_KEY.length;
    let length = 0;
    for (let shift = 0; pos < graphBytes.length && shift < 28; shift += 7) {
      const byte = graphBytes[pos++];
      length |= (byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
    }
    if (length <= 0 || length > 1024 || pos + length > graphBytes.length) continue;
    const location = graphBytes.subarray(pos, pos + length).toString('utf8');
    const file = folder === '.' ? location : `${folder}/${location}`;
    try {
      found.add(checkRepoPath(file, 'External data'));
    } catch {
      throw new M3Error('ERR_MODEL_FILES', `The graph '${graphPath}' names external data '${location}' outside its folder; ` +
        'use an ONNX export whose data files sit next to the graph.');
    }
  }
  return [...found].sort();
}
