/** kube-apiserver: token authentication, RBAC (and the Node authorizer for a real node), a self-signed certificate. */
import { generateKeyPairSync } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { REAL_NODE_NAME, Starting } from '../common';
import { NODE_NETWORK } from '../node/network';
import { kubeletClientPki } from '../node/pki';
import { httpGet, startProcess, waitFor } from '../process';

export async function addApiserver(s: Starting): Promise<void> {
  const pki = path.join(s.dir, 'pki');
  const real = s.o.kind === 'real';
  fs.writeFileSync(
    path.join(pki, 'tokens.csv'),
    [
      `${s.tokens.admin},admin,admin-uid,system:masters`,
      // The real node's own identities: the Node authorizer and NodeRestriction apply to
      // the kubelet; kube-proxy has the built-in system:node-proxier role.
      `${s.tokens.node},system:node:${REAL_NODE_NAME},node-uid,system:nodes`,
      `${s.tokens.proxy},system:kube-proxy,kube-proxy-uid`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(path.join(pki, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  fs.writeFileSync(path.join(pki, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
  const kubeletClient = real ? kubeletClientPki(s.dir) : undefined;
  s.kubeletPki = kubeletClient;
  s.pids.apiserver = startProcess(
    s.dir,
    'kube-apiserver',
    s.o.toolchain.bin['kube-apiserver'],
    [
      '--etcd-servers',
      `http://127.0.0.1:${s.ports.etcdClient}`,
      '--bind-address',
      s.address,
      '--advertise-address',
      s.address,
      '--secure-port',
      String(s.ports.apiserver),
      // Self-signed serving certificate for the address (and the kubernetes Service), generated into the cert dir.
      '--cert-dir',
      pki,
      '--token-auth-file',
      path.join(pki, 'tokens.csv'),
      '--authorization-mode',
      real ? 'Node,RBAC' : 'RBAC',
      ...(real ? ['--enable-admission-plugins', 'NodeRestriction'] : []),
      '--service-account-issuer',
      'https://kubernetes.default.svc.cluster.local',
      '--service-account-key-file',
      path.join(pki, 'sa.pub'),
      '--service-account-signing-key-file',
      path.join(pki, 'sa.key'),
      '--service-cluster-ip-range',
      NODE_NETWORK.serviceCidr,
      // On loopback the "kubernetes" Service's endpoints would be 127.0.0.1, which Endpoints
      // refuse; the real node's pods reach the API server at the node's address.
      ...(real
        ? [
            '--kubelet-client-certificate',
            kubeletClient!.certFile,
            '--kubelet-client-key',
            kubeletClient!.keyFile,
            '--kubelet-preferred-address-types',
            'InternalIP',
          ]
        : ['--endpoint-reconciler-type', 'none']),
      '--enable-priority-and-fairness=false',
      '--profiling=false',
      '--v',
      '1',
    ],
    s.lifetime,
  );
  s.save();
  await waitFor(
    'kube-apiserver',
    90_000,
    async () => (await httpGet(`${s.server}/readyz`, s.tokens.admin)).status === 200,
    s.log('kube-apiserver'),
  );
}
