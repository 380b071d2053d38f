#include <stdio.h>
#include <string.h>

#include "napi_util.h"

napi_value throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  const char *name = strerrorname_np(err);
  char text[256];
  napi_value msg, code, error, sys, errnum;
  if (name == NULL) name = "EUNKNOWN";
  snprintf(text, sizeof text, "%s %s: %s%s%s%s", syscall, name, strerror(err), detail ? " (" : "",
           detail ? detail : "", detail ? ")" : "");
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_error(env, code, msg, &error) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys) != napi_ok ||
      napi_create_int32(env, -err, &errnum) != napi_ok) {
    napi_throw_error(env, name, text);
    return NULL;
  }
  napi_set_named_property(env, error, "syscall", sys);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", message);
  return NULL;
}

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    throw_type(env, "missing arguments");
    return false;
  }
  return true;
}

static bool get_prop(napi_env env, napi_value obj, const char *name, napi_valuetype want, napi_value *v) {
  bool has = false;
  napi_valuetype type;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, name, v) != napi_ok || napi_typeof(env, *v, &type) != napi_ok) return false;
  if (type == napi_undefined) return false;
  if (type != want) {
    char text[128];
    snprintf(text, sizeof text, "%s has the wrong type", name);
    throw_type(env, text);
  }
  return type == want;
}

static bool pending(napi_env env) {
  bool p = false;
  napi_is_exception_pending(env, &p);
  return p;
}

bool prop_int(napi_env env, napi_value obj, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_value v;
  double d;
  if (!get_prop(env, obj, name, napi_number, &v)) return !pending(env);
  if (napi_get_value_double(env, v, &d) != napi_ok || d != (double)(int64_t)d || d < (double)min || d > (double)max) {
    char text[160];
    snprintf(text, sizeof text, "%s must be an integer %lld..%lld", name, (long long)min, (long long)max);
    throw_type(env, text);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

bool prop_bool(napi_env env, napi_value obj, const char *name, bool *out) {
  napi_value v;
  if (!get_prop(env, obj, name, napi_boolean, &v)) return !pending(env);
  return napi_get_value_bool(env, v, out) == napi_ok;
}

void set_num(napi_env env, napi_value obj, const char *name, double v) {
  napi_value n;
  if (napi_create_double(env, v, &n) == napi_ok) napi_set_named_property(env, obj, name, n);
}

void set_str(napi_env env, napi_value obj, const char *name, const char *v) {
  napi_value s;
  if (napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &s) == napi_ok) napi_set_named_property(env, obj, name, s);
}
