// The file-system calls of the addon (native/fs.c), added to the module's exports by addon.c.
#pragma once
#include <node_api.h>

void fs_init(napi_env env, napi_value exports);

// Throws a JS Error whose code is the errno name (addon.c); returns NULL.
napi_value throw_errno(napi_env env, const char* what, int err);
