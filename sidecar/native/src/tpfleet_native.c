/*
 * tpfleet_native: the two socket set-ups Node's `net` cannot do, and CPU pinning of the calling
 * process (docs/adr/0002-native-addon.md).
 *
 *   listenTransparent(family, address, port, backlog) -> fd of a listening IP_TRANSPARENT socket
 *   transparentSocket(family, bindAddress | null, mark) -> fd of an unconnected IP_TRANSPARENT socket
 *   setAffinity(cpus) / getAffinity() -> sched_setaffinity of every thread of this process / the
 *                                        calling thread's CPU list
 *
 * The socket functions return a non-blocking, close-on-exec fd that JavaScript adopts with net.Server.listen({ fd })
 * or new net.Socket({ fd }); from then on libuv owns it. Native code runs only at socket set-up,
 * never per byte. Errors are thrown as JS Errors with .code (errno name), .errno and .syscall, the
 * shape of Node's own system errors. On any error the fd is closed: no descriptor leaks.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#define CHECK(env, call)                                                    \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error((env), "ERR_NATIVE", "N-API call failed: " #call); \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

/* Throws an Error like Node's: message "<syscall> <CODE> (<detail>)", .code, .errno, .syscall. */
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  const char *name = strerrorname_np(err);
  char text[256];
  napi_value msg, code, error, sys, errnum;
  if (name == NULL) name = "EUNKNOWN";
  snprintf(text, sizeof text, "%s %s: %s%s%s%s", syscall, name, strerror(err),
           detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
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

/* Closes fd, preserving errno for the error report. */
static napi_value fail(napi_env env, int fd, const char *syscall, const char *detail) {
  int err = errno;
  if (fd >= 0) close(fd);
  return throw_errno(env, err, syscall, detail);
}

/* Fills *ss from family (4|6), address text and port. Returns the address length, 0 if invalid. */
static socklen_t make_addr(int family, const char *text, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (family == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, text, &a->sin_addr) == 1 ? sizeof *a : 0;
  }
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  a6->sin6_family = AF_INET6;
  a6->sin6_port = htons((uint16_t)port);
  return inet_pton(AF_INET6, text, &a6->sin6_addr) == 1 ? sizeof *a6 : 0;
}

static int set_int(int fd, int level, int opt, int value) {
  return setsockopt(fd, level, opt, &value, sizeof value);
}

/* A TCP socket of the family with IP_TRANSPARENT (IPV6_TRANSPARENT), or -1 with errno set. */
static int transparent_tcp(int family, const char **syscall) {
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  *syscall = "socket";
  if (fd < 0) return -1;
  *syscall = "setsockopt";
  int rc = family == 4 ? set_int(fd, IPPROTO_IP, IP_TRANSPARENT, 1)
                       : set_int(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1);
  if (rc < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Reads argv: family (4|6), an optional string (NULL/undefined allowed when nullable), ints. */
static napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_value ok;
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < want) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_COUNT", "missing arguments");
    return NULL;
  }
  CHECK(env, napi_get_boolean(env, true, &ok));
  return ok;
}

static int get_family(napi_env env, napi_value v) {
  int32_t family = 0;
  if (napi_get_value_int32(env, v, &family) != napi_ok || (family != 4 && family != 6)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "family must be 4 or 6");
    return 0;
  }
  return family;
}

/* Copies a JS string into buf; returns 0 and throws if it is not a string or too long. */
static int get_text(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok || len + 1 >= size) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "address must be a string");
    return 0;
  }
  return 1;
}

/* listenTransparent(family, address, port, backlog): socket, SO_REUSEADDR, SO_REUSEPORT,
 * IP(V6)_TRANSPARENT (and IPV6_V6ONLY so a v4 listener can share the port), bind, listen. */
static napi_value listen_transparent(napi_env env, napi_callback_info info) {
  napi_value argv[4], result;
  char addr[INET6_ADDRSTRLEN + 1];
  int32_t port = 0, backlog = 0;
  struct sockaddr_storage ss;
  const char *syscall;
  if (!get_args(env, info, 4, argv)) return NULL;
  int family = get_family(env, argv[0]);
  if (!family || !get_text(env, argv[1], addr, sizeof addr)) return NULL;
  CHECK(env, napi_get_value_int32(env, argv[2], &port));
  CHECK(env, napi_get_value_int32(env, argv[3], &backlog));
  socklen_t len = make_addr(family, addr, port, &ss);
  if (len == 0 || port < 0 || port > 65535 || backlog < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "invalid address, port or backlog");
    return NULL;
  }
  int fd = transparent_tcp(family, &syscall);
  if (fd < 0) return fail(env, -1, syscall, "IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW");
  if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0 || set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0 ||
      (family == 6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0))
    return fail(env, fd, "setsockopt", NULL);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail(env, fd, "bind", addr);
  if (listen(fd, backlog) < 0) return fail(env, fd, "listen", NULL);
  CHECK(env, napi_create_int32(env, fd, &result));
  return result;
}

/* transparentSocket(family, bindAddress | null, mark): an unconnected IP_TRANSPARENT TCP socket.
 * IP_TRANSPARENT is always set: the node agent's divert rule ("socket transparent") recognises the
 * proxy's own upstream return traffic by it. With bindAddress the socket is bound to it (port 0,
 * chosen at connect thanks to IP_BIND_ADDRESS_NO_PORT, so many clients' addresses can share ports). */
static napi_value transparent_socket(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  napi_valuetype type;
  char addr[INET6_ADDRSTRLEN + 1];
  uint32_t mark = 0;
  struct sockaddr_storage ss;
  socklen_t len = 0;
  const char *syscall;
  if (!get_args(env, info, 3, argv)) return NULL;
  int family = get_family(env, argv[0]);
  if (!family) return NULL;
  CHECK(env, napi_typeof(env, argv[1], &type));
  if (type != napi_null && type != napi_undefined) {
    if (!get_text(env, argv[1], addr, sizeof addr)) return NULL;
    len = make_addr(family, addr, 0, &ss);
    if (len == 0) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "bindAddress is not an address of the family");
      return NULL;
    }
  }
  CHECK(env, napi_get_value_uint32(env, argv[2], &mark));
  int fd = transparent_tcp(family, &syscall);
  if (fd < 0) return fail(env, -1, syscall, "IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW");
  if (mark != 0 && set_int(fd, SOL_SOCKET, SO_MARK, (int)mark) < 0) return fail(env, fd, "setsockopt", "SO_MARK");
  if (len > 0) {
    /* IP_BIND_ADDRESS_NO_PORT is an IPPROTO_IP option that also applies to IPv6 sockets. */
    if (set_int(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1) < 0) return fail(env, fd, "setsockopt", NULL);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) return fail(env, fd, "bind", addr);
  }
  CHECK(env, napi_create_int32(env, fd, &result));
  return result;
}

/* Width of the CPU masks: the API's CPU-list limit (api/tuning.ts, 0..8191). The kernel needs a
 * buffer at least nr_cpu_ids bits wide for sched_getaffinity; 8192 covers every supported kernel. */
#define MAX_CPUS 8192

/* sched_setaffinity on every thread of this process (/proc/self/task): V8 and libuv threads exist
 * before a worker pins itself, and a thread keeps the mask it had, so pid 0 (the calling thread
 * alone) would leave the GC and thread-pool threads on every CPU. Threads created later inherit
 * their creator's mask. A thread that exits meanwhile (ESRCH) is skipped. Returns 0 or an errno. */
static int pin_all_threads(size_t size, const cpu_set_t *set) {
  if (sched_setaffinity(0, size, set) < 0) return errno;
  DIR *dir = opendir("/proc/self/task");
  if (dir == NULL) return 0; /* no /proc: the calling thread is pinned, new threads inherit */
  int err = 0;
  struct dirent *e;
  while (err == 0 && (e = readdir(dir)) != NULL) {
    pid_t tid = (pid_t)atoi(e->d_name);
    if (tid > 0 && sched_setaffinity(tid, size, set) < 0 && errno != ESRCH) err = errno;
  }
  closedir(dir);
  return err;
}

/* setAffinity(cpus): a non-empty array of CPU numbers 0..8191. Needs no capability for the
 * caller's own threads; EINVAL when none of the CPUs is online or allowed by the cgroup cpuset. */
static napi_value set_affinity(napi_env env, napi_callback_info info) {
  napi_value argv[1], item;
  uint32_t n = 0;
  bool is_array = false;
  if (!get_args(env, info, 1, argv)) return NULL;
  CHECK(env, napi_is_array(env, argv[0], &is_array));
  if (is_array) CHECK(env, napi_get_array_length(env, argv[0], &n));
  if (!is_array || n == 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "cpus must be a non-empty array of CPU numbers");
    return NULL;
  }
  size_t size = CPU_ALLOC_SIZE(MAX_CPUS);
  cpu_set_t *set = CPU_ALLOC(MAX_CPUS);
  if (set == NULL) return throw_errno(env, ENOMEM, "sched_setaffinity", NULL);
  CPU_ZERO_S(size, set);
  for (uint32_t i = 0; i < n; i++) {
    int32_t cpu = -1;
    if (napi_get_element(env, argv[0], i, &item) != napi_ok || napi_get_value_int32(env, item, &cpu) != napi_ok ||
        cpu < 0 || cpu >= MAX_CPUS) {
      CPU_FREE(set);
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "cpus must be integers 0..8191");
      return NULL;
    }
    CPU_SET_S((size_t)cpu, size, set);
  }
  int err = pin_all_threads(size, set);
  CPU_FREE(set);
  if (err != 0) return throw_errno(env, err, "sched_setaffinity", "no usable CPU in the list?");
  return NULL;
}

/* getAffinity(): the calling thread's allowed CPUs, ascending. */
static napi_value get_affinity(napi_env env, napi_callback_info info) {
  napi_value result, v;
  (void)info;
  size_t size = CPU_ALLOC_SIZE(MAX_CPUS);
  cpu_set_t *set = CPU_ALLOC(MAX_CPUS);
  if (set == NULL) return throw_errno(env, ENOMEM, "sched_getaffinity", NULL);
  if (sched_getaffinity(0, size, set) < 0) {
    int err = errno;
    CPU_FREE(set);
    return throw_errno(env, err, "sched_getaffinity", NULL);
  }
  uint32_t k = 0;
  napi_status st = napi_create_array(env, &result);
  for (int cpu = 0; st == napi_ok && cpu < MAX_CPUS; cpu++) {
    if (!CPU_ISSET_S((size_t)cpu, size, set)) continue;
    st = napi_create_int32(env, cpu, &v);
    if (st == napi_ok) st = napi_set_element(env, result, k++, v);
  }
  CPU_FREE(set);
  CHECK(env, st);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"listenTransparent", NULL, listen_transparent, NULL, NULL, NULL, napi_enumerable, NULL},
    {"transparentSocket", NULL, transparent_socket, NULL, NULL, NULL, napi_enumerable, NULL},
    {"setAffinity", NULL, set_affinity, NULL, NULL, NULL, napi_enumerable, NULL},
    {"getAffinity", NULL, get_affinity, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
