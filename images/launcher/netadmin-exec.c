// netadmin-exec: runs /usr/local/bin/node with CAP_NET_ADMIN as an *ambient* capability, for the
// sidecar, which runs as uid 65532 (IP_TRANSPARENT on its listeners, and with keepClientIp the
// non-local bind upstream). docs/adr/0005-node-pod-security.md.
//
// Why: a non-root process gets no capability from the pod's `capabilities.add` alone (that only
// keeps NET_ADMIN in the bounding set). This small program carries the file capability
// cap_net_admin=p instead of a 127 MB copy of node carrying it. It moves NET_ADMIN from its
// permitted set into the inheritable and ambient sets and execs node, which then runs with exactly
// NET_ADMIN effective; node's cluster workers (forked by exec of the same node) keep it, because
// ambient capabilities survive exec of a binary without file capabilities.
//
// Invariants: it only ever execs the fixed path NODE (argv[1..] passed through, argv[0] replaced);
// it raises nothing but CAP_NET_ADMIN, and only if the kernel granted it as permitted (file
// capability honoured: NET_ADMIN in the bounding set, no no_new_privs); otherwise it exits 1
// saying so, and runs nothing.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static char NODE[] = "/usr/local/bin/node";

static int fail(const char *what) {
  fprintf(stderr, "netadmin-exec: %s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char **argv) {
  struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];
  const __u32 bit = 1u << CAP_NET_ADMIN; // CAP_NET_ADMIN (12) is in the first 32-bit word
  if (argc < 1) return 1;
  if (syscall(SYS_capget, &head, data) != 0) return fail("capget");
  if (!(data[0].permitted & bit)) {
    fprintf(stderr, "netadmin-exec: CAP_NET_ADMIN is not permitted: its file capability was not honoured "
                    "(NET_ADMIN missing from the bounding set, or no_new_privs set)\n");
    return 1;
  }
  // PR_CAP_AMBIENT_RAISE needs the capability both permitted and inheritable; a process may add
  // a permitted capability to its inheritable set without CAP_SETPCAP.
  data[0].inheritable |= bit;
  if (syscall(SYS_capset, &head, data) != 0) return fail("capset (inheritable)");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) != 0) return fail("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN)");
  argv[0] = NODE;
  execv(NODE, argv);
  return fail("exec /usr/local/bin/node");
}
