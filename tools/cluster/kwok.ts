/** The fake node: kwok keeps a Node and its pods Ready without a container runtime (the API suite). */
import * as fs from 'fs';
import * as path from 'path';
import { kubectl, NODE_NAME, nodeIsReady, Starting } from './common';
import { startProcess, waitFor } from './process';

const KWOK_ANNOTATION = 'kwok.x-k8s.io/node';

export async function addKwok(s: Starting): Promise<void> {
  const t = s.o.toolchain;
  s.pids.kwok = startProcess(
    s.dir,
    'kwok',
    t.bin.kwok,
    [
      '--kubeconfig',
      s.kubeconfig,
      '--manage-all-nodes=false',
      '--manage-nodes-with-annotation-selector',
      `${KWOK_ANNOTATION}=fake`,
      '--server-address',
      `127.0.0.1:${s.ports.kwok}`,
      // Heartbeat through a Lease like a kubelet (without it kwok rewrites the node status
      // every 20-45 s, close to the controller-manager's grace period).
      '--node-lease-duration-seconds',
      '40',
    ],
    s.lifetime,
  );
  s.save();
  const node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: NODE_NAME,
      annotations: { [KWOK_ANNOTATION]: 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: { 'kubernetes.io/hostname': NODE_NAME, 'kubernetes.io/os': 'linux', type: 'kwok' },
    },
    status: { allocatable: { cpu: '32', memory: '128Gi', pods: '110' }, capacity: { cpu: '32', memory: '128Gi', pods: '110' } },
  };
  fs.writeFileSync(path.join(s.dir, 'node.json'), JSON.stringify(node));
  await waitFor(
    'the fake node (kubectl create)',
    30_000,
    async () => kubectl(t, s.kubeconfig, ['apply', '-f', path.join(s.dir, 'node.json')]).status === 0,
  );
  await waitFor(`node ${NODE_NAME} Ready (kwok)`, 60_000, async () => nodeIsReady(s, NODE_NAME), s.log('kwok'));
}
