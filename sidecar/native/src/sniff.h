/* Parsers of a connection's first bytes (sniff.c): pure functions over whatever prefix has arrived. */
#ifndef TPFLEET_SNIFF_H
#define TPFLEET_SNIFF_H

#include <stddef.h>

enum sniff_result {
  SNIFF_NEED_MORE = 0, /* a prefix of the protocol: ask again with more bytes */
  SNIFF_FOUND = 1,     /* out holds the name: lower case, no trailing dot, NUL-terminated */
  SNIFF_NO_NAME = 2,   /* the protocol, but without a (usable) name */
  SNIFF_NOT = 3,       /* not this protocol (or malformed) */
};

/* The SNI host_name of a TLS ClientHello (first record). outlen >= 254. */
int sniff_tls_sni(const unsigned char *buf, size_t len, char *out, size_t outlen);
/* The Host header of an HTTP/1.x request, without its port. outlen >= 254. */
int sniff_http_host(const unsigned char *buf, size_t len, char *out, size_t outlen);

#endif
