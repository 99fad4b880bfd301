/** etcd: the cluster's store, a throwaway one on loopback. */
import * as path from 'path';
import type { Starting } from '../common';
import { httpGet, startProcess, waitFor } from '../process';

export async function addEtcd(s: Starting): Promise<void> {
  const { ports } = s;
  s.pids.etcd = startProcess(
    s.dir,
    'etcd',
    s.o.toolchain.bin.etcd,
    [
      '--name',
      'local',
      '--data-dir',
      path.join(s.dir, 'etcd'),
      '--listen-client-urls',
      `http://127.0.0.1:${ports.etcdClient}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${ports.etcdClient}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${ports.etcdPeer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${ports.etcdPeer}`,
      '--initial-cluster',
      `local=http://127.0.0.1:${ports.etcdPeer}`,
      // A throwaway store: no fsync (the other tests on this machine feel every disk flush).
      '--unsafe-no-fsync',
      '--log-level',
      'warn',
    ],
    s.lifetime,
  );
  s.save();
  await waitFor(
    'etcd',
    30_000,
    async () => (await httpGet(`http://127.0.0.1:${ports.etcdClient}/health`)).body.includes('"true"'),
    s.log('etcd'),
  );
}
