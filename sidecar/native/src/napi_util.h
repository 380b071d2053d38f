/* Small N-API helpers shared by the addon's bindings. */
#ifndef TPFLEET_NAPI_UTIL_H
#define TPFLEET_NAPI_UTIL_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#define CHECK(env, call)                                                    \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error((env), "ERR_NATIVE", "N-API call failed: " #call); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

/* Throws an Error shaped like Node's system errors: message "<syscall> <CODE>: <text> (<detail>)",
 * .code (errno name), .errno (negative), .syscall. Returns NULL for `return throw_errno(...)`. */
napi_value throw_errno(napi_env env, int err, const char *syscall, const char *detail);
napi_value throw_type(napi_env env, const char *message);

/* Reads argument i..: false (and a TypeError thrown) when missing or of the wrong type. */
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* Optional properties of an options object: keep *out when absent; false (thrown) when invalid. */
bool prop_int(napi_env env, napi_value obj, const char *name, int64_t min, int64_t max, int64_t *out);
bool prop_bool(napi_env env, napi_value obj, const char *name, bool *out);
void set_num(napi_env env, napi_value obj, const char *name, double v);
void set_str(napi_env env, napi_value obj, const char *name, const char *v);

#endif
