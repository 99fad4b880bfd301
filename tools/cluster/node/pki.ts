/**
 * The one certificate pair the real node needs beyond the API server's self-signed
 * serving certificate: the API server's client certificate for the kubelet (logs, exec,
 * port-forward), signed by a CA the kubelet trusts, so the kubelet's API answers no one
 * else. Made with the openssl CLI.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export interface KubeletClientPki {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

function openssl(args: readonly string[]): void {
  const r = spawnSync('openssl', [...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.error || r.status !== 0)
    throw new Error(`cluster: openssl ${args[0]} failed: ${(r.stderr || String(r.error)).trim()}; fix: install openssl`);
}

export function kubeletClientPki(dir: string): KubeletClientPki {
  const pki = path.join(dir, 'pki');
  fs.mkdirSync(pki, { recursive: true });
  const f = (name: string): string => path.join(pki, name);
  openssl([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=ws-node-kubelet-client-ca',
    '-keyout',
    f('kubelet-ca.key'),
    '-out',
    f('kubelet-ca.crt'),
  ]);
  openssl([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/O=system:masters/CN=kube-apiserver-kubelet-client',
    '-keyout',
    f('apiserver-kubelet-client.key'),
    '-out',
    f('apiserver-kubelet-client.csr'),
  ]);
  openssl([
    'x509',
    '-req',
    '-days',
    '2',
    '-in',
    f('apiserver-kubelet-client.csr'),
    '-CA',
    f('kubelet-ca.crt'),
    '-CAkey',
    f('kubelet-ca.key'),
    '-CAcreateserial',
    '-out',
    f('apiserver-kubelet-client.crt'),
  ]);
  for (const k of ['kubelet-ca.key', 'apiserver-kubelet-client.key']) fs.chmodSync(f(k), 0o600);
  return { caFile: f('kubelet-ca.crt'), certFile: f('apiserver-kubelet-client.crt'), keyFile: f('apiserver-kubelet-client.key') };
}
