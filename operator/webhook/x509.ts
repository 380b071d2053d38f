// The few X.509 certificates the admission webhook needs (a CA and its serving certificate), built
// as DER by hand: Node can make keys and sign but not write certificates, the operator image has no
// openssl, and a general PKI library would be the largest dependency for ~100 lines of ASN.1.
// ECDSA P-256 with SHA-256 only. Names and SANs come from operator flags, never from a request.
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { bigIntToIp, ipToBigInt } from '../../api/net.ts';

const tlv = (tag: number, ...body: Buffer[]): Buffer => {
  const b = Buffer.concat(body);
  const n = b.length;
  const len =
    n < 0x80
      ? [n]
      : n < 0x100
        ? [0x81, n]
        : n < 0x10000
          ? [0x82, n >> 8, n & 0xff]
          : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), b]);
};
const seq = (...b: Buffer[]) => tlv(0x30, ...b);
const set = (...b: Buffer[]) => tlv(0x31, ...b);
const explicit = (n: number, ...b: Buffer[]) => tlv(0xa0 + n, ...b);
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.from([unused]), b);
const TRUE = tlv(0x01, Buffer.from([0xff]));

function oid(text: string): Buffer {
  const [a = 0, b = 0, ...rest] = text.split('.').map(Number);
  const out = [40 * a + b];
  for (const v of rest) {
    const enc = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) enc.unshift((x & 0x7f) | 0x80);
    out.push(...enc);
  }
  return tlv(0x06, Buffer.from(out));
}

/**
 * A non-negative INTEGER from big-endian bytes, in the fewest octets DER allows (X.690 8.3.2):
 * leading zeros dropped, one 0 kept or added before a set high bit. Parsers refuse any other
 * form (OpenSSL: "illegal padding"), and a random serial starts with a zero byte 1 time in 256.
 */
export function derInteger(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && ((b[i + 1] ?? 0) & 0x80) === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v.length ? v : Buffer.from([0]));
}
const integer = derInteger;

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 4.1.2.5). */
function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14); // YYYYMMDDHHMMSS
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

const name = (cn: string) => seq(set(seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn, 'utf8')))));
const ext = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [TRUE] : []), octets(value));

function san(hosts: string[]): Buffer {
  return seq(
    ...hosts.map((h) => {
      if (!isIPv4(h) && !isIPv6(h)) return tlv(0x82, Buffer.from(h, 'ascii'));
      const family = isIPv4(h) ? 'IPv4' : 'IPv6';
      const hex = ipToBigInt(h)
        .toString(16)
        .padStart(family === 'IPv4' ? 8 : 32, '0');
      return tlv(0x87, Buffer.from(hex, 'hex'));
    }),
  );
}

export interface KeyPair {
  cert: string;
  key: string;
}

export interface CertRequest {
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  /** Present: a serving certificate for these DNS names / IPs, signed by `issuer`. Absent: a self-signed CA. */
  hosts?: string[];
  issuer?: KeyPair;
}

const HOST = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Issues a certificate with a fresh P-256 key; both PEM. */
export function issue(r: CertRequest): KeyPair {
  for (const h of r.hosts ?? []) if (!isIPv4(h) && !isIPv6(h) && !HOST.test(h)) throw new Error(`bad host name ${h}`);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const signer = r.issuer ? createPrivateKey(r.issuer.key) : privateKey;
  const issuerName = r.issuer ? Buffer.from(new X509Certificate(r.issuer.cert).raw) : undefined;
  const alg = seq(oid('1.2.840.10045.4.3.2'));
  const serial = randomBytes(16);
  serial[0] = (serial[0] ?? 0) & 0x7f;
  const extensions = r.hosts
    ? [
        ext('2.5.29.19', true, seq()),
        ext('2.5.29.15', true, bits(Buffer.from([0x80]), 7)), // digitalSignature
        ext('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'))), // serverAuth
        ext('2.5.29.17', false, san(r.hosts)),
      ]
    : [ext('2.5.29.19', true, seq(TRUE)), ext('2.5.29.15', true, bits(Buffer.from([0x06]), 1))]; // keyCertSign, cRLSign
  const tbs = seq(
    explicit(0, tlv(0x02, Buffer.from([2]))),
    integer(serial),
    alg,
    issuerName ? subjectOf(issuerName) : name(r.commonName),
    seq(time(r.notBefore), time(r.notAfter)),
    name(r.commonName),
    publicKey.export({ type: 'spki', format: 'der' }),
    explicit(3, seq(...extensions)),
  );
  const signature = sign('sha256', tbs, signer); // DER-encoded ECDSA signature, as X.509 wants it
  const der = seq(tbs, alg, bits(signature));
  return {
    cert: `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`.replace(
      /\n\n/g,
      '\n',
    ),
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/** The subject Name of a DER certificate (so a leaf's issuer is the CA's subject byte for byte). */
function subjectOf(der: Buffer): Buffer {
  // Certificate → tbsCertificate → [version, serial, sigAlg, issuer, validity, subject, ...]
  const fields = children(children(der)[0] ?? Buffer.alloc(0));
  const subject = fields[5];
  if (!subject) throw new Error('issuer certificate has no subject');
  return subject;
}

/** The TLV elements inside a constructed TLV. */
function children(t: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let [off, end] = header(t, 0);
  end = off + end;
  while (off < end) {
    const [hdr, len] = header(t, off);
    out.push(t.subarray(off, hdr + len));
    off = hdr + len;
  }
  return out;
}
/** [offset of the content, content length] of the TLV at `at`. */
function header(t: Buffer, at: number): [number, number] {
  const first = t[at + 1] ?? 0;
  if (first < 0x80) return [at + 2, first];
  const n = first & 0x7f;
  let len = 0;
  for (let k = 0; k < n; k++) len = len * 256 + (t[at + 2 + k] ?? 0);
  return [at + 2 + n, len];
}

/** Every certificate in a PEM bundle, in order. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** Whether `cert` was signed by `ca` and names every host. */
export function servesFor(cert: string, ca: string, hosts: string[]): boolean {
  try {
    const x = new X509Certificate(cert);
    if (!x.verify(new X509Certificate(ca).publicKey)) return false;
    return hosts.every((h) => (isIPv4(h) || isIPv6(h) ? x.checkIP(canonicalIp(h)) : x.checkHost(h)) !== undefined);
  } catch {
    return false;
  }
}
const canonicalIp = (h: string) => bigIntToIp(ipToBigInt(h), isIPv4(h) ? 'IPv4' : 'IPv6');
