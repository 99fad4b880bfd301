/**
 * The kubelet of the real node: cgroupfs (no systemd here) under a cgroup root of its own,
 * containerd's CRI socket, the cluster DNS, its API on the node address for the API
 * server's client certificate only, every folder inside the cluster's.
 * @see https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { startProcess } from '../process';
import { Containerd } from './containerd';
import { NODE_NETWORK } from './network';
import { KubeletClientPki } from './pki';

export interface KubeletOptions {
  readonly dir: string;
  readonly binary: string;
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly port: number;
  readonly containerd: Containerd;
  readonly pki: KubeletClientPki;
  /** cgroup (relative to each hierarchy) every pod is created under. */
  readonly cgroupRoot: string;
  readonly lifetimeSeconds: number;
}

export function kubeletConfig(o: KubeletOptions): object {
  return {
    kind: 'KubeletConfiguration',
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    address: NODE_NETWORK.nodeIp,
    port: o.port,
    readOnlyPort: 0,
    healthzPort: 0,
    // Only the API server (its client certificate) may use the kubelet's API.
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: o.pki.caFile } },
    authorization: { mode: 'AlwaysAllow' },
    containerRuntimeEndpoint: `unix://${o.containerd.socket}`,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: o.cgroupRoot,
    // This machine's cgroups are v1 (with a v2 hierarchy beside): kubelet 1.34 still runs on
    // them when told so (1.35 refuses by default).
    failCgroupV1: false,
    failSwapOn: false,
    clusterDNS: [NODE_NETWORK.dnsIp],
    clusterDomain: 'cluster.local',
    // The machine's resolver is not the pods' business: no upstream, no search domains.
    resolvConf: path.join(o.dir, 'kubelet', 'resolv.conf'),
    podLogsDir: path.join(o.dir, 'pod-logs'),
    // A test machine's disk is not the node's to guard: never evict for it.
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
    maxPods: 50,
    // Status within seconds, so a test sees a deletion or a readiness change soon.
    nodeStatusUpdateFrequency: '5s',
    syncFrequency: '10s',
    fileCheckFrequency: '10s',
    shutdownGracePeriod: '0s',
  };
}

export function startKubelet(o: KubeletOptions, pids: Record<string, number>): void {
  const dir = path.join(o.dir, 'kubelet');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'resolv.conf'), '# the node suite: pods resolve through the cluster DNS only\n');
  for (const h of ['cpu', 'cpuacct', 'cpuset', 'memory', 'pids', 'blkio', 'devices', 'freezer', 'systemd']) {
    const cg = path.join('/sys/fs/cgroup', h, o.cgroupRoot);
    if (fs.existsSync(path.dirname(cg))) fs.mkdirSync(cg, { recursive: true });
  }
  const config = path.join(dir, 'config.json');
  fs.writeFileSync(config, `${JSON.stringify(kubeletConfig(o), null, 2)}\n`);
  pids.kubelet = startProcess(
    o.dir,
    'kubelet',
    o.binary,
    [
      '--config',
      config,
      '--kubeconfig',
      o.kubeconfig,
      '--root-dir',
      path.join(dir, 'root'),
      '--cert-dir',
      path.join(dir, 'pki'),
      '--hostname-override',
      o.nodeName,
      '--node-ip',
      NODE_NETWORK.nodeIp,
      '--v',
      '1',
    ],
    o.lifetimeSeconds,
  );
}

/**
 * The kubelet's own iptables chains (KUBE-FIREWALL, which drops non-loopback traffic to
 * 127.0.0.0/8, its KUBE-KUBELET-CANARY chains and the KUBE-IPTABLES-HINT mark); nothing
 * else removes them.
 */
export function cleanupKubelet(): void {
  for (const bin of ['iptables', 'ip6tables']) {
    const ipt = (args: string[]) => spawnSync(bin, ['-w', '5', ...args], { timeout: 30_000 });
    for (const chain of ['INPUT', 'OUTPUT']) ipt(['-t', 'filter', '-D', chain, '-j', 'KUBE-FIREWALL']);
    for (const table of ['filter', 'nat', 'mangle']) {
      for (const chain of ['KUBE-FIREWALL', 'KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT']) {
        ipt(['-t', table, '-F', chain]);
        ipt(['-t', table, '-X', chain]);
      }
    }
  }
}
