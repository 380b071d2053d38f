/*
 * udpgen: the UDP load generator and sink of `npm run bench:udp` (e2e/bench/udp.ts compiles it with cc at
 * bench time). Debian has no generator that spreads sendmmsg over many flows at a fixed rate.
 *
 *   udpgen send DST PORT FLOWS SIZE SECONDS [PPS]   FLOWS connected sockets (one source port each), round
 *                                                   robin, 16 datagrams per sendmmsg; PPS 0 or absent: as
 *                                                   fast as the sockets take them. Prints "sent N".
 *   udpgen sink ADDR PORT SECONDS                   counts datagrams (recvmmsg) until SECONDS pass with
 *                                                   nothing left. Prints "received N".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 16

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static socklen_t addr(const char *host, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET, a4->sin_port = htons(port);
    return sizeof *a4;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6, a6->sin6_port = htons(port);
    return sizeof *a6;
  }
  fprintf(stderr, "udpgen: bad address %s\n", host);
  exit(2);
}

static int gen(const char *dst, int port, int flows, int size, double seconds, double pps) {
  struct sockaddr_storage ss;
  socklen_t len = addr(dst, port, &ss);
  int *fds = calloc(flows, sizeof *fds);
  for (int i = 0; i < flows; i++) {
    fds[i] = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&ss, len) < 0) return perror("udpgen: socket/connect"), 1;
  }
  static char buf[BATCH][65536];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  for (int i = 0; i < BATCH; i++) {
    iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = (size_t)size};
    msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
  }
  unsigned long long sent = 0;
  double start = now(), end = start + seconds;
  for (int f = 0;; f = (f + 1) % flows) {
    double t = now();
    if (t >= end) break;
    if (pps > 0 && sent >= (t - start) * pps) { /* ahead of the rate: sleep, the CPUs are shared */
      usleep((useconds_t)((sent / pps - (t - start)) * 1e6) + 1);
      continue;
    }
    int n = sendmmsg(fds[f], msgs, BATCH, 0);
    if (n > 0) sent += (unsigned)n;
    else if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN) return perror("udpgen: sendmmsg"), 1;
  }
  printf("sent %llu\n", sent);
  return 0;
}

static int sink(const char *host, int port, double seconds) {
  struct sockaddr_storage ss;
  socklen_t len = addr(host, port, &ss);
  int fd = socket(ss.ss_family, SOCK_DGRAM, 0), big = 4 << 20;
  struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return perror("udpgen: bind"), 1;
  printf("ready\n");
  fflush(stdout);
  static char buf[BATCH][2048];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  unsigned long long received = 0;
  double end = now() + seconds;
  while (now() < end) {
    for (int i = 0; i < BATCH; i++) {
      iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = sizeof buf[i]};
      msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    int n = recvmmsg(fd, msgs, BATCH, 0, NULL);
    if (n > 0) received += (unsigned)n;
  }
  printf("received %llu\n", received);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 7 && strcmp(argv[1], "send") == 0)
    return gen(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atof(argv[6]), argc > 7 ? atof(argv[7]) : 0);
  if (argc == 5 && strcmp(argv[1], "sink") == 0) return sink(argv[2], atoi(argv[3]), atof(argv[4]));
  fprintf(stderr, "usage: udpgen send DST PORT FLOWS SIZE SECONDS [PPS] | sink ADDR PORT SECONDS\n");
  return 2;
}
