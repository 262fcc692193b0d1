// virtio-ts native addon, file-system part: the *at() system calls a virtio-fs host-directory
// provider needs to stay inside its shared root (src/node/fs/host-dir.ts). Node's fs resolves
// whole paths from the current directory and follows symlinks; this resolves ONE name relative
// to a held directory fd and never follows a symlink:
// - fsOpenat uses openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS) where
//   the kernel has it (5.6+), else openat(O_NOFOLLOW); either way a name with '/' is refused
//   here (EINVAL) and ".." is refused in the fallback (openat2 refuses it with EXDEV);
// - operations on an inode go through its O_PATH fd: with AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
//   or through /proc/self/fd/N, a "magic link" that lands on the inode itself (a symlink's own
//   inode, never its target: reopening one is ELOOP, its xattrs are its own) -- the approach of
//   QEMU's virtiofsd (tools/virtiofsd/passthrough_ll.c).
// Every call is synchronous and throws a JS Error whose `code` is the errno name, like addon.c.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <uv.h>

#include "fs.h"
#include "util.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef SYS_renameat2
#define SYS_renameat2 316
#endif
#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_XDEV 0x01
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#endif
#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#define F_OFD_SETLKW 38
#endif

// struct open_how (linux/openat2.h), declared here so older headers build too.
struct vt_open_how {
  uint64_t flags;
  uint64_t mode;
  uint64_t resolve;
};

static napi_value fs_undefined(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

#define ARGS(n)                                                                          \
  size_t argc = (n);                                                                     \
  napi_value argv[(n) > 0 ? (n) : 1];                                                    \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < (n)) \
    return throw_errno(env, __func__, EINVAL);

static int get_i32(napi_env env, napi_value v, int32_t* out) { return napi_get_value_int32(env, v, out) == napi_ok; }
static int get_f64(napi_env env, napi_value v, double* out) { return napi_get_value_double(env, v, out) == napi_ok; }

// A file name: one path component (no '/', no NUL, at most NAME_MAX bytes). `empty_ok` admits
// "" (an operation on the fd itself).
static int get_name(napi_env env, napi_value v, char* buf, size_t size, int empty_ok) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) return 0;
  if (len >= size - 1) return 0;  // truncated (or exactly at the limit: refuse rather than guess)
  if (strlen(buf) != len) return 0;  // an embedded NUL
  if (len == 0) return empty_ok;
  return strchr(buf, '/') == NULL;
}

// A symlink target: any bytes but NUL, up to PATH_MAX.
static int get_text(napi_env env, napi_value v, char* buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) return 0;
  return len > 0 && len < size - 1 && strlen(buf) == len;
}

static int get_f64s(napi_env env, napi_value v, double** data, size_t n) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off, len;
  void* p;
  if (napi_get_typedarray_info(env, v, &t, &len, &p, &ab, &off) != napi_ok || t != napi_float64_array || len < n) return 0;
  *data = p;
  return 1;
}

#define NAME_BUF 258  // NAME_MAX (255) + NUL + one byte to see a longer name

// "/proc/self/fd/N": the magic link to the inode of fd N.
static void proc_path(char* buf, size_t size, int fd) { snprintf(buf, size, "/proc/self/fd/%d", fd); }

// /proc/self/fd, held (as virtiofsd's lo->proc_self_fd): opening "N" relative to it walks one
// component instead of three ("/proc", "self" -- itself a symlink to the pid -- and "fd") on
// every OPEN. Opened on first use; -1 when /proc cannot be opened (the path is used then).
static int proc_self_fd = -2;

// open(flags) of the inode of fd N through its magic link: the new fd, or -errno.
static int proc_open(int fd, int flags) {
  if (proc_self_fd == -2) proc_self_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
  char p[64];
  int r;
  if (proc_self_fd >= 0) {
    snprintf(p, sizeof p, "%d", fd);
    r = openat(proc_self_fd, p, flags | O_CLOEXEC);
  } else {
    proc_path(p, sizeof p, fd);
    r = open(p, flags | O_CLOEXEC);
  }
  return r < 0 ? -errno : r;
}

static int openat2_missing = 0;

// One name opened beneath dirfd (O_NOFOLLOW | O_CLOEXEC added): the fd, or -errno.
static int open_beneath(int dirfd, const char* name, int flags, int mode) {
  flags |= O_NOFOLLOW | O_CLOEXEC;
  int fd = -1;
  if (!openat2_missing) {
    struct vt_open_how how = {(uint64_t)(uint32_t)flags, (flags & (O_CREAT | O_TMPFILE)) ? (uint64_t)(mode & 07777) : 0,
                              RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS};
    fd = (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) openat2_missing = 1;
    // EAGAIN / EXDEV: the kernel saw a rename somewhere during a scoped lookup and cannot vouch
    // for it (openat2(2): "the caller may retry"). For one component that is not ".." (refused
    // below) openat(O_NOFOLLOW) is exactly as confined, so it answers instead of failing.
    else if (fd < 0 && errno != EAGAIN && errno != EXDEV) return -errno;
    else if (fd < 0 && strcmp(name, "..") == 0) return -EXDEV;
  }
  if (fd < 0) {
    if (strcmp(name, "..") == 0) return -EXDEV;
    fd = openat(dirfd, name, flags, (mode_t)(mode & 07777));
    if (fd < 0) return -errno;
  }
  return fd;
}

// fsOpenat(dirfd, name, flags, mode): fd. O_NOFOLLOW and O_CLOEXEC are always added; the name
// is one component, resolved beneath dirfd.
static napi_value FsOpenat(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t dirfd, flags, mode;
  char name[NAME_BUF];
  if (!get_i32(env, argv[0], &dirfd) || !get_name(env, argv[1], name, sizeof name, 0) || !get_i32(env, argv[2], &flags) ||
      !get_i32(env, argv[3], &mode))
    return throw_errno(env, "fsOpenat: (dirfd, name, flags, mode)", EINVAL);
  int fd = open_beneath(dirfd, name, flags, mode);
  if (fd < 0) return throw_errno(env, "openat", -fd);
  return num(env, fd);
}

// fsReopen(fd, flags): a new fd for the inode of (O_PATH) fd, opened with flags through
// /proc/self/fd (a symlink's inode gives ELOOP: it is never followed).
static napi_value FsReopen(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd, flags;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &flags)) return throw_errno(env, "fsReopen: (fd, flags)", EINVAL);
  int r = proc_open(fd, flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW | O_TMPFILE));
  if (r < 0) return throw_errno(env, "reopen", -r);
  return num(env, r);
}

// The 17 fields of fsStat's out array from `st`.
static void fill_stat(double* out, const struct stat* st) {
  out[0] = (double)st->st_dev;
  out[1] = (double)((uint64_t)st->st_ino >> 32);
  out[2] = (double)((uint64_t)st->st_ino & 0xffffffffu);
  out[3] = st->st_mode;
  out[4] = (double)st->st_nlink;
  out[5] = st->st_uid;
  out[6] = st->st_gid;
  out[7] = (double)st->st_rdev;
  out[8] = (double)st->st_size;
  out[9] = (double)st->st_blksize;
  out[10] = (double)st->st_blocks;
  out[11] = (double)st->st_atim.tv_sec;
  out[12] = (double)st->st_atim.tv_nsec;
  out[13] = (double)st->st_mtim.tv_sec;
  out[14] = (double)st->st_mtim.tv_nsec;
  out[15] = (double)st->st_ctim.tv_sec;
  out[16] = (double)st->st_ctim.tv_nsec;
}

// (dirfd, name, Float64Array(17)) of fsStat and fsLookup; `name` has NAME_BUF bytes.
static int stat_args(napi_env env, napi_value* argv, int32_t* dirfd, char* name, double** out, int empty_ok) {
  return get_i32(env, argv[0], dirfd) && get_name(env, argv[1], name, NAME_BUF, empty_ok) && get_f64s(env, argv[2], out, 17);
}

// fsStat(dirfd, name, out Float64Array(17)): fstatat(AT_SYMLINK_NOFOLLOW; "" = the fd itself).
// out: dev, ino high 32 bits, ino low 32 bits, mode, nlink, uid, gid, rdev, size, blksize,
// blocks, atime s, ns, mtime s, ns, ctime s, ns.
static napi_value FsStat(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t dirfd;
  char name[NAME_BUF];
  double* out;
  if (!stat_args(env, argv, &dirfd, name, &out, 1)) return throw_errno(env, "fsStat: (dirfd, name, Float64Array(17))", EINVAL);
  if (strcmp(name, "..") == 0) return throw_errno(env, "fstatat", EXDEV);
  struct stat st;
  // The raw system call, not glibc's fstatat: since glibc 2.33 that links as fstatat64@GLIBC_2.33,
  // and the prebuilt binaries must load on glibc 2.28 (scripts/prebuild.mjs). On the 64-bit
  // targets (x86_64, aarch64) the kernel's struct stat is glibc's.
  if (syscall(SYS_newfstatat, dirfd, name, &st, AT_SYMLINK_NOFOLLOW | (name[0] == 0 ? AT_EMPTY_PATH : 0)) < 0) return throw_errno(env, "fstatat", errno);
  fill_stat(out, &st);
  return fs_undefined(env);
}

// fstatat(dirfd, name, flags) into out (as fsStat): 0, or -errno.
static int stat_into(int dirfd, const char* name, int flags, double* out) {
  struct stat st;
  if (syscall(SYS_newfstatat, dirfd, name, &st, flags) < 0) return -errno;
  fill_stat(out, &st);
  return 0;
}

// fsLookup(dirfd, name, out Float64Array(17)): the O_PATH fd of one name beneath dirfd (as
// fsOpenat(O_PATH)) with its fstat in out (as fsStat), or -errno: a name that is not there is
// the usual answer to a lookup, so it is a number, not a thrown Error (FUSE LOOKUP in one call).
static napi_value FsLookup(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t dirfd;
  char name[NAME_BUF];
  double* out;
  if (!stat_args(env, argv, &dirfd, name, &out, 0)) return throw_errno(env, "fsLookup: (dirfd, name, Float64Array(17))", EINVAL);
  int fd = open_beneath(dirfd, name, O_PATH, 0);
  if (fd < 0) return num(env, fd);
  int r = stat_into(fd, "", AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH, out);
  if (r < 0) {
    close(fd);
    return num(env, r);
  }
  return num(env, fd);
}

// fsCreate(dirfd, name, flags, mode, out Float64Array(18)): FUSE CREATE's system calls in one
// call: the file opened beneath dirfd with O_CREAT (as fsOpenat), its node's O_PATH fd reopened
// from the open file itself (as fsReopen: no second lookup of the name to race), and that
// inode's fstat in out[0..16] (as fsStat), the O_PATH fd in out[17]. Returns the open fd, or
// -errno with nothing left open (a name that exists under O_EXCL is an answer, not a throw).
static napi_value FsCreate(napi_env env, napi_callback_info info) {
  ARGS(5);
  int32_t dirfd, flags, mode;
  char name[NAME_BUF];
  double* out;
  if (!get_i32(env, argv[0], &dirfd) || !get_name(env, argv[1], name, sizeof name, 0) || !get_i32(env, argv[2], &flags) ||
      !get_i32(env, argv[3], &mode) || !get_f64s(env, argv[4], &out, 18))
    return throw_errno(env, "fsCreate: (dirfd, name, flags, mode, Float64Array(18))", EINVAL);
  int fd = open_beneath(dirfd, name, flags | O_CREAT, mode);
  if (fd < 0) return num(env, fd);
  int path_fd = proc_open(fd, O_PATH);
  if (path_fd < 0) {
    close(fd);
    return num(env, path_fd);
  }
  int r = stat_into(path_fd, "", AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH, out);
  if (r < 0) {
    close(path_fd);
    close(fd);
    return num(env, r);
  }
  out[17] = path_fd;
  return num(env, fd);
}

// fsStatAt(dirfd, name, out Float64Array(17)): fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) of one
// name beneath dirfd (as fsStat; ".." is -EXDEV), 0 or -errno (a miss is an answer, not a
// throw). Nothing is opened: LOOKUP of a name whose inode the provider already holds needs
// only this one system call; the held fd stays the node's (the stat only says which it is).
static napi_value FsStatAt(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t dirfd;
  char name[NAME_BUF];
  double* out;
  if (!stat_args(env, argv, &dirfd, name, &out, 0)) return throw_errno(env, "fsStatAt: (dirfd, name, Float64Array(17))", EINVAL);
  if (strcmp(name, "..") == 0) return num(env, -EXDEV);
  return num(env, stat_into(dirfd, name, AT_SYMLINK_NOFOLLOW, out));
}

// fsFstat(fd, out Float64Array(17)): fstat of the inode of (O_PATH) fd into out (as fsStat), 0 or
// -errno: GETATTR in one call, no name to convert, no Error to build.
static napi_value FsFstat(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  double* out;
  if (!get_i32(env, argv[0], &fd) || !get_f64s(env, argv[1], &out, 17)) return throw_errno(env, "fsFstat: (fd, Float64Array(17))", EINVAL);
  return num(env, stat_into(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out));
}

// fsPwrite(fd, data Uint8Array, offset): all of data at offset (pwrite repeated after a short
// write; an O_APPEND fd appends); the bytes written. Errors throw.
static napi_value FsPwrite(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd;
  void* data;
  size_t len;
  double off;
  if (!get_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &len) || !get_f64(env, argv[2], &off) || off < 0 || off > 9007199254740991.0)
    return throw_errno(env, "fsPwrite: (fd, Uint8Array, offset)", EINVAL);
  size_t done = 0;
  while (done < len) {
    ssize_t r = pwrite(fd, (char*)data + done, len - done, (off_t)off + (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return throw_errno(env, "pwrite", errno);
    if (r == 0) return throw_errno(env, "pwrite", EIO);
    done += (size_t)r;
  }
  return num(env, (double)done);
}

// fsMkdirat(dirfd, name, mode)
static napi_value FsMkdirat(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t dirfd, mode;
  char name[NAME_BUF];
  if (!get_i32(env, argv[0], &dirfd) || !get_name(env, argv[1], name, sizeof name, 0) || !get_i32(env, argv[2], &mode))
    return throw_errno(env, "fsMkdirat: (dirfd, name, mode)", EINVAL);
  if (mkdirat(dirfd, name, (mode_t)(mode & 07777)) < 0) return throw_errno(env, "mkdirat", errno);
  return fs_undefined(env);
}

// fsMknodat(dirfd, name, mode, rdev): mode carries the file type (S_IFIFO, S_IFSOCK, S_IFREG, ...).
static napi_value FsMknodat(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t dirfd, mode;
  double rdev;
  char name[NAME_BUF];
  if (!get_i32(env, argv[0], &dirfd) || !get_name(env, argv[1], name, sizeof name, 0) || !get_i32(env, argv[2], &mode) ||
      !get_f64(env, argv[3], &rdev) || rdev < 0)
    return throw_errno(env, "fsMknodat: (dirfd, name, mode, rdev)", EINVAL);
  // The raw system call (glibc's mknodat is mknodat@GLIBC_2.33, see fsStat); the kernel takes the
  // device number as a 32-bit new_encode_dev value, which glibc's makedev matches for it.
  if (rdev > 0xffffffffu) return throw_errno(env, "mknodat", EINVAL);
  if (syscall(SYS_mknodat, dirfd, name, (unsigned)mode, (unsigned)rdev) < 0) return throw_errno(env, "mknodat", errno);
  return fs_undefined(env);
}

// fsSymlinkat(target, dirfd, name): the target is stored as given (it is never resolved here).
static napi_value FsSymlinkat(napi_env env, napi_callback_info info) {
  ARGS(3);
  static char target[4098];
  int32_t dirfd;
  char name[NAME_BUF];
  if (!get_text(env, argv[0], target, sizeof target) || !get_i32(env, argv[1], &dirfd) || !get_name(env, argv[2], name, sizeof name, 0))
    return throw_errno(env, "fsSymlinkat: (target, dirfd, name)", EINVAL);
  if (symlinkat(target, dirfd, name) < 0) return throw_errno(env, "symlinkat", errno);
  return fs_undefined(env);
}

// fsUnlinkat(dirfd, name, flags): flags AT_REMOVEDIR (0x200) for rmdir.
static napi_value FsUnlinkat(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t dirfd, flags;
  char name[NAME_BUF];
  if (!get_i32(env, argv[0], &dirfd) || !get_name(env, argv[1], name, sizeof name, 0) || !get_i32(env, argv[2], &flags))
    return throw_errno(env, "fsUnlinkat: (dirfd, name, flags)", EINVAL);
  if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return throw_errno(env, "unlinkat", EINVAL);
  if (unlinkat(dirfd, name, flags & AT_REMOVEDIR) < 0) return throw_errno(env, "unlinkat", errno);
  return fs_undefined(env);
}

// fsRenameat2(olddirfd, oldname, newdirfd, newname, flags): RENAME_NOREPLACE 1, RENAME_EXCHANGE 2,
// RENAME_WHITEOUT 4 (plain renameat when 0, so kernels and file systems without renameat2 work).
static napi_value FsRenameat2(napi_env env, napi_callback_info info) {
  ARGS(5);
  int32_t od, nd, flags;
  char on[NAME_BUF], nn[NAME_BUF];
  if (!get_i32(env, argv[0], &od) || !get_name(env, argv[1], on, sizeof on, 0) || !get_i32(env, argv[2], &nd) ||
      !get_name(env, argv[3], nn, sizeof nn, 0) || !get_i32(env, argv[4], &flags))
    return throw_errno(env, "fsRenameat2: (olddirfd, oldname, newdirfd, newname, flags)", EINVAL);
  if (strcmp(on, ".") == 0 || strcmp(on, "..") == 0 || strcmp(nn, ".") == 0 || strcmp(nn, "..") == 0)
    return throw_errno(env, "renameat2", EINVAL);
  int r = flags == 0 ? renameat(od, on, nd, nn) : (int)syscall(SYS_renameat2, od, on, nd, nn, (unsigned)flags);
  if (r < 0) return throw_errno(env, "renameat2", errno);
  return fs_undefined(env);
}

// fsLinkat(fd, newdirfd, newname): a new name for the inode of (O_PATH) fd, through its magic
// link (linkat AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
static napi_value FsLinkat(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd, nd;
  char nn[NAME_BUF];
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &nd) || !get_name(env, argv[2], nn, sizeof nn, 0))
    return throw_errno(env, "fsLinkat: (fd, newdirfd, newname)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (linkat(AT_FDCWD, p, nd, nn, AT_SYMLINK_FOLLOW) < 0) return throw_errno(env, "linkat", errno);
  return fs_undefined(env);
}

// fsReadlink(fd): the target of the symlink whose O_PATH fd this is.
static napi_value FsReadlink(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  static char buf[4097];
  if (!get_i32(env, argv[0], &fd)) return throw_errno(env, "fsReadlink: (fd)", EINVAL);
  ssize_t n = readlinkat(fd, "", buf, sizeof buf - 1);
  if (n < 0) return throw_errno(env, "readlinkat", errno);
  napi_value r;
  napi_create_string_utf8(env, buf, (size_t)n, &r);
  return r;
}

// fsChmod(fd, mode): through the magic link (fchmod refuses O_PATH fds); a symlink is EOPNOTSUPP.
static napi_value FsChmod(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd, mode;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &mode)) return throw_errno(env, "fsChmod: (fd, mode)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (fchmodat(AT_FDCWD, p, (mode_t)(mode & 07777), 0) < 0) return throw_errno(env, "fchmodat", errno);
  return fs_undefined(env);
}

// fsChown(fd, uid, gid): -1 leaves that one unchanged; the inode itself, never a symlink's target.
static napi_value FsChown(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd;
  double uid, gid;
  if (!get_i32(env, argv[0], &fd) || !get_f64(env, argv[1], &uid) || !get_f64(env, argv[2], &gid))
    return throw_errno(env, "fsChown: (fd, uid, gid)", EINVAL);
  uid_t u = uid < 0 ? (uid_t)-1 : (uid_t)uid;
  gid_t g = gid < 0 ? (gid_t)-1 : (gid_t)gid;
  if (fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return throw_errno(env, "fchownat", errno);
  return fs_undefined(env);
}

// fsUtimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec): nsec UTIME_NOW ((1<<30)-1) or
// UTIME_OMIT ((1<<30)-2) as utimensat(2). AT_EMPTY_PATH on the O_PATH fd (Linux 5.8+), else the
// magic link (which a symlink's inode cannot take: EINVAL there, as virtiofsd).
static napi_value FsUtimens(napi_env env, napi_callback_info info) {
  ARGS(5);
  int32_t fd;
  double as, an, ms, mn;
  if (!get_i32(env, argv[0], &fd) || !get_f64(env, argv[1], &as) || !get_f64(env, argv[2], &an) || !get_f64(env, argv[3], &ms) ||
      !get_f64(env, argv[4], &mn))
    return throw_errno(env, "fsUtimens: (fd, atime s, ns, mtime s, ns)", EINVAL);
  struct timespec ts[2] = {{(time_t)as, (long)an}, {(time_t)ms, (long)mn}};
  if (utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) return fs_undefined(env);
  if (errno != EINVAL && errno != ENOENT) return throw_errno(env, "utimensat", errno);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (utimensat(AT_FDCWD, p, ts, 0) < 0) return throw_errno(env, "utimensat", errno);
  return fs_undefined(env);
}

// fsTruncate(fd, size): truncate(2) through the magic link (a symlink's inode: EINVAL).
static napi_value FsTruncate(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  double size;
  if (!get_i32(env, argv[0], &fd) || !get_f64(env, argv[1], &size) || size < 0) return throw_errno(env, "fsTruncate: (fd, size)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (truncate(p, (off_t)size) < 0) return throw_errno(env, "truncate", errno);
  return fs_undefined(env);
}

// fsStatfs(fd, out Float64Array(8)): blocks, bfree, bavail, files, ffree, bsize, namelen, frsize.
static napi_value FsStatfs(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  double* out;
  if (!get_i32(env, argv[0], &fd) || !get_f64s(env, argv[1], &out, 8)) return throw_errno(env, "fsStatfs: (fd, Float64Array(8))", EINVAL);
  struct statfs s;
  if (fstatfs(fd, &s) < 0) return throw_errno(env, "fstatfs", errno);
  out[0] = (double)s.f_blocks;
  out[1] = (double)s.f_bfree;
  out[2] = (double)s.f_bavail;
  out[3] = (double)s.f_files;
  out[4] = (double)s.f_ffree;
  out[5] = (double)s.f_bsize;
  out[6] = (double)s.f_namelen;
  out[7] = (double)s.f_frsize;
  return fs_undefined(env);
}

// Extended attributes of the inode of (O_PATH) fd, through its magic link: it lands on the inode
// itself, a symlink's own inode included, so no xattr call ever reaches a symlink's target.
#define XATTR_NAME_BUF 258

// An xattr name: 1 to 255 bytes, no NUL ("user.x"; '/' is allowed in xattr names).
static int get_xattr_name(napi_env env, napi_value v, char* buf, size_t size) {
  size_t nl = 0;
  return napi_get_value_string_utf8(env, v, buf, size, &nl) == napi_ok && nl > 0 && nl < size - 1 && strlen(buf) == nl;
}

// fsGetxattr(fd, name, into Uint8Array | null): the value's size (into null: the size only).
static napi_value FsGetxattr(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd;
  char name[XATTR_NAME_BUF];
  void* data = NULL;
  size_t len = 0;
  napi_valuetype t;
  if (!get_i32(env, argv[0], &fd) || !get_xattr_name(env, argv[1], name, sizeof name) || napi_typeof(env, argv[2], &t) != napi_ok ||
      (t != napi_null && !arg_bytes(env, argv[2], &data, &len)))
    return throw_errno(env, "fsGetxattr: (fd, name, Uint8Array | null)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  ssize_t n = getxattr(p, name, data, len);
  if (n < 0) return throw_errno(env, "getxattr", errno);
  return num(env, (double)n);
}

// fsListxattr(fd, into Uint8Array | null): bytes of the NUL-separated name list.
static napi_value FsListxattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  void* data = NULL;
  size_t len = 0;
  napi_valuetype t;
  if (!get_i32(env, argv[0], &fd) || napi_typeof(env, argv[1], &t) != napi_ok || (t != napi_null && !arg_bytes(env, argv[1], &data, &len)))
    return throw_errno(env, "fsListxattr: (fd, Uint8Array | null)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  ssize_t n = listxattr(p, data, len);
  if (n < 0) return throw_errno(env, "listxattr", errno);
  return num(env, (double)n);
}

// fsSetxattr(fd, name, value Uint8Array, flags): XATTR_CREATE 1, XATTR_REPLACE 2.
static napi_value FsSetxattr(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t fd, flags;
  char name[XATTR_NAME_BUF];
  void* data;
  size_t len;
  if (!get_i32(env, argv[0], &fd) || !get_xattr_name(env, argv[1], name, sizeof name) || !arg_bytes(env, argv[2], &data, &len) || !get_i32(env, argv[3], &flags))
    return throw_errno(env, "fsSetxattr: (fd, name, Uint8Array, flags)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (setxattr(p, name, data, len, flags) < 0) return throw_errno(env, "setxattr", errno);
  return fs_undefined(env);
}

// fsRemovexattr(fd, name)
static napi_value FsRemovexattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  char name[XATTR_NAME_BUF];
  if (!get_i32(env, argv[0], &fd) || !get_xattr_name(env, argv[1], name, sizeof name))
    return throw_errno(env, "fsRemovexattr: (fd, name)", EINVAL);
  char p[64];
  proc_path(p, sizeof p, fd);
  if (removexattr(p, name) < 0) return throw_errno(env, "removexattr", errno);
  return fs_undefined(env);
}

// fsFallocate(fd, mode, offset, length): fd open for writing.
static napi_value FsFallocate(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t fd, mode;
  double off, len;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &mode) || !get_f64(env, argv[2], &off) || !get_f64(env, argv[3], &len) ||
      off < 0 || len <= 0)
    return throw_errno(env, "fsFallocate: (fd, mode, offset, length)", EINVAL);
  if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0) return throw_errno(env, "fallocate", errno);
  return fs_undefined(env);
}

// fsLseek(fd, offset, whence): the new offset (SEEK_DATA 3 / SEEK_HOLE 4 included).
static napi_value FsLseek(napi_env env, napi_callback_info info) {
  ARGS(3);
  int32_t fd, whence;
  double off;
  if (!get_i32(env, argv[0], &fd) || !get_f64(env, argv[1], &off) || !get_i32(env, argv[2], &whence))
    return throw_errno(env, "fsLseek: (fd, offset, whence)", EINVAL);
  off_t r = lseek(fd, (off_t)off, whence);
  if (r < 0) return throw_errno(env, "lseek", errno);
  return num(env, (double)r);
}

// fsPreadNowait(fd, into Uint8Array, length, offset[, plain]): up to `length` bytes at `offset`
// into `into`, from the page cache only (preadv2 RWF_NOWAIT, repeated after a short read until
// the length is read or a read says 0: a short read is the end of the file or of what is cached,
// and only the next one tells which). Returns the bytes read (the length, or fewer at the end of
// the file), or -1 - n when the next read would wait for the disk after n bytes (also when the
// file or kernel cannot say: EOPNOTSUPP, as tmpfs answers); other errors throw. `plain` true:
// plain preads (no RWF_NOWAIT), for files the caller knows are in memory (tmpfs, ramfs: see
// fsMemoryFs). One native call per FUSE READ.
static napi_value FsPreadNowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) return throw_errno(env, __func__, EINVAL);
  int32_t fd;
  void* data;
  size_t cap;
  double len, off;
  bool plain = false;
  if (!get_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &cap) || !get_f64(env, argv[2], &len) || !get_f64(env, argv[3], &off) ||
      len < 0 || len > (double)cap || off < 0 || off > 9007199254740991.0)
    return throw_errno(env, "fsPreadNowait: (fd, Uint8Array, length, offset[, plain])", EINVAL);
  if (argc > 4 && napi_get_value_bool(env, argv[4], &plain) != napi_ok) plain = false;
  size_t want = (size_t)len, done = 0;
  while (done < want) {
    struct iovec v = {(char*)data + done, want - done};
    ssize_t r = preadv2(fd, &v, 1, (off_t)off + (off_t)done, plain ? 0 : RWF_NOWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && !plain && (errno == EAGAIN || errno == EOPNOTSUPP)) return num(env, -1.0 - (double)done);
    if (r < 0) return throw_errno(env, "preadv2", errno);
    if (r == 0) break;
    done += (size_t)r;
  }
  return num(env, (double)done);
}

// fsMemoryFs(fd): whether fd's file system keeps its files in memory (tmpfs, ramfs): a read
// there never waits for a disk (a swapped-out tmpfs page aside), yet its preadv2 refuses
// RWF_NOWAIT (EOPNOTSUPP), so fsPreadNowait could not tell a cached read from a slow one.
static napi_value FsMemoryFs(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!get_i32(env, argv[0], &fd)) return throw_errno(env, "fsMemoryFs: (fd)", EINVAL);
  struct statfs s;
  if (fstatfs(fd, &s) < 0) return throw_errno(env, "fstatfs", errno);
  bool mem = s.f_type == 0x01021994 /* TMPFS_MAGIC */ || s.f_type == (typeof(s.f_type))0x858458f6 /* RAMFS_MAGIC */;
  napi_value out;
  napi_get_boolean(env, mem, &out);
  return out;
}

// fsGetdents(fd, into Uint8Array): bytes of linux_dirent64 records (0 at the end).
static napi_value FsGetdents(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  void* data;
  size_t len;
  if (!get_i32(env, argv[0], &fd) || !arg_bytes(env, argv[1], &data, &len)) return throw_errno(env, "fsGetdents: (fd, Uint8Array)", EINVAL);
  long n = syscall(SYS_getdents64, fd, data, len);
  if (n < 0) return throw_errno(env, "getdents64", errno);
  return num(env, (double)n);
}

// fsLock(fd, cmd, type, start, length, pid, out Float64Array(4)): open-file-description locks
// (F_OFD_GETLK 36, F_OFD_SETLK 37; F_OFD_SETLKW is refused here, a wait would block the
// thread). type F_RDLCK 0, F_WRLCK 1, F_UNLCK 2; length 0 = to the end. GETLK writes out:
// type, start, length, pid (-1 for an OFD lock's holder).
static napi_value FsLock(napi_env env, napi_callback_info info) {
  ARGS(7);
  int32_t fd, cmd, type, pid;
  double start, length, *out;
  if (!get_i32(env, argv[0], &fd) || !get_i32(env, argv[1], &cmd) || !get_i32(env, argv[2], &type) || !get_f64(env, argv[3], &start) ||
      !get_f64(env, argv[4], &length) || !get_i32(env, argv[5], &pid) || !get_f64s(env, argv[6], &out, 4) ||
      (cmd != F_OFD_GETLK && cmd != F_OFD_SETLK) || start < 0 || length < 0)
    return throw_errno(env, "fsLock: (fd, F_OFD_GETLK | F_OFD_SETLK, type, start, length, pid, Float64Array(4))", EINVAL);
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = (short)type;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)start;
  fl.l_len = (off_t)length;
  fl.l_pid = 0;  // must be 0 for OFD locks
  if (fcntl(fd, cmd, &fl) < 0) return throw_errno(env, "fcntl(F_OFD_*LK)", errno);
  out[0] = fl.l_type;
  out[1] = (double)fl.l_start;
  out[2] = (double)fl.l_len;
  out[3] = fl.l_pid;
  return fs_undefined(env);
}

#define FN(js, c) {js, NULL, c, NULL, NULL, NULL, napi_default, NULL}

void fs_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      FN("fsOpenat", FsOpenat),         FN("fsReopen", FsReopen),       FN("fsStat", FsStat),         FN("fsLookup", FsLookup),       FN("fsCreate", FsCreate),
      FN("fsStatAt", FsStatAt),         FN("fsFstat", FsFstat),         FN("fsPwrite", FsPwrite),
      FN("fsMkdirat", FsMkdirat),       FN("fsMknodat", FsMknodat),     FN("fsSymlinkat", FsSymlinkat),
      FN("fsUnlinkat", FsUnlinkat),     FN("fsRenameat2", FsRenameat2), FN("fsLinkat", FsLinkat),
      FN("fsReadlink", FsReadlink),     FN("fsChmod", FsChmod),         FN("fsChown", FsChown),
      FN("fsUtimens", FsUtimens),       FN("fsTruncate", FsTruncate),   FN("fsStatfs", FsStatfs),
      FN("fsGetxattr", FsGetxattr),     FN("fsListxattr", FsListxattr), FN("fsSetxattr", FsSetxattr),
      FN("fsRemovexattr", FsRemovexattr), FN("fsFallocate", FsFallocate), FN("fsLseek", FsLseek),
      FN("fsGetdents", FsGetdents),     FN("fsPreadNowait", FsPreadNowait),     FN("fsLock", FsLock),
      FN("fsMemoryFs", FsMemoryFs),
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
