// Test PKI for the harness: a throwaway CA, the API server's serving certificate, client
// certificates (admin in system:masters, or any user/groups for RBAC tests) and the
// service-account signing key. openssl is run with argv arrays; subjects come from the harness
// itself, never from test input, and are still checked against a strict pattern.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
const NAME = /^[A-Za-z0-9:._-]+$/;

export interface Pem {
  cert: string;
  key: string;
}

export class TestPki {
  private serial = 1;
  /** `caName` is the CA's CN; two CAs of one cluster (client, front-proxy) need distinct subjects. */
  constructor(
    readonly dir: string,
    readonly caName = 'tpfleet-testenv-ca',
  ) {
    if (!NAME.test(caName)) throw new Error(`testenv: bad CA name ${caName}`);
  }

  get caCert(): string {
    return join(this.dir, 'ca.crt');
  }
  get caKey(): string {
    return join(this.dir, 'ca.key');
  }
  /** The service-account signing key pair (PKCS#8 private, SPKI public), made by init(). */
  get saKey(): string {
    return join(this.dir, 'sa.key');
  }
  get saPub(): string {
    return join(this.dir, 'sa.pub');
  }

  async init(): Promise<void> {
    await run('openssl', [
      'req',
      '-x509',
      ...EC,
      '-keyout',
      this.caKey,
      '-out',
      this.caCert,
      '-subj',
      `/CN=${this.caName}`,
      '-days',
      '3',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(this.dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(this.dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  }

  /** Signs a leaf certificate; `ext` are openssl x509 v3 extension lines. Returns file paths. */
  private async leaf(name: string, subject: string, ext: string[]): Promise<Pem> {
    const key = join(this.dir, `${name}.key`),
      csr = join(this.dir, `${name}.csr`),
      cert = join(this.dir, `${name}.crt`);
    const extFile = join(this.dir, `${name}.ext`);
    writeFileSync(extFile, `${ext.join('\n')}\n`);
    await run('openssl', ['req', ...EC, '-keyout', key, '-out', csr, '-subj', subject]);
    await run('openssl', [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      this.caCert,
      '-CAkey',
      this.caKey,
      '-set_serial',
      String(this.serial++),
      '-days',
      '3',
      '-out',
      cert,
      '-extfile',
      extFile,
    ]);
    return { cert, key };
  }

  /** The API server's certificate; `extraIps` are further addresses it is reached at. */
  serving(extraIps: string[] = []): Promise<Pem> {
    return this.server('apiserver', 'kube-apiserver', [
      'IP:127.0.0.1',
      'DNS:localhost',
      'DNS:kubernetes.default.svc',
      ...extraIps.map((ip) => `IP:${ip}`),
    ]);
  }

  /** A serving certificate for `cn`; `sans` are openssl entries such as `IP:10.0.0.1`, `DNS:x.svc`. */
  server(name: string, cn: string, sans: string[]): Promise<Pem> {
    for (const n of [name, cn]) if (!NAME.test(n)) throw new Error(`testenv: bad certificate name ${n}`);
    for (const s of sans)
      if (!/^(IP:[0-9a-fA-F.:]+|DNS:[A-Za-z0-9.-]+)$/.test(s)) throw new Error(`testenv: bad subjectAltName ${s}`);
    return this.leaf(name, `/CN=${cn}`, [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${sans.join(',')}`,
    ]);
  }

  /**
   * A certificate for both ends of a mutual-TLS link that uses one key pair on each side (KEDA's
   * operator and metrics server share their cert dir's tls.crt): serverAuth and clientAuth.
   */
  peer(name: string, cn: string, sans: string[]): Promise<Pem> {
    for (const n of [name, cn]) if (!NAME.test(n)) throw new Error(`testenv: bad certificate name ${n}`);
    for (const s of sans)
      if (!/^(IP:[0-9a-fA-F.:]+|DNS:[A-Za-z0-9.-]+)$/.test(s)) throw new Error(`testenv: bad subjectAltName ${s}`);
    return this.leaf(name, `/CN=${cn}`, [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth',
      `subjectAltName=${sans.join(',')}`,
    ]);
  }

  /** A client certificate for user `cn` in `groups` (O= entries are the user's groups). */
  client(cn: string, groups: string[] = []): Promise<Pem> {
    for (const n of [cn, ...groups]) if (!NAME.test(n)) throw new Error(`testenv: bad certificate name ${n}`);
    const subject = `${groups.map((g) => `/O=${g}`).join('')}/CN=${cn}`;
    return this.leaf(`user-${cn.replace(/:/g, '_')}`, subject, [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=clientAuth',
    ]);
  }

  read(path: string): string {
    return readFileSync(path, 'utf8');
  }
}
