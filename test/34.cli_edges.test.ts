/**
 * The command line's edges: --version, input files that are missing, broken, or not UTF-8 (each
 * error names the file and the line), Node's own errors printed once, and an index searched with
 * another model than the one it was built with (the error names the model to pass).
 */
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { HybridIndex } from '../lib';
import { decodeUtf8 } from '../lib/base/files';
import { mulberry32 } from '../lib/base/rng';
import { FIXTURES, ROOT } from './helpers';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bge-m3-cli-edges-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('bge-m3 CLI edges', () => {
  it('--version prints the version of package.json', () => {
    const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = run([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), version);
    }
    const info = run(['info']);
    assert.equal(JSON.parse(info.stdout).version, version);
  });

  it('a missing input file is named once, with the code once', () => {
    const missing = path.join(tmp, 'nope.txt');
    const r = run(['encode', '--file', missing]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ERR_INPUT: Text file '.*nope\.txt' does not exist/);
    assert.doesNotMatch(r.stderr, /(ENOENT|ERR_INPUT)\S*:.*\1/);
    const folder = run(['encode', '--file', tmp]);
    assert.match(folder.stderr, /is a folder; pass a file/);
  });

  it('a broken JSONL line is reported with its file and line number', () => {
    const texts = path.join(tmp, 'texts.jsonl');
    fs.writeFileSync(texts, '{"text": "first"}\n{"text": "second"\n');
    const r = run(['encode', '--file', texts]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /texts\.jsonl:2: not valid JSON/);
    const corpus = path.join(tmp, 'corpus.jsonl');
    fs.writeFileSync(corpus, '{"id": 1, "text": "a"}\n\n{"id": 2, "text": b}\n');
    const c = run(['index', 'build', '--in', corpus, '--out', path.join(tmp, 'ix-broken')]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /corpus\.jsonl:3: not valid JSON/);
    const data = path.join(tmp, 'rows.jsonl');
    fs.writeFileSync(data, '{"query": "q", "pos": ["p"], "neg": []}\n[1, 2\n');
    const e = run(['eval', '--data', data]);
    assert.equal(e.code, 1);
    assert.match(e.stderr, /rows\.jsonl:2: not valid JSON/);
  });

  it('a file that is not UTF-8 is refused, naming the line and byte, instead of being read with U+FFFD', () => {
    const latin1 = path.join(tmp, 'latin1.txt');
    fs.writeFileSync(latin1, Buffer.concat([Buffer.from('caf\u00e9 ok\n', 'utf8'), Buffer.from('na\u00efve\n', 'latin1')]));
    const r = run(['encode', '--file', latin1]);
    assert.equal(r.code, 1);
    // Line 2, at the byte after "na": 6 bytes of "café ok\n" in UTF-8 is 9 bytes, then 2.
    assert.match(r.stderr, /latin1\.txt' is not valid UTF-8 \(line 2, byte 11: 0xef\)/);
    const piped = spawnSync(process.execPath, [CLI, 'encode'], { input: Buffer.from([0x61, 0xff, 0x0a]) });
    assert.equal(piped.status, 1);
    assert.match(String(piped.stderr), /standard input is not valid UTF-8 \(line 1, byte 1: 0xff\)/);
  });

  it('the UTF-8 check refuses exactly what a fatal TextDecoder refuses, and points at a byte that does not decode', () => {
    const next = mulberry32(31);
    const pieces = [[0x61], [0x0a], [0xc3, 0xa9], [0xe2, 0x82, 0xac], [0xf0, 0x9f, 0x98, 0x80], [0xc0], [0x80], [0xed, 0xa0, 0x80],
      [0xf4, 0x90], [0xe0, 0x80], [0xff], [0xe2, 0x82], [0xf0]];
    const strict = new TextDecoder('utf-8', { fatal: true });
    for (let trial = 0; trial < 3000; trial++) {
      const bytes = Buffer.from(Array.from({ length: 1 + Math.floor(next() * 6) }, () => pieces[Math.floor(next() * pieces.length)]).flat());
      let expected: string | undefined;
      try {
        expected = strict.decode(bytes);
      } catch { /* invalid */ }
      if (expected !== undefined) {
        assert.equal(decodeUtf8(bytes, 'x'), expected);
        continue;
      }
      const err = (() => {
        try {
          decodeUtf8(bytes, 'x');
        } catch (e) {
          return e as { code?: string; message: string };
        }
        return undefined;
      })();
      assert.ok(err, `accepted ${bytes.toString('hex')}`);
      assert.equal(err.code, 'ERR_INPUT');
      const at = Number(/byte (\d+)/.exec(err.message)![1]);
      // Everything before the reported byte decodes; the reported byte cannot start the rest.
      assert.doesNotThrow(() => strict.decode(bytes.subarray(0, at)), bytes.toString('hex'));
      assert.throws(() => strict.decode(bytes.subarray(at)), bytes.toString('hex'));
    }
  });

  it('an index searched with another model says which model to pass', () => {
    const corpus = path.join(tmp, 'docs.jsonl');
    fs.writeFileSync(corpus, ['alpha beta', 'gamma delta', 'epsilon'].map((text, i) => JSON.stringify({ id: i, text })).join('\n') + '\n');
    const model = path.join(FIXTURES, 'tiny-m3-baked');
    const out = path.join(tmp, 'ix-baked');
    const built = run(['index', 'build', '--in', corpus, '--out', out, '--model', model]);
    assert.equal(built.code, 0, built.stderr);
    const wrong = run(['search', '--index', out, 'alpha']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /ERR_MODEL_LAYOUT/);
    assert.ok(wrong.stderr.includes(`--model ${path.resolve(model)}`), wrong.stderr);
    assert.equal(HybridIndex.load(out).model?.name, path.resolve(model), 'the index records the model it was built with');
    const right = run(['search', '--index', out, '--model', model, 'alpha']);
    assert.equal(right.code, 0, right.stderr);
  });
});
