/**
 * Load test of `bge-m3 serve` on 127.0.0.1 with autocannon: throughput and latency percentiles
 * at several concurrencies with batching on and off (each request encoded alone), then a 2x
 * overload (twice the best measured rate, offered at a fixed rate) in which every request must
 * be answered 200 or 503 in time while the server's memory stays bounded.
 * Not a test: writes JSON to bench/results/ and prints a table. Loopback only; every phase is
 * bounded in time.
 *
 *   scripts/gen-bench-model.sh            # once: writes .cache/bench-model
 *   npm run bench:serve -- [--model DIR] [--seconds 6] [--concurrency 1,4,16,64] [--threads 2]
 *                          [--max-wait-ms 2] [--overload 1] [--release-memory-after-ms 1000]
 *
 * Requests are POST /v1/embeddings with one text each, cycling through the seed examples'
 * queries and passages (8 to 48 tokens with the benchmark model's tokenizer). The load
 * generator runs on the same machine as the server and takes CPU from it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import autocannon from 'autocannon';
import { machineInfo, parseFlags, writeResult } from './common';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

interface Server {
  child: ChildProcess;
  address: string;
}

/** Servers still running: killed if this process exits early (an error must not leave them behind). */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function startServer(model: string, threads: number, batching: boolean, extra: string[] = []): Promise<Server> {
  const args = [CLI, 'serve', '--model', model, '--port', '0', '--threads', String(threads), ...(batching ? [] : ['--no-batching']), ...extra];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ child, address: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
  });
}

async function stopServer(s: Server): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => s.child.once('exit', (code) => resolve(code)));
  s.child.kill('SIGTERM');
  return exited;
}

function rssMiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

function requestBodies(): string[] {
  const rows = fs.readFileSync(path.join(ROOT, 'data', 'seed-examples.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { query: string; pos: string[]; neg?: string[] });
  const texts = rows.flatMap((r) => [r.query, ...r.pos, ...(r.neg ?? [])]);
  return texts.map((t) => JSON.stringify({ input: t, model: 'bench' }));
}

interface Phase {
  mode: 'batching' | 'no batching';
  concurrency: number;
  requestsPerSec: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  requests: number;
  non2xx: number;
  errors: number;
  timeouts: number;
}

async function load(address: string, bodies: string[],
  options: { connections: number; seconds?: number; amount?: number; overallRate?: number; timeout?: number }) {
  return autocannon({
    url: `${address}/v1/embeddings`,
    connections: options.connections,
    // autocannon refuses an undefined duration or rate: set only what is given.
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.seconds }),
    ...(options.overallRate !== undefined ? { overallRate: options.overallRate } : {}),
    timeout: options.timeout ?? 30,
    requests: bodies.map((body) => ({ method: 'POST', path: '/v1/embeddings', headers: { 'content-type': 'application/json' }, body })),
  });
}

/** Seconds of idle after the overload before the server's memory is measured again. */
const IDLE_SECONDS = 15;

/** Twice the best batching rate, offered at a fixed rate: every request must get 200 or 503 in time. */
async function overloadPhase(model: string, threads: number, seconds: number, bodies: string[], phases: Phase[], releaseMemoryAfterMs: string) {
  // Overload: twice the best batching rate, offered at a fixed rate by more connections than
  // the server queues (--max-queue 64), so the excess must be refused with 503s.
  const best = Math.max(...phases.filter((p) => p.mode === 'batching').map((p) => p.requestsPerSec));
  const rate = Math.ceil(2 * best);
  const timeoutS = 10;
  const connections = 512;
  const server = await startServer(model, threads, true, ['--timeout-ms', String(timeoutS * 1000 - 1000), '--max-queue', '64',
    '--release-memory-after-ms', releaseMemoryAfterMs]);
  const pid = server.child.pid!;
  const rss: number[] = [rssMiB(pid)];
  const sampler = setInterval(() => rss.push(rssMiB(pid)), 250);
  // A fixed number of requests, so the run ends when the last one is answered (none cut off).
  const overSeconds = Math.max(2 * seconds, 20);
  const over = await load(server.address, bodies, { connections, amount: rate * overSeconds, overallRate: rate, timeout: timeoutS });
  clearInterval(sampler);
  rss.push(rssMiB(pid));
  // Idle after the burst: the server gives its memory back (releaseMemoryAfterMs, then again
  // once V8 has collected the last answers' buffers).
  await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
  const idleRss = rssMiB(pid);
  const codes = Object.fromEntries(Object.entries(over.statusCodeStats ?? {}).map(([k, v]) => [k, v?.count ?? 0]));
  const answered = Object.values(codes).reduce((a, b) => a + b, 0);
  const ok = codes['200'] ?? 0;
  const refused = codes['503'] ?? 0;
  const quarter = Math.floor(rss.length / 4);
  const rssQuarters = [0, 1, 2, 3].map((q) => Math.max(...rss.slice(q * quarter, q === 3 ? rss.length : (q + 1) * quarter)));
  const overload = {
    offeredRate: rate, connections, maxQueue: 64, requests: rate * overSeconds, seconds: over.duration, sent: over.requests.sent, answered, statusCodes: codes,
    okPerSec: ok / over.duration, other: answered - ok - refused, errors: over.errors, timeouts: over.timeouts,
    latencyMs: { p50: over.latency.p50, p99: over.latency.p99, max: over.latency.max },
    rssMiB: { start: rss[0], maxPerQuarter: rssQuarters, end: rss[rss.length - 1], [`idle${IDLE_SECONDS}s`]: idleRss },
    exitCode: await stopServer(server),
  };
  console.log(`overload at ${rate} req/s offered (${rate * overSeconds} requests): ${answered} answered (${ok} x 200, ${refused} x 503, ${overload.other} other), ` +
    `${over.errors} errors, ${over.timeouts} timeouts; p99 ${over.latency.p99} ms, max ${over.latency.max} ms; ` +
    `RSS ${overload.rssMiB.start.toFixed(0)} MiB at start, max per quarter ${rssQuarters.map((x) => x.toFixed(0)).join(' / ')} MiB, ` +
    `${idleRss.toFixed(0)} MiB after ${IDLE_SECONDS} s idle; exit ${overload.exitCode}`);

  return overload;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), {
    model: '.cache/bench-model', seconds: '6', concurrency: '1,4,16,64', threads: '2', 'max-wait-ms': '2', overload: '1', 'release-memory-after-ms': '1000',
  });
  const model = path.resolve(flags.model);
  if (!fs.existsSync(model)) {
    console.error(`No benchmark model in ${model}. Generate it with scripts/gen-bench-model.sh, or pass --model DIR.`);
    process.exit(1);
  }
  const seconds = Number(flags.seconds);
  const threads = Number(flags.threads);
  const levels = flags.concurrency.split(',').map(Number);
  const bodies = requestBodies();
  const phases: Phase[] = [];
  console.log(`model ${model}; ${bodies.length} request bodies; ${seconds} s per phase; ONNX Runtime threads ${threads}`);

  // Both servers run side by side (an idle one costs nothing) and the modes alternate at each
  // concurrency, so slow drift of this shared machine does not favour either.
  const servers = new Map<boolean, Server>();
  for (const batching of [true, false]) {
    const server = await startServer(model, threads, batching, batching ? ['--max-wait-ms', flags['max-wait-ms']] : []);
    await load(server.address, bodies, { connections: 4, seconds: 2 }); // warm-up
    servers.set(batching, server);
  }
  for (const [k, c] of levels.entries()) {
    for (const batching of k % 2 === 0 ? [true, false] : [false, true]) {
      const r = await load(servers.get(batching)!.address, bodies, { connections: c, seconds });
      const phase: Phase = {
        mode: batching ? 'batching' : 'no batching', concurrency: c, requestsPerSec: r.requests.average,
        latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max },
        requests: r.requests.total, non2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts,
      };
      phases.push(phase);
      console.log(`${phase.mode.padEnd(12)} c=${String(c).padStart(3)}  ${phase.requestsPerSec.toFixed(0).padStart(6)} req/s  ` +
        `p50 ${phase.latencyMs.p50} ms  p90 ${phase.latencyMs.p90} ms  p99 ${phase.latencyMs.p99} ms  non-2xx ${phase.non2xx}  errors ${phase.errors}`);
    }
  }
  for (const server of servers.values()) {
    const code = await stopServer(server);
    if (code !== 0) console.log(`server exited with ${code}`);
  }

  // Batching against no batching at each concurrency, from the runs above.
  const ratios = levels.map((c) => {
    const on = phases.find((p) => p.mode === 'batching' && p.concurrency === c)!;
    const off = phases.find((p) => p.mode === 'no batching' && p.concurrency === c)!;
    return { concurrency: c, throughput: on.requestsPerSec / off.requestsPerSec, p99OnMs: on.latencyMs.p99, p99OffMs: off.latencyMs.p99 };
  });
  for (const r of ratios) {
    console.log(`c=${r.concurrency}: batching gives ${r.throughput.toFixed(2)}x the throughput; p99 ${r.p99OnMs} ms vs ${r.p99OffMs} ms`);
  }

  const overload = flags.overload === '0' ? undefined : await overloadPhase(model, threads, seconds, bodies, phases, flags['release-memory-after-ms']);
  const file = writeResult('serve', {
    benchmark: 'serve', machine: machineInfo(), model, threads, secondsPerPhase: seconds, bodies: bodies.length, phases, ratios, overload,
    targets: { throughputRatioAtC16Plus: 2, overload: 'every request answered 200 or 503, none over the timeout, memory bounded' },
  });
  console.log(`wrote ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
