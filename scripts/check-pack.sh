#!/usr/bin/env bash
# The package as users get it: `npm pack`, installed into a fresh project with the onnxruntime-node
# download switched off (ONNXRUNTIME_NODE_INSTALL=skip, as the README says for offline installs),
# then `npx bge-m3 --version`, `npx bge-m3 demo`, and the two entry points from CommonJS and ESM.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" >/dev/null
tarball=$(ls "$work"/bge-m3-*.tgz)
mkdir "$work/app"
cd "$work/app"
echo '{ "name": "app", "version": "1.0.0", "private": true }' > package.json
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error "$tarball"
version=$(node -p "require('bge-m3/package.json').version")
[ "$(npx --no-install bge-m3 --version)" = "$version" ] || { echo "check-pack: bge-m3 --version is not $version" >&2; exit 1; }
npx --no-install bge-m3 demo 2>/dev/null | grep -q '^all ' || { echo "check-pack: bge-m3 demo printed no metrics" >&2; exit 1; }
cat > esm.mjs <<'JS'
import { createServer } from 'bge-m3/server';
import { BGEM3, VERSION } from 'bge-m3';
if (typeof createServer !== 'function' || typeof BGEM3.load !== 'function' || !VERSION) process.exit(1);
JS
node esm.mjs
node -e "const { createServer } = require('bge-m3/server'); const { BGEM3 } = require('bge-m3'); if (typeof createServer !== 'function' || typeof BGEM3.load !== 'function') process.exit(1);"
echo "check-pack: bge-m3 $version installs from its tarball; the CLI, the demo and both entry points work"
