// The file-system calls of the addon (native/fs.c), added to the module's exports by addon.c.
#pragma once
#include <node_api.h>

void fs_init(napi_env env, napi_value exports);
