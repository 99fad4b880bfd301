// constructs/stack.ts (WsAdmissionStack): the whole stack from the typed config, the one test
// file that synthesizes all of it. Snapshots of two profiles, and what only the stack
// decides: which constructs it builds, how it wires them (names, labels, the Redis
// endpoint and password, settings.lua, the NLB's idle timeout), and its outputs. Each
// construct's own behaviour is tested on the construct alone (__tests__/constructs/).
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';
import { Testing } from 'cdktf';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { DASHBOARD_FILE } from '../../constructs/monitoring';
import { ENVOY_SELECTOR } from '../../constructs/names';
import { websocketUrl } from '../../constructs/stack';
import { EVERYTHING_CHANGED, FIXTURES, Json, byName, resources, synth, unescapeTemplate } from '../support/synth';

const LBC = 'service.beta.kubernetes.io/aws-load-balancer';
const POLICY_FILE = path.join(FIXTURES, 'iam', 'lb-controller-policy.json');
const settingsOf = (json: Json): string => byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua'];
const checksumOf = (json: Json): string =>
  byName(json, 'kubernetes_deployment_v1', 'ws-envoy').spec.template.metadata.annotations['checksum/config'];

/**
 * The default deploy with the repository's own lua/ files. Lua contents (the Envoy pod's
 * and the Redis library) and the checksum are masked in the snapshot (their authors change
 * them; the precise tests use fixtures, and the library has its own tests), so the
 * snapshot pins the resources, names and file list.
 */
describe('default profile (repository lua/)', () => {
  const { json } = synth({}, DEFAULT_LUA_DIRS);
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');

  it('matches the snapshot', () => {
    const masked = JSON.parse(JSON.stringify(json));
    const maskedCm = byName(masked, 'kubernetes_config_map_v1', 'ws-envoy-config');
    for (const key of Object.keys(maskedCm.data)) {
      if (key.endsWith('.lua') && key !== 'settings.lua') maskedCm.data[key] = '<lua source>';
    }
    byName(masked, 'kubernetes_config_map_v1', 'ws-redis-functions').data['ws_admission.lua'] = '<lua source>';
    byName(masked, 'kubernetes_deployment_v1', 'ws-envoy').spec.template.metadata.annotations['checksum/config'] = '<sha256>';
    // The dashboard JSON has its own tests (__tests__/constructs/monitoring.test.ts).
    byName(masked, 'kubernetes_config_map_v1', 'ws-admission-dashboard').data['ws-admission.json'] = '<dashboard json>';
    expect(masked).toMatchSnapshot();
  });

  it('ships the Grafana dashboard for the sidecar, and no ServiceMonitor by default', () => {
    const dash = byName(json, 'kubernetes_config_map_v1', 'ws-admission-dashboard');
    expect(dash.metadata.labels.grafana_dashboard).toBe('1');
    expect(JSON.parse(dash.data['ws-admission.json']).uid).toBe('ws-admission');
    expect(resources(json, 'kubernetes_manifest')).toHaveLength(0);
  });

  it('leaves Terraform no template it did not mean: every ${ is a reference of the stack, every %{ escaped', () => {
    // Terraform reads every JSON string as a template. Grafana's `${datasource}` (dashboard)
    // or a Lua `${...}` reaching Terraform unescaped fails the plan ("Invalid reference").
    const text = JSON.stringify(json);
    const interpolations = text.match(/(?<!\$)\$\{[^}]*\}/g) ?? [];
    for (const i of interpolations) {
      expect(i).toMatch(
        /^\$\{(data\.aws_eks_cluster|data\.aws_vpc\.cluster-vpc\.cidr_block\}|kubernetes_[a-z0-9_]+\.|random_password\.|ephemeral\.random_password\.ws_redis_(proxy|admin)\.result\}|try\(kubernetes_service_v1\.|base64decode\(data\.aws_eks_cluster\.|sha256\(\\"[0-9a-f]{64}:\d+:\$\{kubernetes_secret_v1\.)/,
      );
    }
    expect(text.match(/(?<!%)%\{/g)).toBeNull();
    const dash = byName(json, 'kubernetes_config_map_v1', 'ws-admission-dashboard').data['ws-admission.json'];
    expect(dash).toContain('"uid":"$${datasource}"');
    expect(unescapeTemplate(dash)).toBe(JSON.stringify(JSON.parse(fs.readFileSync(DASHBOARD_FILE, 'utf8'))));
  });

  it('ships the entry points envoy.yaml and the pod run: the filter, metrics.lua, the agent, the drain', () => {
    expect(cm.data['filter.lua']).toMatch(/envoy_on_request/);
    expect(cm.data['envoy.yaml']).toContain('filename: /etc/envoy/lua/filter.lua');
    expect(cm.data['envoy.yaml']).toContain('filename: /etc/envoy/lua/metrics.lua');
    for (const f of ['metrics.lua', 'agent.lua', 'drain.lua']) expect(Object.keys(cm.data)).toContain(f);
  });
});

describe('default profile', () => {
  const { text, json } = synth();
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');

  it('builds the in-cluster Redis, the backend Service and the sample backend, Envoy, the NLB and the dashboard', () => {
    expect(
      resources(json, 'kubernetes_deployment_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-echo', 'ws-envoy', 'ws-redis']);
    expect(
      resources(json, 'kubernetes_config_map_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-admission-dashboard', 'ws-envoy-config', 'ws-redis-functions']);
    expect(
      resources(json, 'kubernetes_service_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-backend', 'ws-envoy-metrics', 'ws-envoy-nlb', 'ws-redis']);
  });

  it('has no backend block (local state), and no helm provider without the controller', () => {
    expect(json.terraform.backend).toBeUndefined();
    expect(Object.keys(json.terraform.required_providers).sort()).toEqual(['aws', 'kubernetes', 'random']);
    expect(json.provider.helm).toBeUndefined();
    expect(json.resource.helm_release).toBeUndefined();
    expect(json.resource.aws_iam_role).toBeUndefined();
  });

  it('creates the namespace, labelled for pod security and NLB readiness gates, and puts everything in it', () => {
    expect(Testing.toHaveResourceWithProperties(text, 'kubernetes_namespace_v1', { metadata: { name: 'ws-admission' } })).toBe(true);
    expect(resources(json, 'kubernetes_namespace_v1')[0].metadata.labels).toMatchObject({
      'pod-security.kubernetes.io/warn': 'restricted',
      'pod-security.kubernetes.io/audit': 'restricted',
      // IP targets: a rollout waits until the new Envoys are healthy NLB targets.
      'elbv2.k8s.aws/pod-readiness-gate-inject': 'enabled',
    });
    for (const type of ['kubernetes_deployment_v1', 'kubernetes_service_v1', 'kubernetes_config_map_v1', 'kubernetes_secret_v1']) {
      for (const r of resources(json, type)) expect(r.metadata.namespace).toBe('${kubernetes_namespace_v1.ns.metadata[0].name}');
    }
  });

  it("points the filter at the in-cluster Redis as the proxies' ACL user, with the limits, through settings.lua", () => {
    const s = settingsOf(json);
    // Fully qualified with the trailing dot: no search-domain lookups on an Envoy worker.
    expect(s).toContain('redis_host = "ws-redis.ws-admission.svc.cluster.local.",');
    expect(s).toContain('redis_port = 6379,');
    expect(s).toContain('redis_username = "ws-proxy",');
    expect(s).toContain('redis_password_file = "/etc/ws-redis/password",');
    expect(s).toContain('max_connections_per_pod = 2,');
    expect(s).toContain('rate_limit = 60,');
    expect(s).toContain('lease_ttl_ms = 30000,');
    expect(s).toContain('renew_interval_ms = 10000,');
    // Envoy writes a lease log entry for each open WebSocket every renew interval.
    expect(
      parse(byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['envoy.yaml']).static_resources.listeners[0].filter_chains[0]
        .filters[0].typed_config.access_log_options,
    ).toEqual({
      access_log_flush_interval: '10s',
      flush_log_on_tunnel_successfully_established: true,
    });
    // Its password: the Redis Secret's key, mounted in Envoy and its agent.
    expect(envoy.spec.template.spec.volume.find((v: Json) => v.name === 'redis-auth').secret).toMatchObject({
      secret_name: 'ws-redis-auth',
      items: [{ key: 'password', path: 'password' }],
    });
  });

  it('lets only the Envoy pods reach Redis, and with the hash tag of settings.lua', () => {
    const np = byName(json, 'kubernetes_network_policy_v1', 'ws-redis-envoy-only');
    expect(np.spec.ingress[0].from).toEqual([{ pod_selector: { match_labels: ENVOY_SELECTOR } }]);
    for (const [k, v] of Object.entries(ENVOY_SELECTOR)) expect(envoy.spec.template.metadata.labels[k]).toBe(v);
    expect(settingsOf(json)).toContain('hash_tag = "ws",');
    expect(byName(json, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo['redis.conf']).toContain(' resetkeys ~{ws}:* ');
  });

  it("opens Envoy's metrics port to the cluster VPC (looked up) and the monitoring namespace", () => {
    const np = byName(json, 'kubernetes_network_policy_v1', 'ws-envoy-metrics-restricted');
    expect(np.spec.ingress[1].from).toEqual([
      { ip_block: { cidr: '${data.aws_vpc.cluster-vpc.cidr_block}' } },
      { namespace_selector: { match_labels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
    ]);
    expect(json.data.aws_vpc['cluster-vpc'].id).toMatch(/^\$\{data\.aws_eks_cluster\.[^.]+\.vpc_config\[0\]\.vpc_id\}$/);
  });

  it("puts the NLB in front of the Envoy pods, its TCP idle timeout 30 s above Envoy's, health-checked on their metrics port", () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.spec.selector).toEqual(ENVOY_SELECTOR);
    expect(nlb.metadata.annotations[`${LBC}-listener-attributes.TCP-80`]).toBe('tcp.idle_timeout.seconds=330');
    expect(nlb.metadata.annotations[`${LBC}-healthcheck-port`]).toBe(
      String(envoy.spec.template.spec.container[0].port.find((p: Json) => p.name === 'metrics').container_port),
    );
    // No autoscaler: the Deployment keeps its count.
    expect(json.resource.kubernetes_horizontal_pod_autoscaler_v2).toBeUndefined();
    expect(envoy.spec.replicas).toBe('2');
  });

  it('has described outputs, null-safe on the NLB hostname', () => {
    expect(Object.keys(json.output).sort()).toEqual(
      [
        'load_balancer_hostname',
        'metrics_port_forward',
        'namespace',
        'redis_password_secret',
        'redis_service',
        'state_backend',
        'websocket_url',
      ].sort(),
    );
    for (const o of Object.values<Json>(json.output)) expect(o.description.length).toBeGreaterThan(10);
    expect(json.output.load_balancer_hostname.value).toMatch(
      /^\$\{try\(kubernetes_service_v1\.[^.]+\.status\[0\]\.load_balancer\[0\]\.ingress\[0\]\.hostname, ""\)\}$/,
    );
    expect(json.output.websocket_url.value).toMatch(/^ws:\/\/\$\{try\(.*\)\}\/$/);
    // Never null: before the controller has made the NLB, the URL has no host, and says so.
    expect(json.output.websocket_url.description).toContain('"ws:///" until the NLB has a hostname');
    expect(json.output.redis_service.value).toBe('ws-redis.ws-admission.svc.cluster.local:6379');
    expect(json.output.redis_password_secret.value).toBe('ws-redis-auth');
    expect(json.output.metrics_port_forward.value).toBe('kubectl -n ws-admission port-forward svc/ws-envoy-metrics 9901:9901');
    expect(json.output.state_backend.value).toBe('local');
  });
});

describe('every option changed', () => {
  const { text, json } = synth(EVERYTHING_CHANGED);
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');

  it('matches the snapshot', () => {
    expect(json).toMatchSnapshot();
  });

  it('uses the external Redis: no Redis of its own, the given Secret and user, TLS and the limits in settings.lua', () => {
    expect(resources(json, 'random_password')).toHaveLength(0);
    expect(json.ephemeral).toBeUndefined();
    expect(resources(json, 'kubernetes_deployment_v1').map((d: Json) => d.metadata.name)).toEqual(['ws-envoy']);
    expect(resources(json, 'kubernetes_config_map_v1').map((d: Json) => d.metadata.name)).toEqual(['ws-envoy-config']);
    // No Redis NetworkPolicy (no Redis here); the Envoy one, with the given sources.
    expect(resources(json, 'kubernetes_network_policy_v1').map((p: Json) => p.metadata.name)).toEqual(['ws-envoy-metrics-restricted']);
    expect(envoy.spec.template.spec.volume.find((v: Json) => v.name === 'redis-auth').secret.secret_name).toBe('elasticache-auth');
    const s = cm.data['settings.lua'];
    for (const line of [
      'redis_host = "master.chat.abc123.euw1.cache.amazonaws.com",',
      'redis_port = 6380,',
      'redis_username = "ws-proxy-user",',
      'redis_tls = true,',
      'failure_mode = "closed",',
      'hash_tag = "chat",',
      'lease_ttl_ms = 200000,',
      'renew_interval_ms = 15000,',
      'capacity_cache_ms = 500,',
      'limit_all_requests = true,',
      'connection_inventory = true,',
    ])
      expect(s).toContain(line);
    expect(json.output.redis_service.value).toBe('master.chat.abc123.euw1.cache.amazonaws.com:6380');
    expect(json.output.redis_password_secret.value).toBe('elasticache-auth');
  });

  it('scales Envoy with the autoscaler (from envoyReplicas) and its workers, from the given image', () => {
    expect(envoy.spec.replicas).toBeUndefined();
    expect(byName(json, 'kubernetes_horizontal_pod_autoscaler_v2', 'ws-envoy').spec).toMatchObject({ min_replicas: 4, max_replicas: 12 });
    expect(envoy.spec.template.spec.container[0].args).toContain('4');
    expect(envoy.spec.template.spec.container[0].image).toBe(EVERYTHING_CHANGED.envoyImage);
  });

  it('points Envoy at the renamed backend Service and its health path, without the sample backend', () => {
    const yaml = parse(cm.data['envoy.yaml']);
    const backend = yaml.static_resources.clusters.find((c: Json) => c.name === 'backend');
    expect(backend.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({
      address: 'chat-backend.realtime.svc.cluster.local',
      port_value: 9000,
    });
    expect(backend.health_checks[0].http_health_check.path).toBe('/healthz');
    expect(cm.data['envoy.yaml']).toContain('stream_idle_timeout: 120s');
    expect(cm.data['envoy.yaml']).toContain('max_stream_duration: 7200s');
    expect(cm.data['envoy.yaml']).toContain('access_log_flush_interval: 15s');
    expect(cm.data['envoy.yaml']).toContain('envoy.filters.listener.proxy_protocol');
    expect(byName(json, 'kubernetes_service_v1', 'chat-backend').spec.selector).toEqual({ app: 'chat', tier: 'ws' });
    expect(resources(json, 'kubernetes_deployment_v1').some((d: Json) => d.metadata.name === 'ws-echo')).toBe(false);
  });

  it('makes the NLB internal with proxy protocol, TLS on 8443 beside the kept plain port, the metrics port; the wss:// URL of the hostname', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    const a = nlb.metadata.annotations;
    expect(a[`${LBC}-scheme`]).toBe('internal');
    expect(a[`${LBC}-proxy-protocol`]).toBe('*');
    expect(a[`${LBC}-ssl-cert`]).toBe(EVERYTHING_CHANGED.nlbTlsCertificateArns[0]);
    expect(a[`${LBC}-ssl-negotiation-policy`]).toBe('ELBSecurityPolicy-TLS13-1-3-2021-06');
    expect(nlb.spec.port.map((p: Json) => p.port)).toEqual([80, 8443, 9901]);
    // nlbSetIdleTimeout false: the NLB keeps its own.
    expect(Object.keys(a).filter((k) => k.includes('listener-attributes'))).toEqual([]);
    expect(nlb.spec.load_balancer_source_ranges).toEqual(['203.0.113.0/24', '198.51.100.0/24']);
    expect(json.output.websocket_url.value).toBe('wss://chat.example.com:8443/');
  });

  it('creates a ServiceMonitor on the metrics Service, with the extra labels, and no dashboard', () => {
    const sm = resources(json, 'kubernetes_manifest');
    expect(sm).toHaveLength(1);
    const m = sm[0].manifest;
    expect(m.kind).toBe('ServiceMonitor');
    expect(m.metadata.labels.release).toBe('kube-prometheus-stack');
    expect(m.spec.selector.matchLabels).toEqual(byName(json, 'kubernetes_service_v1', 'ws-envoy-metrics').metadata.labels);
    expect(m.spec.endpoints[0]).toMatchObject({ port: 'metrics', path: '/metrics' });
    expect(resources(json, 'kubernetes_config_map_v1').map((r) => r.metadata.name)).not.toContain('ws-admission-dashboard');
  });

  it('uses an existing namespace, the other cluster and region, and the S3 state without the lock file', () => {
    expect(resources(json, 'kubernetes_namespace_v1')).toHaveLength(0);
    expect(envoy.metadata.namespace).toBe('realtime');
    expect(Testing.toHaveDataSourceWithProperties(text, 'aws_eks_cluster', { name: 'prod-eks' })).toBe(true);
    expect(json.provider.aws[0].region).toBe('eu-west-1');
    expect(json.provider.kubernetes[0].exec[0].args).toStrictEqual([
      'eks',
      'get-token',
      '--cluster-name',
      'prod-eks',
      '--region',
      'eu-west-1',
      '--output',
      'json',
    ]);
    expect(json.terraform.backend).toEqual({
      s3: { bucket: 'acme-tfstate', key: 'realtime/ws.tfstate', region: 'eu-central-1', encrypt: true },
    });
    expect(json.output.state_backend.value).toBe('s3://acme-tfstate/realtime/ws.tfstate');
  });

  it('takes the metrics sources from the config', () => {
    expect(byName(json, 'kubernetes_network_policy_v1', 'ws-envoy-metrics-restricted').spec.ingress[1].from).toEqual([
      { ip_block: { cidr: '10.20.0.0/16' } },
      { ip_block: { cidr: '100.64.0.0/16' } },
      { namespace_selector: { match_labels: { 'kubernetes.io/metadata.name': 'observability' } } },
    ]);
    expect(json.data.aws_vpc).toBeUndefined();
  });
});

describe('options one by one', () => {
  it('validates the config it is given', () => {
    expect(() => synth({ maxConnectionsPerPod: 0 })).toThrow('maxConnectionsPerPod must be a positive integer, got 0.');
  });

  it('an external Redis without a password Secret: no password mounted, and settings.lua says so', () => {
    const { json } = synth({ externalRedisHost: 'redis.example.internal' });
    const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
    expect(envoy.spec.template.spec.volume.map((v: Json) => v.name)).toEqual(['config', 'state', 'tmp']);
    expect(settingsOf(json)).toContain('redis_password_file = "",');
    expect(json.output.redis_password_secret.value).toBe('');
  });

  it('deploySampleBackend=false leaves the backend pods to the user (the headless Service stays)', () => {
    const { json } = synth({ deploySampleBackend: false });
    expect(
      resources(json, 'kubernetes_deployment_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-envoy', 'ws-redis']);
    expect(byName(json, 'kubernetes_service_v1', 'ws-backend')).toBeDefined();
  });

  it("keeps the NLB's TCP idle timeout above Envoy's (120 s -> 150 s; 10 s -> the NLB minimum 60 s), unless nlbSetIdleTimeout is false", () => {
    for (const [idle, nlbIdle] of [
      [120, 150],
      [10, 60],
    ]) {
      const nlb = byName(synth({ idleTimeoutSeconds: idle }).json, 'kubernetes_service_v1', 'ws-envoy-nlb');
      expect(nlb.metadata.annotations[`${LBC}-listener-attributes.TCP-80`]).toBe(`tcp.idle_timeout.seconds=${nlbIdle}`);
    }
    const off = byName(synth({ nlbSetIdleTimeout: false }).json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(Object.keys(off.metadata.annotations).filter((k) => k.includes('listener-attributes'))).toEqual([]);
  });

  it("TLS with the defaults around it: port 443, the NLB's own name in the wss:// URL (no hostname given)", () => {
    const arn = 'arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
    const { json } = synth({ nlbTls: true, nlbTlsCertificateArns: [arn] });
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').spec.port).toEqual([
      { name: 'https', port: 443, target_port: 'http', protocol: 'TCP' },
    ]);
    expect(json.output.websocket_url.value).toBe(
      'wss://${try(kubernetes_service_v1.nlb_service_D1F1CBFF.status[0].load_balancer[0].ingress[0].hostname, "")}/',
    );
    expect(websocketUrl({ nlbTls: true, nlbTlsPort: 443, nlbTlsHostname: 'ws.example.com' }, 'x')).toBe('wss://ws.example.com/');
    expect(websocketUrl({ nlbTls: false, nlbTlsPort: 443, nlbTlsHostname: '' }, 'nlb.example.com')).toBe('ws://nlb.example.com/');
  });

  it('envoyNetworkPolicy=false: no NetworkPolicy on Envoy, and no VPC lookup', () => {
    const { json } = synth({ envoyNetworkPolicy: false });
    expect(Object.keys(json.resource.kubernetes_network_policy_v1)).toHaveLength(1); // Redis's only
    expect(json.data.aws_vpc).toBeUndefined();
  });

  it('a limit, the Envoy config or a Lua file rolls the Envoy pods (the checksum); the replica count does not', () => {
    const base = checksumOf(synth().json);
    expect(checksumOf(synth({ maxConnectionsPerPod: 3 }).json)).not.toBe(base);
    expect(checksumOf(synth({ idleTimeoutSeconds: 200 }).json)).not.toBe(base);
    expect(checksumOf(synth({ renewIntervalSeconds: 5, leaseTtlSeconds: 20 }).json)).not.toBe(base);
    expect(checksumOf(synth({ envoyReplicas: 5 }).json)).toBe(base);
  });
});

describe('installLbController: the AWS Load Balancer Controller, before what its webhooks act on', () => {
  const { json } = synth({ installLbController: true, lbControllerIamPolicyFile: POLICY_FILE });

  it('installs the release with the helm provider, and creates the NLB Service and the Envoy pods after it', () => {
    const release = Object.keys(json.resource.helm_release)[0];
    expect(json.provider.helm).toHaveLength(1);
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').depends_on).toContain(`helm_release.${release}`);
    expect(byName(json, 'kubernetes_deployment_v1', 'ws-envoy').depends_on).toContain(`helm_release.${release}`);
    expect((Object.values(json.resource.aws_iam_role)[0] as Json).name).toBe('ws-eks-ws-admission-lb-controller');
    expect(JSON.parse((Object.values(json.resource.aws_iam_policy)[0] as Json).policy)).toEqual(
      JSON.parse(fs.readFileSync(POLICY_FILE, 'utf8')),
    );
  });

  it('refuses a policy file that cannot be read or is not an IAM policy, naming the file and the fix', () => {
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: '/nonexistent/policy.json' })).toThrow(
      'lbControllerIamPolicyFile "/nonexistent/policy.json" cannot be read',
    );
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: path.join(FIXTURES, 'config', 'good.json') })).toThrow(
      'is not an IAM policy (Version "2012-10-17" and a list of Statement)',
    );
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: path.join(FIXTURES, 'config', 'bad-json.json') })).toThrow(
      'is not JSON',
    );
  });
});

describe('kubeconfig target', () => {
  const { json } = synth({ kubeconfigPath: '/etc/ws/kubeconfig', kubeContext: 'staging' });

  it('has no AWS in the output: no aws provider, no aws_* data source or resource, no AWS requirement', () => {
    expect(json.provider.kubernetes).toStrictEqual([{ config_path: '/etc/ws/kubeconfig', config_context: 'staging' }]);
    expect(Object.keys(json.provider).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(Object.keys(json.terraform.required_providers).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(json.data).toBeUndefined();
    expect(Object.keys(json.resource).filter((t) => t.startsWith('aws_'))).toStrictEqual([]);
    expect(JSON.stringify(json)).not.toMatch(/aws_eks|"aws"|get-token/);
  });

  it("deploys the same objects as the EKS profile once metricsAllowedCidrs names the metrics port's sources", () => {
    const eks = synth().json;
    const own = synth({ kubeconfigPath: '/etc/ws/kubeconfig', kubeContext: 'staging', metricsAllowedCidrs: ['10.0.0.0/16'] }).json;
    for (const type of Object.keys(eks.resource)) {
      expect(Object.keys(own.resource[type]).sort()).toStrictEqual(Object.keys(eks.resource[type]).sort());
    }
    // Without them there is no VPC to look up: no Envoy NetworkPolicy rather than one
    // that would block the kubelet's probes (Redis keeps its own).
    expect(Object.keys(json.resource.kubernetes_network_policy_v1)).toStrictEqual(['redis_network-policy_61AE90EF']);
  });
});

describe('GIVEN kubeconfig mode with publicServiceType NodePort', () => {
  const { json } = synth({ kubeconfigPath: '/etc/kubeconfig', publicServiceType: 'NodePort' });

  it("expects no PROXY header on Envoy's public listener (nlbProxyProtocol is the NLB's; a client could send its own)", () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.metadata.annotations).toBeUndefined();
    const envoyYaml = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['envoy.yaml'] as string;
    expect(envoyYaml).not.toContain('proxy_protocol');
  });

  it('outputs the in-cluster URL of the public Service and no load balancer hostname', () => {
    expect(json.output.websocket_url.value).toBe('ws://ws-envoy-nlb.ws-admission.svc.cluster.local/');
    expect(json.output.load_balancer_hostname.value).toBe('');
  });
});
