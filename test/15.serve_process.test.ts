/**
 * `bge-m3 serve` as a process: it listens, answers, and on SIGTERM or SIGINT answers every
 * request already in flight, refuses new ones, disposes the model and exits 0.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { ROOT, assertClose, golden, longText } from './helpers';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** Starts the server and resolves with its address once it prints it. */
function start(args: string[]): Promise<{ child: ChildProcess; address: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    let stdout = '';
    child.stdout!.on('data', (d) => {
      stdout += d;
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve({ child, address: m[1], stderr: () => stderr });
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code} before listening: ${stderr}`)));
  });
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

async function encode(address: string, texts: string[]): Promise<{ status: number; body: { dense?: number[][] } }> {
  const res = await fetch(`${address}/encode`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ texts }),
  });
  return { status: res.status, body: await res.json() as { dense?: number[][] } };
}

describe('bge-m3 serve (process)', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: requests in flight are all answered, then the process exits 0`, async () => {
      // A long batching wait keeps requests queued when the signal arrives.
      const { child, address, stderr } = await start(['--max-wait-ms', '2000']);
      const exited = exitOf(child);
      const health = await fetch(`${address}/health`);
      assert.equal(health.status, 200);
      const texts = golden.cases.slice(0, 8).map((c) => c.text);
      const inFlight = texts.map((t) => encode(address, [t]));
      await new Promise((r) => setTimeout(r, 150));
      child.kill(signal);
      const answers = await Promise.all(inFlight);
      answers.forEach((a, i) => {
        assert.equal(a.status, 200, `request ${i}: ${JSON.stringify(a.body)}`);
        assert.equal(a.body.dense?.length, 1);
      });
      assert.equal(await exited, 0, stderr());
      assert.match(stderr(), new RegExp(`${signal}: finishing requests in flight`));
      await assert.rejects(fetch(`${address}/health`), 'the port is closed after exit');
    });
  }

  it('examples/node-http-server.js embeds with the reference values and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'examples', 'node-http-server.js'), '', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = exitOf(child);
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      child.once('exit', (code) => reject(new Error(`example exited with ${code}`)));
    });
    const c = golden.cases.find((x) => x.name === 'english')!;
    const res = await fetch(url, { method: 'POST', body: JSON.stringify({ texts: [c.text] }) });
    assert.equal(res.status, 200);
    const body = await res.json() as { embeddings: number[][]; tokens: number };
    assertClose(body.embeddings[0], c.dense, 'example dense');
    assert.equal(body.tokens, c.ids.length);
    assert.equal((await fetch(url, { method: 'POST', body: '{"texts": [1]}' })).status, 400);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  it('the compatibility flags reach the server: --model-name, --api-key, --auto-truncate, --cors, --max-texts', async () => {
    const { child, address, stderr } = await start(['--model-name', 'm3-test', '--api-key', 'k1', '--auto-truncate', '--cors', '*', '--max-texts', '3']);
    const exited = exitOf(child);
    const post = (url: string, body: unknown, key = 'k1') => fetch(`${address}${url}`, {
      method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, origin: 'https://a.example' },
    });
    assert.equal((await post('/v1/embeddings', { input: 'x' }, 'other')).status, 401);
    const long = await post('/v1/embeddings', { input: longText(200), model: 'm3-test' });
    assert.equal(long.status, 200, 'auto-truncate cuts instead of 413');
    assert.equal(long.headers.get('access-control-allow-origin'), '*');
    assert.equal(((await long.json()) as { model: string }).model, 'm3-test');
    assert.equal((await post('/embed', { inputs: 'x', model: 'other' })).status, 400);
    assert.equal((await post('/embed', { inputs: ['a', 'b', 'c', 'd'] })).status, 413);
    assert.equal((await fetch(`${address}/health`)).status, 200);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr());
  });
});
