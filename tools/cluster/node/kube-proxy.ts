/**
 * kube-proxy of the real node, in nftables mode (its own `kube-proxy` tables, gone with
 * `--cleanup`). NodePorts answer on the node's address only: nftables mode never serves
 * them on loopback, and --nodeport-addresses keeps them off the machine's own interfaces,
 * so no port another test uses on this machine is captured.
 */
import { spawnSync } from 'child_process';
import { startProcess } from '../process';
import { NODE_NETWORK } from './network';

export interface KubeProxyOptions {
  readonly dir: string;
  readonly binary: string;
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly metricsPort: number;
  readonly healthzPort: number;
  readonly lifetimeSeconds: number;
}

export function startKubeProxy(o: KubeProxyOptions, pids: Record<string, number>): void {
  pids.kubeProxy = startProcess(
    o.dir,
    'kube-proxy',
    o.binary,
    [
      '--kubeconfig',
      o.kubeconfig,
      '--hostname-override',
      o.nodeName,
      '--proxy-mode',
      'nftables',
      '--cluster-cidr',
      NODE_NETWORK.podCidr,
      '--nodeport-addresses',
      `${NODE_NETWORK.nodeIp}/32`,
      '--metrics-bind-address',
      `127.0.0.1:${o.metricsPort}`,
      '--healthz-bind-address',
      `127.0.0.1:${o.healthzPort}`,
      // Leave the machine's conntrack settings alone (0: do not change).
      '--conntrack-max-per-core',
      '0',
      '--conntrack-tcp-timeout-established',
      '0',
      '--conntrack-tcp-timeout-close-wait',
      '0',
      '--v',
      '1',
    ],
    o.lifetimeSeconds,
  );
}

/** Removes every rule kube-proxy made (its nftables tables, and iptables chains if any). */
export function cleanupKubeProxy(binary: string): void {
  spawnSync(binary, ['--cleanup', '--proxy-mode', 'nftables'], { timeout: 60_000 });
}
