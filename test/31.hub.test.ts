/** Models by hub id: download into the Hugging Face cache from a local hub, offline use, resume, tokens, errors, the CLI. */
import { after, before, beforeEach, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BGEM3 } from '../lib/index';
import { parseHubId } from '../lib/engine/hub';
import { finetuneHeads } from '../lib/training/finetune';
import { externalDataFiles, selectRepoFiles } from '../lib/engine/hub_files';
import { COMMIT, repoFiles, sha256, startHub, type HubFile, type MiniHub } from './hub_server';
import { DEMO_MODEL, FIXTURES, ROOT, assertClose } from './helpers';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const TEXTS = ['The quick brown fox', 'BGE-M3 supports dense, sparse and multi-vector retrieval.'];
/** A decoy the engine must never fetch (the real repository's PyTorch weights). */
const DECOY = { 'pytorch_model.bin': Buffer.alloc(4 << 20, 7), 'onnx/model_fp16.onnx': Buffer.alloc(1 << 20, 3) };
const ENV_KEYS = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'HUGGING_FACE_HUB_TOKEN', 'HUGGINGFACE_HUB_CACHE'];

async function rejectsWith(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: Error & { code?: string }) => {
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });
}

async function denseOf(dir: string, texts = TEXTS): Promise<Float32Array> {
  const model = await BGEM3.load(dir);
  try {
    assert.equal(model.info().attentionNote, '');
    return (await model.encode(texts)).dense!;
  } finally {
    await model.dispose();
  }
}

describe('models by hub id', () => {
  let hub: MiniHub;
  let cache: string;
  let served: HubFile[];
  const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  const caches: string[] = [];

  before(async () => {
    served = repoFiles(DEMO_MODEL, DECOY);
    hub = await startHub({ 'org/demo': served, 'org/baked': repoFiles(path.join(FIXTURES, 'tiny-m3-baked')),
      'org/xet': repoFiles(DEMO_MODEL).map((f) => ({ ...f, xet: f.sha256 !== undefined })) });
  });
  after(async () => {
    await hub.close();
    for (const dir of caches) fs.rmSync(dir, { recursive: true, force: true });
    for (const k of ENV_KEYS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  beforeEach(() => {
    for (const k of ENV_KEYS) delete process.env[k];
    cache = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-hub-'));
    caches.push(cache);
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HOME = cache;  // no token file of the user's
    hub.requests.length = 0;
    hub.token = undefined;
  });

  it('downloads only the needed files into the cache layout and encodes like the local directory', async () => {
    const progress: string[] = [];
    const model = await BGEM3.load('org/demo', { onProgress: (p) => progress.push(p.file) });
    const viaHub = (await model.encode(TEXTS)).dense!;
    const snapshot = path.join(cache, 'models--org--demo', 'snapshots', COMMIT);
    // Loaded from hard links of the snapshot, where ONNX Runtime takes the external data as the graph's own.
    assert.equal(model.info().dir, path.join(cache, 'models--org--demo', '.bge-m3', COMMIT));
    assert.equal(model.info().name, 'org/demo', 'the id it was loaded by, to load it again with');
    assert.equal(model.info().attentionNote, '');
    assert.ok(model.info().fusedAttentionBlocks > 0);
    await model.dispose();
    assert.deepEqual(viaHub, await denseOf(DEMO_MODEL));
    const fetched = hub.fetched().sort();
    assert.deepEqual(fetched, ['colbert_linear.pt', 'config.json', 'onnx/model.onnx', 'onnx/model.onnx_data', 'sparse_linear.pt',
      'tokenizer.json']);
    assert.ok(progress.includes('onnx/model.onnx_data'));
    const repoDir = path.join(cache, 'models--org--demo');
    assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
    for (const file of fetched) {
      const link = path.join(snapshot, file);
      assert.ok(fs.lstatSync(link).isSymbolicLink(), file);
      const target = fs.readlinkSync(link);
      const served_ = served.find((f) => f.path === file)!;
      assert.equal(target, path.relative(path.dirname(link), path.join(repoDir, 'blobs', served_.sha256 ?? served_.oid)));
      assert.ok(!path.isAbsolute(target));
      assert.deepEqual(fs.readFileSync(link), served_.content);
    }
    assert.deepEqual(fs.readdirSync(path.join(repoDir, 'blobs')).filter((f) => f.endsWith('.incomplete')), []);
    // Loaded again: nothing downloads.
    hub.requests.length = 0;
    await (await BGEM3.load('org/demo@main')).dispose();
    assert.deepEqual(hub.fetched(), []);
  });

  it('concurrent loads download each file once', async () => {
    const models = await Promise.all([BGEM3.load('org/demo'), BGEM3.load('org/demo'), BGEM3.load('org/demo')]);
    for (const model of models) await model.dispose();
    const fetched = hub.fetched();
    assert.equal(fetched.length, new Set(fetched).size, fetched.join(', '));
    assert.deepEqual(fs.readdirSync(path.join(cache, 'models--org--demo', '.bge-m3', 'locks')), []);
  });

  it('a Xet file listed without its sha256 is named by the X-Linked-Etag of a HEAD request', async () => {
    await (await BGEM3.load('org/xet')).dispose();
    const data = served.find((f) => f.path === 'onnx/model.onnx_data')!;
    assert.ok(hub.requests.some((r) => r.method === 'HEAD' && r.url.endsWith('/onnx/model.onnx_data')));
    assert.ok(fs.existsSync(path.join(cache, 'models--org--xet', 'blobs', data.sha256!)));
  });

  it('a heads-baked repository: the graph at the root, no head files', async () => {
    const model = await BGEM3.load('org/baked');
    assert.equal(model.info().layout, 'heads-baked');
    await model.dispose();
    assert.deepEqual(hub.fetched().sort(), ['config.json', 'model.onnx', 'tokenizer.json']);
  });

  it('a cache laid out by huggingface_hub loads offline, and names a missing file', async () => {
    process.env.HF_ENDPOINT = 'http://127.0.0.1:1';
    process.env.HF_HUB_OFFLINE = '1';
    const repoDir = path.join(cache, 'models--BAAI--bge-m3');
    const commit = '5617a9f61b028005a4858fdac845db406aefb181';
    for (const file of repoFiles(DEMO_MODEL)) {
      const blob = path.join(repoDir, 'blobs', file.sha256 ?? file.oid);
      fs.mkdirSync(path.dirname(blob), { recursive: true });
      fs.writeFileSync(blob, file.content);
      const link = path.join(repoDir, 'snapshots', commit, file.path);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(link), blob), link);
    }
    fs.mkdirSync(path.join(repoDir, 'refs'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), commit);
    assert.deepEqual(await denseOf('BAAI/bge-m3'), await denseOf(DEMO_MODEL));
    fs.rmSync(path.join(repoDir, 'snapshots', commit, 'onnx', 'model.onnx_data'));
    await rejectsWith(BGEM3.load('BAAI/bge-m3'), 'ERR_MODEL_FILES', /HF_HUB_OFFLINE.*lacks onnx\/model\.onnx_data of BAAI\/bge-m3/);
    await rejectsWith(BGEM3.load('BAAI/other'), 'ERR_MODEL_FILES', /lacks the snapshot of BAAI\/other/);
  });

  it('resumes a dropped download with a Range request, never leaving a complete-looking file', async () => {
    const data = served.find((f) => f.path === 'onnx/model.onnx_data')!;
    hub.dropAfter = { path: data.path, bytes: 65536 };
    await rejectsWith(BGEM3.load('org/demo'), 'ERR_MODEL_FILES', /onnx\/model\.onnx_data.*resumes/);
    const blobs = path.join(cache, 'models--org--demo', 'blobs');
    const partial = fs.statSync(path.join(blobs, `${data.sha256}.incomplete`)).size;
    assert.ok(partial > 0 && partial < data.content.length, `partial ${partial}`);
    assert.ok(!fs.existsSync(path.join(blobs, data.sha256!)));
    assert.ok(!fs.existsSync(path.join(cache, 'models--org--demo', 'snapshots', COMMIT, 'onnx', 'model.onnx_data')));
    assert.ok(!fs.existsSync(path.join(cache, 'models--org--demo', 'refs', 'main')));
    hub.requests.length = 0;
    await (await BGEM3.load('org/demo')).dispose();
    const resumed = hub.requests.filter((r) => r.url.endsWith('/onnx/model.onnx_data'));
    assert.deepEqual(resumed.map((r) => r.range), [`bytes=${partial}-`]);
    assert.equal(sha256(fs.readFileSync(path.join(blobs, data.sha256!))), data.sha256);
  });

  it('sends HF_TOKEN as a Bearer token; a 401 says to set HF_TOKEN; a 404 names the repository and revision', async () => {
    hub.token = 'hf_secret';
    await rejectsWith(BGEM3.load('org/demo'), 'ERR_MODEL_FILES', /refused org\/demo \(HTTP 401\).*set HF_TOKEN/);
    process.env.HF_TOKEN = 'hf_secret';
    hub.requests.length = 0;
    await (await BGEM3.load('org/demo')).dispose();
    assert.ok(hub.requests.length > 0);
    assert.ok(hub.requests.every((r) => r.authorization === 'Bearer hf_secret'));
    hub.token = undefined;
    await rejectsWith(BGEM3.load('org/missing'), 'ERR_MODEL_FILES', /'org\/missing' at revision 'main'.*404/);
    await rejectsWith(BGEM3.load('org/demo', { revision: 'v9' }), 'ERR_MODEL_FILES', /'org\/demo' at revision 'v9'.*404/);
  });

  it('says what failed without a network, and what a path or id is', async () => {
    process.env.HF_ENDPOINT = 'http://127.0.0.1:1';
    await rejectsWith(BGEM3.load('org/demo'), 'ERR_MODEL_FILES', /Could not reach the model hub at http:\/\/127\.0\.0\.1:1.*lacks the snapshot/);
    await rejectsWith(BGEM3.load(path.join(DEMO_MODEL, 'config.json')), 'ERR_INPUT', /is a file; pass the model directory/);
    await rejectsWith(BGEM3.load(DEMO_MODEL, { revision: 'main' }), 'ERR_INPUT', /revision applies to a model named by hub id/);
    await rejectsWith(BGEM3.load('org/demo@a', { revision: 'b' }), 'ERR_INPUT', /names revision a/);
    assert.deepEqual(parseHubId('BAAI/bge-m3@v1.0'), { repo: 'BAAI/bge-m3', revision: 'v1.0' });
    for (const notId of ['/abs/path', './a/b', 'a/b/c', 'a--b/c', 'bge-m3', 'a/.b']) assert.equal(parseHubId(notId), undefined, notId);
  });

  it('chooses files from a listing as the loader finds them, and reads the graph\'s external data', () => {
    const baai = new Set(['pytorch_model.bin', 'colbert_linear.pt', 'sparse_linear.pt', 'tokenizer.json', 'tokenizer_config.json',
      'special_tokens_map.json', 'config.json', 'onnx/model.onnx', 'onnx/model.onnx_data', 'onnx/Constant_7_attr__value',
      'onnx/tokenizer.json', 'onnx/config.json', 'sentencepiece.bpe.model', 'README.md']);
    assert.deepEqual(selectRepoFiles(baai, 'BAAI/bge-m3'), {
      graph: 'onnx/model.onnx', required: ['tokenizer.json'],
      optional: ['colbert_linear.pt', 'sparse_linear.pt', 'config.json', 'tokenizer_config.json', 'special_tokens_map.json'],
    });
    const st = new Set(['model.onnx', 'onnx/tokenizer.json', 'colbert_linear.safetensors', 'sparse_linear.safetensors']);
    assert.deepEqual(selectRepoFiles(st, 'o/n'), {
      graph: 'model.onnx', required: ['onnx/tokenizer.json'], optional: ['colbert_linear.safetensors', 'sparse_linear.safetensors'],
    });
    assert.throws(() => selectRepoFiles(new Set(['pytorch_model.bin', 'tokenizer.json']), 'o/n'), /has no onnx\/model\.onnx.*pytorch_model\.bin/);
    const graph = fs.readFileSync(path.join(DEMO_MODEL, 'onnx', 'model.onnx'));
    assert.deepEqual(externalDataFiles(graph, 'onnx/model.onnx'), ['onnx/model.onnx_data']);
  });

  it('fine-tunes the heads of a model named by hub id', async () => {
    const out = path.join(cache, 'tuned');
    const data = Array.from({ length: 16 }, (_, i) => ({ query: `query ${i}`, pos: [`passage ${i}`], neg: [`other ${i + 1}`] }));
    await finetuneHeads({ model: 'org/demo', data, out, epochs: 1, batchSize: 4, groupSize: 2, threads: 1 });
    const model = await BGEM3.load(out);
    assert.equal((await model.encode(['x'])).count, 1);
    await model.dispose();
  });

  it('the CLI takes a hub id as --model, and says when --model is a file', async () => {
    const run = (args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, ...args], { env: process.env }, (err, stdout, stderr) =>
        resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
    });
    let r = await run(['encode', '--model', 'org/demo', '--dense', TEXTS[0]]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /RANDOM/);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.results[0].dense, Array.from(await denseOf(DEMO_MODEL, [TEXTS[0]])));
    r = await run(['encode', '--model', path.join(DEMO_MODEL, 'config.json'), 'x']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_INPUT: .*config\.json' is a file; pass the model directory/);
  });

  it('bge-m3 serve --model takes a hub id', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--model', 'org/demo@main'], { env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let stdout = '';
        child.stdout!.on('data', (d) => {
          stdout += d;
          const m = /listening on (http:\/\/\S+)/.exec(stdout);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
      });
      const res = await fetch(`${address}/encode`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ texts: [TEXTS[0]] }) });
      assert.equal(res.status, 200);
      const body = await res.json() as { dense: number[][] };
      assertClose(body.dense[0], Array.from(await denseOf(DEMO_MODEL, [TEXTS[0]])), 'served dense');
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    assert.ok(hub.fetched().includes('onnx/model.onnx_data'));
  });
});
