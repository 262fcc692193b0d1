#!/usr/bin/env node
// npm's install step for the native addon (package.json "install"). node-gyp-build keeps the
// package's prebuilt binary when it loads here (prebuilds/<platform>-<arch>), else compiles
// native/addon.c with node-gyp (npm_config_build_from_source=true compiles in any case).
//
// The addon is only for vhost-user (`virtio-ts serve`, the Node transports): the browser-safe
// library and most of virtio-ts/node run without it. So when neither works (no prebuilt binary
// for this platform and no C compiler, make or python3) the install still succeeds, with a
// warning here (npm shows a dependency's install output with --foreground-scripts) and, when the
// addon is used, a NativeAddonError that says the same (src/native/index.ts).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function warn(why) {
  console.warn(
    `virtio-ts: WARNING: the native addon is not available on ${process.platform}-${process.arch} (${why}).\n` +
      'virtio-ts: the library works without it; vhost-user (`virtio-ts serve`) needs it. To build it, install a C compiler, ' +
      'make and python3, then run `npm rebuild virtio-ts`.',
  );
}

let bin;
try {
  bin = require.resolve('node-gyp-build/bin.js');
} catch (err) {
  warn(`node-gyp-build is not installed: ${err.message}`);
  process.exit(0);
}
const r = spawnSync(process.execPath, [bin], { cwd: root, stdio: 'inherit' });
if (r.error) warn(`node-gyp-build did not run: ${r.error.message}`);
else if (r.status !== 0) warn(`no prebuilt binary loads here and compiling it failed (node-gyp exited with ${r.status ?? r.signal})`);
process.exit(0);
