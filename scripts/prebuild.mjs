#!/usr/bin/env node
// Builds the prebuilt native addon binaries that ship in the npm package, so `npm install
// virtio-ts` needs no C compiler on linux-x64 and linux-arm64 (glibc): prebuilds/linux-x64 and
// prebuilds/linux-arm64, one N-API binary each (NAPI_VERSION=8 in binding.gyp: the same binary
// loads on every Node from 20 on), named as node-gyp-build looks them up. `npm pack` and
// `npm publish` run it (package.json "prepack"), so a package always carries binaries built
// from the native/ sources it ships; they are build output, not committed (.gitignore).
//
//   npm run prebuilds              build what is stale (prebuilds/sources.json records the
//                                  sources' hash; nothing is rebuilt while it matches)
//   npm run prebuilds -- --force   rebuild both
//   npm run prebuilds -- --check   only verify (exit 1 when stale or missing)
//
// Needs: gcc and binutils for this machine's arch, a cross gcc for the other one (on x64 Debian:
// apt-get install gcc-aarch64-linux-gnu; on arm64: gcc-x86-64-linux-gnu), make and python3 (node-gyp).
// Each binary is checked before it is kept: an ELF for its architecture whose glibc symbol
// versions are at most 2.28, the glibc Node 20's own Linux builds require.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const prebuilds = join(root, 'prebuilds');
const stampFile = join(prebuilds, 'sources.json');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const FILE = `${pkg.name}.glibc.node`; // prebuildify's name with --napi --tag-libc
const MAX_GLIBC = [2, 28];
/** e_machine (ELF header offset 18): EM_X86_64, EM_AARCH64. */
const TARGETS = [
  { arch: 'x64', triple: 'x86_64-linux-gnu', machine: 62, apt: 'gcc-x86-64-linux-gnu' },
  { arch: 'arm64', triple: 'aarch64-linux-gnu', machine: 183, apt: 'gcc-aarch64-linux-gnu' },
];
const SOURCES = ['binding.gyp', 'native', 'scripts/prebuild.mjs'];

const argv = process.argv.slice(2);
const force = argv.includes('--force');
const checkOnly = argv.includes('--check');

function fail(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

/** sha256 over the sources that make the binaries (file names and bytes, in a stable order). */
function sourcesHash() {
  const h = createHash('sha256');
  const add = (rel) => {
    const abs = join(root, rel);
    if (statSync(abs).isDirectory()) for (const n of readdirSync(abs).sort()) add(`${rel}/${n}`);
    else h.update(`${rel}\0`).update(readFileSync(abs)).update('\0');
  };
  for (const s of SOURCES) add(s);
  h.update(`prebuildify ${JSON.parse(readFileSync(join(root, 'node_modules/prebuildify/package.json'), 'utf8')).version}`);
  return h.digest('hex');
}

/** Why `file` is not a usable prebuild for `t` (null: it is). */
function verify(file, t) {
  if (!existsSync(file)) return `${file} is missing`;
  const bytes = readFileSync(file);
  if (bytes.length < 20 || bytes.readUInt32BE(0) !== 0x7f454c46) return `${file} is not an ELF file`;
  const machine = bytes.readUInt16LE(18);
  if (machine !== t.machine) return `${file} is for ELF machine ${machine}, not ${t.arch} (${t.machine})`;
  // The glibc versions the binary needs (readelf reads any architecture's ELF).
  const r = spawnSync('readelf', ['-V', '--wide', file], { encoding: 'utf8' });
  if (r.status !== 0) return `readelf -V ${file} failed: ${r.error?.message ?? r.stderr}`;
  const needs = [...r.stdout.matchAll(/Name: GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  const tooNew = needs.filter(([a, b]) => a > MAX_GLIBC[0] || (a === MAX_GLIBC[0] && b > MAX_GLIBC[1]));
  if (tooNew.length > 0) return `${file} needs glibc ${tooNew.map((v) => v.join('.')).join(', ')}, above the ${MAX_GLIBC.join('.')} Node 20 requires (use an older symbol, as throw_errno does)`;
  return null;
}

const hash = sourcesHash();
const stamp = existsSync(stampFile) ? JSON.parse(readFileSync(stampFile, 'utf8')) : null;
const problems = TARGETS.map((t) => verify(join(prebuilds, `linux-${t.arch}`, FILE), t)).filter(Boolean);
const fresh = stamp?.sources === hash && problems.length === 0;
if (checkOnly) {
  if (fresh) {
    console.log(`prebuild: up to date (${TARGETS.map((t) => `linux-${t.arch}`).join(', ')}; sources ${hash.slice(0, 12)})`);
    process.exit(0);
  }
  fail(stamp?.sources !== hash ? 'prebuilds/ was built from other sources: run npm run prebuilds' : problems.join('; '));
}
if (fresh && !force) {
  console.log(`prebuild: up to date (sources ${hash.slice(0, 12)}; --force rebuilds)`);
  process.exit(0);
}

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v "${cmd}"`], { encoding: 'utf8' }).stdout.trim();
const hostArch = process.arch;
if (!TARGETS.some((t) => t.arch === hostArch) || process.platform !== 'linux') fail(`run it on linux-x64 or linux-arm64 (this is ${process.platform}-${hostArch})`);

// node-gyp: npm's own (npm sets npm_config_node_gyp for its scripts), else the one beside the npm running us.
let nodeGyp = process.env.npm_config_node_gyp;
const npmCli = process.env.npm_execpath || (onPath('npm') && realpathSync(onPath('npm')));
if (!nodeGyp && npmCli) nodeGyp = join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
if (!nodeGyp || !existsSync(nodeGyp)) fail('cannot find npm\'s node-gyp: run it through npm (npm run prebuilds)');
// Node's headers: those installed with this node when present (no download), else node-gyp fetches them.
const env = { ...process.env };
const prefix = join(dirname(process.execPath), '..');
if (!env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;

const tools = TARGETS.map((t) => {
  const cross = t.arch !== hostArch;
  const cc = cross ? `${t.triple}-gcc` : onPath(`${t.triple}-gcc`) ? `${t.triple}-gcc` : 'cc';
  const strip = cross ? `${t.triple}-strip` : 'strip';
  return { t, cc, strip, missing: [cc, strip].filter((c) => !onPath(c)) };
});
const missing = tools.filter((x) => x.missing.length > 0);
if (missing.length > 0 || !onPath('readelf')) {
  fail(
    `missing ${[...missing.flatMap((x) => x.missing), ...(onPath('readelf') ? [] : ['readelf'])].join(', ')}: ` +
      `apt-get install ${[...new Set(missing.map((x) => (x.t.arch === hostArch ? 'gcc binutils' : x.t.apt)))].join(' ') || 'binutils'}. ` +
      'A package must carry both binaries (without one, users on that arch would need a compiler).',
  );
}

const prebuildify = join(root, 'node_modules', 'prebuildify', 'bin.js');
const work = mkdtempSync(join(tmpdir(), 'virtio-ts-prebuild-'));
try {
  // node-gyp builds in the cwd's build/: a copy of the sources, so the checkout's build/Release stays.
  const src = join(work, 'src');
  mkdirSync(src);
  for (const f of ['package.json', 'binding.gyp', 'native']) cpSync(join(root, f), join(src, f), { recursive: true });
  const out = join(work, 'out');
  const built = [];
  for (const { t, cc, strip } of tools) {
    const r = spawnSync(
      process.execPath,
      [prebuildify, '--napi', '--strip', '--strip-bin', strip, '--tag-libc', '--target', process.versions.node, '--arch', t.arch, '--cwd', src, '--out', out, '--node-gyp', nodeGyp],
      { env: { ...env, CC: cc, CXX: cc, LINK: cc }, encoding: 'utf8' },
    );
    if (r.status !== 0) fail(`prebuildify for linux-${t.arch} failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
    const file = join(out, 'prebuilds', `linux-${t.arch}`, FILE);
    const why = verify(file, t);
    if (why !== null) fail(why);
    built.push({ t, cc, file });
  }
  // All built and checked: replace our own prebuilds/linux-<arch> folders and the stamp.
  mkdirSync(prebuilds, { recursive: true });
  for (const { t } of built) {
    const dest = join(prebuilds, `linux-${t.arch}`);
    rmSync(dest, { recursive: true, force: true });
    renameSync(join(out, 'prebuilds', `linux-${t.arch}`), dest);
  }
  const compilers = Object.fromEntries(built.map(({ t, cc }) => [t.arch, spawnSync(cc, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]]));
  writeFileSync(stampFile, `${JSON.stringify({ sources: hash, napi: 8, maxGlibc: MAX_GLIBC.join('.'), node: process.versions.node, compilers }, null, 2)}\n`);
  for (const { t } of built) {
    const file = join(prebuilds, `linux-${t.arch}`, FILE);
    console.log(`prebuild: ${join('prebuilds', `linux-${t.arch}`, FILE)} (${readFileSync(file).length} bytes, ${compilers[t.arch]})`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
