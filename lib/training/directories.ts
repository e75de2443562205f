/**
 * The directories fine-tuning writes: an output model that shares the source's encoder files
 * (hard links, or copies), swapped into place whole, and never inside the source model.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M3Error } from '../base/errors';

/**
 * Replaces directory `to` with `from` (both on one file system): `to` is never half-written.
 * Between the two renames the previous version is at `old`.
 */
export function swapDirectory(from: string, to: string, old = `${to}.old-${process.pid}`): void {
  fs.rmSync(old, { recursive: true, force: true });
  const hadOld = fs.existsSync(to);
  if (hadOld) fs.renameSync(to, old);
  fs.renameSync(from, to);
  if (hadOld) fs.rmSync(old, { recursive: true, force: true });
}

/** Whether `inner` is `outer` or lies inside it (both real paths). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of `p`, or of its nearest existing ancestor joined with the rest. */
function realPath(p: string): string {
  const abs = path.resolve(p);
  if (fs.existsSync(abs)) return fs.realpathSync(abs);
  const parent = path.dirname(abs);
  return parent === abs ? abs : path.join(realPath(parent), path.basename(abs));
}

/**
 * Throws unless each directory lies apart from the source model (neither inside it nor holding
 * it), by real paths, so that no symlink lets --force replace (delete) the source or a folder
 * holding it.
 */
export function checkApartFromSource(src: string, dirs: ReadonlyArray<readonly [what: string, dir: string]>): void {
  const realSrc = realPath(src);
  for (const [what, dir] of dirs) {
    const real = realPath(dir);
    if (within(real, realSrc) || within(realSrc, real)) {
      throw new M3Error('ERR_INPUT', `the ${what} '${dir}' ${within(real, realSrc) ? 'is or lies inside' : 'contains'} the source model ` +
        `'${src}', which is never changed; choose another`);
    }
  }
}

/** Hard-links (or copies) the encoder's files from the source model into `dest`, heads excluded. */
export function placeEncoderFiles(src: string, dest: string, mode: 'link' | 'copy'): string[] {
  const placed: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(fs.realpathSync(path.join(src, rel)), { withFileTypes: true })) {
      const name = path.join(rel, entry.name);
      if (entry.name.startsWith('.')) continue;
      if (rel === '' && /^(colbert|sparse)_linear\.(pt|safetensors)$/.test(entry.name)) continue;
      if (rel === '' && entry.name === 'finetune.json') continue;
      // A symlink (a Hugging Face cache snapshot links every file to a blob) is followed: the
      // output gets the file it points to, never a relative link that would dangle there.
      const from = fs.realpathSync(path.join(src, name));
      const to = path.join(dest, name);
      const stat = fs.statSync(from);
      if (stat.isDirectory()) {
        fs.mkdirSync(to, { recursive: true });
        walk(name);
      } else if (stat.isFile()) {
        placeFile(from, to, mode);
        placed.push(name);
      }
    }
  };
  walk('');
  return placed;
}

/** A hard link of `from` at `to`, or a copy where linking fails (another file system, no permission) or `mode` is 'copy'. */
function placeFile(from: string, to: string, mode: 'link' | 'copy'): void {
  if (mode === 'link') {
    try {
      fs.linkSync(from, to);
      return;
    } catch { /* another file system or no permission: copy */ }
  }
  fs.copyFileSync(from, to);
}
