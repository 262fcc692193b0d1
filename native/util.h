// Helpers shared by the addon's C files (addon.c, tap.c): errors as JS Errors whose `code` is the
// errno name, numbers, Uint8Array and unix socket path arguments. Static: each file gets its own
// copy from this one source.
#ifndef VIRTIO_TS_UTIL_H
#define VIRTIO_TS_UTIL_H
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <uv.h>

// The error's code is libuv's name for the errno (the names Node's own fs and net errors carry),
// not glibc's strerrorname_np: that needs glibc 2.32, and the prebuilt binaries load on the
// glibc 2.28 that Node 20's own Linux builds require (scripts/prebuild.mjs checks it).
static inline napi_value throw_errno(napi_env env, const char* what, int err) {
  char name[64];
  uv_err_name_r(-err, name, sizeof name);
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name[0] == 'E' ? name : "EUNKNOWN", msg);
  return NULL;
}

static inline napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

// A Uint8Array argument: its bytes and length.
static inline int arg_bytes(napi_env env, napi_value v, void** data, size_t* len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  return napi_get_typedarray_info(env, v, &t, len, data, &ab, &off) == napi_ok && t == napi_uint8_array;
}

static inline int arg_path(napi_env env, napi_value v, struct sockaddr_un* sa) {
  size_t len = 0;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (napi_get_value_string_utf8(env, v, sa->sun_path, sizeof sa->sun_path, &len) != napi_ok) return 0;
  return len > 0 && len < sizeof sa->sun_path - 1;
}

#endif
