#!/usr/bin/env node
// The build, incremental: the catalogue is generated (rewritten only when it changed), tsc
// compiles with its build info kept in dist/, the browser-safe core is type-checked a second time
// without Node types, compiled files whose source is gone are removed (a deleted test must not
// run), and the CLI keeps its execute bit (tsc writes files without it). `npm run clean` (or
// `node scripts/build.mjs --clean`) starts from an empty dist/.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

function run(file, args) {
  const r = spawnSync(process.execPath, [file, ...args], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (process.argv.includes('--clean')) rmSync(dist, { recursive: true, force: true });

// The checkout's addon (build/Release, compiled at npm install when no prebuilt binary loads):
// recompiled when native/ or binding.gyp changed since, as node-gyp-build's install step keeps
// a binary that loads however old it is. A checkout without one uses prebuilds/ or none.
const addon = join(root, 'build', 'Release', 'virtio_native.node');
if (existsSync(addon) && Math.max(newest(join(root, 'native')), newest(join(root, 'binding.gyp'))) > statSync(addon).mtimeMs) {
  const npmCli = process.env.npm_execpath;
  const nodeGyp = process.env.npm_config_node_gyp ?? (npmCli && join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  if (!nodeGyp || !existsSync(nodeGyp)) {
    console.error('build: native/ changed since build/Release/virtio_native.node was compiled: run npm run build:native');
    process.exit(1);
  }
  console.log('build: native/ changed: recompiling the addon (node-gyp rebuild)');
  run(nodeGyp, ['rebuild']);
}

// Nothing to do when no input (file or folder: a deleted file changes its folder) is newer than
// the last complete build. tsc's own incremental check still costs seconds; this costs ms.
const stamp = join(dist, '.build-stamp');
const INPUTS = ['src', 'test', 'bench', 'fuzz', 'catalogue', 'scripts', 'tsconfig.json', 'tsconfig.core.json', 'package.json'];
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(st.mtimeMs, ...readdirSync(path).map((n) => newest(join(path, n))));
}
const inputsTime = Math.max(...INPUTS.map((p) => join(root, p)).filter(existsSync).map(newest));
if (existsSync(stamp) && statSync(stamp).mtimeMs > inputsTime) process.exit(0);

run(join(root, 'scripts', 'gen-catalogue.mjs'), []);
run(tsc, ['-p', 'tsconfig.json']);
run(tsc, ['-p', 'tsconfig.core.json']);

// dist/<dir>/<name>.{js,js.map,d.ts,d.ts.map} exist only while <dir>/<name>.ts does.
const SUFFIXES = ['.d.ts.map', '.d.ts', '.js.map', '.js'];
function prune(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      prune(path);
      if (readdirSync(path).length === 0) rmSync(path, { recursive: true });
      continue;
    }
    const suffix = SUFFIXES.find((s) => name.endsWith(s));
    if (suffix === undefined) continue;
    const source = join(root, relative(dist, dir), name.slice(0, -suffix.length) + '.ts');
    if (!existsSync(source)) rmSync(path);
  }
}
if (existsSync(dist)) prune(dist);
chmodSync(join(dist, 'src', 'cli', 'main.js'), 0o755);
writeFileSync(stamp, `${new Date().toISOString()}\n`);
