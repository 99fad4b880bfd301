/**
 * A local Kubernetes API server for the stack, on loopback only: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler and kwok (one fake node, so Deployments roll
 * out without a kubelet or a container runtime). Every process is started under
 * `timeout(1)`, so none outlives its lifetime even if nobody stops it.
 *
 * Ports: `basePort` .. `basePort + 5` (default 23400..23405; this project's cluster
 * tests own 23000-23999, other tests use 21000-21999).
 */
import { spawn, spawnSync } from 'child_process';
import { generateKeyPairSync, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as net from 'net';
import * as path from 'path';
import { InstalledToolchain } from './toolchain';

export const DEFAULT_BASE_PORT = 23400;
/** Where `npm run cluster:up` keeps its cluster (data, certificates, logs, kubeconfig). */
export const DEFAULT_DIR = process.env.WS_CLUSTER_DIR || '/tmp/ws-envoy-cluster';
/** The range this project's cluster tests may use. */
export const PORT_RANGE = { min: 23000, max: 23999 } as const;
export const CONTEXT = 'ws-local';
/** The fake node's name and the annotation kwok manages it by. */
export const NODE_NAME = 'kwok-node-0';
const KWOK_ANNOTATION = 'kwok.x-k8s.io/node';

export interface ClusterPorts {
  readonly etcdClient: number;
  readonly etcdPeer: number;
  readonly apiserver: number;
  readonly controllerManager: number;
  readonly scheduler: number;
  readonly kwok: number;
}

export function clusterPorts(base: number): ClusterPorts {
  if (!Number.isInteger(base) || base < PORT_RANGE.min || base + 5 > PORT_RANGE.max) {
    throw new Error(
      `cluster: basePort must be an integer with basePort..basePort+5 inside ${PORT_RANGE.min}-${PORT_RANGE.max}, got ${base}`,
    );
  }
  return { etcdClient: base, etcdPeer: base + 1, apiserver: base + 2, controllerManager: base + 3, scheduler: base + 4, kwok: base + 5 };
}

export interface ClusterState {
  readonly dir: string;
  readonly kubeconfig: string;
  readonly ports: ClusterPorts;
  /** https://127.0.0.1:<port>, its self-signed CA (PEM file) and the admin's bearer token. */
  readonly server: string;
  readonly caFile: string;
  readonly token: string;
  /** Process ids we started (each a `timeout` wrapping the component), in start order. */
  readonly pids: { readonly [component: string]: number };
}

export const STATE_FILE = 'cluster.json';

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  const tail =
    logFile && fs.existsSync(logFile) ? `\n  ${fs.readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-8).join('\n  ')}` : '';
  throw new Error(`cluster: ${what} not ready after ${timeoutMs / 1000} s${logFile ? ` (log: ${logFile})` : ''}${tail}`);
}

function httpGet(url: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const options = { timeout: 2000, headers: token ? { Authorization: `Bearer ${token}` } : {} };
    const onResponse = (res: http.IncomingMessage): void => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    // Readiness polls only: the apiserver's serving cert is self-signed (the kubeconfig pins it).
    const req = url.startsWith('https:')
      ? https.get(url, { ...options, rejectUnauthorized: false }, onResponse)
      : http.get(url, options, onResponse);
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

/** Starts `cmd` under `timeout`, detached (its own process group), output into `<dir>/logs/<name>.log`. */
function startProcess(dir: string, name: string, cmd: string, args: readonly string[], lifetimeSeconds: number): number {
  const log = path.join(dir, 'logs', `${name}.log`);
  fs.mkdirSync(path.dirname(log), { recursive: true });
  const fd = fs.openSync(log, 'a');
  const child = spawn('timeout', ['--kill-after=10', String(lifetimeSeconds), cmd, ...args], { detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  child.unref();
  if (!child.pid) throw new Error(`cluster: could not start ${cmd}`);
  return child.pid;
}

export interface StartOptions {
  readonly toolchain: InstalledToolchain;
  /** Working folder (data, certificates, logs, kubeconfig); created, must not hold a running cluster. */
  readonly dir: string;
  /** @default DEFAULT_BASE_PORT */
  readonly basePort?: number;
  /** Every process is killed after this long even if nobody stops it. @default 3600 */
  readonly lifetimeSeconds?: number;
}

export function kubectl(
  t: InstalledToolchain,
  kubeconfig: string,
  args: readonly string[],
  timeoutMs = 60_000,
): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(t.bin.kubectl, ['--kubeconfig', kubeconfig, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: r.status ?? 124, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** Brings the cluster up and returns once the fake node is Ready. Stops what it started if any step fails. */
export async function startCluster(o: StartOptions): Promise<ClusterState> {
  const ports = clusterPorts(o.basePort ?? DEFAULT_BASE_PORT);
  const lifetime = o.lifetimeSeconds ?? 3600;
  const dir = path.resolve(o.dir);
  if (fs.existsSync(path.join(dir, STATE_FILE))) {
    throw new Error(`cluster: ${dir} already holds a cluster (${STATE_FILE}); stop it first (npm run cluster:down)`);
  }
  for (const [what, port] of Object.entries(ports) as [string, number][]) {
    if (!(await portFree(port)))
      throw new Error(
        `cluster: port ${port} (${what}) on 127.0.0.1 is taken; stop what holds it or choose another --base-port in ${PORT_RANGE.min}-${PORT_RANGE.max}`,
      );
  }
  fs.mkdirSync(path.join(dir, 'pki'), { recursive: true });
  const bin = o.toolchain.bin;
  const pids: Record<string, number> = {};
  const token = randomBytes(24).toString('hex');
  const server = `https://127.0.0.1:${ports.apiserver}`;
  const caFile = path.join(dir, 'pki', 'apiserver.crt');
  const state = (): ClusterState => ({ dir, kubeconfig: path.join(dir, 'kubeconfig'), ports, server, caFile, token, pids });
  const save = (): void => fs.writeFileSync(path.join(dir, STATE_FILE), `${JSON.stringify(state(), null, 2)}\n`, { mode: 0o600 });
  const log = (name: string): string => path.join(dir, 'logs', `${name}.log`);
  try {
    pids.etcd = startProcess(
      dir,
      'etcd',
      bin.etcd,
      [
        '--name',
        'local',
        '--data-dir',
        path.join(dir, 'etcd'),
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
      lifetime,
    );
    save();
    await waitFor(
      'etcd',
      30_000,
      async () => (await httpGet(`http://127.0.0.1:${ports.etcdClient}/health`)).body.includes('"true"'),
      log('etcd'),
    );

    fs.writeFileSync(path.join(dir, 'pki', 'tokens.csv'), `${token},admin,admin-uid,system:masters\n`, { mode: 0o600 });
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(dir, 'pki', 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'pki', 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    pids.apiserver = startProcess(
      dir,
      'kube-apiserver',
      bin['kube-apiserver'],
      [
        '--etcd-servers',
        `http://127.0.0.1:${ports.etcdClient}`,
        '--bind-address',
        '127.0.0.1',
        '--advertise-address',
        '127.0.0.1',
        '--secure-port',
        String(ports.apiserver),
        // Self-signed serving certificate for 127.0.0.1/localhost, generated into the cert dir.
        '--cert-dir',
        path.join(dir, 'pki'),
        '--token-auth-file',
        path.join(dir, 'pki', 'tokens.csv'),
        '--authorization-mode',
        'RBAC',
        '--service-account-issuer',
        'https://kubernetes.default.svc.cluster.local',
        '--service-account-key-file',
        path.join(dir, 'pki', 'sa.pub'),
        '--service-account-signing-key-file',
        path.join(dir, 'pki', 'sa.key'),
        '--service-cluster-ip-range',
        '10.96.0.0/16',
        // The "kubernetes" Service's endpoints would be 127.0.0.1, which Endpoints refuse.
        '--endpoint-reconciler-type',
        'none',
        '--enable-priority-and-fairness=false',
        '--profiling=false',
        '--v',
        '1',
      ],
      lifetime,
    );
    save();
    await waitFor('kube-apiserver', 90_000, async () => (await httpGet(`${server}/readyz`, token)).status === 200, log('kube-apiserver'));

    const kubeconfig = state().kubeconfig;
    fs.writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `current-context: ${CONTEXT}`,
        'clusters:',
        `- name: ${CONTEXT}`,
        '  cluster:',
        `    server: ${server}`,
        `    certificate-authority: ${caFile}`,
        'users:',
        '- name: admin',
        '  user:',
        `    token: ${token}`,
        'contexts:',
        `- name: ${CONTEXT}`,
        '  context:',
        `    cluster: ${CONTEXT}`,
        '    user: admin',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );

    pids.controllerManager = startProcess(
      dir,
      'kube-controller-manager',
      bin['kube-controller-manager'],
      [
        '--kubeconfig',
        kubeconfig,
        '--bind-address',
        '127.0.0.1',
        '--secure-port',
        String(ports.controllerManager),
        '--leader-elect=false',
        '--service-account-private-key-file',
        path.join(dir, 'pki', 'sa.key'),
        '--root-ca-file',
        caFile,
        '--use-service-account-credentials=false',
        '--authentication-skip-lookup',
        '--profiling=false',
        '--v',
        '1',
        // The node is fake and the machine may be busy: never declare it NotReady (that marks
        // every pod not ready and a rollout never finishes) over a late heartbeat.
        '--node-monitor-grace-period',
        '10m',
      ],
      lifetime,
    );
    pids.scheduler = startProcess(
      dir,
      'kube-scheduler',
      bin['kube-scheduler'],
      [
        '--kubeconfig',
        kubeconfig,
        '--bind-address',
        '127.0.0.1',
        '--secure-port',
        String(ports.scheduler),
        '--leader-elect=false',
        '--authentication-skip-lookup',
        '--profiling=false',
        '--v',
        '1',
      ],
      lifetime,
    );
    pids.kwok = startProcess(
      dir,
      'kwok',
      bin.kwok,
      [
        '--kubeconfig',
        kubeconfig,
        '--manage-all-nodes=false',
        '--manage-nodes-with-annotation-selector',
        `${KWOK_ANNOTATION}=fake`,
        '--server-address',
        `127.0.0.1:${ports.kwok}`,
        // Heartbeat through a Lease like a kubelet (without it kwok rewrites the node status
        // every 20-45 s, close to the controller-manager's grace period).
        '--node-lease-duration-seconds',
        '40',
      ],
      lifetime,
    );
    save();

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
    fs.writeFileSync(path.join(dir, 'node.json'), JSON.stringify(node));
    await waitFor(
      'the fake node (kubectl create)',
      30_000,
      async () => kubectl(o.toolchain, kubeconfig, ['apply', '-f', path.join(dir, 'node.json')]).status === 0,
    );
    await waitFor(
      `node ${NODE_NAME} Ready (kwok)`,
      60_000,
      async () =>
        kubectl(o.toolchain, kubeconfig, ['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'])
          .stdout === 'True',
      log('kwok'),
    );
    // Pods need the namespace's "default" ServiceAccount: the controller-manager makes it.
    await waitFor(
      'ServiceAccount default/default (controller-manager)',
      60_000,
      async () => kubectl(o.toolchain, kubeconfig, ['-n', 'default', 'get', 'serviceaccount', 'default']).status === 0,
      log('kube-controller-manager'),
    );
    return state();
  } catch (e) {
    await stopCluster(state()).catch(() => undefined);
    throw e;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops the processes of `state` (their process groups, newest first) and waits until they are gone. */
export async function stopCluster(state: ClusterState, removeDir = false): Promise<void> {
  const pids = Object.values(state.pids).reverse();
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of pids) {
      try {
        process.kill(-pid, signal); // the group: timeout and the component it runs
      } catch {
        /* already gone */
      }
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && pids.some(alive)) await new Promise((r) => setTimeout(r, 200));
    if (!pids.some(alive)) break;
  }
  const left = pids.filter(alive);
  if (left.length > 0) throw new Error(`cluster: processes ${left.join(', ')} did not stop`);
  fs.rmSync(path.join(state.dir, STATE_FILE), { force: true });
  if (removeDir) fs.rmSync(state.dir, { recursive: true, force: true });
}

export function readState(dir: string): ClusterState {
  const file = path.join(path.resolve(dir), STATE_FILE);
  if (!fs.existsSync(file)) throw new Error(`cluster: no cluster in ${dir} (${file} is missing)`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterState;
}
