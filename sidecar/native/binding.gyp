{
  "targets": [
    {
      "target_name": "tpfleet_native",
      "sources": [
        "src/addon.c", "src/affinity.c", "src/napi_util.c",
        "src/engine.c", "src/setup.c", "src/conn.c", "src/relay.c", "src/pool.c", "src/events.c", "src/sockets.c",
        "src/policy.c", "src/decide.c", "src/sniff.c", "src/limits.c", "src/handshake.c", "src/udp.c"
      ],
      "cflags": ["-Wall", "-Wextra", "-O2", "-std=gnu11", "-pthread"],
      "ldflags": ["-pthread"],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"]
    }
  ]
}
