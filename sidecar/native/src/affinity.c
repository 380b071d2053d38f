/* CPU pinning of the calling process's threads (the JavaScript thread and V8's); engine threads pin
 * themselves (engine.c). Moved from the first addon unchanged. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "napi_util.h"

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
napi_value set_affinity(napi_env env, napi_callback_info info) {
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
napi_value get_affinity(napi_env env, napi_callback_info info) {
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

