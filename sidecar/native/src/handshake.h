/*
 * What goes upstream before the relay starts (handshake.c): a PROXY protocol v1/v2 header that tells a
 * destination or an upstream proxy the client's address, and the client side of an HTTP CONNECT or
 * SOCKS5 handshake with an upstream proxy. Pure: the engine does the I/O (conn.c), this builds the
 * bytes to send and judges the bytes received. Allocated only for connections that need it.
 */
#ifndef TPFLEET_HANDSHAKE_H
#define TPFLEET_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

enum hs_result {
  HS_MORE = 0, /* send what is in out (if anything) and wait for more input */
  HS_DONE = 1, /* the tunnel is open; in[0..leftover) are the destination's first bytes */
  HS_FAIL = 2, /* refused (reason in why): the client is reset and the error counted */
};

struct handshake {
  uint8_t type; /* 0 none (a PROXY header only), UP_CONNECT, UP_SOCKS5 */
  uint8_t step;
  uint16_t out_len, out_off;
  uint16_t in_len, leftover;
  const char *why;
  char user[256], pass[256];
  uint8_t ulen, plen;
  struct endpoint target;
  char name[254]; /* the SNI or Host when one was seen: CONNECT and SOCKS5 ask for it by name */
  unsigned char out[1024];
  unsigned char in[1024];
};

/* Writes the PROXY protocol header (version 1 or 2) for src -> dst at out; returns its length. */
size_t proxy_header(int version, const struct endpoint *src, const struct endpoint *dst, unsigned char *out);
/* Starts a handshake: out holds the optional PROXY header and the first request. */
void hs_start(struct handshake *h, int type, int proxy_version, const struct endpoint *src, const struct endpoint *target,
              const char *name, const char *user, size_t ulen, const char *pass, size_t plen);
/* Judges in[0..in_len): HS_MORE (out may hold the next request), HS_DONE or HS_FAIL. */
int hs_input(struct handshake *h);

#endif
