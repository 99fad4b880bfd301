// The stack on a real node: the default profile in kubeconfig mode (public Service
// NodePort, short leases) applied by the real providers to a cluster with a real kubelet
// (containerd + runc, kube-proxy, kube-router's NetworkPolicy firewall, CoreDNS), running
// images built here (tools/cluster/images.ts: envoy/Dockerfile for real, stand-ins for
// Redis and the sample backend), with a real Prometheus beside it. Traffic goes from the
// host through the Service to both Envoy pods and on to the backend pods; the judge of
// the per-pod limit is each backend's own count of its open WebSockets. The steps share
// one cluster, in order (a failed step can fail the ones after it). Root only.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { StackConfig } from '../../config/schema';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { NAMES } from '../../constructs/names';
import { METRICS_PORT, PUBLIC_PORT } from '../../envoy/bootstrap';
import { startCluster, stopCluster } from '../../tools/cluster/cluster';
import { ClusterState, CONTEXT, kubectl, REAL_NODE_NAME } from '../../tools/cluster/common';
import { findImages, imageRefs } from '../../tools/cluster/images';
import { NODE_NETWORK } from '../../tools/cluster/node/network';
import { activeTargets, Prometheus, query, startPrometheus, stopPrometheus } from '../../tools/cluster/prometheus';
import { findInstalled } from '../../tools/cluster/toolchain';
import { Json } from '../stack/support/synth';
import { backendReport, closeAll, eventually, httpGet, progress, scrape, sleep, total, upgrade, Upgrade } from './node/clients';
import { synthInto, tfAsyncOk, tfOk } from './support';

jest.setTimeout(10 * 60_000);

const BASE_PORT = 23600; // the API suite's kwok cluster uses 23500, cluster:up 23400
const PROMETHEUS_PORT = 23690;
const NS = 'ws-admission';
const DASHBOARD = path.join(__dirname, '..', '..', 'dashboards', 'ws-admission.json');
const toolchain = findInstalled();
const refs = imageRefs(toolchain);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-node-'));
const stateDir = path.join(root, 'stack');
let cluster: ClusterState | undefined;
let prometheus: Prometheus | undefined;

/** Short leases so the TTL path is seen within a test, yet longer than the drain's grace period (see the drain test). */
const LEASES = { idleTimeoutSeconds: 30, renewIntervalSeconds: 5, leaseTtlSeconds: 40 } as const;
const LIMIT_PER_POD = 2;
const BACKENDS = 3;
const RATE_LIMIT = 60;
/** preStop sleep (15 s) + 30 s: the Envoy pods' terminationGracePeriodSeconds. */
const GRACE_SECONDS = 45;

function profile(overrides: Partial<StackConfig> = {}): Partial<StackConfig> {
  return {
    kubeconfigPath: cluster!.kubeconfig,
    kubeContext: CONTEXT,
    publicServiceType: 'NodePort',
    envoyImage: refs.envoy,
    redisImage: refs.redis,
    sampleBackendImage: refs.echo,
    // The kubelet's probes and the host's Prometheus come from the node's address.
    metricsAllowedCidrs: [`${NODE_NETWORK.nodeIp}/32`],
    // Every socket of the suite comes from one client (the host): the per-client caps off,
    // so what it measures is the global rate limit and the per-pod limit.
    maxConnectionsPerClientPercent: 0,
    rateLimitPerClientPerMinute: 0,
    ...LEASES,
    ...overrides,
  };
}

function k(args: readonly string[], input?: string): string {
  const r = kubectl(toolchain, cluster!.kubeconfig, args, 120_000, input);
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
/** `kubectl get WHAT -o json`; WHAT may carry arguments (`pods -l name=x`). */
function get(ns: string | undefined, what: string): Json {
  return JSON.parse(k([...(ns ? ['-n', ns] : []), 'get', ...what.split(' '), '-o', 'json']));
}

async function apply(overrides: Partial<StackConfig> = {}, luaDirs: readonly string[] = DEFAULT_LUA_DIRS): Promise<void> {
  synthInto(stateDir, toolchain, profile(overrides), luaDirs);
  const out = await tfAsyncOk(toolchain, stateDir, ['apply', '-input=false', '-auto-approve'], 10 * 60_000);
  expect(out).not.toMatch(/Warning/);
}

interface PodView {
  readonly name: string;
  readonly ip: string;
  readonly ready: boolean;
  readonly terminating: boolean;
}
function pods(name: string): PodView[] {
  return (get(NS, `pods -l app.kubernetes.io/name=${name}`).items as Json[]).map((p) => ({
    name: p.metadata.name,
    ip: p.status.podIP,
    ready: (p.status.conditions ?? []).some((c: Json) => c.type === 'Ready' && c.status === 'True'),
    terminating: !!p.metadata.deletionTimestamp,
  }));
}
const envoys = (): PodView[] => pods(NAMES.envoy).filter((p) => p.ready && !p.terminating);
const backends = (): PodView[] => pods(NAMES.sampleBackend).filter((p) => p.ready && !p.terminating);

/** The Service through kube-proxy: the NodePort on the node's address. */
function serviceUrl(): string {
  const port = get(NS, `svc/${NAMES.nlb}`).spec.ports.find((p: Json) => p.name === 'http').nodePort;
  return `ws://${NODE_NETWORK.nodeIp}:${port}/`;
}
const podUrl = (p: PodView): string => `ws://${p.ip}:${PUBLIC_PORT}/`;
const metricsOf = (p: PodView) => scrape(`http://${p.ip}:${METRICS_PORT}/metrics`);

/** Open WebSockets per backend pod, as each backend counts them. */
async function backendOpen(): Promise<{ [id: string]: number }> {
  const out: { [id: string]: number } = {};
  for (const b of backends()) out[`${b.ip}:8080`] = (await backendReport(b.ip, 8080)).open;
  return out;
}
const sum = (o: { [k: string]: number }): number => Object.values(o).reduce((a, b) => a + b, 0);

/**
 * Live leases in Redis: the per-pod gauge of a proxy's /metrics, which serves the
 * agent's last snapshot of Redis (every few seconds). A proxy without a fresh snapshot
 * (just started, Redis unreachable) omits the gauge: that is "unknown", never 0.
 */
async function leases(): Promise<number> {
  const e = envoys();
  if (e.length === 0) throw new Error('no ready Envoy pod to read the metrics of');
  const page = await metricsOf(e[0]);
  if (!page.has('ws_admission_active_connections')) throw new Error(`${e[0].name} serves no lease counts (no fresh snapshot)`);
  return total(page, 'ws_admission_active_connections');
}

/** What a refusal said: `<status> <x-ws-admission>` (so a failure names the reason). */
const said = (u: Upgrade): string => (u.status === 101 ? '101' : `${u.status} ${String(u.headers['x-ws-admission'] ?? '')}`.trim());

/** Envoy's own count of public-listener responses of class `cls` (2, 4, 5) on one pod. */
async function responses(p: PodView, cls: string): Promise<number> {
  const page = await scrape(`http://${p.ip}:${METRICS_PORT}/stats/prometheus`);
  return total(page, 'envoy_http_downstream_rq_xx', { envoy_http_conn_manager_prefix: 'public', envoy_response_code_class: cls });
}

async function openN(url: string | (() => string), n: number): Promise<Upgrade[]> {
  const out: Upgrade[] = [];
  for (let i = 0; i < n; i++) out.push(await upgrade(typeof url === 'string' ? url : url()));
  return out;
}
const sockets = (us: readonly Upgrade[]) => us.map((u) => u.ws);

function exec(pod: string, container: string, script: string): string {
  return k(['-n', NS, 'exec', pod, '-c', container, '--', 'sh', '-c', script]);
}

async function rolledOut(replicas = 2): Promise<void> {
  await eventually(`${replicas} ready Envoy pods and no other`, 180_000, async () =>
    pods(NAMES.envoy).length === replicas && envoys().length === replicas ? true : undefined,
  );
}

beforeAll(async () => {
  if (process.getuid?.() !== 0)
    throw new Error('the node suite needs root (containerd, kubelet, kube-proxy, a bridge): run it as root, as .ci/run does');
  cluster = await startCluster({
    toolchain,
    kind: 'real',
    images: findImages(toolchain),
    dir: path.join(root, 'cluster'),
    basePort: BASE_PORT,
    lifetimeSeconds: 3600,
  });
  prometheus = await startPrometheus(toolchain.bin.prometheus, cluster, PROMETHEUS_PORT, 3600);
  fs.mkdirSync(stateDir, { recursive: true });
  synthInto(stateDir, toolchain, profile());
  tfOk(toolchain, stateDir, ['init', '-input=false']);
}, 10 * 60_000);

beforeEach(() => progress(expect.getState().currentTestName ?? ''));

afterAll(async () => {
  if (process.env.WS_NODE_REPORT && cluster) {
    const wide = (args: string[]) => kubectl(toolchain, cluster!.kubeconfig, args).stdout;
    fs.writeFileSync(
      process.env.WS_NODE_REPORT,
      [wide(['get', 'node', '-o', 'wide']), wide(['get', 'pods', '-A', '-o', 'wide'])].join('\n'),
    );
  }
  if (prometheus) await stopPrometheus(prometheus).catch(() => undefined);
  if (cluster && !process.env.WS_CLUSTER_KEEP) await stopCluster(cluster);
  if (!process.env.WS_CLUSTER_KEEP) fs.rmSync(root, { recursive: true, force: true });
}, 5 * 60_000);

describe('the real node', () => {
  it('runs kubelet v1.34.4 on containerd, with kube-proxy, kube-router and CoreDNS healthy', async () => {
    const node = get(undefined, `node/${REAL_NODE_NAME}`);
    expect(node.status.nodeInfo.kubeletVersion).toBe('v1.34.4');
    expect(node.status.nodeInfo.containerRuntimeVersion).toMatch(/^containerd:\/\/1\.6\./);
    expect(node.status.addresses).toContainEqual({ type: 'InternalIP', address: NODE_NETWORK.nodeIp });
    expect(node.spec.podCIDR).toBe(NODE_NETWORK.podCidr);
    expect((await httpGet(`http://127.0.0.1:${cluster!.ports.kubeProxyHealthz}/healthz`)).status).toBe(200);
    expect((await httpGet(`http://127.0.0.1:${cluster!.ports.kubeRouterHealth}/healthz`)).status).toBe(200);
    expect(get('kube-system', 'deployment/coredns').status.availableReplicas).toBe(1);
  });
});

describe(`the default profile on the real node (NodePort, leases ${LEASES.leaseTtlSeconds} s)`, () => {
  it('applies with the local images, and every pod becomes Ready through its own probes, without a restart', async () => {
    await apply();
    await eventually('every pod of the stack Ready', 240_000, async () => {
      const all = get(NS, 'pods').items as Json[];
      const ready = all.filter((p) => (p.status.conditions ?? []).some((c: Json) => c.type === 'Ready' && c.status === 'True'));
      return all.length === 2 + 1 + BACKENDS && ready.length === all.length ? true : undefined;
    });
    for (const p of get(NS, 'pods').items as Json[]) {
      for (const c of p.status.containerStatuses as Json[]) {
        expect({ pod: p.metadata.name, container: c.name, ready: c.ready, restarts: c.restartCount, image: c.image }).toStrictEqual({
          pod: p.metadata.name,
          container: c.name,
          ready: true,
          restarts: 0,
          image: expect.stringMatching(/^localhost\/ws-node\//),
        });
      }
    }
    // Envoy is ready before its backend cluster's health checks pass: wait for those too
    // (an upgrade before would be refused "no backend").
    for (const e of envoys()) {
      await eventually(`${e.name} sees ${BACKENDS} healthy backends`, 60_000, async () => {
        const page = await scrape(`http://${e.ip}:${METRICS_PORT}/stats/prometheus`);
        return total(page, 'envoy_cluster_membership_healthy', { envoy_cluster_name: 'backend' }) === BACKENDS ? true : undefined;
      });
    }
    // The readiness the kubelet reports is the probe's: the Envoy container has one on /ready.
    const envoy = get(NS, `deployment/${NAMES.envoy}`).spec.template.spec.containers[0];
    expect(envoy.readinessProbe.httpGet).toMatchObject({ path: '/ready', port: METRICS_PORT });
  });

  it.each([
    [
      NAMES.envoy,
      'envoy',
      10101,
      ['/etc/envoy/envoy.yaml', '/etc/envoy/lua/settings.lua', '/etc/ws-redis/password'],
      ['/var/run/ws-admission', '/tmp'],
    ],
    [NAMES.envoy, 'agent', 10101, ['/etc/envoy/lua/agent.lua', '/etc/ws-redis/password'], ['/var/run/ws-admission']],
    [NAMES.redis, 'redis', 999, ['/etc/redis/redis.conf'], ['/data']],
    [NAMES.sampleBackend, 'echo', 65534, [], []],
  ] as const)(
    '%s/%s runs as uid %i with a read-only root filesystem, and reads and writes what it mounts',
    (app, container, uid, reads, writes) => {
      const pod = pods(app)[0].name;
      const out = exec(
        pod,
        container,
        [
          'id -u; id -g',
          'if touch /ws-rofs-probe 2>/dev/null; then echo root-writable; else echo root-read-only; fi',
          `for f in ${reads.join(' ')}; do if test -r "$f" && test -s "$f" && cat "$f" >/dev/null; then echo "read $f"; else echo "cannot read $f"; fi; done`,
          `for d in ${writes.join(' ')}; do if echo x > "$d/.ws-probe" && rm "$d/.ws-probe"; then echo "write $d"; else echo "cannot write $d"; fi; done`,
        ].join('\n'),
      );
      expect(out.trim().split('\n')).toStrictEqual([
        String(uid),
        String(uid),
        'root-read-only',
        ...reads.map((f) => `read ${f}`),
        ...writes.map((d) => `write ${d}`),
      ]);
    },
  );

  it('resolves the Redis name (with its trailing dot) through CoreDNS, and the proxies authenticate as the ACL user ws-proxy', async () => {
    const envoy = envoys()[0];
    expect(exec(envoy.name, 'envoy', 'cat /etc/resolv.conf')).toContain(`nameserver ${NODE_NETWORK.dnsIp}`);
    const settings = exec(envoy.name, 'envoy', 'cat /etc/envoy/lua/settings.lua');
    const host = /redis_host = "([^"]+)"/.exec(settings)![1];
    expect(host).toBe(`${NAMES.redis}.${NS}.svc.cluster.local.`);
    const resolved = exec(envoy.name, 'envoy', `luajit -e 'print((require("socket").dns.toip("${host}")))'`).trim();
    expect(resolved).toBe(get(NS, `svc/${NAMES.redis}`).spec.clusterIP);
    // Redis' own view: every Envoy pod is connected, as ws-proxy (and only the probe's own
    // connection as ws-admin).
    const redis = pods(NAMES.redis)[0].name;
    const clients = await eventually('a Redis connection from each Envoy pod', 60_000, async () => {
      const list = exec(redis, 'redis', 'redis-cli --no-auth-warning --user ws-admin CLIENT LIST');
      const entries = list
        .trim()
        .split('\n')
        .map((l) => Object.fromEntries(l.split(' ').map((kv) => kv.split('=') as [string, string])));
      const addrs = new Set(entries.filter((e) => e.user === 'ws-proxy').map((e) => e.addr.split(':')[0]));
      return envoys().every((p) => addrs.has(p.ip)) ? entries : undefined;
    });
    expect([...new Set(clients.map((c) => c.user))].sort()).toStrictEqual(['ws-admin', 'ws-proxy']);
    // That user is what the ACL says: its keys and commands only.
    const password = Buffer.from(get(NS, `secret/${NAMES.redisSecret}`).data.password, 'base64').toString();
    const asProxy = (cmd: string) =>
      exec(redis, 'redis', `REDISCLI_AUTH='${password}' redis-cli --no-auth-warning --user ws-proxy ${cmd} 2>&1`).trim();
    expect(asProxy('PING')).toBe('PONG');
    expect(asProxy('FLUSHALL')).toMatch(/NOPERM/);
    expect(asProxy('GET other:key')).toMatch(/NOPERM/);
  });

  it(`holds the rate limit (${RATE_LIMIT} upgrades a minute) across both Envoy pods, through the Service`, async () => {
    const url = serviceUrl();
    // Each socket is closed at once; its slot comes back a moment later (the lease is
    // released when the proxy's agent reads the stream's end), so a refusal for capacity
    // is tried again shortly: it spends nothing of the rate window.
    const results: string[] = [];
    const started = Date.now();
    while (results.length < RATE_LIMIT + 10 && Date.now() - started < 30_000) {
      const u = await upgrade(url);
      if (u.status === 101) await closeAll([u.ws]);
      else expect(Number(u.headers['retry-after'])).toBeGreaterThan(0);
      if (said(u) === '503 capacity') await sleep(200);
      else results.push(said(u));
    }
    expect(results.slice(0, RATE_LIMIT)).toStrictEqual(Array(RATE_LIMIT).fill('101'));
    expect(results.slice(RATE_LIMIT)).toStrictEqual(Array(10).fill('429 rate_limited'));
    // Both Envoy pods carried upgrades: the backends saw each of them as a peer.
    const peers = new Set<string>();
    for (const b of backends()) for (const peer of Object.keys((await backendReport(b.ip, 8080)).upgradesByPeer)) peers.add(peer);
    for (const e of envoys()) expect({ envoy: e.ip, seen: peers.has(e.ip) }).toStrictEqual({ envoy: e.ip, seen: true });
    // /metrics agrees (once the agent's next snapshot is in): the window is full.
    const used = await eventually('/metrics: the rate window full', 20_000, async () => {
      const n = total(await metricsOf(envoys()[0]), 'ws_admission_rate_window_used');
      return n === RATE_LIMIT ? n : undefined;
    }).catch(async () => total(await metricsOf(envoys()[0]), 'ws_admission_rate_window_used'));
    expect(used).toBe(RATE_LIMIT);
    expect(total(await metricsOf(envoys()[0]), 'ws_admission_rate_limit')).toBe(RATE_LIMIT);
  });

  it("serves the NodePort on the node's address only, never on the machine's loopback", async () => {
    const port = Number(new URL(serviceUrl()).port);
    const connects = (host: string) =>
      new Promise<boolean>((resolve) => {
        const s = net.connect({ host, port, timeout: 3000 }, () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
        s.on('timeout', () => (s.destroy(), resolve(false)));
      });
    expect(await connects(NODE_NETWORK.nodeIp)).toBe(true);
    expect(await connects('127.0.0.1')).toBe(false);
  });

  it('enforces the NetworkPolicies: a pod that is not Envoy reaches neither Redis nor port 9901, and does once they are removed', async () => {
    // GIVEN a pod without the Envoy labels in the stack's namespace (the Envoy image: luajit + luasocket)
    const probe = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'np-probe', namespace: NS, labels: { app: 'np-probe' } },
      spec: {
        automountServiceAccountToken: false,
        securityContext: { runAsNonRoot: true, runAsUser: 10101, runAsGroup: 10101, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'probe',
            image: refs.envoy,
            command: ['sleep', '3600'],
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          },
        ],
      },
    };
    k(['apply', '-f', '-'], JSON.stringify(probe));
    k(['-n', NS, 'wait', '--for=condition=Ready', 'pod/np-probe', '--timeout=120s']);
    const reach = (host: string, port: number): string =>
      k([
        '-n',
        NS,
        'exec',
        'np-probe',
        '--',
        'luajit',
        '-e',
        `local c = require("socket").tcp(); c:settimeout(2); local ok, err = c:connect("${host}", ${port}); print(ok and "open" or "blocked " .. tostring(err))`,
      ]).trim();
    const envoy = envoys()[0];
    const redisService = get(NS, `svc/${NAMES.redis}`).spec.clusterIP;
    const redisPod = pods(NAMES.redis)[0].ip;
    const targets = () => ({
      redisService: reach(redisService, 6379),
      redisPod: reach(redisPod, 6379),
      metrics: reach(envoy.ip, METRICS_PORT),
      public: reach(envoy.ip, PUBLIC_PORT),
    });
    try {
      // THEN with the policies: only the public port answers (the probe itself works)
      expect(
        await eventually('the policies in force', 30_000, async () => {
          const t = targets();
          return t.redisService.startsWith('blocked') && t.metrics.startsWith('blocked') ? t : undefined;
        }),
      ).toMatchObject({
        redisService: expect.stringMatching(/^blocked/),
        redisPod: expect.stringMatching(/^blocked/),
        metrics: expect.stringMatching(/^blocked/),
        public: 'open',
      });
      // WHEN both policies are removed THEN the same probe reaches Redis and 9901
      k(['-n', NS, 'delete', 'networkpolicy', NAMES.redisPolicy, NAMES.envoyPolicy]);
      expect(
        await eventually('the policies gone', 30_000, async () => {
          const t = targets();
          return t.redisService === 'open' && t.metrics === 'open' ? t : undefined;
        }),
      ).toStrictEqual({ redisService: 'open', redisPod: 'open', metrics: 'open', public: 'open' });
    } finally {
      // AND an apply puts them back, and they hold again
      await apply();
      k(['-n', NS, 'delete', 'pod', 'np-probe', '--wait=false']);
    }
    expect(
      get(NS, 'networkpolicies')
        .items.map((p: Json) => p.metadata.name)
        .sort(),
    ).toStrictEqual([NAMES.envoyPolicy, NAMES.redisPolicy].sort());
  });

  it(`holds ${LIMIT_PER_POD} per backend pod across both Envoy pods (the backends' own count), and /metrics agrees`, async () => {
    // The rate window of the earlier step must have emptied first.
    await eventually(
      'room in the rate window',
      90_000,
      async () => (total(await metricsOf(envoys()[0]), 'ws_admission_rate_window_used') <= RATE_LIMIT - 20 ? true : undefined),
      1000,
    );
    const url = serviceUrl();
    const before = await Promise.all(envoys().map((e) => responses(e, '5')));
    const admitted = await openN(url, LIMIT_PER_POD * BACKENDS);
    try {
      expect(admitted.map(said)).toStrictEqual(Array(LIMIT_PER_POD * BACKENDS).fill('101'));
      // Refusals until each Envoy pod has refused at least once (kube-proxy picks at random).
      const refused: Upgrade[] = [];
      for (let i = 0; i < 30; i++) {
        refused.push(await upgrade(url));
        const after = await Promise.all(envoys().map((e) => responses(e, '5')));
        if (after.every((n, j) => n > before[j])) break;
      }
      expect(refused.map((u) => [u.status, u.headers['x-ws-admission']])).toStrictEqual(refused.map(() => [503, 'capacity']));
      const after = await Promise.all(envoys().map((e) => responses(e, '5')));
      expect(after.map((n, j) => n > before[j])).toStrictEqual(envoys().map(() => true));
      // THEN every backend holds exactly the limit, as it counts its own sockets
      const open = await backendOpen();
      expect(Object.values(open)).toStrictEqual(Array(BACKENDS).fill(LIMIT_PER_POD));
      // AND each proxy's /metrics says the same, per pod (once its agent's next snapshot is in)
      for (const e of envoys()) {
        const perPod = await eventually(`${e.name}'s /metrics per pod`, 20_000, async () => {
          const m = await metricsOf(e);
          const p = Object.fromEntries((m.get('ws_admission_active_connections') ?? []).map((x) => [x.labels.pod, x.value]));
          return JSON.stringify(p) === JSON.stringify(open) ? p : undefined;
        }).catch(async () =>
          Object.fromEntries(((await metricsOf(e)).get('ws_admission_active_connections') ?? []).map((x) => [x.labels.pod, x.value])),
        );
        expect(perPod).toStrictEqual(open);
        expect(total(await metricsOf(e), 'ws_admission_max_connections_per_pod')).toBe(LIMIT_PER_POD);
      }
    } finally {
      await closeAll(sockets(admitted));
    }
    // Closed: the slots come back (the backends' Close frames release them).
    await eventually('every slot back', 30_000, async () => ((await leases()) === 0 && sum(await backendOpen()) === 0 ? true : undefined));
  });

  it('deleting an Envoy pod runs its preStop drain: its slots come back before its grace period ends, the others stay', async () => {
    await rolledOut();
    const [a, b] = envoys();
    const onA = await openN(podUrl(a), 2);
    const onB = await openN(podUrl(b), 2);
    expect([...onA, ...onB].map(said)).toStrictEqual(['101', '101', '101', '101']);
    await eventually('4 leases', 15_000, async () => ((await leases()) === 4 ? true : undefined));
    // The drain's line goes to Envoy's stdout (/proc/1/fd/1): follow the container's log.
    const logs = spawn('timeout', [
      '90',
      toolchain.bin.kubectl,
      '--kubeconfig',
      cluster!.kubeconfig,
      '-n',
      NS,
      'logs',
      '-f',
      a.name,
      '-c',
      'envoy',
    ]);
    let log = '';
    logs.stdout.on('data', (d) => (log += d));
    try {
      const t0 = Date.now();
      k(['-n', NS, 'delete', 'pod', a.name, '--wait=false']);
      // During the preStop sleep the pod keeps serving its sockets and their leases.
      await sleep(8000);
      expect({ leases: await leases(), open: onA.map((u) => u.ws!.readyState) }).toStrictEqual({ leases: 4, open: [1, 1] });
      const released = await eventually("the drained pod's leases released", GRACE_SECONDS * 1000, async () =>
        (await leases()) === 2 ? Date.now() : undefined,
      );
      expect((released - t0) / 1000).toBeLessThan(GRACE_SECONDS);
      // Its clients are closed; the other pod's are still counted.
      await eventually("the drained pod's sockets closed", 30_000, async () =>
        onA.every((u) => u.ws!.readyState === 3) ? true : undefined,
      );
      expect(onB.map((u) => u.ws!.readyState)).toStrictEqual([1, 1]);
      await eventually(`drain's line in ${a.name}'s log`, 20_000, async () =>
        /^drain: released 2 leases of proxy /m.test(log) ? true : undefined,
      );
      // The pod is gone once both containers stopped on SIGTERM (the agent sidecar's sh
      // exits on TERM), long before the grace period would force them.
      const gone = await eventually(`pod ${a.name} gone`, GRACE_SECONDS * 1000, async () =>
        pods(NAMES.envoy).some((p) => p.name === a.name) ? undefined : Date.now(),
      );
      expect((gone - t0) / 1000).toBeLessThan(GRACE_SECONDS - 5);
    } finally {
      logs.kill();
      await closeAll(sockets([...onA, ...onB]));
    }
  });

  it(`a force-deleted Envoy pod's slots come back within the lease TTL (${LEASES.leaseTtlSeconds} s)`, async () => {
    await rolledOut();
    await eventually('no lease left', 30_000, async () => ((await leases()) === 0 ? true : undefined));
    const [a] = envoys();
    const onA = await openN(podUrl(a), 2);
    expect(onA.map(said)).toStrictEqual(['101', '101']);
    await eventually('2 leases', 15_000, async () => ((await leases()) === 2 ? true : undefined));
    const t0 = Date.now();
    try {
      k(['-n', NS, 'delete', 'pod', a.name, '--grace-period=0', '--force']);
      const back = await eventually(
        "the force-deleted pod's leases gone",
        (LEASES.leaseTtlSeconds + 20) * 1000,
        async () => (envoys().length > 0 && (await leases()) === 0 ? Date.now() : undefined),
        1000,
      );
      expect((back - t0) / 1000).toBeLessThanOrEqual(LEASES.leaseTtlSeconds + LEASES.renewIntervalSeconds + 5);
    } finally {
      await closeAll(sockets(onA));
    }
  });

  it("a Lua file change rolls the Envoy pods while sockets are open: no over-admission during the roll, and the old pods' slots come back", async () => {
    await rolledOut();
    await eventually('no lease left', 60_000, async () => ((await leases()) === 0 ? true : undefined), 1000);
    const old = envoys().map((p) => p.name);
    const full = await openN(serviceUrl, LIMIT_PER_POD * BACKENDS);
    expect(full.map(said)).toStrictEqual(Array(LIMIT_PER_POD * BACKENDS).fill('101'));
    // GIVEN a copy of the Lua files with filter.lua changed
    const lua = DEFAULT_LUA_DIRS.map((d) => {
      const to = path.join(root, 'lua-roll', path.basename(d));
      fs.cpSync(d, to, { recursive: true });
      return to;
    });
    fs.appendFileSync(path.join(lua[0], 'filter.lua'), '\n-- changed by the node suite\n');
    // WHEN applied, with upgrades tried through the Service all along and each backend's own count sampled
    const during: Upgrade[] = [];
    const samples: { at: number; open: { [id: string]: number } }[] = [];
    let rolling = true;
    const sampler = (async () => {
      let lastTry = 0;
      while (rolling) {
        samples.push({ at: Date.now(), open: await backendOpen().catch(() => ({})) });
        if (Date.now() - lastTry > 1000) {
          lastTry = Date.now();
          const u = await upgrade(serviceUrl()).catch(() => undefined);
          if (u) during.push(u);
        }
        await sleep(250);
      }
    })();
    try {
      await apply({}, lua);
      await eventually(
        'the old Envoy pods gone',
        120_000,
        async () => (pods(NAMES.envoy).some((p) => old.includes(p.name)) ? undefined : true),
        1000,
      );
      await sleep(3000);
    } finally {
      rolling = false;
      await sampler;
    }
    try {
      // THEN no backend held more than the limit beyond the drain's documented moment (the
      // slots come back a moment before SIGTERM closes the old sockets; docs/operations.md)
      const over: string[] = [];
      for (let i = 0; i < samples.length; i++) {
        for (const [id, n] of Object.entries(samples[i].open)) {
          if (n <= LIMIT_PER_POD) continue;
          const lasting = samples
            .filter((s) => s.at >= samples[i].at && s.at <= samples[i].at + 2000)
            .every((s) => (s.open[id] ?? 0) > LIMIT_PER_POD);
          if (lasting) over.push(`${id}: ${n} open at +${Math.round((samples[i].at - samples[0].at) / 1000)} s for 2 s or more`);
        }
      }
      expect(over).toStrictEqual([]);
      expect(samples.length).toBeGreaterThan(20);
      // AND every old socket was closed by the roll, every Envoy pod is new
      expect(full.map((u) => u.ws!.readyState)).toStrictEqual(full.map(() => 3));
      expect(envoys().filter((p) => old.includes(p.name))).toStrictEqual([]);
      // AND the old pods' slots came back: what is open now is what Redis counts, and it fills up to the limit again
      const kept = during.filter((u) => u.status === 101 && u.ws!.readyState === 1);
      await eventually('leases = open sockets', 30_000, async () => ((await leases()) === kept.length ? true : undefined));
      const more = await openN(serviceUrl, LIMIT_PER_POD * BACKENDS - kept.length + 1);
      expect(more.map(said)).toStrictEqual([...Array(LIMIT_PER_POD * BACKENDS - kept.length).fill('101'), '503 capacity']);
      expect(Object.values(await backendOpen())).toStrictEqual(Array(BACKENDS).fill(LIMIT_PER_POD));
      await closeAll(sockets(more));
    } finally {
      await closeAll(sockets([...full, ...during]));
    }
  });

  it('deleting the Redis pod: the open sockets are counted again in the new Redis, and no upgrade is over-admitted afterwards', async () => {
    await rolledOut();
    await eventually('no lease left', 60_000, async () => ((await leases()) === 0 ? true : undefined), 1000);
    const open = await openN(serviceUrl, 4);
    expect(open.map(said)).toStrictEqual(['101', '101', '101', '101']);
    try {
      const redisBefore = pods(NAMES.redis)[0].name;
      k(['-n', NS, 'delete', 'pod', redisBefore]);
      const redisReady = await eventually('a new Redis pod Ready', 120_000, async () => {
        const r = pods(NAMES.redis);
        return r.length === 1 && r[0].name !== redisBefore && r[0].ready ? Date.now() : undefined;
      });
      // THEN the 4 open sockets are counted again (re-registered) in the empty Redis
      await eventually(
        '4 leases in the new Redis',
        (LEASES.leaseTtlSeconds + 20) * 1000,
        async () => ((await leases()) === 4 ? true : undefined),
        1000,
      );
      expect(total(await metricsOf(envoys()[0]), 'ws_admission_reregistered_total')).toBeGreaterThanOrEqual(4);
      // AND upgrades are refused "recovering" only while the agents put the open streams
      // back (at most 10 s by design, docs/filter.md), then the slots left are exactly the
      // rest: 2 more, then 503
      const first = await eventually(
        'the recovery over',
        60_000,
        async () => {
          const u = await upgrade(serviceUrl());
          return said(u) === '503 recovering' ? undefined : u;
        },
        1000,
      );
      expect((Date.now() - redisReady) / 1000).toBeLessThan(15);
      const more = [first, ...(await openN(serviceUrl, 3))];
      expect(more.map(said)).toStrictEqual(['101', '101', '503 capacity', '503 capacity']);
      expect(Object.values(await backendOpen()).every((n) => n <= LIMIT_PER_POD)).toBe(true);
      expect(sum(await backendOpen())).toBe(6);
      await closeAll(sockets(more));
    } finally {
      await closeAll(sockets(open));
    }
  });

  it("scaling the Envoy Deployment in drains the removed pod: its slots come back, the remaining pod's stay", async () => {
    await rolledOut();
    await eventually('no lease left', 60_000, async () => ((await leases()) === 0 ? true : undefined), 1000);
    const [a, b] = envoys();
    const onA = await openN(podUrl(a), 2);
    const onB = await openN(podUrl(b), 2);
    expect([...onA, ...onB].map(said)).toStrictEqual(['101', '101', '101', '101']);
    try {
      await eventually('4 leases', 15_000, async () => ((await leases()) === 4 ? true : undefined));
      const t0 = Date.now();
      k(['-n', NS, 'scale', `deployment/${NAMES.envoy}`, '--replicas=1']);
      const removed = await eventually('a pod terminating', 20_000, async () => pods(NAMES.envoy).find((p) => p.terminating));
      const [gone, stays] = removed.name === a.name ? [onA, onB] : [onB, onA];
      const released = await eventually("the removed pod's leases released", GRACE_SECONDS * 1000, async () =>
        (await leases()) === 2 ? Date.now() : undefined,
      );
      expect((released - t0) / 1000).toBeLessThan(GRACE_SECONDS);
      await eventually('its sockets closed', 30_000, async () => (gone.every((u) => u.ws!.readyState === 3) ? true : undefined));
      expect(stays.map((u) => u.ws!.readyState)).toStrictEqual([1, 1]);
    } finally {
      await closeAll(sockets([...onA, ...onB]));
      k(['-n', NS, 'scale', `deployment/${NAMES.envoy}`, '--replicas=2']);
    }
  });
});

describe('monitoring with a real Prometheus', () => {
  it('discovers exactly the Envoy pods by their scrape annotations, and scrapes each', async () => {
    await rolledOut();
    const targets = await eventually(
      'every Envoy pod a healthy target',
      60_000,
      async () => {
        const t = (await activeTargets(prometheus!)).filter((x) => x.labels.job === 'kubernetes-pods');
        const ips = envoys()
          .map((e) => `${e.ip}:${METRICS_PORT}`)
          .sort();
        const up = t
          .filter((x) => x.health === 'up')
          .map((x) => x.labels.instance)
          .sort();
        return JSON.stringify(up) === JSON.stringify(ips) && t.length === ips.length ? t : undefined;
      },
      2000,
    );
    for (const t of targets) {
      expect(t.labels).toMatchObject({ namespace: NS });
      expect(t.scrapeUrl).toMatch(new RegExp(`:${METRICS_PORT}/metrics$`));
    }
  });

  it('answers every query of dashboards/ws-admission.json with series carrying the labels its panel uses', async () => {
    await rolledOut();
    // With no lease anywhere the per-pod gauge has no series at all: the "Open WebSockets"
    // stat must still say 0, not "No data".
    await eventually('no lease left', 60_000, async () => ((await leases()) === 0 ? true : undefined), 1000);
    await sleep(5000);
    const openPanel = (JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')).panels as Json[]).find((p) => p.title === 'Open WebSockets')!;
    const none = await query(prometheus!, (openPanel.targets[0].expr as string).replace(/\$namespace/g, NS));
    expect(none.map((x) => Number(x.value[1]))).toStrictEqual([0]);
    // GIVEN sockets open on every backend (the per-pod and per-proxy gauges exist only
    // while leases do) and a refusal, scraped at least twice since
    const open = await openN(serviceUrl, LIMIT_PER_POD * BACKENDS + 1);
    expect(open.map(said)).toStrictEqual([...Array(LIMIT_PER_POD * BACKENDS).fill('101'), '503 capacity']);
    try {
      await eventually('Prometheus sees the open sockets', 60_000, async () => {
        const r = await query(prometheus!, `sum(max by (pod) (ws_admission_active_connections{namespace="${NS}"}))`);
        return r.length === 1 && Number(r[0].value[1]) === LIMIT_PER_POD * BACKENDS ? true : undefined;
      });
      await sleep(5000);
      await expectEveryDashboardQueryAnswered();
    } finally {
      await closeAll(sockets(open));
    }
  });
});

/** Every target of the dashboard, evaluated now, has series with every label its legend names. */
async function expectEveryDashboardQueryAnswered(): Promise<void> {
  {
    const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
    const checked: string[] = [];
    for (const panel of dashboard.panels as Json[]) {
      for (const target of (panel.targets ?? []) as Json[]) {
        // Grafana's variables: this namespace, and a rate window over the whole suite.
        const expr = (target.expr as string).replace(/\$namespace/g, NS).replace(/\$__rate_interval/g, '30m');
        const labels = [...((target.legendFormat as string | undefined) ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
        const result = await query(prometheus!, expr);
        expect({ panel: panel.title, expr, series: result.length > 0 }).toStrictEqual({ panel: panel.title, expr, series: true });
        for (const s of result) {
          for (const l of labels)
            expect({ panel: panel.title, label: l, value: s.metric[l] ?? '' }).toMatchObject({ value: expect.stringMatching(/./) });
        }
        checked.push(panel.title);
      }
    }
    expect(checked.length).toBeGreaterThanOrEqual(20);
  }
}
