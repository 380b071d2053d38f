/*
 * Socket set-up for the engine: the transparent listener, the transparent upstream socket, and
 * address conversions. Every function returns -1 with errno set and names the failing syscall;
 * no descriptor leaks on error.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"

static int set_int(int fd, int level, int opt, int value) {
  return setsockopt(fd, level, opt, &value, sizeof value);
}

static int close_keep_errno(int fd) {
  int err = errno;
  close(fd);
  errno = err;
  return -1;
}

/* A non-blocking TCP socket with IP(V6)_TRANSPARENT: needs CAP_NET_ADMIN or CAP_NET_RAW. */
static int transparent_tcp(int family, const char **syscall) {
  *syscall = "socket";
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  *syscall = "setsockopt(IP_TRANSPARENT)";
  int rc = family == 4 ? set_int(fd, IPPROTO_IP, IP_TRANSPARENT, 1) : set_int(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1);
  return rc < 0 ? close_keep_errno(fd) : fd;
}

/* socket, SO_REUSEADDR, SO_REUSEPORT (one listener per engine thread, and the next pod's during a
 * surge rollout), IP_TRANSPARENT, IPV6_V6ONLY (the v4 listener shares the port), bind, listen. */
int listen_transparent(int family, uint16_t port, int backlog, const char **syscall) {
  int fd = transparent_tcp(family, syscall);
  if (fd < 0) return -1;
  *syscall = "setsockopt";
  if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0 || set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0 ||
      (family == 6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) < 0))
    return close_keep_errno(fd);
  struct endpoint any = {.family = (uint8_t)family, .port = port};
  struct sockaddr_storage ss;
  socklen_t len = endpoint_to(&any, &ss);
  *syscall = "bind";
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) return close_keep_errno(fd);
  *syscall = "listen";
  if (listen(fd, backlog) < 0) return close_keep_errno(fd);
  return fd;
}

/*
 * The upstream socket, connect in progress. IP_TRANSPARENT always: the node agent's divert rule
 * recognises the proxy's own return traffic by `socket transparent`. With src (keepClientIp) it is
 * bound to the client's address, port chosen at connect (IP_BIND_ADDRESS_NO_PORT: many clients'
 * addresses share the proxy's ports). TCP_NODELAY: the client already chose its segmenting.
 */
int dial_transparent(const struct endpoint *dst, const struct endpoint *src, const char **syscall) {
  int fd = transparent_tcp(dst->family, syscall);
  if (fd < 0) return -1;
  struct sockaddr_storage ss;
  *syscall = "setsockopt";
  if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0) return close_keep_errno(fd);
  if (src) {
    socklen_t len = endpoint_to(src, &ss);
    /* IP_BIND_ADDRESS_NO_PORT is an IPPROTO_IP option that also applies to IPv6 sockets. */
    if (set_int(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1) < 0) return close_keep_errno(fd);
    ((struct sockaddr_in *)&ss)->sin_port = 0; /* same offset in sockaddr_in6 */
    *syscall = "bind";
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) return close_keep_errno(fd);
  }
  socklen_t len = endpoint_to(dst, &ss);
  *syscall = "connect";
  if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) return close_keep_errno(fd);
  return fd;
}

static const uint8_t V4MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An IPv4-mapped IPv6 address (a dual-stack peer) becomes plain IPv4: family 4 everywhere after. */
void endpoint_from(struct endpoint *ep, const struct sockaddr_storage *ss) {
  memset(ep, 0, sizeof *ep);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    ep->family = 4;
    memcpy(ep->addr, &a->sin_addr, 4);
    ep->port = ntohs(a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    ep->port = ntohs(a->sin6_port);
    if (memcmp(&a->sin6_addr, V4MAPPED, 12) == 0) {
      ep->family = 4;
      memcpy(ep->addr, (const uint8_t *)&a->sin6_addr + 12, 4);
    } else {
      ep->family = 6;
      memcpy(ep->addr, &a->sin6_addr, 16);
    }
  }
}

socklen_t endpoint_to(const struct endpoint *ep, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (ep->family == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(ep->port);
    memcpy(&a->sin_addr, ep->addr, 4);
    return sizeof *a;
  }
  struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons(ep->port);
  memcpy(&a->sin6_addr, ep->addr, 16);
  return sizeof *a;
}

/* Loopback, the unspecified address, or an address of one of this namespace's interfaces. Called
 * only for connections to the listen port (the loop guard), so getifaddrs stays off the hot path. */
bool endpoint_is_local(const struct endpoint *ep) {
  static const uint8_t zero[16], v6loop[16] = {[15] = 1};
  if (ep->family == 4 && (ep->addr[0] == 127 || memcmp(ep->addr, zero, 4) == 0)) return true;
  if (ep->family == 6 && (memcmp(ep->addr, zero, 16) == 0 || memcmp(ep->addr, v6loop, 16) == 0)) return true;
  struct ifaddrs *list, *i;
  if (getifaddrs(&list) < 0) return false;
  bool found = false;
  for (i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    struct endpoint a;
    endpoint_from(&a, (const struct sockaddr_storage *)i->ifa_addr);
    found = a.family == ep->family && memcmp(a.addr, ep->addr, ep->family == 4 ? 4 : 16) == 0;
  }
  freeifaddrs(list);
  return found;
}

/* close() then sends RST instead of FIN: the peer learns the stream was cut, not completed. */
void set_linger0(int fd) {
  struct linger l = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}
