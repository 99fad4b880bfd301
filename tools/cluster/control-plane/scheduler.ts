/** kube-scheduler. */
import type { Starting } from '../common';
import { startProcess } from '../process';

export function addScheduler(s: Starting): void {
  s.pids.scheduler = startProcess(
    s.dir,
    'kube-scheduler',
    s.o.toolchain.bin['kube-scheduler'],
    [
      '--kubeconfig',
      s.kubeconfig,
      '--bind-address',
      '127.0.0.1',
      '--secure-port',
      String(s.ports.scheduler),
      '--leader-elect=false',
      '--authentication-skip-lookup',
      '--profiling=false',
      '--v',
      '1',
    ],
    s.lifetime,
  );
}
