/** Shared benchmark plumbing: flags, statistics, machine description, JSON results. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** `--name value` flags with defaults (all strings). */
export function parseFlags(argv: string[], defaults: Record<string, string>): Record<string, string> {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)$/.exec(argv[i]);
    if (!m || !(m[1] in defaults)) throw new Error(`unknown flag ${argv[i]}; known: ${Object.keys(defaults).map((k) => `--${k}`).join(' ')}`);
    out[m[1]] = argv[++i];
  }
  return out;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** CPU model, core count, flags of interest, OS and Node version. */
export function machineInfo(): Record<string, unknown> {
  let cpuFlags: string[] = [];
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = info.split('\n').find((l) => l.startsWith('flags'));
    cpuFlags = (line?.split(':')[1] ?? '').trim().split(/\s+/).filter((f) => /^(avx|fma|amx)/.test(f));
  } catch {
    // not Linux
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown', logicalCores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()}`, node: process.version, cpuFlags,
  };
}

/** Where results go: $BGE_M3_BENCH_RESULTS, else bench/results/. */
export function resultsDir(): string {
  return process.env.BGE_M3_BENCH_RESULTS ? path.resolve(process.env.BGE_M3_BENCH_RESULTS) : path.resolve(__dirname, '..', '..', 'bench', 'results');
}

/** Writes <results>/<name>-<timestamp>.json and returns its path. */
export function writeResult(name: string, data: unknown): string {
  const dir = resultsDir();
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(dir, `${name}-${stamp}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), ...data as object }, null, 2)}\n`);
  return file;
}

/** One method to time: `fn` runs the whole workload once. */
export interface TimedCase<T = unknown> {
  name: string;
  fn: () => T | Promise<T>;
}

/**
 * Times several methods round-robin: one warm-up call each (its result is returned for checks),
 * then `runs` rounds in which every method runs once, the starting method rotating each round.
 * On a shared machine, load that comes and goes then hits every method alike, so ratios of
 * methods measured together stay meaningful where back-to-back blocks of runs would not.
 * Returns seconds per run for each method, in the order given.
 */
export async function timeInterleaved<T>(cases: TimedCase<T>[], runs: number): Promise<{ seconds: number[][]; first: T[] }> {
  const first: T[] = [];
  for (const c of cases) first.push(await c.fn());
  const seconds = cases.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) {
    for (let k = 0; k < cases.length; k++) {
      const i = (k + r) % cases.length;
      const start = process.hrtime.bigint();
      await cases[i].fn();
      seconds[i].push(Number(process.hrtime.bigint() - start) / 1e9);
    }
  }
  return { seconds, first };
}

/** The encoder dimensions that set its cost, as config.json names them. */
export interface EncoderShape {
  num_hidden_layers: number;
  hidden_size: number;
  intermediate_size: number;
}

/**
 * Useful floating-point operations of one forward pass over texts of these token lengths (no
 * padding counted), 2 per multiply-add. Per layer and token: the query, key, value and output
 * projections (4 h^2 multiply-adds), the feed-forward pair (2 h i), and attention, whose scores and
 * weighted sum cost 2 L h for a token of an L-token text. Embeddings, norms, softmax and the heads
 * are left out (under 1% for BGE-M3).
 */
export function encoderFlops(shape: EncoderShape, lengths: number[]): number {
  const { num_hidden_layers: layers, hidden_size: h, intermediate_size: i } = shape;
  for (const [name, v] of Object.entries({ num_hidden_layers: layers, hidden_size: h, intermediate_size: i }))
    if (!Number.isInteger(v) || v <= 0) throw new Error(`config.json: ${name} must be a positive integer, got ${v}`);
  let macs = 0;
  for (const L of lengths) macs += L * (4 * h * h + 2 * h * i) + 2 * L * L * h;
  return 2 * layers * macs;
}
