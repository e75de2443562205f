#!/usr/bin/env node
'use strict';
// Where the ONNX Runtime headers and library are. One resolution for both builds: scripts/install.js
// (cmake-js) requires this module, and binding.gyp (node-gyp) runs it as a command:
//
//   node scripts/ort-paths.js include   the folder holding onnxruntime_cxx_api.h
//   node scripts/ort-paths.js library   the runtime library to link against
//   node scripts/ort-paths.js libdir    the folder of that library (for the rpath)
//
// Order: ORT_ROOT=/path/to/onnxruntime-release (headers from include/, library from lib/); else
// headers from the system (/usr/include/onnxruntime, /usr/local/include/...) or, failing that,
// Debian's libonnxruntime-dev fetched into .deps/ort-headers, and the libonnxruntime.so.1
// shipped inside the onnxruntime-node package.
//
// As a command it prints exactly one absolute path on stdout: gyp's <!(...) takes all of stdout
// as the value, so progress messages and the fetch script's output go to stderr.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

/** The package folder (this file lives in scripts/). */
const root = path.resolve(__dirname, '..');

function fail(lines) {
  console.error(['', 'bge-m3: the native addon cannot be built.', ...lines, ''].join('\n'));
  process.exit(1);
}

function firstExisting(candidates) {
  return candidates.find((p) => p && fs.existsSync(p));
}

/** ORT_ROOT from the environment as an absolute path, or '' when unset. */
function ortRootFromEnv() {
  return process.env.ORT_ROOT ? path.resolve(process.env.ORT_ROOT) : '';
}

/**
 * The folder holding onnxruntime_cxx_api.h, fetching Debian's headers when nothing else has them.
 * `io.log` reports the fetch and `io.stdio` is the fetch script's stdio (see the CLI below).
 */
function resolveHeaders(ortRoot, io = { log: console.log, stdio: 'inherit' }) {
  if (ortRoot) {
    const dir = firstExisting([
      path.join(ortRoot, 'include', 'onnxruntime_cxx_api.h'),
      path.join(ortRoot, 'include', 'onnxruntime', 'onnxruntime_cxx_api.h'),
      path.join(ortRoot, 'include', 'onnxruntime', 'core', 'session', 'onnxruntime_cxx_api.h'),
    ]);
    if (!dir) fail([`ORT_ROOT=${ortRoot} has no include/onnxruntime_cxx_api.h.`,
      'Point ORT_ROOT at an unpacked ONNX Runtime release (it has include/ and lib/).']);
    return path.dirname(dir);
  }
  const system = firstExisting([
    '/usr/include/onnxruntime/onnxruntime_cxx_api.h',
    '/usr/local/include/onnxruntime/onnxruntime_cxx_api.h',
    '/usr/local/include/onnxruntime_cxx_api.h',
  ]);
  if (system) return path.dirname(system);
  const local = path.join(root, '.deps', 'ort-headers', 'include', 'onnxruntime');
  if (!fs.existsSync(path.join(local, 'onnxruntime_cxx_api.h'))) {
    io.log('bge-m3: fetching ONNX Runtime headers (Debian libonnxruntime-dev) into .deps/ort-headers');
    const r = spawnSync('bash', [path.join(root, 'scripts', 'fetch-ort-headers.sh'),
      path.join(root, '.deps', 'ort-headers')], { stdio: io.stdio });
    if (r.status !== 0 || !fs.existsSync(path.join(local, 'onnxruntime_cxx_api.h'))) {
      fail(['The ONNX Runtime C/C++ headers were not found and could not be fetched. Do one of:',
        '  - install them: apt-get install libonnxruntime-dev (Debian 13+/Ubuntu 24.04+)',
        '  - set ORT_ROOT to an unpacked ONNX Runtime release (include/ and lib/)',
        '  - run scripts/fetch-ort-headers.sh .deps/ort-headers with apt access, then npm install again']);
    }
  }
  return local;
}

/** The ONNX Runtime shared library to link against. */
function resolveLibrary(ortRoot) {
  if (ortRoot) {
    const lib = firstExisting([path.join(ortRoot, 'lib', 'libonnxruntime.so'),
      path.join(ortRoot, 'lib', 'libonnxruntime.so.1')]);
    if (!lib) fail([`ORT_ROOT=${ortRoot} has no lib/libonnxruntime.so.`]);
    return lib;
  }
  let pkgDir;
  try {
    pkgDir = path.dirname(require.resolve('onnxruntime-node/package.json', { paths: [root] }));
  } catch {
    fail(['The onnxruntime-node package is not installed; run npm install (or set ORT_ROOT).']);
  }
  const lib = path.join(pkgDir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime.so.1');
  if (!fs.existsSync(lib)) {
    fail([`onnxruntime-node has no runtime library for ${process.platform}/${process.arch} (looked for ${lib}).`,
      'Set ORT_ROOT to an ONNX Runtime release for this platform.']);
  }
  return lib;
}

function cli(what) {
  const ortRoot = ortRootFromEnv();
  // stdout belongs to the answer: the fetch script's output is sent to stderr instead.
  const quiet = { log: (msg) => console.error(msg), stdio: ['ignore', 2, 2] };
  let answer;
  if (what === 'include') answer = resolveHeaders(ortRoot, quiet);
  else if (what === 'library') answer = resolveLibrary(ortRoot);
  else if (what === 'libdir') answer = path.dirname(resolveLibrary(ortRoot));
  else {
    console.error('usage: node scripts/ort-paths.js include|library|libdir');
    process.exit(2);
  }
  process.stdout.write(`${answer}\n`);
}

module.exports = { root, fail, firstExisting, ortRootFromEnv, resolveHeaders, resolveLibrary };

if (require.main === module) cli(process.argv[2]);
