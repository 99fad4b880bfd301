// The stack applied for real: the real providers against a real kube-apiserver (etcd,
// controller-manager, scheduler and a kwok fake node, all on loopback, started and
// stopped here). Apply the defaults, check every object against the config, change the
// config and apply again (in place where it should be; the Lua change rolls Envoy), move
// the namespace, destroy, and check that nothing is left. The steps share one cluster and
// one state, in order: a failed step fails the ones after it.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { StackConfig } from '../../config/schema';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { ENVOY_SELECTOR, NAMES, PART_OF, REDIS_SELECTOR } from '../../constructs/names';
import { LIVE_PATH, READY_PATH } from '../../envoy/bootstrap';
import { startCluster, stopCluster } from '../../tools/cluster/cluster';
import { ClusterState, CONTEXT, kubectl, NODE_NAME } from '../../tools/cluster/common';
import { findInstalled } from '../../tools/cluster/toolchain';
import { NodeProcessRunner } from '../../tools/common/process';
import { MemoryReporter } from '../../tools/common/progress';
import { realProbes, waitForLoadBalancer, waitForRollouts } from '../../tools/deploy/verify';
import { byName, EVERYTHING_CHANGED, Json, unescapeTemplate } from '../support/synth';
import { synthInto, tfAsync, tfAsyncOk, tfOk } from './support';

jest.setTimeout(15 * 60_000);

const BASE_PORT = 23500; // cluster:up's default is 23400: both can run at once
const FAKE_LB_HOSTNAME = 'ws-envoy-nlb-0123456789.elb.us-east-1.amazonaws.com';
const toolchain = findInstalled();
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-cluster-'));
const stateDir = path.join(root, 'stack');
let cluster: ClusterState | undefined;
let fakeLb: NodeJS.Timeout | undefined;

function k(args: readonly string[]): string {
  const r = kubectl(toolchain, cluster!.kubeconfig, args);
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
function get(ns: string | undefined, what: string): Json {
  return JSON.parse(k([...(ns ? ['-n', ns] : []), 'get', what, '-o', 'json']));
}
function exists(ns: string | undefined, what: string): boolean {
  return kubectl(toolchain, cluster!.kubeconfig, [...(ns ? ['-n', ns] : []), 'get', what, '-o', 'name']).status === 0;
}

/**
 * Plays the AWS Load Balancer Controller's one visible part: a Service of type
 * LoadBalancer gets a hostname in its status (the nlb construct waits for it).
 */
function startFakeLoadBalancerController(): void {
  fakeLb = setInterval(() => {
    const r = kubectl(toolchain, cluster!.kubeconfig, ['get', 'svc', '-A', '-o', 'json'], 10_000);
    if (r.status !== 0) return;
    for (const s of JSON.parse(r.stdout).items as Json[]) {
      if (s.spec.type !== 'LoadBalancer' || s.status?.loadBalancer?.ingress) continue;
      kubectl(
        toolchain,
        cluster!.kubeconfig,
        [
          '-n',
          s.metadata.namespace,
          'patch',
          'svc',
          s.metadata.name,
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify({ status: { loadBalancer: { ingress: [{ hostname: FAKE_LB_HOSTNAME }] } } }),
        ],
        10_000,
      );
    }
  }, 1000);
}

/** The profile applied: the defaults (sample backend included), connected through the cluster's kubeconfig. */
function profile(overrides: Partial<StackConfig> = {}): Partial<StackConfig> {
  return { ...overrides, kubeconfigPath: cluster!.kubeconfig, kubeContext: CONTEXT };
}

interface Applied {
  readonly json: Json;
  readonly plan: Json;
}

/** Synth, plan (saved, read back as JSON), apply that plan. */
async function apply(overrides: Partial<StackConfig>, luaDirs: readonly string[] = DEFAULT_LUA_DIRS): Promise<Applied> {
  const { json } = synthInto(stateDir, toolchain, profile(overrides), luaDirs);
  await tfAsyncOk(toolchain, stateDir, ['plan', '-input=false', '-out=tfplan']);
  const plan = JSON.parse(tfOk(toolchain, stateDir, ['show', '-json', 'tfplan']).replace(/^[^{]*/, ''));
  const out = await tfAsyncOk(toolchain, stateDir, ['apply', '-input=false', '-auto-approve', 'tfplan']);
  // A provider's warning (a deprecated attribute, a value it changed) is a finding too.
  expect(out).not.toMatch(/Warning/);
  if (process.env.WS_CLUSTER_VERBOSE) process.stdout.write(`${JSON.stringify(changes(plan), null, 1)}\n`);
  return { json, plan };
}

/** `address -> actions` of a saved plan, for the resources it would touch. */
function changes(plan: Json): { [address: string]: string } {
  const out: { [address: string]: string } = {};
  for (const c of plan.resource_changes ?? []) {
    const a = (c.change.actions as string[]).join(',');
    if (a !== 'no-op' && a !== 'read') out[`${c.type}.${c.name}`] = a;
  }
  return out;
}

function luaFiles(dirs: readonly string[]): { [name: string]: string } {
  const out: { [name: string]: string } = {};
  for (const d of dirs)
    for (const f of fs.readdirSync(d).filter((n) => n.endsWith('.lua'))) out[f] = fs.readFileSync(path.join(d, f), 'utf8');
  return out;
}

/** Every Deployment of `ns` rolled out: all replicas updated and ready, on the fake node. */
function expectRolledOut(ns: string): void {
  for (const d of get(ns, 'deployments').items as Json[]) {
    const want = d.spec.replicas;
    expect({
      name: d.metadata.name,
      updated: d.status.updatedReplicas,
      ready: d.status.readyReplicas,
      available: d.status.availableReplicas,
      total: d.status.replicas,
    }).toStrictEqual({ name: d.metadata.name, updated: want, ready: want, available: want, total: want });
  }
  for (const p of get(ns, 'pods').items as Json[]) {
    expect({ pod: p.metadata.name, phase: p.status.phase, node: p.spec.nodeName }).toStrictEqual({
      pod: p.metadata.name,
      phase: 'Running',
      node: NODE_NAME,
    });
  }
}

beforeAll(async () => {
  cluster = await startCluster({ toolchain, dir: path.join(root, 'cluster'), basePort: BASE_PORT, lifetimeSeconds: 3600 });
  startFakeLoadBalancerController();
  tfOk(toolchain, (fs.mkdirSync(stateDir, { recursive: true }), synthInto(stateDir, toolchain, profile()).dir), ['init', '-input=false']);
}, 5 * 60_000);

afterAll(async () => {
  if (fakeLb) clearInterval(fakeLb);
  if (cluster) await stopCluster(cluster);
  if (!process.env.WS_CLUSTER_KEEP) fs.rmSync(root, { recursive: true, force: true });
});

describe(`the stack on a local kube-apiserver (${toolchain.cli.kind} ${toolchain.cli.version})`, () => {
  const ns = 'ws-admission';
  let first: Applied;

  it('applies the default profile with the sample backend, and every Deployment rolls out on the fake node', async () => {
    first = await apply({});
    expect(Object.values(changes(first.plan)).every((a) => a === 'create')).toBe(true);
    expectRolledOut(ns);
    expect(
      get(ns, 'deployments')
        .items.map((d: Json) => d.metadata.name)
        .sort(),
    ).toStrictEqual([NAMES.sampleBackend, NAMES.envoy, NAMES.redis].sort());
    // The NLB's hostname reached the outputs.
    const outputs = JSON.parse(tfOk(toolchain, stateDir, ['output', '-json']));
    expect(outputs.load_balancer_hostname.value).toBe(FAKE_LB_HOSTNAME);
    expect(outputs.websocket_url.value).toBe(`ws://${FAKE_LB_HOSTNAME}/`);
  });

  it("passes npm run deploy's verification steps that apply here (rollouts, the NLB address)", async () => {
    // The deploy tool's own checks, with the built kubectl first on PATH. Skipped, each for
    // a reason: DNS, HTTP and the WebSocket upgrade through the NLB (no NLB exists: the
    // hostname is the fake controller's; kwok runs no container, so no Envoy answers), and
    // the AWS prerequisites (kubeconfig mode uses no AWS).
    const ctx = {
      runner: new NodeProcessRunner(),
      probes: realProbes,
      reporter: new MemoryReporter(),
      timeoutMs: 30_000,
      intervalMs: 500,
      env: { ...process.env, KUBECONFIG: cluster!.kubeconfig, PATH: `${path.dirname(toolchain.bin.kubectl)}:${process.env.PATH}` },
    };
    expect((await waitForRollouts(ctx, ns)).sort()).toStrictEqual(
      [`${NAMES.sampleBackend} 3/3`, `${NAMES.envoy} 2/2`, `${NAMES.redis} 1/1`].sort(),
    );
    expect(await waitForLoadBalancer(ctx, ns, NAMES.nlb)).toBe(FAKE_LB_HOSTNAME);
  });

  it('labels the namespace as configured', () => {
    const want = first.json.resource.kubernetes_namespace_v1.ns.metadata.labels;
    expect(get(undefined, `namespace/${ns}`).metadata.labels).toMatchObject(want);
    expect(want['elbv2.k8s.aws/pod-readiness-gate-inject']).toBe('enabled');
  });

  it('lets only Envoy reach Redis (NetworkPolicy) and keeps one Envoy at most unavailable (PDB)', () => {
    const np = get(ns, `networkpolicy/${NAMES.redisPolicy}`).spec;
    expect(np.podSelector.matchLabels).toStrictEqual(REDIS_SELECTOR);
    expect(np.policyTypes).toStrictEqual(['Ingress']);
    expect(np.ingress).toHaveLength(1);
    expect(np.ingress[0].from).toStrictEqual([{ podSelector: { matchLabels: ENVOY_SELECTOR } }]);
    expect(np.ingress[0].ports).toStrictEqual([{ port: 6379, protocol: 'TCP' }]);
    const pdb = get(ns, `pdb/${NAMES.envoyPdb}`).spec;
    expect(pdb).toMatchObject({ maxUnavailable: 1, selector: { matchLabels: ENVOY_SELECTOR } });
  });

  it('runs every pod restricted: non-root, read-only root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp', () => {
    for (const d of get(ns, 'deployments').items as Json[]) {
      const pod = d.spec.template.spec;
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      for (const c of pod.containers) {
        expect({ c: c.name, ...c.securityContext }).toStrictEqual({
          c: c.name,
          runAsNonRoot: true,
          allowPrivilegeEscalation: false,
          privileged: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        });
      }
    }
  });

  it('passes the API server\'s own PodSecurity check at "restricted" (the namespace only warns; enforcing would keep every pod)', () => {
    // A server-side dry run of `enforce=restricted` lists every existing pod that would violate it.
    const warnings = (namespace: string): string => {
      const r = kubectl(toolchain, cluster!.kubeconfig, [
        'label',
        '--dry-run=server',
        '--overwrite',
        'namespace',
        namespace,
        'pod-security.kubernetes.io/enforce=restricted',
      ]);
      expect(r.status).toBe(0);
      return r.stderr;
    };
    expect(warnings(ns)).toBe('');
    // The check can fail: a pod without a securityContext is reported.
    k(['create', 'namespace', 'psa-control']);
    try {
      k(['-n', 'psa-control', 'run', 'bare', '--image=busybox:1', '--restart=Never']);
      expect(warnings('psa-control')).toMatch(/violate the new PodSecurity enforce level "restricted:latest"/);
    } finally {
      k(['delete', 'namespace', 'psa-control', '--wait=false']);
    }
  });

  it('probes Envoy on the metrics listener and puts the config checksum and scrape annotations on its pods', () => {
    const envoy = get(ns, `deployment/${NAMES.envoy}`);
    const c = envoy.spec.template.spec.containers.find((x: Json) => x.name === 'envoy');
    expect(c.readinessProbe).toMatchObject({
      httpGet: { path: READY_PATH, port: 9901, scheme: 'HTTP' },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
    });
    expect(c.livenessProbe).toMatchObject({ httpGet: { path: LIVE_PATH, port: 9901 }, initialDelaySeconds: 10, periodSeconds: 10 });
    const synthesized = byName(first.json, 'kubernetes_deployment_v1', NAMES.envoy).spec.template.metadata.annotations;
    expect(envoy.spec.template.metadata.annotations).toStrictEqual(synthesized);
    expect(envoy.spec.template.metadata.annotations['checksum/config']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('ships the ConfigMap with exactly the repository Lua files, envoy.yaml and settings.lua', () => {
    const data = get(ns, `configmap/${NAMES.envoyConfig}`).data;
    const files = luaFiles(DEFAULT_LUA_DIRS);
    for (const [name, text] of Object.entries(files)) expect({ name, text: data[name] }).toStrictEqual({ name, text });
    const synthesized = byName(first.json, 'kubernetes_config_map_v1', NAMES.envoyConfig).data;
    expect(data['envoy.yaml']).toBe(unescapeTemplate(synthesized['envoy.yaml']));
    expect(data['settings.lua']).toBe(unescapeTemplate(synthesized['settings.lua']));
    expect(Object.keys(data).sort()).toStrictEqual([...Object.keys(files), 'envoy.yaml', 'settings.lua'].sort());
  });

  it('writes generated Redis passwords into the Secret only (write-only data_wo: not in the state), the same ones in its redis.conf', () => {
    const secret = get(ns, `secret/${NAMES.redisSecret}`);
    expect(Object.keys(secret.data).sort()).toStrictEqual(['admin-password', 'password', 'redis.conf']);
    const password = Buffer.from(secret.data.password, 'base64').toString();
    const admin = Buffer.from(secret.data['admin-password'], 'base64').toString();
    for (const p of [password, admin]) expect(p).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(password).not.toBe(admin);
    const conf = Buffer.from(secret.data['redis.conf'], 'base64').toString().split('\n');
    // The default user off (its permissions serve the AOF replay alone: constructs/redis.ts).
    expect(conf.find((l) => l.startsWith('user default '))).toMatch(/^user default off /);
    expect(conf.find((l) => l.startsWith('user ws-proxy '))).toMatch(new RegExp(`^user ws-proxy on >${password} resetkeys ~\\{ws\\}:\\* `));
    expect(conf).toContain(`user ws-admin on >${admin} ~* &* +@all`);
    // Neither password is anywhere in the state (nor was it in the plan).
    const state = tfOk(toolchain, stateDir, ['show', '-json']);
    expect(state).toContain(NAMES.redisSecret);
    for (const p of [password, admin]) expect(state.includes(p)).toBe(false);
    expect(JSON.stringify(first.plan).includes(password)).toBe(false);
  });

  it('creates the Services: headless backend, Redis, metrics, and the NLB with its controller annotations', () => {
    const backend = get(ns, 'svc/ws-backend').spec;
    expect(backend).toMatchObject({ clusterIP: 'None', selector: { 'app.kubernetes.io/name': 'ws-echo' } });
    expect(get(ns, `svc/${NAMES.redis}`).spec.selector).toStrictEqual(REDIS_SELECTOR);
    expect(get(ns, `svc/${NAMES.envoyMetrics}`).spec).toMatchObject({ type: 'ClusterIP', selector: ENVOY_SELECTOR });
    const nlb = get(ns, `svc/${NAMES.nlb}`);
    expect(nlb.spec).toMatchObject({ type: 'LoadBalancer', selector: ENVOY_SELECTOR });
    expect(nlb.metadata.annotations).toStrictEqual(byName(first.json, 'kubernetes_service_v1', NAMES.nlb).metadata.annotations);
  });

  it('a second plan of the same config changes nothing (no drift from API-server defaults)', async () => {
    synthInto(stateDir, toolchain, profile());
    const r = await tfAsync(toolchain, stateDir, ['plan', '-input=false', '-detailed-exitcode']);
    expect({ status: r.status, out: r.status === 0 ? '' : r.out }).toStrictEqual({ status: 0, out: '' });
  });

  it('changes replicas, a limit, a Lua file and the backend selector in place; the Lua change rolls Envoy', async () => {
    const before = get(ns, `deployment/${NAMES.envoy}`);
    const oldPods = (get(ns, 'pods').items as Json[])
      .filter((p) => p.metadata.labels['app.kubernetes.io/name'] === NAMES.envoy)
      .map((p) => p.metadata.name);
    // GIVEN a copy of the Lua files with filter.lua changed
    const lua = DEFAULT_LUA_DIRS.map((d) => {
      const to = path.join(root, 'lua', path.basename(d));
      fs.cpSync(d, to, { recursive: true });
      return to;
    });
    const filter = path.join(lua[0], 'filter.lua');
    fs.appendFileSync(filter, '\n-- changed by the cluster test\n');
    const selector = { 'app.kubernetes.io/name': 'ws-echo-v2' };
    // WHEN applied with more replicas, another per-pod limit and another backend selector
    const second = await apply({ envoyReplicas: 3, maxConnectionsPerPod: 3, backendSelector: selector }, lua);
    // THEN Envoy's Deployment, its ConfigMap and the backend Service update in place
    const c = changes(second.plan);
    for (const [type, name] of [
      ['kubernetes_deployment_v1', NAMES.envoy],
      ['kubernetes_config_map_v1', NAMES.envoyConfig],
      ['kubernetes_service_v1', 'ws-backend'],
    ]) {
      const address = Object.keys(second.json.resource[type]).find((a) => second.json.resource[type][a].metadata.name === name)!;
      expect({ address, action: c[`${type}.${address}`] }).toStrictEqual({ address, action: 'update' });
    }
    // Only the sample backend's Deployment may be replaced (its selector is immutable).
    const replaced = Object.entries(c)
      .filter(([, a]) => a.includes('delete'))
      .map(([address]) => address);
    expect(replaced.filter((a) => !a.startsWith('kubernetes_deployment_v1.sample-backend'))).toStrictEqual([]);
    const after = get(ns, `deployment/${NAMES.envoy}`);
    expect(after.metadata.uid).toBe(before.metadata.uid);
    expect(after.spec.replicas).toBe(3);
    expect(after.spec.template.metadata.annotations['checksum/config']).not.toBe(
      before.spec.template.metadata.annotations['checksum/config'],
    );
    expectRolledOut(ns);
    // The rollout replaced every Envoy pod.
    const newPods = (get(ns, 'pods').items as Json[])
      .filter((p) => p.metadata.labels['app.kubernetes.io/name'] === NAMES.envoy)
      .map((p) => p.metadata.name);
    expect(newPods).toHaveLength(3);
    expect(newPods.filter((p) => oldPods.includes(p))).toStrictEqual([]);
    const data = get(ns, `configmap/${NAMES.envoyConfig}`).data;
    expect(data['filter.lua']).toBe(fs.readFileSync(filter, 'utf8'));
    expect(data['settings.lua']).toContain('max_connections_per_pod = 3,');
    expect(get(ns, 'svc/ws-backend').spec.selector).toStrictEqual(selector);
    expect(get(ns, `deployment/${NAMES.sampleBackend}`).spec.template.metadata.labels).toMatchObject(selector);
  });

  it('rotates the Redis passwords when redisPasswordRevision grows: new ones in the Secret, Redis rolls, nothing replaced', async () => {
    const lua = DEFAULT_LUA_DIRS.map((d) => path.join(root, 'lua', path.basename(d)));
    const secret = () => get(ns, `secret/${NAMES.redisSecret}`);
    const before = { secret: secret(), redis: get(ns, `deployment/${NAMES.redis}`) };
    // WHEN the same config as the step before, with the next revision
    const third = await apply(
      { envoyReplicas: 3, maxConnectionsPerPod: 3, backendSelector: { 'app.kubernetes.io/name': 'ws-echo-v2' }, redisPasswordRevision: 2 },
      lua,
    );
    // THEN the Secret is updated in place with new passwords, and the Redis pod template changes
    expect(Object.values(changes(third.plan)).filter((a) => a.includes('delete'))).toStrictEqual([]);
    const after = { secret: secret(), redis: get(ns, `deployment/${NAMES.redis}`) };
    expect(after.secret.metadata.uid).toBe(before.secret.metadata.uid);
    for (const key of ['password', 'admin-password']) expect(after.secret.data[key]).not.toBe(before.secret.data[key]);
    const conf = Buffer.from(after.secret.data['redis.conf'], 'base64').toString();
    expect(conf).toContain(`user ws-proxy on >${Buffer.from(after.secret.data.password, 'base64').toString()} `);
    expect(after.redis.spec.template.metadata.annotations['checksum/config']).not.toBe(
      before.redis.spec.template.metadata.annotations['checksum/config'],
    );
    expectRolledOut(ns);
  });

  it('moves everything to a renamed namespace, and the old one is gone', async () => {
    const moved = 'ws-admission-b';
    await apply({
      namespace: moved,
      envoyReplicas: 3,
      maxConnectionsPerPod: 3,
      backendSelector: { 'app.kubernetes.io/name': 'ws-echo-v2' },
    });
    expect(exists(undefined, `namespace/${ns}`)).toBe(false);
    expectRolledOut(moved);
    expect(
      get(moved, 'deployments')
        .items.map((d: Json) => d.metadata.name)
        .sort(),
    ).toStrictEqual([NAMES.sampleBackend, NAMES.envoy, NAMES.redis].sort());
    // settings.lua names Redis by its name in the new namespace.
    expect(get(moved, `configmap/${NAMES.envoyConfig}`).data['settings.lua']).toContain(`${NAMES.redis}.${moved}.svc.cluster.local.`);
  });

  it('destroys everything: an empty state and no object of the stack left in the cluster', async () => {
    await tfAsyncOk(toolchain, stateDir, ['destroy', '-input=false', '-auto-approve']);
    expect(tfOk(toolchain, stateDir, ['state', 'list']).trim()).toBe('');
    expect(exists(undefined, 'namespace/ws-admission-b')).toBe(false);
    const left = k([
      'get',
      'all,configmaps,secrets,networkpolicies,pdb',
      '-A',
      '-l',
      `app.kubernetes.io/part-of=${PART_OF}`,
      '-o',
      'name',
    ]).trim();
    expect(left).toBe('');
  });
});

describe('every option changed, on the same cluster', () => {
  const ns = EVERYTHING_CHANGED.namespace;

  it('applies into an existing namespace with an external Redis and a ServiceMonitor (CRD installed), then destroys only its own objects', async () => {
    // GIVEN what that profile expects to exist: its namespace, the Redis AUTH Secret, the CRD
    k(['create', 'namespace', ns]);
    k([
      '-n',
      ns,
      'create',
      'secret',
      'generic',
      EVERYTHING_CHANGED.externalRedisPasswordSecret,
      '--from-literal=password=not-a-real-token',
    ]);
    k(['apply', '-f', path.join(__dirname, 'fixtures', 'servicemonitor-crd.yaml')]);
    k(['wait', '--for=condition=Established', 'crd/servicemonitors.monitoring.coreos.com', '--timeout=60s']);
    // WHEN applied (state kept locally: the profile's S3 backend is dropped)
    const { json } = await apply({ ...EVERYTHING_CHANGED, remoteStateBucket: '' });
    // THEN Envoy rolls out with the external Redis' Secret, the ServiceMonitor is there as configured
    expectRolledOut(ns);
    expect(get(ns, 'deployments').items.map((d: Json) => d.metadata.name)).toStrictEqual([NAMES.envoy]);
    // The autoscaler owns the replica count: its controller enforces the minimum
    // (envoyReplicas) by itself, and a plan after that wants nothing back.
    const hpa = get(ns, `hpa/${NAMES.envoy}`);
    expect(hpa.spec).toMatchObject({ minReplicas: EVERYTHING_CHANGED.envoyReplicas, maxReplicas: EVERYTHING_CHANGED.envoyMaxReplicas });
    for (let i = 0; i < 120 && get(ns, `deployment/${NAMES.envoy}`).spec.replicas !== EVERYTHING_CHANGED.envoyReplicas; i++) {
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect(get(ns, `deployment/${NAMES.envoy}`).spec.replicas).toBe(EVERYTHING_CHANGED.envoyReplicas);
    k(['-n', ns, 'scale', `deployment/${NAMES.envoy}`, '--replicas=6']); // what the autoscaler does under load
    // The TLS listener and the source ranges, as the API server keeps them.
    expect(get(ns, `svc/${NAMES.nlb}`).spec.ports.map((p: Json) => [p.name, p.port, p.targetPort])).toStrictEqual([
      ['http', 80, 'http'],
      ['https', 8443, 'http'],
      ['metrics', 9901, 'metrics'],
    ]);
    expect(get(ns, `svc/${NAMES.nlb}`).spec.loadBalancerSourceRanges).toStrictEqual(EVERYTHING_CHANGED.nlbSourceRanges);
    const sm = get(ns, 'servicemonitor/ws-envoy');
    const want = Object.values(json.resource.kubernetes_manifest)[0] as Json;
    expect(sm.spec).toStrictEqual(want.manifest.spec);
    expect(sm.metadata.labels).toMatchObject({ release: 'kube-prometheus-stack' });
    expect(get(ns, `svc/${NAMES.nlb}`).metadata.annotations).toStrictEqual(
      byName(json, 'kubernetes_service_v1', NAMES.nlb).metadata.annotations,
    );
    // AND a second plan changes nothing (kubernetes_manifest included; the replica count
    // the autoscaler, here kubectl, set is not reset)
    const again = await tfAsync(toolchain, stateDir, ['plan', '-input=false', '-detailed-exitcode']);
    expect({ status: again.status, out: again.status === 0 ? '' : again.out }).toStrictEqual({ status: 0, out: '' });
    // AND a destroy removes the stack's objects and leaves the namespace and the user's Secret
    await tfAsyncOk(toolchain, stateDir, ['destroy', '-input=false', '-auto-approve']);
    expect(tfOk(toolchain, stateDir, ['state', 'list']).trim()).toBe('');
    expect(
      k([
        'get',
        'all,configmaps,secrets,networkpolicies,pdb,servicemonitors',
        '-A',
        '-l',
        `app.kubernetes.io/part-of=${PART_OF}`,
        '-o',
        'name',
      ]).trim(),
    ).toBe('');
    expect(exists(ns, `secret/${EVERYTHING_CHANGED.externalRedisPasswordSecret}`)).toBe(true);
  });
});

describe('EKS mode on the same cluster: kubernetes authenticates through the exec plugin', () => {
  it('runs `aws eks get-token --cluster-name ws-eks --region us-east-1 --output json` and applies with the ExecCredential it prints', async () => {
    // GIVEN the EKS profile with only the AWS lookups replaced by this cluster's endpoint and
    // CA (no aws provider here), and a stand-in `aws` on PATH that logs its arguments and
    // prints the ExecCredential the real one would
    const bin = path.join(root, 'fake-aws');
    fs.mkdirSync(bin, { recursive: true });
    const calls = path.join(bin, 'calls.log');
    const credential = JSON.stringify({
      kind: 'ExecCredential',
      apiVersion: 'client.authentication.k8s.io/v1beta1',
      spec: {},
      status: { token: cluster!.token },
    });
    fs.writeFileSync(path.join(bin, 'aws'), `#!/bin/sh\necho "$*" >> '${calls}'\necho '${credential}'\n`, { mode: 0o755 });
    // (metricsAllowedCidrs given: the Envoy NetworkPolicy needs no VPC lookup either)
    const { json } = synthInto(stateDir, toolchain, { metricsAllowedCidrs: ['127.0.0.0/8'] });
    const ca = fs.readFileSync(cluster!.caFile, 'utf8');
    const endpoint = { host: cluster!.server, cluster_ca_certificate: ca };
    const k8sProvider = json.provider.kubernetes[0];
    expect(k8sProvider.exec).toHaveLength(1);
    Object.assign(k8sProvider, endpoint);
    delete json.provider.aws;
    delete json.data;
    delete json.terraform.required_providers.aws;
    fs.writeFileSync(path.join(stateDir, 'cdk.tf.json'), JSON.stringify(json, null, 2));
    const env = { PATH: `${bin}:${process.env.PATH}` };
    // WHEN applied and destroyed
    // (async: the fake load balancer controller must run meanwhile)
    await tfAsyncOk(toolchain, stateDir, ['apply', '-input=false', '-auto-approve'], 5 * 60_000, env);
    expectRolledOut('ws-admission');
    // The Envoy NetworkPolicy (its sources given) as the API server keeps it.
    expect(get('ws-admission', 'networkpolicy/ws-envoy-metrics-restricted').spec.ingress).toStrictEqual([
      { ports: [{ port: 8080, protocol: 'TCP' }] },
      {
        from: [
          { ipBlock: { cidr: '127.0.0.0/8' } },
          { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
        ],
        ports: [{ port: 9901, protocol: 'TCP' }],
      },
    ]);
    await tfAsyncOk(toolchain, stateDir, ['destroy', '-input=false', '-auto-approve'], 5 * 60_000, env);
    // THEN every call of the plugin asked for exactly this cluster's token
    const lines = fs.readFileSync(calls, 'utf8').trim().split('\n');
    expect(lines.length).toBeGreaterThan(0);
    expect([...new Set(lines)]).toStrictEqual(['eks get-token --cluster-name ws-eks --region us-east-1 --output json']);
    expect(exists(undefined, 'namespace/ws-admission')).toBe(false);
  });
});
