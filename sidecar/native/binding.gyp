{
  "targets": [
    {
      "target_name": "tpfleet_native",
      "sources": ["src/tpfleet_native.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
