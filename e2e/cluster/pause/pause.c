/* The pod sandbox's process for the local-real provider (the role of registry.k8s.io/pause):
 * holds the pod's namespaces and does nothing else. PID 1 of its PID namespace gets no default
 * signal handlers, so SIGTERM/SIGINT are handled explicitly, and children are reaped (SIGCHLD)
 * so a pod sharing its PID namespace never accumulates zombies. Built with gcc -static. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(128 + sig); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGTERM, &q, NULL);
  sigaction(SIGINT, &q, NULL);
  sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
  return 0;
}
