// The README's provider example, line for line (test/readme.test.ts compares them; the
// provider test serves it through the FUSE server).
import { Errno, FsError, ROOT_INO, S_IFDIR, S_IFREG, type FileAttr, type FsProvider } from '../../src/index.js';

const HELLO = new TextEncoder().encode('hello from JavaScript\n');
const attr = (ino: number, mode: number, size: number): FileAttr => ({
  ino, mode, size, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096, blocks: Math.ceil(size / 512),
  atime: 0, atimeNsec: 0, mtime: 0, mtimeNsec: 0, ctime: 0, ctimeNsec: 0,
});

/** One directory holding one file, read-only: the smallest file system worth mounting. */
export const hello: FsProvider = {
  readOnly: true,
  lookup(parent, name) {
    if (parent !== ROOT_INO || name !== 'hello.txt') throw new FsError(Errno.ENOENT);
    return attr(2, S_IFREG | 0o444, HELLO.length);
  },
  getattr(ino) {
    return ino === ROOT_INO ? attr(ROOT_INO, S_IFDIR | 0o555, 0) : attr(2, S_IFREG | 0o444, HELLO.length);
  },
  readdir(_ino, _fh, offset) {
    const all = [
      { name: '.', ino: ROOT_INO, type: S_IFDIR, off: 1 },
      { name: '..', ino: ROOT_INO, type: S_IFDIR, off: 2 },
      { name: 'hello.txt', ino: 2, type: S_IFREG, off: 3 },
    ];
    return all.filter((e) => e.off > offset); // entries after the cookie the kernel gives back
  },
  read(_ino, _fh, offset, size) {
    return HELLO.subarray(offset, offset + size);
  },
};
