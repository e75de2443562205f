/**
 * A model hub in miniature for the hub tests: serves local model directories under the URL layout
 * @huggingface/hub and the downloads use (`/api/models/ORG/NAME/revision/REV`,
 * `/api/models/ORG/NAME/tree/REV`, `/ORG/NAME/resolve/REV/PATH`), with the real hub's headers
 * (ETag, X-Repo-Commit, X-Linked-Etag / X-Linked-Size for LFS files), Range requests, a request
 * log, an optional token, and a connection dropped midway through a chosen file.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export const COMMIT = 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00';

/** One file the hub serves; LFS files carry their sha256. */
export interface HubFile {
  path: string;
  content: Buffer;
  oid: string;
  sha256?: string;
  /** Listed as the hub lists a Xet file it gives no LFS entry: a xetHash, the sha256 only in X-Linked-Etag. */
  xet?: boolean;
}

const LFS = /\.(onnx|onnx_data|pt|bin|safetensors)$/;

/** The git blob id of content: sha1 of "blob <size>\0" + content. */
export function gitBlobId(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** Every file under `dir`, as repository files (LFS by extension, as .gitattributes makes them). */
export function repoFiles(dir: string, extra: Record<string, Buffer> = {}): HubFile[] {
  const files: HubFile[] = [];
  const walk = (folder: string, prefix: string) => {
    for (const entry of fs.readdirSync(folder, { withFileTypes: true })) {
      const rel = prefix + entry.name;
      if (entry.isDirectory()) walk(path.join(folder, entry.name), `${rel}/`);
      else files.push(hubFile(rel, fs.readFileSync(path.join(folder, entry.name))));
    }
  };
  walk(dir, '');
  for (const [rel, content] of Object.entries(extra)) files.push(hubFile(rel, content));
  return files;
}

function hubFile(rel: string, content: Buffer): HubFile {
  return { path: rel, content, oid: gitBlobId(content), sha256: LFS.test(rel) ? sha256(content) : undefined };
}

export interface LoggedRequest {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface MiniHub {
  url: string;
  requests: LoggedRequest[];
  /** Paths of the files whose bytes were requested. */
  fetched(): string[];
  /** The next download of this file sends this many bytes, then drops the connection. */
  dropAfter?: { path: string; bytes: number };
  /** Requests without `Authorization: Bearer <token>` get 401. */
  token?: string;
  close(): Promise<void>;
}

/** Starts the hub on a free local port, serving `repos` (repo id -> files) at COMMIT ('main' points there). */
export async function startHub(repos: Record<string, HubFile[]>): Promise<MiniHub> {
  const hub: MiniHub = {
    url: '', requests: [], close: async () => {},
    fetched: () => hub.requests.map((r) => /\/resolve\/[^/]+\/(.*)$/.exec(r.url)?.[1]).filter((p): p is string => !!p),
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://hub');
    hub.requests.push({ method: req.method ?? '', url: url.pathname, range: req.headers.range, authorization: req.headers.authorization });
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (hub.token && req.headers.authorization !== `Bearer ${hub.token}`) {
      return json(401, { error: 'Invalid credentials in Authorization header' }, { 'X-Error-Code': 'GatedRepo' });
    }
    const route = /^\/(?:api\/models\/)?([^/]+\/[^/]+)\/(revision|tree|resolve)\/([^/]+)(?:\/(.*))?$/.exec(decodeURIComponent(url.pathname));
    const files = route ? repos[route[1]] : undefined;
    if (!route || !files) return json(404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
    const [, repo, kind, revision, rest] = route;
    if (revision !== 'main' && revision !== COMMIT) return json(404, { error: `Invalid rev id: ${revision}` }, { 'X-Error-Code': 'RevisionNotFound' });
    if (kind === 'revision') {
      return json(200, { _id: 'x', id: repo, sha: COMMIT, private: false, siblings: files.map((f) => ({ rfilename: f.path })) });
    }
    if (kind === 'tree') {
      return json(200, files.map((f) => ({
        type: 'file', path: f.path, size: f.content.length, oid: f.oid,
        ...(f.sha256 && !f.xet ? { lfs: { oid: f.sha256, size: f.content.length, pointerSize: 134 } } : {}),
        ...(f.xet ? { xetHash: f.sha256!.replace(/./g, 'e') } : {}),
      })));
    }
    const file = files.find((f) => f.path === rest);
    if (!file) return json(404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
    serveFile(hub, file, req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  hub.close = () => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return hub;
}

function serveFile(hub: MiniHub, file: HubFile, req: http.IncomingMessage, res: http.ServerResponse): void {
  const size = file.content.length;
  const headers: Record<string, string> = {
    'X-Repo-Commit': COMMIT, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream',
    ETag: `"${file.oid}"`,
    ...(file.sha256 ? { 'X-Linked-Etag': `"${file.sha256}"`, 'X-Linked-Size': String(size) } : {}),
  };
  let start = 0;
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (range) {
    start = Number(range[1]);
    if (start >= size) {
      res.writeHead(416, { 'Content-Range': `bytes */${size}` });
      return void res.end();
    }
    headers['Content-Range'] = `bytes ${start}-${size - 1}/${size}`;
  }
  res.writeHead(range ? 206 : 200, { ...headers, 'Content-Length': String(size - start) });
  if (req.method === 'HEAD') return void res.end();
  const drop = hub.dropAfter;
  if (drop && drop.path === file.path) {
    hub.dropAfter = undefined;
    res.write(file.content.subarray(start, start + drop.bytes), () => setTimeout(() => res.socket?.destroy(), 50));
    return;
  }
  res.end(file.content.subarray(start));
}
