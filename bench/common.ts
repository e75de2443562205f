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

/** Writes bench/results/<name>-<timestamp>.json and returns its path. */
export function writeResult(name: string, data: unknown): string {
  const dir = path.resolve(__dirname, '..', '..', 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(dir, `${name}-${stamp}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), ...data as object }, null, 2)}\n`);
  return file;
}
