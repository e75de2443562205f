#!/usr/bin/env bash
# ONNX Runtime with its CUDA execution provider, for the GPU build of the addon.
#
# Fetches ONNX Runtime 1.29.0 for CUDA 13 (the official release binaries, MIT, as repackaged in
# the npm packages com.github.asus4.onnxruntime and com.github.asus4.onnxruntime.linux-x64-gpu)
# with `npm pack`, and lays out an ONNX Runtime root:
#
#   .deps/ort-gpu/root/include   the 1.29 C and C++ API headers (C API 29: the plugin-provider
#                                calls the addon uses when the core has no CUDA provider built in)
#   .deps/ort-gpu/root/lib       libonnxruntime.so.1 (1.29.0), libonnxruntime_providers_shared.so,
#                                libonnxruntime_providers_cuda.so (needs libcudart.so.13,
#                                libcublas(Lt).so.13, libcurand.so.10 and the driver's libcuda.so.1)
#
# then, with --build, builds a second copy of the addon against it into build-gpu/:
#
#   scripts/fetch-ort-gpu.sh --build
#   BGE_M3_ADDON=build-gpu/Release/bge_m3.node npm test      # the whole suite on the 1.29 library
#
# The addon built against onnxruntime-node's 1.30 library cannot load 1.29 (its symbols are
# versioned), hence the second build. The packages are not dependencies of bge-m3; they land in
# .deps/ (git-ignored). Other sources of the same files: the official onnxruntime-linux-x64-gpu
# release archive (ORT_ROOT=its folder), or onnxruntime-node's own CUDA 12 download.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.4.9
DEST=.deps/ort-gpu
PKGS="$DEST/pkgs"
ROOT_DIR="$DEST/root"
BUILD=0
for arg in "$@"; do
  case "$arg" in
    --build) BUILD=1 ;;
    *) echo "usage: $0 [--build]" >&2; exit 2 ;;
  esac
done

mkdir -p "$PKGS" "$ROOT_DIR/lib"
for pkg in com.github.asus4.onnxruntime com.github.asus4.onnxruntime.linux-x64-gpu; do
  tgz="$PKGS/$pkg-$VERSION.tgz"
  if [ ! -s "$tgz" ]; then
    echo "fetching $pkg@$VERSION" >&2
    (cd "$PKGS" && npm pack --silent "$pkg@$VERSION" >/dev/null)
  fi
done

# The Linux x64 libraries only (the first package holds every platform's).
extract() {
  local tgz="$1" name="$2" out="$3"
  tar -xzf "$tgz" -O "package/Plugins/Linux/x64/$name" > "$out.tmp"
  mv "$out.tmp" "$out"
}
extract "$PKGS/com.github.asus4.onnxruntime-$VERSION.tgz" libonnxruntime.so "$ROOT_DIR/lib/libonnxruntime.so.1"
extract "$PKGS/com.github.asus4.onnxruntime-$VERSION.tgz" libonnxruntime_providers_shared.so "$ROOT_DIR/lib/libonnxruntime_providers_shared.so"
extract "$PKGS/com.github.asus4.onnxruntime.linux-x64-gpu-$VERSION.tgz" libonnxruntime_providers_cuda.so "$ROOT_DIR/lib/libonnxruntime_providers_cuda.so"
ln -sfn libonnxruntime.so.1 "$ROOT_DIR/lib/libonnxruntime.so"

# The release's headers (the package carries them in its Apple frameworks; they are the same on
# every platform).
headers='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
if [ ! -f "$ROOT_DIR/include/onnxruntime_cxx_api.h" ]; then
  rm -rf "$ROOT_DIR/include" "$DEST/headers.tmp"
  mkdir -p "$DEST/headers.tmp"
  tar -xzf "$PKGS/com.github.asus4.onnxruntime-$VERSION.tgz" -C "$DEST/headers.tmp" --wildcards "$headers/*.h"
  mv "$DEST/headers.tmp/$headers" "$ROOT_DIR/include"
  rm -rf "$DEST/headers.tmp"
  # Dated now, not as archived, so that a build made against other headers is rebuilt.
  touch "$ROOT_DIR/include"/*.h
fi

version=$(grep -ao 'VERS_1\.[0-9]*\.[0-9]*' "$ROOT_DIR/lib/libonnxruntime.so.1" | sort -u | tail -1)
echo "ONNX Runtime root: $ROOT_DIR ($version; CUDA provider $(du -h "$ROOT_DIR/lib/libonnxruntime_providers_cuda.so" | cut -f1))" >&2

if [ "$BUILD" = 1 ]; then
  ORT_ROOT="$ROOT_DIR" BGE_M3_BUILD_DIR=build-gpu node scripts/install.js
  echo "built build-gpu/Release/bge_m3.node; run it with BGE_M3_ADDON=build-gpu/Release/bge_m3.node" >&2
fi
