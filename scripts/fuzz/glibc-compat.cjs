// Loaded with `node --require` before Jazzer.js (scripts/fuzz/run.mjs does this).
//
// Why: @jazzer.js/fuzzer 4.0.0 ships one prebuilt libFuzzer addon for linux-x64, linked
// against glibc 2.38, and the only symbols it takes from glibc 2.38 are the C23 variants
// `__isoc23_strtol` and `__isoc23_strtoul` (they differ from strtol/strtoul only in accepting
// a "0b" prefix). Debian 12 (this project's machines and CI) has glibc 2.36, where dlopen
// refuses the addon ("version `GLIBC_2.38' not found"). Older Jazzer.js releases download
// their binary from GitHub at install time, which this project's machines cannot reach.
//
// What: when loading the addon fails for exactly that reason, this writes a copy of it under
// node_modules/.cache/virtio-ts-jazzer/ in which those two symbols are plain `strtol` /
// `strtoul` (their names point at the "strtol" / "strtoul" suffix of the same string, their
// version index is cleared) and the GLIBC_2.38 requirement is marked weak, and loads the copy.
// The file in node_modules is never modified; on a glibc >= 2.38 nothing is done.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const Module = require('node:module');

const SHT_DYNSYM = 11;
const SHT_GNU_VERNEED = 0x6ffffffe;
const SHT_GNU_VERSYM = 0x6fffffff;
const VER_FLG_WEAK = 2;
const RENAMES = { __isoc23_strtol: 'strtol', __isoc23_strtoul: 'strtoul', _ZSt21ios_base_library_initv: null };
const WEAK_VERSIONS = new Set(['GLIBC_2.38', 'GLIBCXX_3.4.32']);

function cstr(buf, at) {
  const end = buf.indexOf(0, at);
  return buf.toString('latin1', at, end);
}

/** Returns a patched copy of an ELF64 little-endian shared object (throws when it is not one). */
function patch(original) {
  const b = Buffer.from(original);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error('not an ELF64 LE object');
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const sections = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    sections.push({ type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)), link: b.readUInt32LE(o + 0x28), entsize: Number(b.readBigUInt64LE(o + 0x38)) });
  }
  const dynsym = sections.find((s) => s.type === SHT_DYNSYM);
  const versym = sections.find((s) => s.type === SHT_GNU_VERSYM);
  const verneed = sections.find((s) => s.type === SHT_GNU_VERNEED);
  if (!dynsym || !versym || !verneed) throw new Error('no dynamic symbol versioning');
  const dynstr = sections[dynsym.link];
  let renamed = 0;
  for (let i = 0; i < dynsym.size / 24; i++) {
    const o = dynsym.offset + i * 24;
    const nameOff = b.readUInt32LE(o);
    const name = cstr(b, dynstr.offset + nameOff);
    const to = RENAMES[name];
    if (to === undefined) continue;
    if (to !== null) b.writeUInt32LE(nameOff + (name.length - to.length), o); // the suffix: "strtol" inside "__isoc23_strtol"
    b.writeUInt16LE(1, versym.offset + i * 2); // VER_NDX_GLOBAL: bind to the default version
    renamed++;
  }
  const vstr = sections[verneed.link];
  let weakened = 0;
  for (let at = verneed.offset; ; ) {
    const cnt = b.readUInt16LE(at + 2);
    const aux = b.readUInt32LE(at + 8);
    const next = b.readUInt32LE(at + 12);
    for (let a = at + aux, k = 0; k < cnt; k++) {
      if (WEAK_VERSIONS.has(cstr(b, vstr.offset + b.readUInt32LE(a + 8)))) {
        b.writeUInt16LE(b.readUInt16LE(a + 4) | VER_FLG_WEAK, a + 4);
        weakened++;
      }
      const n = b.readUInt32LE(a + 12);
      if (n === 0) break;
      a += n;
    }
    if (next === 0) break;
    at += next;
  }
  if (renamed === 0 || weakened === 0) throw new Error(`nothing to patch (${renamed} symbols, ${weakened} versions)`);
  return b;
}

const prebuild = path.join(path.dirname(require.resolve('@jazzer.js/fuzzer/package.json')), 'prebuilds', `fuzzer-${process.platform}-${process.arch}.node`);
const load = Module._extensions['.node'];
Module._extensions['.node'] = function (module, filename) {
  if (filename !== prebuild) return load.call(this, module, filename);
  try {
    return load.call(this, module, filename);
  } catch (err) {
    if (!/GLIBC_2\.38|GLIBCXX_3\.4\.32/.test(String(err && err.message))) throw err;
    const bytes = fs.readFileSync(filename);
    const hash = crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16);
    const dir = path.join(path.dirname(require.resolve('@jazzer.js/core/package.json')), '..', '..', '.cache', 'virtio-ts-jazzer');
    const copy = path.join(dir, `fuzzer-${hash}.node`);
    if (!fs.existsSync(copy)) {
      fs.mkdirSync(dir, { recursive: true });
      const tmp = `${copy}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, patch(bytes));
      fs.renameSync(tmp, copy);
    }
    return load.call(this, module, copy);
  }
};
