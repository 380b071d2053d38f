#include <arpa/inet.h>
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "handshake.h"
#include "policy.h"

static const unsigned char V2_SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

size_t proxy_header(int version, const struct endpoint *src, const struct endpoint *dst, unsigned char *out) {
  bool v6 = src->family == 6;
  if (version == 1) {
    char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    inet_ntop(v6 ? AF_INET6 : AF_INET, src->addr, s, sizeof s);
    inet_ntop(v6 ? AF_INET6 : AF_INET, dst->addr, d, sizeof d);
    return (size_t)snprintf((char *)out, 108, "PROXY %s %s %s %u %u\r\n", v6 ? "TCP6" : "TCP4", s, d, src->port, dst->port);
  }
  size_t alen = v6 ? 36 : 12;
  memcpy(out, V2_SIG, 12);
  out[12] = 0x21;                /* version 2, command PROXY */
  out[13] = v6 ? 0x21 : 0x11;    /* AF_INET6 or AF_INET, STREAM */
  out[14] = 0, out[15] = (unsigned char)alen;
  size_t n = v6 ? 16 : 4;
  memcpy(out + 16, src->addr, n);
  memcpy(out + 16 + n, dst->addr, n);
  out[16 + 2 * n] = (unsigned char)(src->port >> 8), out[17 + 2 * n] = (unsigned char)src->port;
  out[18 + 2 * n] = (unsigned char)(dst->port >> 8), out[19 + 2 * n] = (unsigned char)dst->port;
  return 16 + alen;
}

static size_t base64(const unsigned char *in, size_t n, char *out) {
  static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[o++] = T[v >> 18 & 63], out[o++] = T[v >> 12 & 63];
    out[o++] = i + 1 < n ? T[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? T[v & 63] : '=';
  }
  out[o] = 0;
  return o;
}

/* host:port as CONNECT wants it: the name when one was seen, else the address ([v6]). */
static void authority(const struct handshake *h, char *out, size_t len) {
  char a[INET6_ADDRSTRLEN];
  if (h->name[0]) snprintf(out, len, "%s:%u", h->name, h->target.port);
  else {
    inet_ntop(h->target.family == 6 ? AF_INET6 : AF_INET, h->target.addr, a, sizeof a);
    snprintf(out, len, h->target.family == 6 ? "[%s]:%u" : "%s:%u", a, h->target.port);
  }
}

static void connect_request(struct handshake *h) {
  char auth[600] = "", where[300], cred[520];
  authority(h, where, sizeof where);
  if (h->ulen) {
    char pair[520];
    size_t n = (size_t)snprintf(pair, sizeof pair, "%.*s:%.*s", h->ulen, h->user, h->plen, h->pass);
    base64((const unsigned char *)pair, n, cred);
    snprintf(auth, sizeof auth, "Proxy-Authorization: Basic %s\r\n", cred);
  }
  h->out_len = (uint16_t)(h->out_len + (uint16_t)snprintf((char *)h->out + h->out_len, sizeof h->out - h->out_len,
                                                            "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", where, where, auth));
}

static void socks_connect(struct handshake *h) {
  unsigned char *o = h->out + h->out_len;
  size_t n = 0, nl = strlen(h->name);
  o[n++] = 5, o[n++] = 1, o[n++] = 0;
  if (nl) o[n++] = 3, o[n++] = (unsigned char)nl, memcpy(o + n, h->name, nl), n += nl;
  else if (h->target.family == 4) o[n++] = 1, memcpy(o + n, h->target.addr, 4), n += 4;
  else o[n++] = 4, memcpy(o + n, h->target.addr, 16), n += 16;
  o[n++] = (unsigned char)(h->target.port >> 8), o[n++] = (unsigned char)h->target.port;
  h->out_len = (uint16_t)(h->out_len + n);
}

void hs_start(struct handshake *h, int type, int proxy_version, const struct endpoint *src, const struct endpoint *target,
              const char *name, const char *user, size_t ulen, const char *pass, size_t plen) {
  memset(h, 0, offsetof(struct handshake, out));
  h->type = (uint8_t)type;
  h->target = *target;
  if (name) snprintf(h->name, sizeof h->name, "%s", name);
  h->ulen = (uint8_t)(ulen > 255 ? 255 : ulen), h->plen = (uint8_t)(plen > 255 ? 255 : plen);
  memcpy(h->user, user ? user : "", h->ulen);
  memcpy(h->pass, pass ? pass : "", h->plen);
  if (proxy_version) h->out_len = (uint16_t)proxy_header(proxy_version, src, target, h->out);
  if (type == UP_CONNECT) connect_request(h);
  if (type == UP_SOCKS5) {
    unsigned char *o = h->out + h->out_len;
    /* no authentication, and username/password (RFC 1929) when we have credentials */
    if (h->ulen) o[0] = 5, o[1] = 2, o[2] = 0, o[3] = 2, h->out_len = (uint16_t)(h->out_len + 4);
    else o[0] = 5, o[1] = 1, o[2] = 0, h->out_len = (uint16_t)(h->out_len + 3);
  }
}

static int fail(struct handshake *h, const char *why) {
  h->why = why;
  return HS_FAIL;
}

/* "HTTP/1.x 200 ...\r\n...\r\n\r\n": done when 2xx, anything after the blank line is tunnel data. */
static int connect_input(struct handshake *h) {
  unsigned char *end = NULL;
  for (size_t i = 0; i + 3 < h->in_len; i++)
    if (memcmp(h->in + i, "\r\n\r\n", 4) == 0) {
      end = h->in + i + 4;
      break;
    }
  if (!end) return h->in_len >= sizeof h->in ? fail(h, "upstream proxy: response header too long") : HS_MORE;
  if (h->in_len < 12 || memcmp(h->in, "HTTP/1.", 7) != 0) return fail(h, "upstream proxy: not an HTTP response");
  if (h->in[9] != '2') return fail(h, h->in[9] == '4' && h->in[10] == '0' && h->in[11] == '7' ? "upstream proxy: authentication required or refused (407)" : "upstream proxy: CONNECT refused");
  h->leftover = (uint16_t)(h->in_len - (size_t)(end - h->in));
  memmove(h->in, end, h->leftover);
  return HS_DONE;
}

/* Consumes n bytes of input. */
static void consume(struct handshake *h, size_t n) {
  memmove(h->in, h->in + n, h->in_len - n);
  h->in_len = (uint16_t)(h->in_len - n);
}

static int socks_input(struct handshake *h) {
  h->out_len = h->out_off = 0;
  if (h->step == 0) { /* method selection */
    if (h->in_len < 2) return HS_MORE;
    if (h->in[0] != 5) return fail(h, "upstream proxy: not SOCKS5");
    unsigned method = h->in[1];
    consume(h, 2);
    if (method == 0) return socks_connect(h), h->step = 2, HS_MORE;
    if (method != 2 || !h->ulen) return fail(h, "upstream proxy: no acceptable SOCKS5 authentication method");
    unsigned char *o = h->out;
    size_t n = 0;
    o[n++] = 1, o[n++] = h->ulen, memcpy(o + n, h->user, h->ulen), n += h->ulen;
    o[n++] = h->plen, memcpy(o + n, h->pass, h->plen), n += h->plen;
    h->out_len = (uint16_t)n, h->step = 1;
    return HS_MORE;
  }
  if (h->step == 1) { /* username/password status */
    if (h->in_len < 2) return HS_MORE;
    if (h->in[1] != 0) return fail(h, "upstream proxy: SOCKS5 username/password refused");
    consume(h, 2);
    return socks_connect(h), h->step = 2, HS_MORE;
  }
  /* the reply to CONNECT: VER REP RSV ATYP BND.ADDR BND.PORT */
  if (h->in_len < 5) return HS_MORE;
  if (h->in[0] != 5) return fail(h, "upstream proxy: not SOCKS5");
  if (h->in[1] != 0) return fail(h, "upstream proxy: SOCKS5 CONNECT refused");
  size_t alen = h->in[3] == 1 ? 4 : h->in[3] == 4 ? 16 : h->in[3] == 3 ? 1u + h->in[4] : 0;
  if (!alen) return fail(h, "upstream proxy: bad SOCKS5 reply");
  if (h->in_len < 4 + alen + 2) return HS_MORE;
  consume(h, 4 + alen + 2);
  h->leftover = h->in_len;
  return HS_DONE;
}

int hs_input(struct handshake *h) {
  if (h->type == UP_CONNECT) return connect_input(h);
  if (h->type == UP_SOCKS5) return socks_input(h);
  return HS_DONE;
}
