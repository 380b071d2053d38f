// Egress policy (spec.policy): ordered rules that allow, deny or forward intercepted connections by
// destination, port, source, TLS SNI and HTTP Host; named upstream proxies (HTTP CONNECT, SOCKS5) with
// credentials from a Secret; per-source limits; PROXY protocol; an audit log. One source for the CRD
// (PolicySpec: plain JSON types, CEL), the NodeConfig section the sidecar reads (PolicyConfig: CIDRs
// parsed, durations in ms, defaults filled) and the docs (descriptions). docs/egress.md explains it.
import { z } from 'zod';
import { boundedDuration, boundedDurationMs, cel, PortRange } from './fields.ts';
import { parseCidr, type Cidr } from './net.ts';

export const POLICY_ACTIONS = ['Allow', 'Deny', 'Forward'] as const;
export const UPSTREAM_TYPES = ['HTTPConnect', 'SOCKS5'] as const;
export const PROXY_PROTOCOLS = ['v1', 'v2'] as const;
/** The engine's limits (sidecar/native/src/policy.h): rules a table holds, upstreams, peek bytes. */
export const MAX_RULES = 2048;
export const MAX_UPSTREAMS = 16;
export const PEEK_BYTES = { min: 512, max: 16384, default: 4096 } as const;

export const POLICY_DEFAULTS = {
  defaultAction: 'Allow',
  peek: { timeout: '1s', maxBytes: PEEK_BYTES.default },
  audit: { enabled: false, maxLinesPerSecond: 100 },
  upstream: { connectTimeout: '5s' },
} as const;

/** A DNS-1123 label: rule and upstream names (metric label values, audit fields). */
const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
// Every string carries its maxLength: the API server's CEL cost estimate assumes the longest string
// the schema allows, and without one the upstream-reference rule below exceeded its budget 100x.
const objectName = z.string().max(63).regex(NAME, 'must be a DNS label: lower case letters, digits and -, at most 63');

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])';
/**
 * An IPv4 address with an optional /0-32, or an IPv6-shaped text with an optional /0-128. A pattern,
 * not the CEL rule interception's CIDRs use (api/fields.ts cidr): with 2048 rules of 1024 entries the
 * API server estimated that rule at 23x its per-expression budget, and a pattern costs nothing. What
 * only the parser sees (an IPv6 address that does not parse, host bits set) is refused by the
 * operator as InvalidSpec naming the entry (PolicyConfig parses every CIDR with api/net.ts).
 */
export const POLICY_CIDR = new RegExp(
  `^(${OCTET}(\\.${OCTET}){3}(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F]{0,4}:[0-9a-fA-F:.]{1,41}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$`,
);
const cidr = z
  .string()
  .max(49)
  .regex(POLICY_CIDR, 'must be an IPv4 or IPv6 address or CIDR')
  .meta({ description: 'IPv4 or IPv6 address, or CIDR with host bits zero.' });

/**
 * A host name to match exactly, or "*." and a name: exactly one more label in front (*.example.com
 * matches a.example.com, not example.com and not a.b.example.com). Lower case ASCII only: names
 * arrive lower-cased (TLS and HTTP names are case-insensitive); unicode names are written in their
 * punycode (xn--) form, as clients send them. Labels of at most 63 characters (RFC 1035), 253 in all.
 */
export const NAME_PATTERN = /^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const namePattern = z
  .string()
  .max(253)
  .regex(NAME_PATTERN, 'must be a lower-case host name, or *. and a host name (one label wildcard)');

const bounded = (max: number) => z.number().int().min(1).max(max);

const MatchSpec = z
  .object({
    destinations: z
      .array(cidr)
      .max(1024)
      .optional()
      .meta({ description: 'Original destinations (CIDRs); omitted: any.' }),
    ports: z.array(PortRange).max(64).optional().meta({ description: 'Destination ports and ranges; omitted: any.' }),
    sources: z.array(cidr).max(1024).optional().meta({ description: 'Client addresses (CIDRs); omitted: any.' }),
    serverNames: z.array(namePattern).max(1024).optional().meta({
      description:
        'TLS server names (SNI, read from the ClientHello without terminating TLS; with ECH the outer name); omitted: any.',
    }),
    hosts: z.array(namePattern).max(1024).optional().meta({
      description: 'HTTP Host of plaintext HTTP/1.x requests; omitted: any. With serverNames, either may match.',
    }),
  })
  .strict()
  .meta({ description: 'What a connection must match: every criterion given (each list: any of its entries).' });

const LimitsSpec = z
  .object({
    connectionsPerSecond: bounded(100_000)
      .optional()
      .meta({ description: 'New connections per second per client address (token bucket).' }),
    burst: bounded(100_000).optional().meta({ description: 'Bucket size; default connectionsPerSecond.' }),
    openConnections: bounded(1_000_000).optional().meta({ description: 'Open connections per client address.' }),
  })
  .strict()
  .meta({ description: 'Beyond these the client is reset at once and counted (result "limited").' });

const ruleShape = {
  name: objectName.meta({ description: 'Unique name: the audit log and the metrics name the rule by it.' }),
  match: MatchSpec.optional(),
  action: z.enum(POLICY_ACTIONS).meta({
    description: 'Allow: to the original destination. Deny: reset. Forward: through the named upstream proxy.',
  }),
  upstream: objectName.optional().meta({ description: 'The upstream (spec.policy.upstreams) of a Forward rule.' }),
  limits: LimitsSpec.optional(),
  proxyProtocol: z.enum(PROXY_PROTOCOLS).optional().meta({
    description:
      "Send a PROXY protocol header with the client's address first (for destinations or upstreams that want it when keepClientIp is off).",
  }),
};
const RuleSpec = z
  .object(ruleShape)
  .strict()
  .refine((r) => (r.action === 'Forward') === (r.upstream !== undefined), {
    message: 'Forward rules name an upstream, and only they do',
    path: ['upstream'],
  })
  .meta(
    cel({
      rule: "(self.action == 'Forward') == has(self.upstream)",
      message: 'Forward rules name an upstream, and only they do',
      fieldPath: '.upstream',
    }),
  );

const UpstreamSpec = z
  .object({
    name: objectName.meta({ description: 'Unique name; Forward rules name the upstream by it.' }),
    type: z.enum(UPSTREAM_TYPES).meta({
      description: 'HTTPConnect: an HTTP proxy, CONNECT host:port. SOCKS5: a SOCKS5 server (RFC 1928).',
    }),
    address: z
      .string()
      .max(260)
      .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, 'must be host:port, or [IPv6]:port')
      .meta({ description: 'host:port of the proxy; a host name is resolved by each node.' }),
    connectTimeout: boundedDuration('upstreamConnect', 'Connect plus handshake. Default 5s.').optional(),
    credentialsSecret: z
      .object({
        name: z
          .string()
          .max(253)
          .regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'must be a Secret name')
          .meta({ description: 'Name of the Secret (same namespace as the TransparentProxy).' }),
      })
      .strict()
      .optional()
      .meta({
        description:
          'A Secret in this namespace with keys username and password (Basic auth for HTTPConnect, RFC 1929 for SOCKS5), mounted on the nodes; a rotated Secret applies without a restart.',
      }),
  })
  .strict();

/** CEL: rule r names no upstream, or one spec.policy.upstreams defines. */
const KNOWN_UPSTREAM = '!has(r.upstream) || (has(self.upstreams) && self.upstreams.exists(u, u.name == r.upstream))';

export const PolicySpec = z
  .object({
    defaultAction: z
      .enum(['Allow', 'Deny'])
      .optional()
      .meta({ description: 'For connections no rule matches. Default Allow.' }),
    rules: z
      .array(RuleSpec)
      .max(MAX_RULES)
      .optional()
      .meta({
        description: 'Ordered: the first rule that matches decides.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    upstreams: z
      .array(UpstreamSpec)
      .max(MAX_UPSTREAMS)
      .optional()
      .meta({
        description: 'Named upstream proxies that Forward rules send connections through.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    peek: z
      .object({
        timeout: boundedDuration(
          'peek',
          'How long a connection waits for its first bytes when a rule needs its SNI or Host. Default 1s.',
        ).optional(),
        maxBytes: z
          .number()
          .int()
          .min(PEEK_BYTES.min)
          .max(PEEK_BYTES.max)
          .optional()
          .meta({ description: 'Default 4096.' }),
      })
      .strict()
      .optional()
      .meta({
        description: 'Reading the first bytes (TLS ClientHello, HTTP request) for rules on serverNames or hosts.',
      }),
    audit: z
      .object({
        enabled: z
          .boolean()
          .optional()
          .meta({ description: 'One JSON line per connection when it ends. Default false.' }),
        maxLinesPerSecond: bounded(10_000)
          .optional()
          .meta({ description: 'Cap per node; the rest are counted, not written. Default 100.' }),
      })
      .strict()
      .optional()
      .meta({ description: 'The per-connection audit log of each node (its own logger, rate-capped).' }),
  })
  .strict()
  .superRefine((p, ctx) => {
    const names = new Set((p.upstreams ?? []).map((u) => u.name));
    p.rules?.forEach((r, i) => {
      if (r.upstream && !names.has(r.upstream)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'upstream'], message: `no upstream named ${r.upstream}` });
      }
    });
  })
  .meta({
    description: 'Egress policy: allow, deny or forward by destination, TLS SNI and HTTP Host (docs/egress.md).',
    ...cel({
      rule: `!has(self.rules) || self.rules.all(r, ${KNOWN_UPSTREAM})`,
      message: 'a rule names an upstream that spec.policy.upstreams does not define',
      // No messageExpression naming the rule: the API server estimated one (a filter over the rules)
      // at more than 100x its cost budget and refused the CRD.
      fieldPath: '.rules',
    }),
  });
export type PolicySpec = z.output<typeof PolicySpec>;

// --- the NodeConfig section: what the sidecar reads --------------------------------------------

const parsedCidr = z.string().transform((text, ctx): Cidr => {
  const c = parseCidr(text);
  if (typeof c === 'string') {
    ctx.addIssue({ code: 'custom', message: c });
    return z.NEVER;
  }
  return c;
});
export const PolicyConfig = z
  .object({
    defaultAction: z.enum(['Allow', 'Deny']).default(POLICY_DEFAULTS.defaultAction),
    rules: z
      .array(
        z
          .object({
            ...ruleShape,
            match: MatchSpec.extend({
              destinations: z.array(parsedCidr).optional(),
              sources: z.array(parsedCidr).optional(),
            }).default({}),
          })
          .strict(),
      )
      .max(MAX_RULES)
      .default([]),
    upstreams: z
      .array(
        UpstreamSpec.extend({
          connectTimeout: boundedDurationMs('upstreamConnect').prefault(POLICY_DEFAULTS.upstream.connectTimeout),
        }),
      )
      .max(MAX_UPSTREAMS)
      .default([]),
    peek: z
      .object({
        timeout: boundedDurationMs('peek').prefault(POLICY_DEFAULTS.peek.timeout),
        maxBytes: z.number().int().min(PEEK_BYTES.min).max(PEEK_BYTES.max).default(PEEK_BYTES.default),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        enabled: z.boolean().default(POLICY_DEFAULTS.audit.enabled),
        maxLinesPerSecond: bounded(10_000).default(POLICY_DEFAULTS.audit.maxLinesPerSecond),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((p, ctx) => {
    const upstreams = new Set<string>();
    p.upstreams.forEach((u, i) => {
      if (upstreams.has(u.name))
        ctx.addIssue({ code: 'custom', path: ['upstreams', i, 'name'], message: `duplicate upstream name ${u.name}` });
      upstreams.add(u.name);
    });
    const seen = new Set<string>();
    p.rules.forEach((r, i) => {
      if (seen.has(r.name))
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name ${r.name}` });
      seen.add(r.name);
      if ((r.action === 'Forward') !== (r.upstream !== undefined)) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'upstream'],
          message: 'Forward rules name an upstream, and only they do',
        });
      }
      if (r.upstream && !p.upstreams.some((u) => u.name === r.upstream)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'upstream'], message: `no upstream named ${r.upstream}` });
      }
    });
  });
export type PolicyConfig = z.output<typeof PolicyConfig>;

/**
 * Where a node finds an upstream's Secret: the operator mounts it at CREDENTIALS_DIR/<secret>/
 * (files username and password; render/daemonset.ts). Not under /etc/tpfleet: that is the
 * ConfigMap's read-only mount, and the runtime cannot create a mount point inside a read-only mount.
 */
export const CREDENTIALS_DIR = '/etc/tpfleet-credentials';
/** The keys an upstream's Secret must hold (each file under CREDENTIALS_DIR/<secret>/). */
export const CREDENTIAL_KEYS = ['username', 'password'] as const;
/** RFC 1929 carries each in one length byte; Basic auth takes no ':' in the user name (RFC 7617). */
export const CREDENTIAL_MAX_BYTES = 255;
