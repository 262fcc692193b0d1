// virtio-ts native addon: what Node cannot do by itself for vhost-user.
// Unix stream sockets with SCM_RIGHTS, memfd, mmap into ArrayBuffers (and explicit unmap),
// eventfd, and fd readiness watches on the calling thread's libuv loop.
// Every failure throws a JS Error whose `code` is the errno name (ENOENT, EAGAIN, ...).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "fs.h"
#include "util.h"

#define MAX_FDS 32

#define CHECK(call)                                   \
  do {                                                \
    if ((call) != napi_ok) {                          \
      napi_throw_error(env, "EINVAL", "bad argument"); \
      return NULL;                                    \
    }                                                 \
  } while (0)

static int arg_int(napi_env env, napi_value v, int32_t* out) { return napi_get_value_int32(env, v, out) == napi_ok; }

// socketpair(): [fd, fd], both non-blocking
static napi_value Socketpair(napi_env env, napi_callback_info info) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) return throw_errno(env, "socketpair", errno);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, sv[0]));
  napi_set_element(env, arr, 1, num(env, sv[1]));
  return arr;
}

// listen(path, backlog): fd
static napi_value Listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct sockaddr_un sa;
  int32_t backlog = 16;
  if (argc < 1 || !arg_path(env, argv[0], &sa)) return throw_errno(env, "listen: path", EINVAL);
  if (argc > 1) arg_int(env, argv[1], &backlog);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr*)&sa, sizeof sa) < 0 || listen(fd, backlog) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind/listen", e);
  }
  return num(env, fd);
}

// accept(fd): fd, or -1 when nothing is waiting (EAGAIN)
static napi_value Accept(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "accept: fd", EINVAL);
  int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return num(env, -1);
    return throw_errno(env, "accept", errno);
  }
  return num(env, c);
}

// connect(path): fd (non-blocking once connected)
static napi_value Connect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct sockaddr_un sa;
  if (argc < 1 || !arg_path(env, argv[0], &sa)) return throw_errno(env, "connect: path", EINVAL);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "connect", e);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return num(env, fd);
}

// sendmsg(fd, Uint8Array, fds[]): bytes sent, or -1 on EAGAIN (never blocks, whatever the fd mode:
// the back-end request channel comes from the front-end as a blocking socket)
static napi_value Sendmsg(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "sendmsg: fd", EINVAL);
  void* data;
  size_t len;
  if (!arg_bytes(env, argv[1], &data, &len)) return throw_errno(env, "sendmsg: data must be a Uint8Array", EINVAL);
  int fds[MAX_FDS];
  uint32_t nfds = 0;
  if (argc > 2) {
    bool is_array = false;
    napi_is_array(env, argv[2], &is_array);
    if (is_array) {
      napi_get_array_length(env, argv[2], &nfds);
      if (nfds > MAX_FDS) return throw_errno(env, "sendmsg: too many fds", EINVAL);
      for (uint32_t i = 0; i < nfds; i++) {
        napi_value v;
        int32_t x;
        napi_get_element(env, argv[2], i, &v);
        if (!arg_int(env, v, &x)) return throw_errno(env, "sendmsg: fd list", EINVAL);
        fds[i] = x;
      }
    }
  }
  struct iovec iov = {data, len};
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_control = cbuf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return num(env, -1);
    return throw_errno(env, "sendmsg", errno);
  }
  return num(env, (double)n);
}

// recvmsg(fd, Uint8Array): { bytes, fds } (bytes -1 on EAGAIN, 0 on end of stream)
static napi_value Recvmsg(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "recvmsg: fd", EINVAL);
  void* data;
  size_t len;
  if (!arg_bytes(env, argv[1], &data, &len)) return throw_errno(env, "recvmsg: buffer must be a Uint8Array", EINVAL);
  struct iovec iov = {data, len};
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  napi_value result, fdarr;
  napi_create_object(env, &result);
  napi_create_array(env, &fdarr);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, "recvmsg", errno);
    n = -1;
  }
  uint32_t k = 0;
  if (n >= 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int* p = (int*)CMSG_DATA(c);
      for (size_t i = 0; i < count; i++) napi_set_element(env, fdarr, k++, num(env, p[i]));
    }
  }
  napi_value truncated;
  napi_get_boolean(env, (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0, &truncated);
  napi_set_named_property(env, result, "bytes", num(env, (double)n));
  napi_set_named_property(env, result, "fds", fdarr);
  napi_set_named_property(env, result, "truncated", truncated);
  return result;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "close: fd", EINVAL);
  if (close(fd) < 0) return throw_errno(env, "close", errno);
  return NULL;
}

// memfdCreate(name, size): fd
static napi_value MemfdCreate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[64] = "virtio-ts";
  size_t nl;
  double size;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nl) != napi_ok || napi_get_value_double(env, argv[1], &size) != napi_ok || size < 0)
    return throw_errno(env, "memfdCreate: (name, size)", EINVAL);
  // Sealable (as QEMU's memory-backend-memfd is): a back-end given it can seal it against shrinking.
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  if (ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "ftruncate", e);
  }
  return num(env, fd);
}

// sealShrink(fd): 1 when the file can no longer shrink (a memfd sealed with F_SEAL_SHRINK,
// already or now), 0 when it cannot be sealed (not a memfd, or sealing itself sealed). A mapping
// past a file's end raises SIGBUS when touched: a front-end that shrank guest RAM under the
// back-end would kill it.
static napi_value SealShrink(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "sealShrink: fd", EINVAL);
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0 && (seals & F_SEAL_SHRINK)) return num(env, 1);
  if (seals < 0 || (seals & F_SEAL_SEAL)) return num(env, 0);
  return num(env, fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0 ? 1 : 0);
}

typedef struct {
  void* addr;
  size_t len;
  int guard;  // its slot in the fault guard, or -1
} mapping_t;

// ---------------------------------------------------------------- fault guard
// A shared mapping of a file raises SIGBUS when a page past the file's end is touched: a
// front-end that shrinks guest RAM (ftruncate) after handing it over would kill the process,
// in JS code that reads a typed array. Every mapping made here is registered; a SIGBUS inside
// one is absorbed: the page is replaced by a private zero page (the access then completes),
// the mapping is marked faulted, and a process-wide counter goes up. The
// transport sees the counter move and ends the session (the front-end took its memory away).
// A SIGBUS anywhere else goes to the previous handler (by default: the process dies, as before).
#define GUARD_SLOTS 4096
static _Atomic uintptr_t guard_start[GUARD_SLOTS];  // 0: free
static _Atomic uintptr_t guard_end[GUARD_SLOTS];
static _Atomic uint32_t guard_faulted[GUARD_SLOTS];
static uint32_t fault_counter;  // faults absorbed
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous_sigbus;
static int guard_installed = 0;

static void on_sigbus(int sig, siginfo_t* si, void* uctx) {
  uintptr_t a = (uintptr_t)si->si_addr;
  for (int i = 0; i < GUARD_SLOTS; i++) {
    uintptr_t start = atomic_load(&guard_start[i]);
    if (start != 0 && a >= start && a < atomic_load(&guard_end[i])) {
      long page = sysconf(_SC_PAGESIZE);
      void* at = (void*)(a & ~(uintptr_t)(page - 1));
      // mmap is a system call: safe here in practice (it is what the kernel would do for us).
      if (mmap(at, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
        atomic_store(&guard_faulted[i], 1);
        __atomic_add_fetch(&fault_counter, 1, __ATOMIC_SEQ_CST);
        return;
      }
      break;
    }
  }
  if (previous_sigbus.sa_flags & SA_SIGINFO) {
    if (previous_sigbus.sa_sigaction != NULL) return previous_sigbus.sa_sigaction(sig, si, uctx);
  } else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN && previous_sigbus.sa_handler != NULL) {
    return previous_sigbus.sa_handler(sig);
  }
  // Not ours: die of it as the process would have without this handler.
  signal(SIGBUS, SIG_DFL);
}

static int guard_add(void* addr, size_t len) {
  pthread_mutex_lock(&guard_lock);
  if (!guard_installed) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous_sigbus) == 0) guard_installed = 1;
  }
  int slot = -1;
  for (int i = 0; i < GUARD_SLOTS; i++) {
    if (atomic_load(&guard_start[i]) == 0) {
      atomic_store(&guard_faulted[i], 0);
      atomic_store(&guard_end[i], (uintptr_t)addr + len);
      atomic_store(&guard_start[i], (uintptr_t)addr);
      slot = i;
      break;
    }
  }
  pthread_mutex_unlock(&guard_lock);
  return slot;
}

static void guard_remove(mapping_t* m) {
  if (m->guard < 0) return;
  atomic_store(&guard_start[m->guard], 0);
  m->guard = -1;
}

static void unmap_finalize(napi_env env, void* data, void* hint) {
  mapping_t* m = (mapping_t*)hint;
  guard_remove(m);
  if (m->addr != NULL) munmap(m->addr, m->len);
  free(m);
}

// faultCount(): the SIGBUS faults absorbed in guest mappings so far (process-wide).
static napi_value FaultCount(napi_env env, napi_callback_info info) {
  return num(env, __atomic_load_n(&fault_counter, __ATOMIC_SEQ_CST));
}

// faulted(arrayBuffer): whether a page of this mapping was past its file's end when touched.
static napi_value Faulted(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  mapping_t* m = NULL;
  if (argc < 1 || napi_unwrap(env, argv[0], (void**)&m) != napi_ok || m == NULL) return throw_errno(env, "faulted: not a mapping from mmap()", EINVAL);
  napi_value r;
  napi_get_boolean(env, m->guard >= 0 && atomic_load(&guard_faulted[m->guard]) != 0, &r);
  return r;
}

// mmap(fd, offset, length, writable): ArrayBuffer over the mapping (shared with the fd)
static napi_value Mmap(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  double offset, length;
  bool writable = true;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3 || !arg_int(env, argv[0], &fd) || napi_get_value_double(env, argv[1], &offset) != napi_ok || napi_get_value_double(env, argv[2], &length) != napi_ok)
    return throw_errno(env, "mmap: (fd, offset, length)", EINVAL);
  if (argc > 3) napi_get_value_bool(env, argv[3], &writable);
  if (length <= 0 || length > 4294967296.0 || offset < 0) return throw_errno(env, "mmap: length must be 1 .. 4 GiB", EINVAL);
  void* p = mmap(NULL, (size_t)length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)offset);
  if (p == MAP_FAILED) return throw_errno(env, "mmap", errno);
  mapping_t* m = malloc(sizeof *m);
  m->addr = p;
  m->len = (size_t)length;
  m->guard = guard_add(p, (size_t)length);
  napi_value ab;
  if (napi_create_external_arraybuffer(env, p, (size_t)length, unmap_finalize, m, &ab) != napi_ok) {
    guard_remove(m);
    munmap(p, (size_t)length);
    free(m);
    return throw_errno(env, "mmap: external ArrayBuffer", ENOMEM);
  }
  napi_wrap(env, ab, m, NULL, NULL, NULL);
  return ab;
}

// munmap(arrayBuffer): detaches the ArrayBuffer and unmaps now (finalizers run late)
static napi_value Munmap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  mapping_t* m = NULL;
  if (argc < 1 || napi_remove_wrap(env, argv[0], (void**)&m) != napi_ok || m == NULL) return throw_errno(env, "munmap: not a mapping from mmap()", EINVAL);
  void* addr = m->addr;
  size_t len = m->len;
  guard_remove(m);
  m->addr = NULL;  // the finalizer frees the struct only
  napi_detach_arraybuffer(env, argv[0]);
  if (addr != NULL && munmap(addr, len) < 0) return throw_errno(env, "munmap", errno);
  return NULL;
}

// eventfd(initial): fd (non-blocking)
static napi_value Eventfd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t init = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc > 0) arg_int(env, argv[0], &init);
  int fd = eventfd((unsigned)init, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return num(env, fd);
}

// eventfdRead(fd): the counter (number), or 0 when it was 0 (EAGAIN)
static napi_value EventfdRead(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "eventfdRead: fd", EINVAL);
  uint64_t v = 0;
  if (read(fd, &v, sizeof v) != sizeof v) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return num(env, 0);
    return throw_errno(env, "eventfd read", errno);
  }
  return num(env, (double)v);
}

static napi_value EventfdWrite(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  double value = 1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !arg_int(env, argv[0], &fd)) return throw_errno(env, "eventfdWrite: fd", EINVAL);
  if (argc > 1) napi_get_value_double(env, argv[1], &value);
  uint64_t v = (uint64_t)value;
  if (write(fd, &v, sizeof v) != sizeof v) return throw_errno(env, "eventfd write", errno);
  return NULL;
}

// preadvNowait(fd, Uint8Array[], offset): bytes read without waiting for the disk (preadv2 with
// RWF_NOWAIT: the data is in the page cache), -1 when it would have to wait (EAGAIN), -2 when
// the file or kernel cannot say (EOPNOTSUPP). Lets a back-end read cached data on its own
// thread and send only the reads that wait to the thread pool.
#define MAX_IOV 1024
static napi_value PreadvNowait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  double offset;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  bool is_array = false;
  if (argc < 3 || !arg_int(env, argv[0], &fd) || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_value_double(env, argv[2], &offset) != napi_ok || offset < 0 || offset > 9007199254740991.0)
    return throw_errno(env, "preadvNowait: (fd, Uint8Array[], offset)", EINVAL);
  uint32_t n = 0;
  napi_get_array_length(env, argv[1], &n);
  if (n == 0 || n > MAX_IOV) return throw_errno(env, "preadvNowait: 1..1024 buffers", EINVAL);
  struct iovec iov[MAX_IOV];
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    napi_get_element(env, argv[1], i, &el);
    if (!arg_bytes(env, el, &iov[i].iov_base, &iov[i].iov_len)) return throw_errno(env, "preadvNowait: buffers must be Uint8Arrays", EINVAL);
  }
  ssize_t r;
  do r = preadv2(fd, iov, (int)n, (off_t)offset, RWF_NOWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return num(env, -1);
    if (errno == EOPNOTSUPP) return num(env, -2);
    return throw_errno(env, "preadv2", errno);
  }
  return num(env, (double)r);
}

// watch(fd, readable, writable, callback(events)): handle with close()
// watchEventfd(fd, callback(count)): the same for an eventfd read here (see on_poll)
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  int closed;
  int eventfd;  // the fd when it is an eventfd watch, else -1
} watch_t;

static void on_poll(uv_poll_t* h, int status, int events) {
  watch_t* w = (watch_t*)h->data;
  double value = status < 0 ? -1 : events;
  if (w->eventfd >= 0 && status >= 0) {
    // An eventfd watch reads (and so resets) the counter before the callback, which gets it: a
    // kick costs one call into JavaScript instead of two. A counter already read (EAGAIN) calls
    // nothing; another failure is passed as -errno.
    uint64_t v = 0;
    ssize_t r = read(w->eventfd, &v, sizeof v);
    if (r == sizeof v) value = (double)v;
    else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    else value = r < 0 ? -errno : -EIO;
  }
  napi_handle_scope scope;
  napi_open_handle_scope(w->env, &scope);
  napi_value cb, recv, arg;
  napi_get_reference_value(w->env, w->callback, &cb);
  // The callbacks are arrow functions: undefined as `this` (the global object costs a lookup per call).
  napi_get_undefined(w->env, &recv);
  arg = num(w->env, value);
  napi_value res;
  napi_status s = napi_call_function(w->env, recv, cb, 1, &arg, &res);
  if (s == napi_pending_exception) {
    napi_value ex;
    napi_get_and_clear_last_exception(w->env, &ex);
    napi_fatal_exception(w->env, ex);
  }
  napi_close_handle_scope(w->env, scope);
}

static void on_close(uv_handle_t* h) {
  watch_t* w = (watch_t*)h->data;
  free(w);
}

static napi_value WatchClose(napi_env env, napi_callback_info info) {
  napi_value self;
  CHECK(napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  watch_t* w = NULL;
  if (napi_unwrap(env, self, (void**)&w) != napi_ok || w == NULL || w->closed) return NULL;
  w->closed = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(env, w->callback);
  napi_delete_reference(env, w->self);
  napi_remove_wrap(env, self, NULL);
  uv_close((uv_handle_t*)&w->poll, on_close);
  return NULL;
}

static napi_value Watch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  bool rd = true, wr = false;
  void* data = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, &data));
  int is_eventfd = data != NULL;  // registered as watchEventfd(fd, callback)
  napi_valuetype t;
  napi_value cbv = argv[is_eventfd ? 1 : 3];
  if (argc < (is_eventfd ? 2u : 4u) || !arg_int(env, argv[0], &fd) || napi_typeof(env, cbv, &t) != napi_ok || t != napi_function)
    return throw_errno(env, is_eventfd ? "watchEventfd: (fd, callback)" : "watch: (fd, readable, writable, callback)", EINVAL);
  if (!is_eventfd) {
    napi_get_value_bool(env, argv[1], &rd);
    napi_get_value_bool(env, argv[2], &wr);
  }
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, "watch: no event loop", EINVAL);
  watch_t* w = calloc(1, sizeof *w);
  w->env = env;
  w->eventfd = is_eventfd ? fd : -1;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    free(w);
    return throw_errno(env, "uv_poll_init", -r);
  }
  w->poll.data = w;
  napi_value handle, closefn;
  napi_create_object(env, &handle);
  napi_create_function(env, "close", NAPI_AUTO_LENGTH, WatchClose, NULL, &closefn);
  napi_set_named_property(env, handle, "close", closefn);
  napi_wrap(env, handle, w, NULL, NULL, NULL);
  napi_create_reference(env, cbv, 1, &w->callback);
  napi_create_reference(env, handle, 1, &w->self);  // referenced until close(): never collected while watching
  // A peer's shutdown (UV_DISCONNECT, level-triggered) is reported only to a watch that reads:
  // one that waits for writability alone would otherwise be woken again and again by it.
  r = uv_poll_start(&w->poll, (rd ? UV_READABLE | UV_DISCONNECT : 0) | (wr ? UV_WRITABLE : 0), on_poll);
  if (r < 0) return throw_errno(env, "uv_poll_start", -r);
  return handle;
}

void tap_init(napi_env env, napi_value exports);   // native/tap.c
void loop_init(napi_env env, napi_value exports);  // native/loop.c

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"socketpair", NULL, Socketpair, NULL, NULL, NULL, napi_default, NULL},
      {"listen", NULL, Listen, NULL, NULL, NULL, napi_default, NULL},
      {"accept", NULL, Accept, NULL, NULL, NULL, napi_default, NULL},
      {"connect", NULL, Connect, NULL, NULL, NULL, napi_default, NULL},
      {"preadvNowait", NULL, PreadvNowait, NULL, NULL, NULL, napi_default, NULL},
      {"sendmsg", NULL, Sendmsg, NULL, NULL, NULL, napi_default, NULL},
      {"recvmsg", NULL, Recvmsg, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_default, NULL},
      {"memfdCreate", NULL, MemfdCreate, NULL, NULL, NULL, napi_default, NULL},
      {"mmap", NULL, Mmap, NULL, NULL, NULL, napi_default, NULL},
      {"sealShrink", NULL, SealShrink, NULL, NULL, NULL, napi_default, NULL},
      {"faultCount", NULL, FaultCount, NULL, NULL, NULL, napi_default, NULL},
      {"faulted", NULL, Faulted, NULL, NULL, NULL, napi_default, NULL},
      {"munmap", NULL, Munmap, NULL, NULL, NULL, napi_default, NULL},
      {"eventfd", NULL, Eventfd, NULL, NULL, NULL, napi_default, NULL},
      {"eventfdRead", NULL, EventfdRead, NULL, NULL, NULL, napi_default, NULL},
      {"eventfdWrite", NULL, EventfdWrite, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, Watch, NULL, NULL, NULL, napi_default, NULL},
      {"watchEventfd", NULL, Watch, NULL, NULL, NULL, napi_default, (void*)1},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  tap_init(env, exports);
  loop_init(env, exports);
  fs_init(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
