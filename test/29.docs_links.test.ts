/**
 * The documentation stands on the repository alone: every relative link of README.md,
 * CONTRIBUTING.md and docs/*.md, and every repository path they name in code spans
 * (`lib/...`, `native/...`, ...), points at a file or folder that exists, and no document or
 * source cites a design file that is not in the repository.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './helpers';

const DOCS = ['README.md', 'CONTRIBUTING.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const TOP_FOLDERS = ['lib', 'native', 'docs', 'scripts', 'test', 'bench', 'fuzz', 'examples', 'data'];

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  for (const m of markdown.matchAll(/^#{1,6}\s+(.+)$/gm)) {
    out.add(m[1].trim().toLowerCase().replace(/`/g, '').replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-'));
  }
  return out;
}

describe('documentation references', () => {
  for (const doc of DOCS) {
    it(`${doc}: relative links and named paths resolve inside the repository`, () => {
      const text = fs.readFileSync(path.join(ROOT, doc), 'utf8');
      const dir = path.dirname(path.join(ROOT, doc));
      const broken: string[] = [];
      for (const m of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/i.test(target)) continue;  // http:, https:, mailto:
        const [file, anchor] = target.split('#');
        const resolved = file ? path.resolve(dir, decodeURIComponent(file)) : path.join(ROOT, doc);
        if (!resolved.startsWith(ROOT + path.sep) && resolved !== ROOT) broken.push(`${target} (outside the repository)`);
        else if (!fs.existsSync(resolved)) broken.push(target);
        else if (anchor && resolved.endsWith('.md') && !anchors(fs.readFileSync(resolved, 'utf8')).has(anchor)) broken.push(`${target} (no such heading)`);
      }
      for (const m of text.matchAll(/`([a-z_]+\/[A-Za-z0-9_./-]*)`/g)) {
        const named = m[1].replace(/[.,:;]$/, '');
        if (!TOP_FOLDERS.includes(named.split('/')[0]) || named.includes('*')) continue;
        if (!fs.existsSync(path.join(ROOT, named))) broken.push(`\`${named}\``);
      }
      assert.deepEqual(broken, [], `${doc} points at what the repository does not hold`);
    });
  }

  it('nothing cites a design or semantics file outside the repository', () => {
    const offenders: string[] = [];
    const walk = (rel: string) => {
      for (const entry of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
        const child = path.posix.join(rel, entry.name);
        if (entry.isDirectory()) {
          if (!['fixtures', 'corpus', 'results'].includes(entry.name)) walk(child);
        } else if (/\.(ts|js|cc|h|cu|cuh|py|sh|md|txt)$/.test(entry.name)) {
          if (/\bDESIGN\.md\b|M3-SEMANTICS\.md|\.\.\/shared\//.test(fs.readFileSync(path.join(ROOT, child), 'utf8'))) offenders.push(child);
        }
      }
    };
    for (const top of [...TOP_FOLDERS.filter((f) => fs.existsSync(path.join(ROOT, f))), '.ci']) walk(top);
    for (const file of ['README.md', 'CONTRIBUTING.md', 'CMakeLists.txt', 'binding.gyp', 'package.json']) {
      if (/\bDESIGN\.md\b|M3-SEMANTICS\.md|\.\.\/shared\//.test(fs.readFileSync(path.join(ROOT, file), 'utf8'))) offenders.push(file);
    }
    assert.deepEqual(offenders, []);
  });
});
