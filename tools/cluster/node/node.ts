/** The real node: containerd (with the images), kubelet, kube-proxy, kube-router and CoreDNS on its own bridge; and taking it all down again. */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ClusterState, kubectl, nodeIsReady, POD_CGROUP_ROOT, REAL_NODE_NAME, Starting, writeKubeconfig } from '../common';
import { alive, httpGet, waitFor } from '../process';
import { Containerd, CRI_NAMESPACE, runtimePids, startContainerd } from './containerd';
import { corednsManifests } from './coredns';
import { cleanupKubelet, startKubelet } from './kubelet';
import { cleanupKubeProxy, startKubeProxy } from './kube-proxy';
import { cleanupKubeRouter, startKubeRouter } from './kube-router';
import * as network from './network';

/** What a real node has set up, for stopCluster to undo. */
export interface RealNodeParts {
  network?: network.NetworkState;
  containerd?: Containerd;
}

/** The real node: containerd (with the images), kubelet, kube-proxy, kube-router, CoreDNS. */
export async function addRealNode(s: Starting, real: RealNodeParts): Promise<void> {
  if (!s.o.images) throw new Error('cluster: a real node needs its images (tools/cluster/images.ts findImages)');
  const say = s.o.progress ?? (() => undefined);
  say('containerd: starting, importing the images');
  real.containerd = await startContainerd(s.dir, network.writeCniConfig(s.dir), s.o.images, s.lifetime, s.pids);
  s.save();
  say('kubelet, kube-proxy: starting');
  await addKubeletAndProxy(s, real.containerd);
  say('kube-router: starting');
  await addKubeRouter(s);
  say('CoreDNS: deploying');
  await addCoredns(s, s.o.images.images.coredns.ref);
}

/** The kubelet and kube-proxy, each with its own identity; returns once the node is Ready. */
async function addKubeletAndProxy(s: Starting, containerd: Containerd): Promise<void> {
  const t = s.o.toolchain;
  const nodeKubeconfig = path.join(s.dir, 'kubelet.kubeconfig');
  writeKubeconfig(nodeKubeconfig, s.server, s.caFile, `system:node:${REAL_NODE_NAME}`, s.tokens.node);
  const proxyKubeconfig = path.join(s.dir, 'kube-proxy.kubeconfig');
  writeKubeconfig(proxyKubeconfig, s.server, s.caFile, 'system:kube-proxy', s.tokens.proxy);
  startKubelet(
    {
      dir: s.dir,
      binary: t.bin.kubelet,
      nodeName: REAL_NODE_NAME,
      kubeconfig: nodeKubeconfig,
      port: s.ports.kubelet,
      containerd,
      pki: s.kubeletPki!,
      cgroupRoot: POD_CGROUP_ROOT,
      lifetimeSeconds: s.lifetime,
    },
    s.pids,
  );
  startKubeProxy(
    {
      dir: s.dir,
      binary: t.bin['kube-proxy'],
      nodeName: REAL_NODE_NAME,
      kubeconfig: proxyKubeconfig,
      metricsPort: s.ports.kubeProxyMetrics,
      healthzPort: s.ports.kubeProxyHealthz,
      lifetimeSeconds: s.lifetime,
    },
    s.pids,
  );
  s.save();
  await waitFor(`node ${REAL_NODE_NAME} Ready (kubelet)`, 120_000, async () => nodeIsReady(s, REAL_NODE_NAME), s.log('kubelet'));
}

/**
 * kube-router's NetworkPolicy firewall. It looks its node up when it starts (after the
 * kubelet registered it) and watches pods, namespaces and policies of the whole cluster:
 * the admin's kubeconfig.
 */
async function addKubeRouter(s: Starting): Promise<void> {
  startKubeRouter(
    {
      dir: s.dir,
      binary: s.o.toolchain.bin['kube-router'],
      nodeName: REAL_NODE_NAME,
      kubeconfig: s.kubeconfig,
      healthPort: s.ports.kubeRouterHealth,
      lifetimeSeconds: s.lifetime,
    },
    s.pids,
  );
  s.save();
  await waitFor(
    'kube-router',
    30_000,
    async () => (await httpGet(`http://127.0.0.1:${s.ports.kubeRouterHealth}/healthz`)).status === 200,
    s.log('kube-router'),
  );
}

/** CoreDNS as a Deployment in kube-system; returns once it is available. */
async function addCoredns(s: Starting, image: string): Promise<void> {
  const t = s.o.toolchain;
  await waitFor(
    'ServiceAccount kube-system/default (controller-manager)',
    60_000,
    async () => kubectl(t, s.kubeconfig, ['-n', 'kube-system', 'get', 'serviceaccount', 'default']).status === 0,
  );
  const apply = kubectl(t, s.kubeconfig, ['apply', '-f', '-'], 60_000, JSON.stringify(corednsManifests(image)));
  if (apply.status !== 0) throw new Error(`cluster: CoreDNS objects refused: ${apply.stderr}`);
  await waitFor(
    'CoreDNS (kube-system/coredns available)',
    120_000,
    async () =>
      kubectl(t, s.kubeconfig, ['-n', 'kube-system', 'get', 'deployment', 'coredns', '-o', 'jsonpath={.status.availableReplicas}'])
        .stdout === '1',
    s.log('kubelet'),
  );
}

/** Mount points under `dir` (pod volumes, containerd's snapshots, network namespaces), deepest first. */
function mountsUnder(dirs: readonly string[]): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m) => m && dirs.some((d) => m === d || m.startsWith(`${d}/`)))
    .sort((a, b) => b.length - a.length);
}

/** Stops the real node's leftovers: every pod and shim process (by pid), mounts, rules, the bridge. */
export async function stopRealNode(state: ClusterState): Promise<void> {
  const r = state.real!;
  // Every process in the pods' cgroups and the runtime's (containerd's shims), by pid.
  const pids = new Set<number>();
  for (const h of ['pids']) {
    const root = path.join('/sys/fs/cgroup', h, POD_CGROUP_ROOT);
    if (!fs.existsSync(root)) continue;
    for (const f of fs.readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((x) => x.endsWith('cgroup.procs'))) {
      for (const p of fs.readFileSync(path.join(root, f), 'utf8').split('\n').filter(Boolean)) pids.add(Number(p));
    }
  }
  if (r.containerd) for (const p of runtimePids(r.containerd)) pids.add(p);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && [...pids].some(alive)) await new Promise((res) => setTimeout(res, 200));
  // containerd's network namespaces are bind mounts under /run/netns (cni-<uuid>), ours by name.
  const ownNetns = listNetns().filter((n) => n.startsWith('cni-') && !r.netnsBefore.includes(n));
  for (const m of [...mountsUnder([state.dir]), ...ownNetns.map((n) => `/run/netns/${n}`)]) {
    spawnSync('umount', ['-l', m], { timeout: 30_000 });
  }
  for (const n of ownNetns) fs.rmSync(`/run/netns/${n}`, { force: true });
  cleanupKubeProxy(r.kubeProxy);
  cleanupKubeRouter();
  cleanupKubelet();
  // runc's state of the CRI namespace (containerd keeps it in /run/containerd/runc/<ns>).
  fs.rmSync(`/run/containerd/runc/${CRI_NAMESPACE}`, { recursive: true, force: true });
  network.down(r.network);
  // The cgroups, leaves first.
  const roots = fs.readdirSync('/sys/fs/cgroup').map((h) => path.join('/sys/fs/cgroup', h, POD_CGROUP_ROOT));
  if (r.containerd) roots.push(r.containerd.cgroup);
  for (const root of roots.filter((x) => fs.existsSync(x))) {
    const dirs = fs
      .readdirSync(root, { recursive: true, withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => path.join(d.parentPath, d.name))
      .sort((a, b) => b.length - a.length);
    for (const d of [...dirs, root]) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* still busy */
      }
    }
  }
}

export function listNetns(): string[] {
  return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
}
