{
  "targets": [
    {
      "target_name": "virtio_native",
      "sources": ["native/addon.c", "native/tap.c", "native/fs.c", "native/loop.c"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
