#!/usr/bin/env node
'use strict';
// Builds the native addon with cmake-js. Run by `npm install` (the package's install script).
//
// ONNX Runtime (resolved by scripts/ort-paths.js, which binding.gyp uses too):
//   - ORT_ROOT=/path/to/onnxruntime-release  headers from $ORT_ROOT/include, library from $ORT_ROOT/lib
//   - otherwise the headers come from the system (/usr/include/onnxruntime, /usr/local/include/...)
//     or, failing that, from Debian's libonnxruntime-dev fetched into .deps/ort-headers, and the
//     library is the libonnxruntime.so.1 shipped inside the onnxruntime-node package.
// Environment: BGE_M3_SKIP_BUILD=1 skips the build; BGE_M3_BUILD_TESTS=1 also builds the C++
// test executables; BGE_M3_CUDA=0 skips the CUDA kernels even where nvcc is found; BGE_M3_DEBUG=1
// builds with debug info; BGE_M3_BUILD_DIR=DIR builds into DIR instead of build/ (a second copy
// of the addon, e.g. against another ONNX Runtime: load it with BGE_M3_ADDON=DIR/Release/bge_m3.node).

const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { root, fail, ortRootFromEnv, resolveHeaders, resolveLibrary } = require('./ort-paths');

function main() {
  if (process.env.BGE_M3_SKIP_BUILD === '1') return;
  const ortRoot = ortRootFromEnv();
  const includeDir = resolveHeaders(ortRoot);
  const library = resolveLibrary(ortRoot);
  const libDir = path.dirname(library);
  // $ORIGIN-relative first so the package keeps working when moved with its node_modules.
  const buildDir = process.env.BGE_M3_BUILD_DIR ? path.resolve(process.env.BGE_M3_BUILD_DIR) : path.join(root, 'build');
  const addonDir = path.join(buildDir, 'Release');
  const rpath = [`$ORIGIN/${path.relative(addonDir, libDir)}`, libDir].join(';');

  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const args = [cmakeJs, 'compile', '--directory', root, '--out', buildDir,
    `--CDORT_INCLUDE_DIR=${includeDir}`, `--CDORT_LIBRARY=${library}`, `--CDORT_RPATH=${rpath}`,
    `--CDBGE_M3_BUILD_TESTS=${process.env.BGE_M3_BUILD_TESTS === '1' ? 'ON' : 'OFF'}`,
    `--CDBGE_M3_CUDA=${process.env.BGE_M3_CUDA === '0' ? 'OFF' : 'ON'}`,
    `--parallel`, String(Math.max(1, require('node:os').availableParallelism()))];
  if (process.env.BGE_M3_DEBUG === '1') args.push('--debug');
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
  if (r.status !== 0) {
    fail(['cmake-js failed (output above). Check that cmake (>= 3.18) and a C++17 compiler are installed',
      '(Debian: apt-get install cmake g++).']);
  }
}

main();
