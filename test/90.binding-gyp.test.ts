/**
 * binding.gyp: the node-gyp build for machines without CMake must give the same addon as the
 * CMake build. It is built in a temporary copy (node-gyp always writes ./build, which holds the
 * CMake build here) and compared with build/Release/bge_m3.node through the public API.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { DEMO_MODEL, ROOT } from './helpers';

const execFileAsync = promisify(execFile);

const GYP_FILE = path.join(ROOT, 'binding.gyp');
const CMAKE_ADDON = path.join(ROOT, 'build', 'Release', 'bge_m3.node');
const SOURCE_DIRS = ['native/base', 'native/kernels', 'native/kernels/cuda', 'native/weights', 'native/graph', 'native/core', 'native/index', 'native/train', 'native/binding'];
const BUILD_TIMEOUT_MS = 10 * 60_000;

/** The `sources` list of binding.gyp (a Python-literal file, so read with a pattern, not JSON). */
function gypSources(): string[] {
  const text = fs.readFileSync(GYP_FILE, 'utf8').replace(/#.*$/gm, '');
  const list = /'sources'\s*:\s*\[([^\]]*)\]/.exec(text);
  assert.ok(list, 'binding.gyp has no sources list');
  return [...list[1].matchAll(/'([^']+)'/g)].map((m) => m[1]);
}

/** npm's own folder: the one running this test (npm test), else the one installed beside node. */
function npmDir(): string {
  const execPath = process.env.npm_execpath;
  if (execPath && /npm-cli\.js$/.test(execPath)) return path.resolve(path.dirname(execPath), '..');
  return path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
}

/** node-gyp as bundled with npm (it is not a dependency of this package). */
function findNodeGyp(): string | undefined {
  const dir = npmDir();
  const candidates = [path.join(dir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
  try {
    candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths: [dir] }));
  } catch { /* not resolvable from there */ }
  return candidates.find((p) => fs.existsSync(p));
}

/** One npm config value as npm sees it in this project ('' when unset). */
function npmConfig(key: string): string {
  const cli = path.join(npmDir(), 'bin', 'npm-cli.js');
  if (!fs.existsSync(cli)) return process.env[`npm_config_${key}`] ?? '';
  const r = spawnSync(process.execPath, [cli, 'config', 'get', key], { cwd: ROOT, encoding: 'utf8' });
  const value = (r.stdout ?? '').trim();
  return r.status === 0 && value !== 'undefined' && value !== 'null' ? value : '';
}

/**
 * Where node-gyp will find Node's headers without a download: npm's nodedir, the prefix node was
 * built with (node-gyp checks it on its own), or node-gyp's header cache. undefined: none.
 */
function nodeHeaders(): { nodedir: string; where: string } | undefined {
  const hasHeaders = (dir: string) => fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h')) &&
    fs.existsSync(path.join(dir, 'include', 'node', 'common.gypi'));
  const nodedir = npmConfig('nodedir');
  if (nodedir) return hasHeaders(nodedir) ? { nodedir, where: `npm config nodedir=${nodedir}` } : undefined;
  const vars = (process.config.variables ?? {}) as Record<string, unknown>;
  const prefix = typeof vars.node_prefix === 'string' ? vars.node_prefix : '';
  if (vars.use_prefix_to_find_headers && prefix && hasHeaders(prefix)) return { nodedir: '', where: prefix };
  const devdir = npmConfig('devdir') ||
    path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'node-gyp');
  const cached = path.join(devdir, process.versions.node);
  if (hasHeaders(cached) && fs.existsSync(path.join(cached, 'installVersion'))) return { nodedir: '', where: cached };
  return undefined;
}

/** Why the build comparison cannot run here, or '' when it can. */
function cannotBuildReason(): string {
  if (!fs.existsSync(CMAKE_ADDON)) return `no CMake-built addon to compare with (${CMAKE_ADDON}); run npm run build:native`;
  if (!fs.existsSync(path.join(ROOT, 'dist', 'lib', 'index.js'))) return 'dist/lib is not compiled; run npx tsc -p tsconfig.json';
  if (!findNodeGyp()) return `node-gyp not found in npm's folder (${npmDir()})`;
  if (!nodeHeaders()) {
    return 'no Node.js headers available offline (node-gyp would download them): set ' +
      '`npm config set nodedir <prefix holding include/node>` or run `node-gyp install` with network access';
  }
  return '';
}

/** The last lines of a build log, for a failure message. */
function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

async function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  try {
    await execFileAsync(cmd, args, { cwd, env, timeout: BUILD_TIMEOUT_MS, maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    assert.fail(`${path.basename(args[0] ?? cmd)} ${args.slice(1, 2).join(' ')} failed: ${e.message.split('\n')[0]}\n` +
      tail(`${e.stdout ?? ''}\n${e.stderr ?? ''}`));
  }
}

/**
 * Run in a child process per addon (an addon cannot be unloaded, and both export the same
 * symbols): loads the addon named by BGE_M3_ADDON through dist/lib, checks that it really is the
 * one in use (lib/addon/native.ts silently falls back to build/Release), and prints what it computes.
 */
const PROBE = `
const path = require('node:path');
const [root, modelDir] = process.argv.slice(1);
(async () => {
  const addon = require(process.env.BGE_M3_ADDON);
  const { native } = require(path.join(root, 'dist', 'lib', 'addon', 'native.js'));
  if (native() !== addon) throw new Error('dist/lib did not load ' + process.env.BGE_M3_ADDON);
  const { BGEM3, runtimeInfo } = require(path.join(root, 'dist', 'lib', 'index.js'));
  const m3 = await BGEM3.load(modelDir, { threads: 1 });
  const out = await m3.encode(['The quick brown fox jumps over the lazy dog.',
    'BGE-M3 gives dense, lexical and multi-vector embeddings.', 'a'],
    { dense: true, sparse: true, colbert: true });
  const info = runtimeInfo();
  process.stdout.write(JSON.stringify({
    ortVersion: info.ortVersion, ortLibraryDir: info.ortLibraryDir, count: out.count, dim: out.dim,
    dense: Array.from(out.dense), sparseIds: Array.from(out.sparse.ids),
    sparseWeights: Array.from(out.sparse.weights), colbert: Array.from(out.colbert.data),
  }));
  await m3.dispose();
})().catch((err) => { console.error(err); process.exit(1); });
`;

interface ProbeResult {
  ortVersion: string;
  ortLibraryDir: string;
  count: number;
  dim: number;
  dense: number[];
  sparseIds: number[];
  sparseWeights: number[];
  colbert: number[];
}

function probe(addon: string): ProbeResult {
  const out = execFileSync(process.execPath, ['-e', PROBE, ROOT, DEMO_MODEL], {
    env: { ...process.env, BGE_M3_ADDON: addon }, encoding: 'utf8', timeout: 120_000,
  });
  return JSON.parse(out) as ProbeResult;
}

describe('binding.gyp (node-gyp build)', () => {
  it('lists exactly the .cc files of native/core, native/kernels (and its cuda/ stub), native/index, native/train and native/binding', () => {
    const inTree = SOURCE_DIRS.flatMap((dir) => fs.readdirSync(path.join(ROOT, dir))
      .filter((f) => f.endsWith('.cc')).map((f) => `${dir}/${f}`)).sort();
    const listed = gypSources();
    assert.equal(new Set(listed).size, listed.length, 'binding.gyp lists a source twice');
    assert.deepEqual([...listed].sort(), inTree,
      'binding.gyp sources differ from the tree: add or remove the files named above');
  });

  it('builds an addon that loads the same ONNX Runtime and encodes identically to the CMake build',
    { timeout: BUILD_TIMEOUT_MS }, async (t) => {
      const reason = cannotBuildReason();
      if (reason) {
        t.skip(reason);
        return;
      }
      const nodeGyp = findNodeGyp()!;
      const headers = nodeHeaders()!;

      // ONNX Runtime's paths resolved from the repository (its node_modules and .deps), so the
      // copy needs neither; gyp's defaults would resolve them relative to the copy.
      const ortPath = (what: string) => execFileSync(process.execPath,
        [path.join(ROOT, 'scripts', 'ort-paths.js'), what], { cwd: ROOT, encoding: 'utf8' }).trim();
      const ortDefines = [`-Dort_include_dir=${ortPath('include')}`, `-Dort_library=${ortPath('library')}`,
        `-Dort_lib_dir=${ortPath('libdir')}`];

      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-gyp-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      fs.copyFileSync(GYP_FILE, path.join(dir, 'binding.gyp'));
      fs.cpSync(path.join(ROOT, 'native'), path.join(dir, 'native'), { recursive: true });
      fs.mkdirSync(path.join(dir, 'scripts'));
      fs.copyFileSync(path.join(ROOT, 'scripts', 'ort-paths.js'), path.join(dir, 'scripts', 'ort-paths.js'));

      // binding.gyp asks node for node-addon-api's include folder; NODE_PATH lets the copy find
      // the repository's node_modules without a link into it.
      const env = { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') };
      const nodedirArgs = headers.nodedir ? [`--nodedir=${headers.nodedir}`] : [];
      await run(process.execPath, [nodeGyp, 'configure', ...nodedirArgs, '--', ...ortDefines], dir, env);
      await run(process.execPath, [nodeGyp, 'build', ...nodedirArgs, '-j', '2'], dir, env);
      const gypAddon = path.join(dir, 'build', 'Release', 'bge_m3.node');
      assert.ok(fs.existsSync(gypAddon), `node-gyp reported success but ${gypAddon} is missing`);

      const fromGyp = probe(gypAddon);
      const fromCmake = probe(CMAKE_ADDON);
      assert.equal(fromGyp.ortVersion, fromCmake.ortVersion, 'the two builds load different ONNX Runtime versions');
      // The CMake build finds the library through its $ORIGIN-relative rpath first, so compare
      // the folders as real paths.
      assert.equal(fs.realpathSync(fromGyp.ortLibraryDir), fs.realpathSync(fromCmake.ortLibraryDir),
        'the two builds load ONNX Runtime from different folders');
      assert.equal(fromGyp.count, 3);
      assert.equal(fromGyp.dim, fromCmake.dim);
      assert.ok(fromGyp.dense.length > 0 && fromGyp.dense.every(Number.isFinite));
      // Same sources, same compiler, same flags that matter (-O3, NDEBUG, gnu++17), one thread:
      // the results must match bit for bit, not merely within a tolerance.
      assert.deepEqual(fromGyp.dense, fromCmake.dense, 'dense vectors differ between the builds');
      assert.deepEqual(fromGyp.sparseIds, fromCmake.sparseIds, 'sparse ids differ between the builds');
      assert.deepEqual(fromGyp.sparseWeights, fromCmake.sparseWeights, 'sparse weights differ between the builds');
      assert.deepEqual(fromGyp.colbert, fromCmake.colbert, 'ColBERT vectors differ between the builds');
    });
});
