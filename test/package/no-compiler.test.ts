// `npm install virtio-ts` as a user without a C toolchain meets it: the packed tarball is
// installed into a fresh project whose PATH holds only node, npm and sh (no cc, gcc, make or
// python), so node-gyp cannot compile anything. The install must succeed, the library must
// import, and the native addon must load from the package's prebuilt binary. When there is no
// usable binary at all, the install still succeeds, and native() and `virtio-ts serve` say why.
//
// The tarball is what `npm pack` ships (--ignore-scripts: the prepack step, scripts/prebuild.mjs,
// is run here first, so packing cannot rebuild dist/ under the running suite). Dependencies
// come from npm's cache when it has them (--prefer-offline), else from the registry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingPrerequisite } from '../prerequisites.js';

const root = join(fileURLToPath(import.meta.url), '../../../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; scripts: Record<string, string> };
const ADDON = `${pkg.name}.glibc.node`;
/** e_machine of the ELF header (offset 18). */
const MACHINE: Record<string, number> = { x64: 62, arm64: 183 };

function elfMachine(file: string): number {
  const b = readFileSync(file);
  assert.equal(b.readUInt32BE(0), 0x7f454c46, `${file} is an ELF file`);
  return b.readUInt16LE(18);
}

/** What the check script (run inside the consumer project) reports. */
interface Probe {
  libExports: number;
  nodeExports: number;
  testingExports: number;
  addon: { ok: true; loaded: string[] } | { ok: false; name: string; kind: string; isNativeAddonError: boolean; message: string };
}

const PROBE = `
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const lib = await import('virtio-ts');
const nodeApi = await import('virtio-ts/node');
const testing = await import('virtio-ts/testing');
// The addon wrapper keeps its path (dist/src/native/index.js); virtio-ts/node does not export it.
const nat = await import(pathToFileURL('node_modules/virtio-ts/dist/src/native/index.js').href);
let addon;
try {
  const n = nat.native();
  const [a, b] = n.socketpair();
  n.close(a);
  n.close(b);
  // Which addon binary this process mapped: the one native() loaded.
  const loaded = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.endsWith('.node')).map((l) => l.slice(l.indexOf('/'))))];
  addon = { ok: true, loaded };
} catch (err) {
  addon = { ok: false, name: err.name, kind: err.kind, isNativeAddonError: err instanceof nat.NativeAddonError, message: err.message };
}
console.log(JSON.stringify({ libExports: Object.keys(lib).length, nodeExports: Object.keys(nodeApi).length, testingExports: Object.keys(testing).length, addon }));
`;

test('npm install of the packed tarball works without a compiler: the library imports and the addon loads from prebuilds/', { timeout: 300_000 }, async (t) => {
  if (process.platform !== 'linux' || !(process.arch in MACHINE)) return t.skip(`prebuilt binaries are for linux-x64 and linux-arm64, not ${process.platform}-${process.arch}`);
  assert.equal(pkg.scripts.prepack, 'node scripts/prebuild.mjs', 'npm pack / npm publish build the prebuilds first');

  // 1. The prebuilt binaries, as prepack makes them (a no-op when prebuilds/ matches the sources).
  const prebuild = spawnSync(process.execPath, [join(root, 'scripts/prebuild.mjs')], { cwd: root, encoding: 'utf8', timeout: 240_000 });
  if (prebuild.status !== 0 && /prebuild: missing /.test(prebuild.stderr)) return missingPrerequisite(t, prebuild.stderr.trim());
  assert.equal(prebuild.status, 0, prebuild.stderr);

  const work = mkdtempSync(join(tmpdir(), 'virtio-ts-pack-'));
  try {
    // 2. The tarball.
    const npmCli = realpathSync(spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim());
    const packed = spawnSync(process.execPath, [npmCli, 'pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', env: cleanEnv(process.env.PATH ?? ''), timeout: 120_000 });
    assert.equal(packed.status, 0, packed.stderr);
    const [info] = JSON.parse(packed.stdout) as [{ filename: string; files: { path: string }[] }];
    const shipped = new Set(info.files.map((f) => f.path));
    for (const f of [`prebuilds/linux-x64/${ADDON}`, `prebuilds/linux-arm64/${ADDON}`, 'scripts/install.mjs', 'binding.gyp', 'native/addon.c', 'dist/src/index.js', 'dist/src/node.js', 'dist/src/testing.js', 'LICENSE']) {
      assert.ok(shipped.has(f), `the tarball ships ${f}`);
    }
    assert.ok(![...shipped].some((f) => f.startsWith('dist/test/') || f.startsWith('build/')), 'no tests or local build in the tarball');

    // 3. A PATH with node, npm and sh only.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli, join(bin, 'npm'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const env = cleanEnv(bin);
    const found = spawnSync('/bin/sh', ['-c', 'for c in cc gcc c++ g++ clang make python3 python; do command -v $c; done; true'], { env, encoding: 'utf8' });
    assert.equal(found.stdout.trim(), '', 'no compiler, make or python on the PATH');

    // 4. The install into a fresh project.
    const project = join(work, 'consumer');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    writeFileSync(join(project, 'probe.mjs'), PROBE);
    const npm = (...args: string[]) => spawnSync(process.execPath, [npmCli, ...args, '--no-audit', '--no-fund', '--foreground-scripts'], { cwd: project, env, encoding: 'utf8', timeout: 240_000 });
    const install = npm('install', '--prefer-offline', join(work, info.filename));
    assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`);
    assert.doesNotMatch(install.stdout + install.stderr, /WARNING: the native addon is not available/, 'the prebuilt binary loaded at install');
    const installed = join(project, 'node_modules', pkg.name);
    assert.equal(existsSync(join(installed, 'build')), false, 'nothing was compiled');
    assert.equal(elfMachine(join(installed, 'prebuilds/linux-x64', ADDON)), MACHINE.x64);
    assert.equal(elfMachine(join(installed, 'prebuilds/linux-arm64', ADDON)), MACHINE.arm64, 'the arm64 binary is an aarch64 ELF');

    const probe = (): Probe => {
      const r = spawnSync(process.execPath, ['probe.mjs'], { cwd: project, env, encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as Probe;
    };
    const prebuilt = realpathSync(join(installed, `prebuilds/linux-${process.arch}`, ADDON));
    const first = probe();
    assert.ok(first.libExports > 20 && first.nodeExports > first.libExports && first.testingExports > 0, `virtio-ts, virtio-ts/node and virtio-ts/testing import (${first.libExports}, ${first.nodeExports}, ${first.testingExports} exports)`);
    assert.deepEqual(first.addon, { ok: true, loaded: [prebuilt] }, 'native() loaded the prebuilt binary');

    // 5. A forced compile (npm_config_build_from_source) cannot work here: the install step warns
    //    and succeeds, and the prebuilt binary still loads.
    const rebuild = spawnSync(process.execPath, [npmCli, 'rebuild', pkg.name, '--foreground-scripts'], { cwd: project, env: { ...env, npm_config_build_from_source: 'true' }, encoding: 'utf8', timeout: 240_000 });
    assert.equal(rebuild.status, 0, `npm rebuild failed:\n${rebuild.stdout}\n${rebuild.stderr}`);
    assert.match(rebuild.stdout + rebuild.stderr, /WARNING: the native addon is not available/);
    assert.deepEqual(probe().addon, { ok: true, loaded: [prebuilt] }, 'a failed compile leaves the prebuilt binary in use');

    // 6. No binary at all (as on a platform without prebuilds): the library still imports;
    //    native() throws a NativeAddonError of kind addon-missing; serve exits 3 and says why.
    rmSync(join(installed, 'prebuilds'), { recursive: true });
    const none = probe();
    assert.ok(none.libExports > 20 && none.nodeExports > none.libExports && none.testingExports > 0, 'the library imports without the addon');
    assert.equal(none.addon.ok, false);
    if (!none.addon.ok) {
      assert.equal(none.addon.isNativeAddonError, true, none.addon.message);
      assert.equal(none.addon.kind, 'addon-missing');
    }
    const serve = spawnSync(process.execPath, [join(installed, 'dist/src/cli/main.js'), 'serve', 'rng', '--socket-path', join(work, 'rng.sock')], { cwd: project, env, encoding: 'utf8', timeout: 60_000 });
    assert.equal(serve.status, 3, `serve is a runtime failure without the addon: ${serve.stderr}`);
    assert.match(serve.stderr, /native addon/);
    assert.match(serve.stderr, /npm rebuild virtio-ts/, 'serve says how to get the addon');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

/** This process's environment for npm with `path` as PATH, without what would steer a compile or npm itself. */
function cleanEnv(path: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|NODE_TEST_CONTEXT$|NODE_OPTIONS$|INIT_CWD$|CC$|CXX$|LINK$|PYTHON$|MAKE$)/i.test(k)) continue;
    env[k] = v;
  }
  env.PATH = path;
  return env;
}
