// virtio-ts native addon, part two: Linux TAP devices and unix datagram sockets (issue 15), for
// the frame ports in src/node/net/ (tap-port.ts, dgram-port.ts). Registered by addon.c's Init
// through tap_init. Every failure throws a JS Error whose `code` is the errno name, as in addon.c.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "util.h"

// tapOpen(name, vnetHdrBytes): { fd, name }. Opens /dev/net/tun (non-blocking, close-on-exec) and
// attaches it to the TAP interface `name` (IFF_TAP | IFF_NO_PI), made if it does not exist, or an
// existing persistent TAP nobody holds. vnetHdrBytes > 0 adds IFF_VNET_HDR with that header size
// (TUNSETVNETHDRSZ): each frame read or written is preceded by a virtio_net_hdr. The kernel's own
// errors are the answer: ENOENT (no /dev/net/tun), EPERM (no CAP_NET_ADMIN), EBUSY (held by
// another process), EINVAL (the name is an interface that is not a TAP: never touched).
static napi_value TapOpen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return throw_errno(env, "tapOpen: (name, vnetHdrBytes)", EINVAL);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  size_t len = 0;
  if (napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &len) != napi_ok || len == 0 || len >= IFNAMSIZ)
    return throw_errno(env, "tapOpen: the interface name must be 1 to 15 bytes", EINVAL);
  int32_t hdr = 0;
  if (napi_get_value_int32(env, argv[1], &hdr) != napi_ok || hdr < 0 || hdr > 64) return throw_errno(env, "tapOpen: vnetHdrBytes", EINVAL);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open /dev/net/tun", errno);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (hdr > 0 ? IFF_VNET_HDR : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "TUNSETIFF", e);
  }
  if (hdr > 0 && ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "TUNSETVNETHDRSZ", e);
  }
  napi_value result, name;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &name);
  napi_set_named_property(env, result, "fd", num(env, fd));
  napi_set_named_property(env, result, "name", name);
  return result;
}

// tapSetOffload(fd, flags): TUNSETOFFLOAD with TUN_F_* bits (CSUM 1, TSO4 2, TSO6 4, TSO_ECN 8,
// UFO 16, USO4 32, USO6 64): the offloaded frames the kernel may hand this reader.
static napi_value TapSetOffload(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, flags;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &flags) != napi_ok)
    return throw_errno(env, "tapSetOffload: (fd, flags)", EINVAL);
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) return throw_errno(env, "TUNSETOFFLOAD", errno);
  return NULL;
}

// fdRead(fd, Uint8Array): bytes read (one frame or datagram; excess bytes of a datagram are lost),
// -1 when nothing is waiting (EAGAIN), never blocks (MSG_DONTWAIT is not enough for a TAP: its fd
// is opened O_NONBLOCK above).
static napi_value FdRead(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  void* data;
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      !arg_bytes(env, argv[1], &data, &len))
    return throw_errno(env, "fdRead: (fd, Uint8Array)", EINVAL);
  ssize_t n;
  do n = read(fd, data, len);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return num(env, -1);
    return throw_errno(env, "read", errno);
  }
  return num(env, (double)n);
}

// fdWrite2(fd, Uint8Array, Uint8Array?): bytes written with one writev (a header and a frame: one
// TAP frame or one datagram), -1 when it would block (EAGAIN, ENOBUFS).
static napi_value FdWrite2(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  struct iovec iov[2];
  int n = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      !arg_bytes(env, argv[1], &iov[0].iov_base, &iov[0].iov_len))
    return throw_errno(env, "fdWrite2: (fd, Uint8Array, Uint8Array?)", EINVAL);
  if (argc > 2) {
    napi_valuetype t;
    napi_typeof(env, argv[2], &t);
    if (t != napi_undefined) {
      if (!arg_bytes(env, argv[2], &iov[1].iov_base, &iov[1].iov_len)) return throw_errno(env, "fdWrite2: (fd, Uint8Array, Uint8Array?)", EINVAL);
      n = 2;
    }
  }
  ssize_t r;
  do r = writev(fd, iov, n);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return num(env, -1);
    return throw_errno(env, "writev", errno);
  }
  return num(env, (double)r);
}

// dgramBind(path): a non-blocking unix datagram socket bound to `path` (which must not exist).
static napi_value DgramBind(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct sockaddr_un sa;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !arg_path(env, argv[0], &sa))
    return throw_errno(env, "dgramBind: path (1 to 107 bytes)", EINVAL);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr*)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  return num(env, fd);
}

// dgramConnect(fd, path): the peer datagrams go to (and the only one they are taken from);
// '' on success, else the errno name (ENOENT, ECONNREFUSED: the peer is not there yet).
static napi_value DgramConnect(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  struct sockaddr_un sa;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      !arg_path(env, argv[1], &sa))
    return throw_errno(env, "dgramConnect: (fd, path)", EINVAL);
  char name[64] = "";
  if (connect(fd, (struct sockaddr*)&sa, sizeof sa) < 0) uv_err_name_r(-errno, name, sizeof name);
  napi_value r;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &r);
  return r;
}

void tap_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"tapOpen", NULL, TapOpen, NULL, NULL, NULL, napi_default, NULL},
      {"tapSetOffload", NULL, TapSetOffload, NULL, NULL, NULL, napi_default, NULL},
      {"fdRead", NULL, FdRead, NULL, NULL, NULL, napi_default, NULL},
      {"fdWrite2", NULL, FdWrite2, NULL, NULL, NULL, napi_default, NULL},
      {"dgramBind", NULL, DgramBind, NULL, NULL, NULL, napi_default, NULL},
      {"dgramConnect", NULL, DgramConnect, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
