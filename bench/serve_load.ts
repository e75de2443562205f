/**
 * A closed-loop load test of `bge-m3 serve` that needs nothing but Node (no npm dependency), for
 * machines where only Node and the package's own files are staged (a GPU machine): it starts the
 * server on the given device (or uses a running one), keeps `concurrency` clients each sending
 * POST /v1/embeddings with one text and waiting for the answer, and reports answered requests/s,
 * texts/s and latency percentiles per concurrency. Not a test: JSON to bench/results/.
 *
 *   node dist/bench/serve_load.js [--device cpu|cuda] [--model DIR] [--url http://HOST:PORT]
 *        [--concurrency 1,16,64] [--seconds 10] [--threads N] [--texts-per-request 1]
 *
 * Texts cycle through the seed examples' queries and passages.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { machineInfo, parseFlags, writeResult } from './common';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

function seedTexts(): string[] {
  const rows = fs.readFileSync(path.join(ROOT, 'data', 'seed-examples.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { query: string; pos: string[]; neg: string[] });
  return rows.flatMap((r) => [r.query, ...r.pos, ...r.neg]);
}

let server: ChildProcess | undefined;
process.on('exit', () => server?.kill('SIGKILL'));

function startServer(flags: Record<string, string>): Promise<string> {
  const args = [CLI, 'serve', '--port', '0', '--auto-truncate', '--device', flags.device, ...(flags.model ? ['--model', flags.model] : []),
    ...(flags.threads ? ['--threads', flags.threads] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  server = child;
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening:\n${stderr}`)));
  });
}

/** One POST with a keep-alive agent; resolves with the status. */
function post(agent: http.Agent, url: URL, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function load(base: string, concurrency: number, seconds: number, perRequest: number, texts: string[]) {
  const url = new URL('/v1/embeddings', base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  let next = 0;
  const deadline = performance.now() + seconds * 1000;
  const client = async () => {
    while (performance.now() < deadline) {
      const input = Array.from({ length: perRequest }, () => texts[next++ % texts.length]);
      const t = performance.now();
      const status = await post(agent, url, JSON.stringify({ input }));
      latencies.push(performance.now() - t);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, client));
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const ok = statuses.get(200) ?? 0;
  return {
    concurrency, seconds: elapsed, requests: latencies.length, answered200: ok, statuses: Object.fromEntries(statuses),
    requestsPerSecond: ok / elapsed, textsPerSecond: (ok * perRequest) / elapsed,
    latencyMs: { p50: percentile(latencies, 0.5), p90: percentile(latencies, 0.9), p99: percentile(latencies, 0.99) },
  };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    device: 'cpu', model: '', url: '', concurrency: '1,16,64', seconds: '10', threads: '', 'texts-per-request': '1',
  });
  const base = flags.url || (await startServer(flags));
  const texts = seedTexts();
  const perRequest = Number(flags['texts-per-request']);
  await load(base, 1, 0.5, perRequest, texts);   // warm-up
  const rows = [];
  for (const c of flags.concurrency.split(',').map(Number)) {
    const row = await load(base, c, Number(flags.seconds), perRequest, texts);
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  server?.kill('SIGTERM');
  console.log(`wrote ${writeResult(`serve-load-${flags.device}`, { benchmark: 'serve-load', machine: machineInfo(), flags, rows })}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
