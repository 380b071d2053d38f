/*
 * Loading and looking up a compiled policy (policy.h). load() checks every length against the blob
 * before using it: a blob that does not add up is refused whole, the engine keeps the policy it had.
 */
#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define MAGIC 0x4c505054u /* "TPPL" little-endian */

struct cursor {
  const unsigned char *p, *end;
  bool bad;
};

static uint32_t u32(struct cursor *c) {
  if (c->bad || c->end - c->p < 4) return c->bad = true, 0;
  uint32_t v;
  memcpy(&v, c->p, 4);
  c->p += 4;
  return v;
}

static const unsigned char *take(struct cursor *c, size_t n) {
  if (c->bad || (size_t)(c->end - c->p) < n) return c->bad = true, NULL;
  const unsigned char *p = c->p;
  c->p += n;
  return p;
}

static bool intervals(struct cursor *c, struct interval_table *t, uint32_t keylen, uint32_t words) {
  t->keylen = keylen;
  t->count = u32(c);
  size_t entry = (keylen == 16 ? 16 : 8) + 8u * words; /* 4-byte keys are padded to 8 */
  if (t->count == 0 || t->count > 1u << 20) return false; /* the first entry always starts at 0 */
  t->entries = take(c, (size_t)t->count * entry);
  return t->entries != NULL;
}

static bool names(struct cursor *c, struct name_table *t, uint32_t words) {
  t->count = u32(c);
  if (t->count > 1u << 20) return false;
  t->entries = take(c, (size_t)t->count * (16 + 8u * words));
  return !c->bad;
}

static bool upstreams(struct cursor *c, struct policy *p) {
  p->nupstreams = u32(c);
  if (p->nupstreams > POLICY_MAX_UPSTREAMS) return false;
  for (uint32_t i = 0; i < p->nupstreams; i++) {
    const unsigned char *r = take(c, 40);
    if (!r) return false;
    struct upstream *u = &p->upstreams[i];
    uint32_t uo, ul, po, pl;
    u->type = r[0];
    u->addr.family = r[1];
    u->addr.port = (uint16_t)(r[2] | r[3] << 8);
    memcpy(u->addr.addr, r + 4, 16);
    memcpy(&u->connect_timeout_ms, r + 20, 4);
    memcpy(&uo, r + 24, 4), memcpy(&ul, r + 28, 4), memcpy(&po, r + 32, 4), memcpy(&pl, r + 36, 4);
    if ((u->type != UP_CONNECT && u->type != UP_SOCKS5) || (u->addr.family != 4 && u->addr.family != 6)) return false;
    if ((uint64_t)uo + ul > p->strings_len || (uint64_t)po + pl > p->strings_len || ul > 255 || pl > 255) return false;
    u->user = p->strings + uo, u->user_len = ul, u->pass = p->strings + po, u->pass_len = pl;
  }
  return true;
}

static bool rules(struct cursor *c, struct policy *p) {
  p->rules_mem = calloc(p->nrules ? p->nrules : 1, sizeof *p->rules_mem);
  if (!p->rules_mem) return false;
  for (uint32_t i = 0; i < p->nrules; i++) {
    const unsigned char *r = take(c, 24);
    if (!r) return false;
    struct policy_rule *x = &p->rules_mem[i];
    x->action = r[0], x->upstream = r[1], x->needs = r[2], x->proxy_protocol = r[3];
    memcpy(&x->rate_per_s, r + 4, 4), memcpy(&x->burst, r + 8, 4), memcpy(&x->max_open, r + 12, 4);
    memcpy(&x->key, r + 16, 8);
    if (x->action > PA_FORWARD || x->needs > (PN_SNI | PN_HOST) || x->proxy_protocol > 2) return false;
  }
  p->rules = p->rules_mem;
  return true;
}

static bool parse(struct policy *p, const char **why) {
  struct cursor c = {.p = p->blob, .end = p->blob + p->strings_len}; /* strings_len holds the blob length here */
  if (u32(&c) != MAGIC || u32(&c) != 1) return *why = "not a tpfleet policy (magic/version)", false;
  p->nrules = u32(&c), p->words = u32(&c), p->default_action = u32(&c);
  uint32_t nup_hint = u32(&c);
  (void)nup_hint;
  p->peek_max = u32(&c), p->peek_timeout_ms = u32(&c);
  if (c.bad || p->nrules > POLICY_MAX_RULES || p->words != (p->nrules + 63) / 64 + (p->nrules == 0) || p->default_action > PA_DENY ||
      p->peek_max == 0 || p->peek_max > PEEK_MAX)
    return *why = "header out of range", false;
  if (!rules(&c, p)) return *why = "rules", false;
  p->nameless = (const uint64_t *)take(&c, 8u * p->words);
  if (!p->nameless) return *why = "nameless set", false;
  if (!intervals(&c, &p->dst4, 4, p->words) || !intervals(&c, &p->dst6, 16, p->words) ||
      !intervals(&c, &p->src4, 4, p->words) || !intervals(&c, &p->src6, 16, p->words) ||
      !intervals(&c, &p->ports, 4, p->words))
    return *why = "interval tables", false;
  if (!names(&c, &p->sni, p->words) || !names(&c, &p->sni_wild, p->words) || !names(&c, &p->host, p->words) ||
      !names(&c, &p->host_wild, p->words))
    return *why = "name tables", false;
  p->strings_len = u32(&c);
  p->strings = (const char *)take(&c, p->strings_len);
  if (!p->strings) return *why = "strings", false;
  if (!upstreams(&c, p)) return *why = "upstreams", false;
  for (uint32_t i = 0; i < p->nrules; i++)
    if (p->rules[i].action == PA_FORWARD && p->rules[i].upstream >= p->nupstreams) return *why = "a rule names no upstream", false;
  if (c.p != c.end) return *why = "trailing bytes", false;
  return true;
}

struct policy *policy_load(const void *blob, size_t len, const char **why) {
  struct policy *p = calloc(1, sizeof *p);
  if (!p || !(p->blob = malloc(len ? len : 1))) {
    free(p);
    return *why = "out of memory", NULL;
  }
  memcpy(p->blob, blob, len);
  p->strings_len = (uint32_t)len;
  if (len > 64u << 20 || !parse(p, why)) {
    policy_free(p);
    return NULL;
  }
  return p;
}

void policy_free(struct policy *p) {
  if (!p) return;
  free(p->rules_mem);
  free(p->blob);
  free(p);
}

/* The bits of the last entry whose key is <= key (entry 0 starts at the lowest key). */
static const uint64_t *lookup(const struct interval_table *t, const unsigned char *key, uint32_t words) {
  size_t entry = (t->keylen == 16 ? 16 : 8) + 8u * words;
  uint32_t lo = 0, hi = t->count - 1;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo + 1) / 2;
    if (memcmp(t->entries + (size_t)mid * entry, key, t->keylen) <= 0) lo = mid;
    else hi = mid - 1;
  }
  return (const uint64_t *)(t->entries + (size_t)lo * entry + (t->keylen == 16 ? 16 : 8));
}

void policy_match_addr(const struct policy *p, const struct endpoint *src, const struct endpoint *dst, uint64_t *out) {
  unsigned char port[4] = {0, 0, (unsigned char)(dst->port >> 8), (unsigned char)dst->port};
  bool v6 = dst->family == 6;
  const uint64_t *d = lookup(v6 ? &p->dst6 : &p->dst4, dst->addr, p->words);
  const uint64_t *s = lookup(v6 ? &p->src6 : &p->src4, src->addr, p->words);
  const uint64_t *o = lookup(&p->ports, port, p->words);
  for (uint32_t w = 0; w < p->words; w++) out[w] = d[w] & s[w] & o[w];
}

/* FNV-1a 64, as policy.ts hashes names. */
static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return h;
}

static const uint64_t *find_name(const struct policy *p, const struct name_table *t, const char *name, size_t n) {
  size_t entry = 16 + 8u * p->words;
  uint64_t h = fnv1a(name, n);
  uint32_t lo = 0, hi = t->count;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    uint64_t mh;
    memcpy(&mh, t->entries + (size_t)mid * entry, 8);
    if (mh < h) lo = mid + 1;
    else hi = mid;
  }
  for (; lo < t->count; lo++) { /* equal hashes sit together; compare the names themselves */
    const unsigned char *e = t->entries + (size_t)lo * entry;
    uint64_t mh;
    uint32_t off, len;
    memcpy(&mh, e, 8), memcpy(&off, e + 8, 4), memcpy(&len, e + 12, 4);
    if (mh != h) break;
    if (len == n && (uint64_t)off + len <= p->strings_len && memcmp(p->strings + off, name, n) == 0) return (const uint64_t *)(e + 16);
  }
  return NULL;
}

/* Keeps the candidates that need no name, plus those whose names match. "*.example.com" matches one
 * label below example.com: a.example.com, not example.com, not a.b.example.com. */
void policy_narrow_by_name(const struct policy *p, int kind, const char *name, uint64_t *cand) {
  uint64_t keep[POLICY_MAX_WORDS];
  memcpy(keep, p->nameless, 8u * p->words);
  if (name) {
    size_t n = strlen(name);
    const struct name_table *exact = kind == PN_SNI ? &p->sni : &p->host;
    const struct name_table *wild = kind == PN_SNI ? &p->sni_wild : &p->host_wild;
    const uint64_t *a = find_name(p, exact, name, n), *b = NULL;
    const char *dot = memchr(name, '.', n);
    if (dot && dot[1]) b = find_name(p, wild, dot + 1, n - (size_t)(dot + 1 - name));
    for (uint32_t w = 0; w < p->words; w++) keep[w] |= (a ? a[w] : 0) | (b ? b[w] : 0);
  }
  for (uint32_t w = 0; w < p->words; w++) cand[w] &= keep[w];
}

int policy_first(const struct policy *p, const uint64_t *bits) {
  for (uint32_t w = 0; w < p->words; w++)
    if (bits[w]) return (int)(w * 64 + (uint32_t)__builtin_ctzll(bits[w]));
  return -1;
}
