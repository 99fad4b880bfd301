/**
 * A local Kubernetes cluster for the stack, one of two kinds:
 *
 * - `real` (the default of `npm run cluster:up`, and the node suite): etcd,
 *   kube-apiserver, kube-controller-manager, kube-scheduler and one real node:
 *   containerd + runc, kubelet, kube-proxy (nftables), kube-router's NetworkPolicy
 *   firewall and CoreDNS, all on a bridge of its own (node/network.ts: 10.244.0.1), with
 *   the images of tools/cluster/images.ts. Root only, one per machine.
 * - `kwok` (the API suite, __tests__/cluster/apply.test.ts): the same control plane on
 *   127.0.0.1 and a kwok fake node, so every profile rolls out without a container
 *   runtime (also those whose images exist nowhere here).
 *
 * Every process is started under `timeout(1)`, so none outlives its lifetime even if
 * nobody stops it. Ports: `basePort` .. `basePort + 9` (default 23400; this project's
 * cluster tests own 23000-23999, other tests use 21000-21999).
 */
import { spawnSync } from 'child_process';
import { generateKeyPairSync, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { BuiltImages } from './images';
import { Containerd, CRI_NAMESPACE, runtimePids, startContainerd } from './node/containerd';
import { corednsManifests } from './node/coredns';
import { startKubelet } from './node/kubelet';
import { cleanupKubeProxy, startKubeProxy } from './node/kube-proxy';
import { cleanupKubeRouter, startKubeRouter } from './node/kube-router';
import * as network from './node/network';
import { NODE_NETWORK } from './node/network';
import { KubeletClientPki, kubeletClientPki } from './node/pki';
import { alive, httpGet, portFree, startProcess, stopGroups, waitFor } from './process';
import { InstalledToolchain } from './toolchain';

export const DEFAULT_BASE_PORT = 23400;
/** Where `npm run cluster:up` keeps its cluster (data, certificates, logs, kubeconfig). */
export const DEFAULT_DIR = process.env.WS_CLUSTER_DIR || '/tmp/ws-envoy-cluster';
/** The range this project's cluster tests may use. */
export const PORT_RANGE = { min: 23000, max: 23999 } as const;
export const CONTEXT = 'ws-local';
/** The fake node's name and the annotation kwok manages it by. */
export const NODE_NAME = 'kwok-node-0';
/** The real node's name. */
export const REAL_NODE_NAME = 'ws-node-0';
const KWOK_ANNOTATION = 'kwok.x-k8s.io/node';
/** The cgroup (in every v1 hierarchy) the real node's pods live under. */
const POD_CGROUP_ROOT = '/ws-node-pods';

export type NodeKind = 'kwok' | 'real';

export interface ClusterPorts {
  readonly etcdClient: number;
  readonly etcdPeer: number;
  readonly apiserver: number;
  readonly controllerManager: number;
  readonly scheduler: number;
  readonly kwok: number;
  readonly kubelet: number;
  readonly kubeProxyMetrics: number;
  readonly kubeProxyHealthz: number;
  readonly kubeRouterHealth: number;
}

export function clusterPorts(base: number): ClusterPorts {
  if (!Number.isInteger(base) || base < PORT_RANGE.min || base + 9 > PORT_RANGE.max) {
    throw new Error(
      `cluster: basePort must be an integer with basePort..basePort+9 inside ${PORT_RANGE.min}-${PORT_RANGE.max}, got ${base}`,
    );
  }
  return {
    etcdClient: base,
    etcdPeer: base + 1,
    apiserver: base + 2,
    controllerManager: base + 3,
    scheduler: base + 4,
    kwok: base + 5,
    kubelet: base + 6,
    kubeProxyMetrics: base + 7,
    kubeProxyHealthz: base + 8,
    kubeRouterHealth: base + 9,
  };
}

export interface ClusterState {
  readonly dir: string;
  readonly kind: NodeKind;
  /** The node's name (kwok's fake one, or the real one). */
  readonly nodeName: string;
  readonly kubeconfig: string;
  readonly ports: ClusterPorts;
  /** https://<address>:<port>, its self-signed CA (PEM file) and the admin's bearer token. */
  readonly server: string;
  readonly caFile: string;
  readonly token: string;
  /** Process ids we started (each a `timeout` wrapping the component), in start order. */
  readonly pids: { readonly [component: string]: number };
  /** The real node only: what to undo at stop. */
  readonly real?: {
    readonly network: network.NetworkState;
    /** Network namespaces (/run/netns) that existed before the node: the others are its pods'. */
    readonly netnsBefore: readonly string[];
    readonly containerd?: Containerd;
    readonly kubeProxy: string;
  };
}

export const STATE_FILE = 'cluster.json';

export interface StartOptions {
  readonly toolchain: InstalledToolchain;
  /** Working folder (data, certificates, logs, kubeconfig); created, must not hold a running cluster. */
  readonly dir: string;
  /** @default DEFAULT_BASE_PORT */
  readonly basePort?: number;
  /** Every process is killed after this long even if nobody stops it. @default 3600 */
  readonly lifetimeSeconds?: number;
  /** @default 'kwok' */
  readonly kind?: NodeKind;
  /** The node's images (tools/cluster/images.ts), for `real`. */
  readonly images?: BuiltImages;
  /** Progress lines (each step of a real node takes seconds). @default - none */
  readonly progress?: (line: string) => void;
}

export function kubectl(
  t: InstalledToolchain,
  kubeconfig: string,
  args: readonly string[],
  timeoutMs = 60_000,
  input?: string,
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(t.bin.kubectl, ['--kubeconfig', kubeconfig, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
    input,
  });
  return { status: r.status ?? 124, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** What the component functions share while a cluster starts. */
interface Starting {
  readonly o: StartOptions;
  readonly dir: string;
  readonly ports: ClusterPorts;
  readonly lifetime: number;
  readonly address: string;
  readonly pids: Record<string, number>;
  readonly tokens: { readonly admin: string; readonly node: string; readonly proxy: string };
  readonly log: (name: string) => string;
  readonly save: () => void;
  /** The API server's client certificate for the kubelet (real node). */
  kubeletPki?: KubeletClientPki;
}

async function addEtcd(s: Starting): Promise<void> {
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

async function addApiserver(s: Starting, server: string): Promise<void> {
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
    async () => (await httpGet(`${server}/readyz`, s.tokens.admin)).status === 200,
    s.log('kube-apiserver'),
  );
}

/** A kubeconfig for one token (the admin's, the node's, kube-proxy's). */
function writeKubeconfig(file: string, server: string, caFile: string, user: string, token: string): void {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': CONTEXT,
    clusters: [{ name: CONTEXT, cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: CONTEXT, context: { cluster: CONTEXT, user } }],
  };
  fs.writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

function addControllerManager(s: Starting, kubeconfig: string, caFile: string): void {
  s.pids.controllerManager = startProcess(
    s.dir,
    'kube-controller-manager',
    s.o.toolchain.bin['kube-controller-manager'],
    [
      '--kubeconfig',
      kubeconfig,
      '--bind-address',
      '127.0.0.1',
      '--secure-port',
      String(s.ports.controllerManager),
      '--leader-elect=false',
      '--service-account-private-key-file',
      path.join(s.dir, 'pki', 'sa.key'),
      '--root-ca-file',
      caFile,
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

function addScheduler(s: Starting, kubeconfig: string): void {
  s.pids.scheduler = startProcess(
    s.dir,
    'kube-scheduler',
    s.o.toolchain.bin['kube-scheduler'],
    [
      '--kubeconfig',
      kubeconfig,
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

async function addKwok(s: Starting, kubeconfig: string): Promise<void> {
  const t = s.o.toolchain;
  s.pids.kwok = startProcess(
    s.dir,
    'kwok',
    t.bin.kwok,
    [
      '--kubeconfig',
      kubeconfig,
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
    async () => kubectl(t, kubeconfig, ['apply', '-f', path.join(s.dir, 'node.json')]).status === 0,
  );
}

/** The real node: containerd (with the images), kubelet, kube-proxy, kube-router, CoreDNS. */
async function addRealNode(
  s: Starting,
  server: string,
  caFile: string,
  adminKubeconfig: string,
  real: { containerd?: Containerd },
): Promise<void> {
  const t = s.o.toolchain;
  if (!s.o.images) throw new Error('cluster: a real node needs its images (tools/cluster/images.ts findImages)');
  const say = s.o.progress ?? (() => undefined);
  const nodeKubeconfig = path.join(s.dir, 'kubelet.kubeconfig');
  writeKubeconfig(nodeKubeconfig, server, caFile, `system:node:${REAL_NODE_NAME}`, s.tokens.node);
  const proxyKubeconfig = path.join(s.dir, 'kube-proxy.kubeconfig');
  writeKubeconfig(proxyKubeconfig, server, caFile, 'system:kube-proxy', s.tokens.proxy);

  say('containerd: starting, importing the images');
  const cni = network.writeCniConfig(s.dir);
  real.containerd = await startContainerd(s.dir, cni, s.o.images, s.lifetime, s.pids);
  s.save();
  say('kubelet, kube-proxy: starting');
  startKubelet(
    {
      dir: s.dir,
      binary: t.bin.kubelet,
      nodeName: REAL_NODE_NAME,
      kubeconfig: nodeKubeconfig,
      port: s.ports.kubelet,
      containerd: real.containerd,
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
  await waitFor(
    `node ${REAL_NODE_NAME} Ready (kubelet)`,
    120_000,
    async () =>
      kubectl(t, adminKubeconfig, ['get', 'node', REAL_NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'])
        .stdout === 'True',
    s.log('kubelet'),
  );
  say('kube-router: starting');
  // kube-router looks its node up when it starts: after the kubelet registered it.
  // It watches pods, namespaces and policies of the whole cluster: the admin's kubeconfig.
  startKubeRouter(
    {
      dir: s.dir,
      binary: t.bin['kube-router'],
      nodeName: REAL_NODE_NAME,
      kubeconfig: adminKubeconfig,
      healthPort: s.ports.kubeRouterHealth,
      lifetimeSeconds: s.lifetime,
    },
    s.pids,
  );
  s.save();
  say('CoreDNS: deploying');
  await waitFor(
    'ServiceAccount kube-system/default (controller-manager)',
    60_000,
    async () => kubectl(t, adminKubeconfig, ['-n', 'kube-system', 'get', 'serviceaccount', 'default']).status === 0,
  );
  const apply = kubectl(t, adminKubeconfig, ['apply', '-f', '-'], 60_000, JSON.stringify(corednsManifests(s.o.images.images.coredns.ref)));
  if (apply.status !== 0) throw new Error(`cluster: CoreDNS objects refused: ${apply.stderr}`);
  await waitFor(
    'CoreDNS (kube-system/coredns available)',
    120_000,
    async () =>
      kubectl(t, adminKubeconfig, ['-n', 'kube-system', 'get', 'deployment', 'coredns', '-o', 'jsonpath={.status.availableReplicas}'])
        .stdout === '1',
    s.log('kubelet'),
  );
  await waitFor(
    'kube-router',
    30_000,
    async () => (await httpGet(`http://127.0.0.1:${s.ports.kubeRouterHealth}/healthz`)).status === 200,
    s.log('kube-router'),
  );
}

/** Brings the cluster up and returns once its node is Ready. Stops what it started if any step fails. */
export async function startCluster(o: StartOptions): Promise<ClusterState> {
  const kind = o.kind ?? 'kwok';
  const ports = clusterPorts(o.basePort ?? DEFAULT_BASE_PORT);
  const lifetime = o.lifetimeSeconds ?? 3600;
  const dir = path.resolve(o.dir);
  if (fs.existsSync(path.join(dir, STATE_FILE))) {
    throw new Error(`cluster: ${dir} already holds a cluster (${STATE_FILE}); stop it first (npm run cluster:down)`);
  }
  if (kind === 'real' && process.getuid?.() !== 0) {
    throw new Error(
      'cluster: a real node needs root (containerd, kubelet, kube-proxy, the bridge); run as root, or start a kwok cluster (--kwok)',
    );
  }
  for (const [what, port] of Object.entries(ports) as [string, number][]) {
    if (!(await portFree(port)))
      throw new Error(
        `cluster: port ${port} (${what}) on 127.0.0.1 is taken; stop what holds it or choose another --base-port in ${PORT_RANGE.min}-${PORT_RANGE.max}`,
      );
  }
  fs.mkdirSync(path.join(dir, 'pki'), { recursive: true });
  const pids: Record<string, number> = {};
  const tokens = { admin: randomBytes(24).toString('hex'), node: randomBytes(24).toString('hex'), proxy: randomBytes(24).toString('hex') };
  const real: { network?: network.NetworkState; containerd?: Containerd } = {};
  const netnsBefore = listNetns();
  const address = kind === 'real' ? NODE_NETWORK.nodeIp : '127.0.0.1';
  const server = `https://${address}:${ports.apiserver}`;
  const caFile = path.join(dir, 'pki', 'apiserver.crt');
  const state = (): ClusterState => ({
    dir,
    kind,
    nodeName: kind === 'real' ? REAL_NODE_NAME : NODE_NAME,
    kubeconfig: path.join(dir, 'kubeconfig'),
    ports,
    server,
    caFile,
    token: tokens.admin,
    pids,
    ...(real.network
      ? {
          real: {
            network: real.network,
            netnsBefore,
            containerd: real.containerd,
            kubeProxy: o.toolchain.bin['kube-proxy'],
          },
        }
      : {}),
  });
  const save = (): void => fs.writeFileSync(path.join(dir, STATE_FILE), `${JSON.stringify(state(), null, 2)}\n`, { mode: 0o600 });
  const s: Starting = {
    o: { ...o, kind },
    dir,
    ports,
    lifetime,
    address,
    pids,
    tokens,
    log: (n) => path.join(dir, 'logs', `${n}.log`),
    save,
  };
  try {
    if (kind === 'real') {
      real.network = network.up(dir);
      save();
    }
    await addEtcd(s);
    await addApiserver(s, server);
    const kubeconfig = state().kubeconfig;
    writeKubeconfig(kubeconfig, server, caFile, 'admin', tokens.admin);
    addControllerManager(s, kubeconfig, caFile);
    addScheduler(s, kubeconfig);
    save();
    if (kind === 'real') {
      await addRealNode(s, server, caFile, kubeconfig, real);
    } else {
      await addKwok(s, kubeconfig);
      await waitFor(
        `node ${NODE_NAME} Ready (kwok)`,
        60_000,
        async () =>
          kubectl(o.toolchain, kubeconfig, ['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'])
            .stdout === 'True',
        s.log('kwok'),
      );
    }
    save();
    // Pods need the namespace's "default" ServiceAccount: the controller-manager makes it.
    await waitFor(
      'ServiceAccount default/default (controller-manager)',
      60_000,
      async () => kubectl(o.toolchain, kubeconfig, ['-n', 'default', 'get', 'serviceaccount', 'default']).status === 0,
      s.log('kube-controller-manager'),
    );
    return state();
  } catch (e) {
    await stopCluster(state()).catch(() => undefined);
    throw e;
  }
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
async function stopRealNode(state: ClusterState): Promise<void> {
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

/**
 * The kubelet's own iptables chains (KUBE-FIREWALL, which drops non-loopback traffic to
 * 127.0.0.0/8, its KUBE-KUBELET-CANARY chains and the KUBE-IPTABLES-HINT mark); nothing
 * else removes them.
 */
function cleanupKubelet(): void {
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

function listNetns(): string[] {
  return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
}

/** Stops the processes of `state` (their process groups, newest first) and waits until they are gone; a real node is taken down too. */
export async function stopCluster(state: ClusterState, removeDir = false): Promise<void> {
  await stopGroups(Object.values(state.pids).reverse());
  if (state.real) await stopRealNode(state);
  fs.rmSync(path.join(state.dir, STATE_FILE), { force: true });
  if (removeDir) fs.rmSync(state.dir, { recursive: true, force: true });
}

export function readState(dir: string): ClusterState {
  const file = path.join(path.resolve(dir), STATE_FILE);
  if (!fs.existsSync(file)) throw new Error(`cluster: no cluster in ${dir} (${file} is missing)`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterState;
}
