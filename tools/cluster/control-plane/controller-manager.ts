/** kube-controller-manager: ServiceAccounts, ReplicaSets, EndpointSlices; the node's pod range for a real node. */
import * as path from 'path';
import type { Starting } from '../common';
import { NODE_NETWORK } from '../node/network';
import { startProcess } from '../process';

export function addControllerManager(s: Starting): void {
  s.pids.controllerManager = startProcess(
    s.dir,
    'kube-controller-manager',
    s.o.toolchain.bin['kube-controller-manager'],
    [
      '--kubeconfig',
      s.kubeconfig,
      '--bind-address',
      '127.0.0.1',
      '--secure-port',
      String(s.ports.controllerManager),
      '--leader-elect=false',
      '--service-account-private-key-file',
      path.join(s.dir, 'pki', 'sa.key'),
      '--root-ca-file',
      s.caFile,
      '--use-service-account-credentials=false',
      '--authentication-skip-lookup',
      '--profiling=false',
      '--v',
      '1',
      ...(s.o.kind === 'real'
        ? // The node's pod range, as a cloud's IPAM would give it (kube-router reads it).
          [
            '--allocate-node-cidrs',
            '--cluster-cidr',
            NODE_NETWORK.podCidr,
            '--node-cidr-mask-size',
            '24',
            '--service-cluster-ip-range',
            NODE_NETWORK.serviceCidr,
          ]
        : // The node is fake and the machine may be busy: never declare it NotReady (that marks
          // every pod not ready and a rollout never finishes) over a late heartbeat.
          ['--node-monitor-grace-period', '10m']),
    ],
    s.lifetime,
  );
}
