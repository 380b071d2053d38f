/*
 * Pure parsers of a connection's first bytes (no sockets, no allocation): the server name a TLS
 * ClientHello asks for (SNI), and the Host of a plaintext HTTP/1.x request. Both work on whatever
 * prefix of the stream has arrived and say NEED_MORE until they can answer, so a ClientHello split over
 * several segments (one byte each, in the tests) is handled by asking again when more bytes come.
 *
 * With ECH (encrypted client hello) only the outer ClientHello is visible; its SNI is what we read.
 * Nothing is rewritten: the bytes stay on the socket (MSG_PEEK) and go upstream unchanged.
 */
#include <string.h>

#include "sniff.h"

static unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static unsigned be24(const unsigned char *p) { return (unsigned)p[0] << 16 | (unsigned)p[1] << 8 | p[2]; }

/* A hostname as both parsers hand it on: lower case, no trailing dot; 1..253 characters of
 * [a-z0-9.-_]. Anything else (spaces, unicode, control bytes) is not a name we could match. */
static int take_name(const unsigned char *src, size_t len, char *out, size_t outlen) {
  if (len > 0 && src[len - 1] == '.') len--;
  if (len == 0 || len > 253 || len >= outlen) return SNIFF_NO_NAME;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = src[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) return SNIFF_NO_NAME;
    out[i] = (char)c;
  }
  out[len] = 0;
  return SNIFF_FOUND;
}

/* The server_name extension (type 0) of a ClientHello body's extensions block. */
static int sni_in_extensions(const unsigned char *p, size_t len, char *out, size_t outlen) {
  while (len >= 4) {
    unsigned type = be16(p), elen = be16(p + 2);
    p += 4, len -= 4;
    if (elen > len) return SNIFF_NOT;
    if (type == 0) {
      /* server_name_list: u16 length, then entries of (u8 type, u16 length, name) */
      if (elen < 2 || be16(p) + 2u > elen) return SNIFF_NOT;
      const unsigned char *e = p + 2, *end = p + 2 + be16(p);
      while (e + 3 <= end) {
        unsigned nlen = be16(e + 1);
        if (e + 3 + nlen > end) return SNIFF_NOT;
        if (e[0] == 0) return take_name(e + 3, nlen, out, outlen); /* host_name */
        e += 3 + nlen;
      }
      return SNIFF_NO_NAME;
    }
    p += elen, len -= elen;
  }
  return SNIFF_NO_NAME;
}

int sniff_tls_sni(const unsigned char *buf, size_t len, char *out, size_t outlen) {
  /* Record header: content type 22 (handshake), version 3.x, u16 length. */
  if (len < 1) return SNIFF_NEED_MORE;
  if (buf[0] != 22) return SNIFF_NOT;
  if (len < 5) return SNIFF_NEED_MORE;
  if (buf[1] != 3) return SNIFF_NOT;
  size_t record = be16(buf + 3);
  /* Handshake header: type 1 (ClientHello), u24 length. A ClientHello may span several records;
   * we read the first record only, which holds the SNI for every client seen in practice
   * (it comes early and first records reach 16 KiB). */
  if (len < 9) return SNIFF_NEED_MORE;
  if (buf[5] != 1) return SNIFF_NOT;
  size_t hello = be24(buf + 6);
  size_t avail = len - 9, inrecord = record >= 4 ? record - 4 : 0;
  size_t want = hello < inrecord ? hello : inrecord;
  if (avail < want) return SNIFF_NEED_MORE;
  const unsigned char *p = buf + 9;
  size_t n = want;
  /* legacy_version(2) random(32) session_id(u8+) cipher_suites(u16+) compression(u8+) extensions(u16+) */
  if (n < 35) return SNIFF_NOT;
  size_t off = 34;
  off += 1 + p[off];
  if (off + 2 > n) return SNIFF_NOT;
  off += 2 + be16(p + off);
  if (off + 1 > n) return SNIFF_NOT;
  off += 1 + p[off];
  if (off + 2 > n) return SNIFF_NO_NAME; /* no extensions at all */
  size_t extlen = be16(p + off);
  off += 2;
  if (off + extlen > n) return SNIFF_NOT;
  return sni_in_extensions(p + off, extlen, out, outlen);
}

/* HTTP/1.x: a request line "METHOD SP target SP HTTP/1.x", then headers up to the empty line. */
int sniff_http_host(const unsigned char *buf, size_t len, char *out, size_t outlen) {
  size_t i = 0;
  /* The method: upper-case letters then a space (GET, POST, PUT, CONNECT, ...). */
  while (i < len && i < 16 && buf[i] >= 'A' && buf[i] <= 'Z') i++;
  if (i == len) return SNIFF_NEED_MORE;
  if (i == 0 || i >= 16 || buf[i] != ' ') return SNIFF_NOT;
  const unsigned char *end = NULL;
  for (size_t j = i; j + 3 < len; j++) {
    if (buf[j] == '\r' && buf[j + 1] == '\n' && buf[j + 2] == '\r' && buf[j + 3] == '\n') {
      end = buf + j + 2;
      break;
    }
  }
  if (!end) return SNIFF_NEED_MORE; /* the caller gives up at its peek limit or timeout */
  const unsigned char *line = memchr(buf, '\n', (size_t)(end - buf));
  if (!line) return SNIFF_NOT;
  /* The request line ends in " HTTP/1.x", then CRLF (or a bare LF, which servers accept). */
  const unsigned char *le = line > buf && line[-1] == '\r' ? line - 1 : line;
  if (le - buf < 9 || memcmp(le - 9, " HTTP/1.", 8) != 0) return SNIFF_NOT;
  for (const unsigned char *h = line + 1; h < end;) {
    const unsigned char *nl = memchr(h, '\n', (size_t)(end - h));
    if (!nl) break;
    if (nl - h > 5 && (h[0] | 0x20) == 'h' && (h[1] | 0x20) == 'o' && (h[2] | 0x20) == 's' && (h[3] | 0x20) == 't' && h[4] == ':') {
      const unsigned char *v = h + 5, *ve = nl;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      /* Host may carry a port; an IPv6 literal ([::1]:80) is not a name. */
      const unsigned char *colon = memchr(v, ':', (size_t)(ve - v));
      if (colon) ve = colon;
      return take_name(v, (size_t)(ve - v), out, outlen);
    }
    h = nl + 1;
  }
  return SNIFF_NO_NAME;
}
