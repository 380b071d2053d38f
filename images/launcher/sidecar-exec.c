// sidecar-exec: runs the forwarding sidecar, and nothing else, with CAP_NET_RAW as an *ambient*
// capability. The sidecar runs as uid 65532 and needs IP_TRANSPARENT on its listeners and upstream
// sockets (with keepClientIp, the non-local bind): the kernel accepts CAP_NET_RAW or CAP_NET_ADMIN
// for it, and NET_RAW is the smaller one (docs/adr/0005-node-pod-security.md, 0002-native-addon.md).
//
// Why: a non-root process gets no capability from the pod's `capabilities.add` alone (that only
// keeps NET_RAW in the bounding set). This small program carries the file capability cap_net_raw=p.
// It moves NET_RAW from its permitted set into the inheritable and ambient sets and execs node,
// which then runs with exactly NET_RAW effective (its engine threads share it).
//
// What it runs is fixed, because anything in the container can exec it: node at a fixed path, the
// fixed node flag --lite-mode and the sidecar's bundle at a fixed path; only the sidecar's own
// flags (--config FILE, --template TOKEN) are passed on, after the script, where node reads none.
// Anything else (-e, --require, --import, a second script) is refused. The environment is rebuilt
// from an allowlist: node reads NODE_OPTIONS, NODE_PATH and friends (code to load), the dynamic
// loader LD_PRELOAD (an exec with ambient capabilities is not a secure exec), OpenSSL
// OPENSSL_CONF (engines). A NODE_* variable is refused loudly (someone meant to configure node),
// except NODE_VERSION, which the official Node image sets and node never reads (dropped); the others
// are dropped. The pod sets enableServiceLinks: false, so a Service named "node" cannot inject
// NODE_SERVICE_HOST and stop the sidecar.
//
// Invariants: it raises nothing but CAP_NET_RAW, and only if the kernel granted it as permitted
// (file capability honoured: NET_RAW in the bounding set, no no_new_privs); otherwise it exits 1
// saying so, and runs nothing. Refused arguments or environment: exit 2, naming them.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char NODE[] = "/usr/local/bin/node";
static char LITE[] = "--lite-mode";
static char SCRIPT[] = "/opt/tpfleet/dist/tpfleet-sidecar.mjs";
/** The sidecar's flags (sidecar/main.ts), each taking a value. */
static const char *const FLAGS[] = {"--config", "--template"};
/** At most each flag once, as `--flag value` (2 words each). */
#define MAX_ARGS 4
/** Passed on by exact name, or (ending in '_') by prefix. TPFLEET_*: the sidecar's own (main.ts). */
static const char *const ENV_ALLOWED[] = {"PATH", "HOME", "HOSTNAME", "TZ", "LANG", "LC_", "TPFLEET_", "KUBERNETES_"};
#define MAX_ENV 64

static int fail(const char *what) {
  fprintf(stderr, "sidecar-exec: %s: %s\n", what, strerror(errno));
  return 1;
}

static int refuse(const char *what, const char *value) {
  fprintf(stderr,
          "sidecar-exec: refusing %s \"%.80s\": it runs only the tpfleet sidecar, with its own flags "
          "(--config FILE, --template TOKEN) and no NODE_* environment\n",
          what, value);
  return 2;
}

/** The flag `arg` names (`--config` or `--config=...`), or NULL. */
static const char *sidecar_flag(const char *arg, int *inline_value) {
  for (size_t i = 0; i < sizeof FLAGS / sizeof *FLAGS; i++) {
    size_t n = strlen(FLAGS[i]);
    if (strncmp(arg, FLAGS[i], n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
      *inline_value = arg[n] == '=';
      return FLAGS[i];
    }
  }
  return NULL;
}

/** 0 when argv[1..] holds only the sidecar's flags, each with a value; else the refusal's exit code. */
static int check_args(int argc, char **argv) {
  if (argc - 1 > MAX_ARGS) return refuse("argument", argv[MAX_ARGS + 1]);
  for (int i = 1; i < argc; i++) {
    int inline_value = 0;
    if (!sidecar_flag(argv[i], &inline_value)) return refuse("argument", argv[i]);
    if (!inline_value && ++i >= argc) return refuse("argument without a value", argv[i - 1]);
  }
  return 0;
}

static int env_allowed(const char *entry) {
  size_t name = strcspn(entry, "=");
  for (size_t i = 0; i < sizeof ENV_ALLOWED / sizeof *ENV_ALLOWED; i++) {
    size_t n = strlen(ENV_ALLOWED[i]);
    int prefix = ENV_ALLOWED[i][n - 1] == '_';
    if (prefix ? name > n && strncmp(entry, ENV_ALLOWED[i], n) == 0
               : name == n && strncmp(entry, ENV_ALLOWED[i], n) == 0)
      return 1;
  }
  return 0;
}

int main(int argc, char **argv, char **envp) {
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  const __u32 bit = 1u << CAP_NET_RAW; // CAP_NET_RAW (13) is in the first 32-bit word
  static char *args[MAX_ARGS + 4];
  static char *env[MAX_ENV + 1];
  int n = 0, rc;
  if (argc < 1) return 2;
  if ((rc = check_args(argc, argv)) != 0) return rc;
  for (char **e = envp; *e; e++) {
    if (strncmp(*e, "NODE_", 5) == 0 && strncmp(*e, "NODE_VERSION=", 13) != 0) return refuse("environment variable", *e);
    if (!env_allowed(*e)) continue;
    if (n == MAX_ENV) return refuse("environment (too many variables)", *e);
    env[n++] = *e;
  }
  env[n] = NULL;
  if (syscall(SYS_capget, &head, data) != 0) return fail("capget");
  if (!(data[0].permitted & bit)) {
    fprintf(stderr, "sidecar-exec: CAP_NET_RAW is not permitted: its file capability was not honoured "
                    "(NET_RAW missing from the bounding set, or no_new_privs set)\n");
    return 1;
  }
  // PR_CAP_AMBIENT_RAISE needs the capability both permitted and inheritable; a process may add
  // a permitted capability to its inheritable set without CAP_SETPCAP.
  data[0].inheritable |= bit;
  if (syscall(SYS_capset, &head, data) != 0) return fail("capset (inheritable)");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_RAW, 0, 0) != 0) return fail("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_RAW)");
  args[0] = NODE;
  args[1] = LITE;
  args[2] = SCRIPT;
  for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
  args[argc + 2] = NULL;
  execve(NODE, args, env);
  return fail("exec /usr/local/bin/node");
}
