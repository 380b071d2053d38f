/*
 * tpfleet_native: the N-API face of the data engine (engine.h) and CPU pinning (affinity.c).
 * docs/adr/0002-native-addon.md (why native at all) and docs/adr/0011-data-engine.md (the engine).
 *
 *   engineStart(options, onEvents) -> { handle, threads: [{ cpu, pinned }] }
 *   engineStats(handle) -> Float64Array: STAT_NAMES order, then open connections, then UDP flows
 *   engineHeartbeats(handle) -> Float64Array: loop turns per thread (liveness)
 *   engineSetOptions(handle, options)         timeouts, limits, hook, logging: in place
 *   engineDecide(handle, id, verdict, to?)     answer for a held connection
 *   engineDrain(handle) / engineCloseAll(handle) / engineStop(handle)
 *   statNames() -> string[]
 *   setAffinity(cpus) / getAffinity()
 *
 * Only this file touches N-API; engine threads never do (they wake JS through a threadsafe function).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "events.h"
#include "napi_util.h"
#include "policy.h"

napi_value set_affinity(napi_env env, napi_callback_info info);
napi_value get_affinity(napi_env env, napi_callback_info info);

struct handle {
  struct engine e;
  napi_threadsafe_function tsfn;
  bool stopped;
};

static struct handle *unwrap(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  void *p = NULL;
  if (!get_args(env, info, want, argv) || napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    throw_type(env, "not an engine handle");
    return NULL;
  }
  struct handle *h = p;
  if (h->stopped) {
    throw_type(env, "the engine is stopped");
    return NULL;
  }
  return h;
}

/* --- options ------------------------------------------------------------------------------------- */

/* The options JS may change at any time (engineStart and engineSetOptions). */
static bool read_live_options(napi_env env, napi_value o, struct options *opt) {
  int64_t connect = opt->connect_timeout_ms, idle = opt->idle_timeout_ms, hold = opt->hold_timeout_ms,
          max = opt->max_connections;
  bool hook = opt->hook, peek = opt->peek, log = opt->log_conns, splice = opt->splice, audit = opt->audit;
  int64_t audit_per_s = opt->audit_per_s, udp_idle = opt->udp_idle_ms, udp_max = opt->udp_max_flows;
  /* Bounds every consumer accepts: Node's timers and ours cap at 2^31-1 ms (api/nodeconfig.ts). */
  if (!prop_int(env, o, "connectTimeoutMs", 1, 2147483647, &connect) ||
      !prop_int(env, o, "idleTimeoutMs", 1, 2147483647, &idle) ||
      !prop_int(env, o, "holdTimeoutMs", 1, 60000, &hold) || !prop_int(env, o, "maxConnections", 1, 10000000, &max) ||
      !prop_bool(env, o, "hook", &hook) || !prop_bool(env, o, "peek", &peek) ||
      !prop_bool(env, o, "logConnections", &log) || !prop_bool(env, o, "splice", &splice) ||
      !prop_bool(env, o, "audit", &audit) || !prop_int(env, o, "auditPerSecond", 1, 1000000, &audit_per_s) ||
      !prop_int(env, o, "udpIdleTimeoutMs", 1, 2147483647, &udp_idle) ||
      !prop_int(env, o, "udpMaxFlows", 1, 10000000, &udp_max))
    return false;
  atomic_store(&opt->connect_timeout_ms, connect);
  atomic_store(&opt->idle_timeout_ms, idle);
  atomic_store(&opt->hold_timeout_ms, hold);
  atomic_store(&opt->max_connections, (uint32_t)max);
  atomic_store(&opt->hook, hook);
  atomic_store(&opt->peek, peek);
  atomic_store(&opt->log_conns, log);
  atomic_store(&opt->splice, splice);
  atomic_store(&opt->audit, audit);
  atomic_store(&opt->audit_per_s, (uint32_t)audit_per_s);
  atomic_store(&opt->udp_idle_ms, udp_idle);
  atomic_store(&opt->udp_max_flows, (uint32_t)udp_max);
  return true;
}

/* cpus: an array of one CPU per thread, or null. */
static bool read_cpus(napi_env env, napi_value o, int n, int *cpus, bool *have) {
  napi_value v;
  bool is_array = false, has = false;
  *have = false;
  if (napi_has_named_property(env, o, "cpus", &has) != napi_ok || !has) return true;
  if (napi_get_named_property(env, o, "cpus", &v) != napi_ok || napi_is_array(env, v, &is_array) != napi_ok) return false;
  if (!is_array) return true; /* null: not pinned */
  uint32_t len = 0;
  napi_get_array_length(env, v, &len);
  if ((int)len != n) return throw_type(env, "cpus must list one CPU per thread"), false;
  for (uint32_t i = 0; i < len; i++) {
    napi_value item;
    int32_t cpu = -1;
    if (napi_get_element(env, v, i, &item) != napi_ok || napi_get_value_int32(env, item, &cpu) != napi_ok || cpu < 0 ||
        cpu >= CPU_SETSIZE)
      return throw_type(env, "cpus must be integers 0..1023"), false;
    cpus[i] = cpu;
  }
  *have = true;
  return true;
}

/* selftestDestinations (at most two IP address strings) and selftestReply (at most 63 bytes): optional. */
static bool read_selftest(napi_env env, napi_value o, struct engine *e) {
  bool has = false;
  napi_value v;
  e->nselftest = 0;
  e->selftest_reply_len = 0;
  if (napi_has_named_property(env, o, "selftestDestinations", &has) != napi_ok || !has) return true;
  uint32_t len = 0;
  bool arr = false;
  if (napi_get_named_property(env, o, "selftestDestinations", &v) != napi_ok || napi_is_array(env, v, &arr) != napi_ok ||
      !arr || napi_get_array_length(env, v, &len) != napi_ok || len > 2)
    return throw_type(env, "selftestDestinations must list at most two IP addresses"), false;
  for (uint32_t i = 0; i < len; i++) {
    napi_value item;
    char text[INET6_ADDRSTRLEN + 1];
    size_t n = 0;
    struct endpoint *ep = &e->selftest[i];
    memset(ep, 0, sizeof *ep);
    if (napi_get_element(env, v, i, &item) != napi_ok ||
        napi_get_value_string_utf8(env, item, text, sizeof text, &n) != napi_ok)
      return throw_type(env, "selftestDestinations must list at most two IP addresses"), false;
    if (inet_pton(AF_INET, text, ep->addr) == 1) ep->family = 4;
    else if (inet_pton(AF_INET6, text, ep->addr) == 1) ep->family = 6;
    else return throw_type(env, "selftestDestinations must list at most two IP addresses"), false;
  }
  e->nselftest = (int)len;
  size_t n = 0;
  if (napi_get_named_property(env, o, "selftestReply", &v) != napi_ok ||
      napi_get_value_string_utf8(env, v, e->selftest_reply, sizeof e->selftest_reply, &n) != napi_ok || n == 0 ||
      n >= sizeof e->selftest_reply - 1)
    return throw_type(env, "selftestReply must be a string of 1 to 62 bytes"), false;
  e->selftest_reply_len = n;
  return true;
}

static bool read_start_options(napi_env env, napi_value o, struct engine *e, int *cpus, bool *have_cpus) {
  int64_t threads = 1, port = 0, backlog = 4096, fault = 0, fault_after = 0;
  bool keep = false, ipv4 = true, ipv6 = false, udp = false;
  if (!prop_int(env, o, "threads", 1, MAX_THREADS, &threads) || !prop_int(env, o, "listenPort", 0, 65535, &port) ||
      !prop_int(env, o, "backlog", 1, 65535, &backlog) || !prop_bool(env, o, "keepClientIp", &keep) ||
      !prop_bool(env, o, "ipv4", &ipv4) || !prop_bool(env, o, "ipv6", &ipv6) || !prop_bool(env, o, "udp", &udp) ||
      !prop_int(env, o, "faultKind", 0, 2, &fault) || !prop_int(env, o, "faultAfterMs", 0, 3600000, &fault_after))
    return false;
  if (!ipv4 && !ipv6) return throw_type(env, "at least one of ipv4 and ipv6"), false;
  e->nthreads = (int)threads;
  e->listen_port = (uint16_t)port;
  e->backlog = (int)backlog;
  e->keep_client_ip = keep;
  e->udp = udp;
  e->nfamilies = 0;
  if (ipv4) e->families[e->nfamilies++] = 4;
  if (ipv6) e->families[e->nfamilies++] = 6;
  e->fault_kind = (int)fault;
  e->fault_after_ms = fault_after;
  atomic_store(&e->opt.connect_timeout_ms, 5000);
  atomic_store(&e->opt.idle_timeout_ms, 3600000);
  atomic_store(&e->opt.hold_timeout_ms, 1000);
  atomic_store(&e->opt.max_connections, 20000);
  atomic_store(&e->opt.splice, 1);
  atomic_store(&e->opt.audit_per_s, 100);
  atomic_store(&e->opt.udp_idle_ms, 60000);
  atomic_store(&e->opt.udp_max_flows, 65536);
  return read_selftest(env, o, e) && read_live_options(env, o, &e->opt) &&
         read_cpus(env, o, e->nthreads, cpus, have_cpus);
}

/* --- events (engine threads -> JS) -------------------------------------------------------------- */

static void notify_js(struct engine *e) {
  struct handle *h = (struct handle *)e; /* e is the first member */
  napi_call_threadsafe_function(h->tsfn, NULL, napi_tsfn_nonblocking);
}

static napi_value endpoint_value(napi_env env, const struct endpoint *ep) {
  napi_value o;
  char text[INET6_ADDRSTRLEN];
  napi_create_object(env, &o);
  inet_ntop(ep->family == 4 ? AF_INET : AF_INET6, ep->addr, text, sizeof text);
  set_str(env, o, "address", text);
  set_num(env, o, "port", ep->port);
  set_num(env, o, "family", ep->family);
  return o;
}

static const char *const KINDS[] = {"", "accepted", "closed", "decide", "warn", "fatal"};

static napi_value event_value(napi_env env, struct event *ev) {
  napi_value o, id;
  napi_create_object(env, &o);
  set_str(env, o, "kind", KINDS[ev->kind]);
  set_num(env, o, "thread", ev->thread);
  if (ev->kind == EV_WARN || ev->kind == EV_FATAL) {
    set_str(env, o, "what", ev->what);
    set_num(env, o, "errno", ev->err);
    set_str(env, o, "code", strerrorname_np(ev->err) ? strerrorname_np(ev->err) : "EUNKNOWN");
    return o;
  }
  napi_create_bigint_uint64(env, ev->id, &id);
  napi_set_named_property(env, o, "id", id);
  napi_set_named_property(env, o, "src", endpoint_value(env, &ev->src));
  napi_set_named_property(env, o, "dst", endpoint_value(env, &ev->dst));
  if (ev->kind == EV_CLOSED) {
    napi_value audit;
    set_num(env, o, "reason", ev->reason);
    set_num(env, o, "bytesUp", (double)ev->bytes_up);
    set_num(env, o, "bytesDown", (double)ev->bytes_down);
    set_num(env, o, "durationUs", (double)ev->duration_us);
    set_num(env, o, "rule", ev->rule);
    set_num(env, o, "action", ev->action);
    set_num(env, o, "upstream", ev->upstream);
    set_num(env, o, "generation", ev->generation);
    set_num(env, o, "nameKind", ev->name_kind);
    if (ev->peek) set_str(env, o, "name", ev->peek);
    napi_get_boolean(env, ev->audit, &audit);
    napi_set_named_property(env, o, "audit", audit);
    free(ev->peek);
  }
  if (ev->kind == EV_DECIDE) {
    napi_value buf;
    void *data;
    set_num(env, o, "flags", ev->flags);
    if (napi_create_buffer_copy(env, ev->peek_len, ev->peek ? ev->peek : "", &data, &buf) == napi_ok)
      napi_set_named_property(env, o, "bytes", buf);
    free(ev->peek);
  }
  return o;
}

/* Runs on the JS thread: drains every ring into one array and hands it to onEvents. */
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)data;
  struct handle *h = context;
  if (env == NULL || h->stopped) return;
  atomic_store(&h->e.notify_pending, 0); /* before draining: a push after this wakes us again */
  napi_value list, undefined;
  napi_create_array(env, &list);
  uint32_t n = 0;
  struct event ev;
  for (int i = 0; i < h->e.nthreads; i++)
    while (ring_pop(h->e.threads[i].ring, &ev)) napi_set_element(env, list, n++, event_value(env, &ev));
  if (n == 0) return;
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, cb, 1, &list, NULL);
}

/* --- bindings ------------------------------------------------------------------------------------ */

/* Frees retired policies every thread has turned its loop past (none still reads them). */
static void free_retired(struct engine *e) {
  for (struct policy **pp = &e->retired; *pp;) {
    struct policy *p = *pp;
    bool quiet = true;
    for (int i = 0; i < e->nthreads && quiet; i++) quiet = atomic_load(&e->threads[i].loops) > p->retired_at[i];
    if (!quiet) {
      pp = &p->retired_next;
      continue;
    }
    *pp = p->retired_next;
    policy_free(p);
  }
}

/* Gives each rule its counter slot by name, so counters carry over a reload. */
static bool assign_slots(struct engine *e, struct policy *p) {
  for (uint32_t i = 0; i < p->nrules; i++) {
    struct policy_rule *r = &p->rules_mem[i];
    uint32_t s = 1;
    while (s < e->nrule_keys && e->rule_keys[s] != r->key) s++;
    if (s == e->nrule_keys) {
      if (s == RULE_SLOTS) return false;
      e->rule_keys[e->nrule_keys++] = r->key;
    }
    r->slot = (uint16_t)s;
  }
  return true;
}

/* A compiled table from JS (a Uint8Array), loaded and given counter slots; NULL and a JS exception when
 * it is malformed (the caller then changes nothing). */
static struct policy *read_policy(napi_env env, struct engine *e, napi_value v) {
  void *data;
  size_t len, off;
  bool is_typed = false;
  napi_typedarray_type tt;
  napi_value ab;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed)
    return throw_type(env, "the policy must be a Uint8Array (sidecar/policy.ts compiles it) or null"), NULL;
  CHECK(env, napi_get_typedarray_info(env, v, &tt, &len, &data, &ab, &off));
  const char *why = NULL;
  struct policy *next = policy_load(data, len, &why);
  if (!next) {
    char text[160];
    snprintf(text, sizeof text, "the compiled policy is malformed: %s", why);
    return throw_type(env, text), NULL;
  }
  if (!assign_slots(e, next)) {
    policy_free(next);
    return throw_type(env, "more distinct rule names than the engine keeps counters for (8191)"), NULL;
  }
  next->generation = ++e->policy_generation;
  return next;
}

/* engineStart(options, onEvents): options.policy (optional) is installed before the listeners open, so
 * no connection is ever decided without it (a Deny default holds from the first accept). */
static napi_value engine_start_js(napi_env env, napi_callback_info info) {
  napi_value argv[2], result, threads, name;
  if (!get_args(env, info, 2, argv)) return NULL;
  struct handle *h = calloc(1, sizeof *h);
  int cpus[MAX_THREADS];
  bool have_cpus = false;
  if (!h) return throw_errno(env, ENOMEM, "calloc", NULL);
  if (!read_start_options(env, argv[0], &h->e, cpus, &have_cpus)) return free(h), NULL;
  bool has_policy = false;
  napi_value pv;
  h->e.nrule_keys = 1; /* slot 0: the default action */
  CHECK(env, napi_has_named_property(env, argv[0], "policy", &has_policy));
  if (has_policy) {
    napi_valuetype pt;
    CHECK(env, napi_get_named_property(env, argv[0], "policy", &pv));
    CHECK(env, napi_typeof(env, pv, &pt));
    if (pt != napi_undefined && pt != napi_null) {
      struct policy *p = read_policy(env, &h->e, pv);
      if (!p) return free(h), NULL;
      atomic_store(&h->e.policy, p);
    }
  }
  napi_create_string_utf8(env, "tpfleet-engine-events", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL, h, call_js, &h->tsfn) != napi_ok)
    return free(h), throw_type(env, "onEvents must be a function");
  /* The event channel must not keep the process alive: the status server and signals do. */
  napi_unref_threadsafe_function(env, h->tsfn);
  h->e.notify = notify_js;
  const char *syscall = "engine";
  if (engine_start(&h->e, have_cpus ? cpus : NULL, &syscall) < 0) {
    int err = errno;
    policy_free(atomic_exchange(&h->e.policy, NULL));
    napi_release_threadsafe_function(h->tsfn, napi_tsfn_abort);
    free(h);
    return throw_errno(env, err, syscall, err == EPERM ? "IP_TRANSPARENT needs CAP_NET_RAW or CAP_NET_ADMIN" : NULL);
  }
  napi_create_object(env, &result);
  napi_value ext;
  CHECK(env, napi_create_external(env, h, NULL, NULL, &ext));
  napi_set_named_property(env, result, "handle", ext);
  napi_create_array(env, &threads);
  for (int i = 0; i < h->e.nthreads; i++) {
    napi_value t, pinned;
    napi_create_object(env, &t);
    set_num(env, t, "cpu", h->e.threads[i].cpu);
    napi_get_boolean(env, h->e.threads[i].cpu < 0 || h->e.threads[i].pinned_ok, &pinned);
    napi_set_named_property(env, t, "pinned", pinned);
    napi_set_element(env, threads, (uint32_t)i, t);
  }
  napi_set_named_property(env, result, "threads", threads);
  return result;
}

/* Sums every thread's counters (relaxed loads: each counter has one writer), then open connections. */
static napi_value engine_stats_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], ab, arr;
  struct handle *h = unwrap(env, info, 1, argv);
  if (!h) return NULL;
  double *out;
  CHECK(env, napi_create_arraybuffer(env, (ST__COUNT + 2) * sizeof(double), (void **)&out, &ab));
  for (int k = 0; k < ST__COUNT; k++) {
    uint64_t sum = 0;
    for (int i = 0; i < h->e.nthreads; i++) sum += __atomic_load_n(&h->e.threads[i].st->v[k], __ATOMIC_RELAXED);
    out[k] = (double)sum;
  }
  out[ST__COUNT] = (double)atomic_load(&h->e.active);
  out[ST__COUNT + 1] = (double)atomic_load(&h->e.udp_active);
  CHECK(env, napi_create_typedarray(env, napi_float64_array, ST__COUNT + 2, ab, 0, &arr));
  return arr;
}

static napi_value engine_heartbeats_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], ab, arr;
  struct handle *h = unwrap(env, info, 1, argv);
  if (!h) return NULL;
  double *out;
  CHECK(env, napi_create_arraybuffer(env, (size_t)h->e.nthreads * sizeof(double), (void **)&out, &ab));
  for (int i = 0; i < h->e.nthreads; i++) out[i] = (double)atomic_load(&h->e.threads[i].loops);
  CHECK(env, napi_create_typedarray(env, napi_float64_array, (size_t)h->e.nthreads, ab, 0, &arr));
  return arr;
}

static napi_value engine_set_options_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct handle *h = unwrap(env, info, 2, argv);
  if (!h) return NULL;
  /* Validate into a copy first: a bad field changes nothing. */
  struct options next;
  memcpy(&next, &h->e.opt, sizeof next);
  if (!read_live_options(env, argv[1], &next)) return NULL;
  memcpy(&h->e.opt, &next, sizeof next);
  struct cmd wake = {.kind = CMD_OPTIONS};
  engine_send(&h->e, -1, &wake);
  return NULL;
}

static bool read_endpoint(napi_env env, napi_value o, struct endpoint *ep) {
  napi_value v;
  char text[INET6_ADDRSTRLEN + 1];
  size_t len = 0;
  int64_t port = 0;
  if (napi_get_named_property(env, o, "address", &v) != napi_ok ||
      napi_get_value_string_utf8(env, v, text, sizeof text, &len) != napi_ok || !prop_int(env, o, "port", 1, 65535, &port))
    return false;
  memset(ep, 0, sizeof *ep);
  ep->port = (uint16_t)port;
  if (inet_pton(AF_INET, text, ep->addr) == 1) ep->family = 4;
  else if (inet_pton(AF_INET6, text, ep->addr) == 1) ep->family = 6;
  else return throw_type(env, "to.address must be an IP address"), false;
  return true;
}

/* engineDecide(handle, id: bigint, verdict: 0 forward | 1 reset | 2 forward to `to` | 3 more bytes, to?) */
static napi_value engine_decide_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct handle *h = unwrap(env, info, 3, argv);
  if (!h) return NULL;
  struct cmd c = {.kind = CMD_VERDICT};
  bool lossless = false;
  int32_t verdict = -1;
  if (napi_get_value_bigint_uint64(env, argv[1], &c.id, &lossless) != napi_ok || !lossless)
    return throw_type(env, "id must be a bigint from a decide event");
  if (napi_get_value_int32(env, argv[2], &verdict) != napi_ok || verdict < V_FORWARD || verdict > V_MORE)
    return throw_type(env, "verdict must be 0..3");
  c.verdict = (uint8_t)verdict;
  if (verdict == V_FORWARD_TO) {
    size_t argc = 4;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 4 || !read_endpoint(env, argv[3], &c.to)) return NULL;
  }
  int thread = (int)(c.id >> 56);
  if (thread >= h->e.nthreads) return throw_type(env, "id names no engine thread");
  engine_send(&h->e, thread, &c);
  return NULL;
}

static napi_value simple_cmd(napi_env env, napi_callback_info info, int kind) {
  napi_value argv[1];
  struct handle *h = unwrap(env, info, 1, argv);
  if (!h) return NULL;
  struct cmd c = {.kind = (uint8_t)kind};
  engine_send(&h->e, -1, &c);
  return NULL;
}

static napi_value engine_drain_js(napi_env env, napi_callback_info info) { return simple_cmd(env, info, CMD_DRAIN); }
static napi_value engine_close_all_js(napi_env env, napi_callback_info info) { return simple_cmd(env, info, CMD_CLOSE_ALL); }

/* Joins every thread (they stop within a loop turn); the handle is unusable afterwards. */
static napi_value engine_stop_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct handle *h = unwrap(env, info, 1, argv);
  if (!h) return NULL;
  engine_join(&h->e);
  h->stopped = true;
  napi_release_threadsafe_function(h->tsfn, napi_tsfn_release);
  return NULL; /* h itself stays allocated: the external may still be referenced from JS */
}

/* engineSetPolicy(handle, compiled: Uint8Array | null) -> generation. A malformed table throws and
 * changes nothing: the engine keeps deciding with the policy it had. */
static napi_value engine_set_policy_js(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  struct handle *h = unwrap(env, info, 2, argv);
  if (!h) return NULL;
  struct engine *e = &h->e;
  struct policy *next = NULL;
  napi_valuetype type;
  CHECK(env, napi_typeof(env, argv[1], &type));
  if (type != napi_null && !(next = read_policy(env, e, argv[1]))) return NULL;
  struct policy *old = atomic_exchange(&e->policy, next);
  if (old) {
    for (int i = 0; i < e->nthreads; i++) old->retired_at[i] = atomic_load(&e->threads[i].loops);
    old->retired_next = e->retired;
    e->retired = old;
  }
  free_retired(e);
  CHECK(env, napi_create_uint32(env, next ? next->generation : 0, &result));
  return result;
}

/* engineRuleCounters(handle) -> { keys: BigUint64Array, counts: Float64Array (PC__COUNT per key) }. */
static napi_value engine_rule_counters_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, kab, cab, keys, counts;
  struct handle *h = unwrap(env, info, 1, argv);
  if (!h) return NULL;
  struct engine *e = &h->e;
  uint32_t n = e->nrule_keys;
  uint64_t *k;
  double *c;
  free_retired(e);
  CHECK(env, napi_create_arraybuffer(env, n * sizeof(uint64_t), (void **)&k, &kab));
  CHECK(env, napi_create_arraybuffer(env, n * PC__COUNT * sizeof(double), (void **)&c, &cab));
  for (uint32_t s = 0; s < n; s++) {
    k[s] = e->rule_keys[s];
    for (int j = 0; j < PC__COUNT; j++) {
      uint64_t sum = 0;
      for (int t = 0; t < e->nthreads; t++) sum += __atomic_load_n(rule_counter(e, t, s, j), __ATOMIC_RELAXED);
      c[s * PC__COUNT + j] = (double)sum;
    }
  }
  CHECK(env, napi_create_typedarray(env, napi_biguint64_array, n, kab, 0, &keys));
  CHECK(env, napi_create_typedarray(env, napi_float64_array, n * PC__COUNT, cab, 0, &counts));
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "keys", keys);
  napi_set_named_property(env, out, "counts", counts);
  return out;
}

static bool text_endpoint(napi_env env, napi_value o, const char *key, struct endpoint *ep) {
  napi_value v;
  char text[INET6_ADDRSTRLEN + 1];
  size_t len = 0;
  memset(ep, 0, sizeof *ep);
  if (napi_get_named_property(env, o, key, &v) != napi_ok || napi_get_value_string_utf8(env, v, text, sizeof text, &len) != napi_ok)
    return throw_type(env, "src and dst must be IP address strings"), false;
  if (inet_pton(AF_INET, text, ep->addr) == 1) ep->family = 4;
  else if (inet_pton(AF_INET6, text, ep->addr) == 1) ep->family = 6;
  else return throw_type(env, "src and dst must be IP address strings"), false;
  return true;
}

/* policyEvaluate(compiled, { src, dst, port, sni?, host? }) -> { rule, peek }: the engine's decision
 * off-line, for tests that hold it to the TypeScript reference (sidecar/policy.ts decide). peek: the
 * connection would have been held for its first bytes. rule: -1 is the default action. */
static napi_value policy_evaluate_js(napi_env env, napi_callback_info info) {
  napi_value argv[2], out, v;
  if (!get_args(env, info, 2, argv)) return NULL;
  void *data;
  size_t len;
  napi_typedarray_type tt;
  napi_value ab;
  size_t off;
  CHECK(env, napi_get_typedarray_info(env, argv[0], &tt, &len, &data, &ab, &off));
  const char *why = NULL;
  struct policy *p = policy_load(data, len, &why);
  if (!p) return throw_type(env, why);
  struct endpoint src, dst;
  int64_t port = 0;
  if (!text_endpoint(env, argv[1], "src", &src) || !text_endpoint(env, argv[1], "dst", &dst) ||
      !prop_int(env, argv[1], "port", 1, 65535, &port))
    return policy_free(p), NULL;
  dst.port = (uint16_t)port;
  uint64_t cand[POLICY_MAX_WORDS];
  policy_match_addr(p, &src, &dst, cand);
  int first = policy_first(p, cand);
  bool peek = first >= 0 && p->rules[first].needs != 0;
  char name[254] = "";
  int kind = 0;
  for (const char *key = "sni"; key; key = strcmp(key, "sni") == 0 ? "host" : NULL) {
    bool has = false;
    size_t n = 0;
    if (napi_has_named_property(env, argv[1], key, &has) == napi_ok && has &&
        napi_get_named_property(env, argv[1], key, &v) == napi_ok &&
        napi_get_value_string_utf8(env, v, name, sizeof name, &n) == napi_ok && n > 0)
      kind = strcmp(key, "sni") == 0 ? PN_SNI : PN_HOST;
    if (kind) break;
  }
  if (peek) policy_narrow_by_name(p, kind, kind ? name : NULL, cand);
  int rule = peek ? policy_first(p, cand) : first;
  policy_free(p);
  napi_create_object(env, &out);
  set_num(env, out, "rule", rule);
  napi_get_boolean(env, peek, &v);
  napi_set_named_property(env, out, "peek", v);
  return out;
}

static napi_value stat_names_js(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr, s;
  CHECK(env, napi_create_array(env, &arr));
  for (uint32_t k = 0; k < ST__COUNT; k++) {
    CHECK(env, napi_create_string_utf8(env, STAT_NAMES[k], NAPI_AUTO_LENGTH, &s));
    CHECK(env, napi_set_element(env, arr, k, s));
  }
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"engineStart", NULL, engine_start_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineStats", NULL, engine_stats_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineHeartbeats", NULL, engine_heartbeats_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineSetOptions", NULL, engine_set_options_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineDecide", NULL, engine_decide_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineDrain", NULL, engine_drain_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineCloseAll", NULL, engine_close_all_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineStop", NULL, engine_stop_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"statNames", NULL, stat_names_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineSetPolicy", NULL, engine_set_policy_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"engineRuleCounters", NULL, engine_rule_counters_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"policyEvaluate", NULL, policy_evaluate_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setAffinity", NULL, set_affinity, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getAffinity", NULL, get_affinity, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
