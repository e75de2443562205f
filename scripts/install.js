#!/usr/bin/env node
'use strict';
// Builds the native addon with cmake-js. Run by `npm install` (the package's install script).
//
// ONNX Runtime:
//   - ORT_ROOT=/path/to/onnxruntime-release  headers from $ORT_ROOT/include, library from $ORT_ROOT/lib
//   - otherwise the headers come from the system (/usr/include/onnxruntime, /usr/local/include/...)
//     or, failing that, from Debian's libonnxruntime-dev fetched into .deps/ort-headers, and the
//     library is the libonnxruntime.so.1 shipped inside the onnxruntime-node package.
// Environment: BGE_M3_SKIP_BUILD=1 skips the build; BGE_M3_BUILD_TESTS=1 also builds the C++
// test executables; BGE_M3_DEBUG=1 builds with debug info.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');

function fail(lines) {
  console.error(['', 'bge-m3: the native addon cannot be built.', ...lines, ''].join('\n'));
  process.exit(1);
}

function firstExisting(candidates) {
  return candidates.find((p) => p && fs.existsSync(p));
}

/** The folder holding onnxruntime_cxx_api.h, fetching Debian's headers when nothing else has them. */
function resolveHeaders(ortRoot) {
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
    console.log('bge-m3: fetching ONNX Runtime headers (Debian libonnxruntime-dev) into .deps/ort-headers');
    const r = spawnSync('bash', [path.join(root, 'scripts', 'fetch-ort-headers.sh'),
      path.join(root, '.deps', 'ort-headers')], { stdio: 'inherit' });
    if (r.status !== 0 || !fs.existsSync(path.join(local, 'onnxruntime_cxx_api.h'))) {
      fail(['The ONNX Runtime C/C++ headers were not found and could not be fetched. Do one of:',
        '  - install them: apt-get install libonnxruntime-dev (Debian 13+/Ubuntu 24.04+)',
        '  - set ORT_ROOT to an unpacked ONNX Runtime release (include/ and lib/)',
        '  - run scripts/fetch-ort-headers.sh .deps/ort-headers with apt access, then npm install again']);
    }
  }
  return local;
}

/** The ONNX Runtime shared library to link against, and the folder it lives in. */
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

function main() {
  if (process.env.BGE_M3_SKIP_BUILD === '1') return;
  const ortRoot = process.env.ORT_ROOT ? path.resolve(process.env.ORT_ROOT) : '';
  const includeDir = resolveHeaders(ortRoot);
  const library = resolveLibrary(ortRoot);
  const libDir = path.dirname(library);
  // $ORIGIN-relative first so the package keeps working when moved with its node_modules.
  const addonDir = path.join(root, 'build', 'Release');
  const rpath = [`$ORIGIN/${path.relative(addonDir, libDir)}`, libDir].join(';');

  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const args = [cmakeJs, 'compile', '--directory', root, '--out', path.join(root, 'build'),
    `--CDORT_INCLUDE_DIR=${includeDir}`, `--CDORT_LIBRARY=${library}`, `--CDORT_RPATH=${rpath}`,
    `--CDBGE_M3_BUILD_TESTS=${process.env.BGE_M3_BUILD_TESTS === '1' ? 'ON' : 'OFF'}`,
    `--parallel`, String(Math.max(1, require('node:os').availableParallelism()))];
  if (process.env.BGE_M3_DEBUG === '1') args.push('--debug');
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    fail(['cmake-js failed (output above). Check that cmake (>= 3.18) and a C++17 compiler are installed',
      '(Debian: apt-get install cmake g++).']);
  }
}

main();
