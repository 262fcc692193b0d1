// The event loop's idle-time metrics, which Node turns on for performance.eventLoopUtilization():
// with them on, libuv polls twice each time the loop would wait (epoll_pwait with timeout 0, to
// tell time spent idle from events already waiting, then again with the real timeout), so a
// back-end woken by every kick makes one more system call per request. A serving process that
// does not measure its loop's utilization may turn them off.
#include <node_api.h>
#include <uv.h>

#include "util.h"

// libuv keeps the loop's option flags in the first word of its private per-loop fields
// (uv__loop_internal_fields_t.flags, where uv_loop_configure(UV_METRICS_IDLE_TIME) sets the bit
// of that option's value) from 1.39, which added the metrics, through 1.51 at least; nothing
// is touched outside the versions checked.
#define LOOP_FIELDS_FIRST 0x012700  // 1.39.0
#define LOOP_FIELDS_LAST 0x0133ff   // 1.51.x

// loopIdleMetrics(on): sets whether this thread's loop keeps idle-time metrics; returns whether
// it could (false: an unknown libuv, nothing changed).
static napi_value LoopIdleMetrics(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_bool(env, argv[0], &on) != napi_ok) return throw_errno(env, "loopIdleMetrics: (on)", EINVAL);
  uv_loop_t* loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, "loopIdleMetrics: no event loop", EINVAL);
  unsigned int v = uv_version();
  bool done = false;
  if (v >= LOOP_FIELDS_FIRST && v <= LOOP_FIELDS_LAST && loop->internal_fields != NULL) {
    unsigned int* flags = (unsigned int*)loop->internal_fields;
    // uv__loop_configure sets it as `flags |= UV_METRICS_IDLE_TIME`: the option's value is the bit.
    if (on) *flags |= UV_METRICS_IDLE_TIME;
    else *flags &= ~(unsigned int)UV_METRICS_IDLE_TIME;
    done = true;
  }
  napi_value r;
  napi_get_boolean(env, done, &r);
  return r;
}

void loop_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"loopIdleMetrics", NULL, LoopIdleMetrics, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
