// Preloaded with NODE_OPTIONS="--require scripts/trace-modules.js" and M3_TRACE_MODULES=FILE:
// at exit, appends the npm packages the process loaded (node_modules/NAME, one per line) to FILE.
// scripts/device-stage.sh uses it to stage only the packages a GPU run needs.
'use strict';
const fs = require('node:fs');

process.on('exit', () => {
  const file = process.env.M3_TRACE_MODULES;
  if (!file) return;
  const packages = new Set();
  for (const loaded of Object.keys(require.cache)) {
    for (const m of loaded.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)/g)) packages.add(`node_modules/${m[1]}`);
  }
  if (packages.size) fs.appendFileSync(file, [...packages].join('\n') + '\n');
});
