import * as fs from 'fs';
import { Testing } from 'cdktf';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { DASHBOARD_FILE } from '../../constructs/monitoring';
import { EVERYTHING_CHANGED, Json, byName, resources, synth, unescapeTemplate } from '../support/synth';

/**
 * The default deploy with the repository's own lua/ files. Lua contents and the checksum
 * are masked in the snapshot (the filter's authors change them; the precise tests below
 * use fixtures), so the snapshot pins the resources, names and file list.
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
    byName(masked, 'kubernetes_deployment_v1', 'ws-envoy').spec.template.metadata.annotations['checksum/config'] = '<sha256>';
    // The dashboard JSON has its own tests (__tests__/tools/monitoring.test.ts).
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

  it('ships the filter and metrics entry points that envoy.yaml loads', () => {
    expect(cm.data['filter.lua']).toMatch(/envoy_on_request/);
    expect(cm.data['metrics.lua']).toBeDefined();
    expect(cm.data['envoy.yaml']).toContain('filename: /etc/envoy/lua/filter.lua');
    expect(cm.data['envoy.yaml']).toContain('filename: /etc/envoy/lua/metrics.lua');
  });
});

describe('default profile', () => {
  const { text, json } = synth();

  // (Testing.toBeValidTerraform needs `terraform init` with provider downloads: not here.)
  it('has no backend block (local state)', () => {
    expect(json.terraform.backend).toBeUndefined();
    // No Helm release by default (installLbController is off): no helm provider either.
    expect(Object.keys(json.terraform.required_providers).sort()).toEqual(['aws', 'kubernetes', 'random']);
    expect(json.provider.helm).toBeUndefined();
  });

  it('creates the namespace and puts everything in it', () => {
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
    expect(json.output.metrics_port_forward.value).toBe('kubectl -n ws-admission port-forward svc/ws-envoy-metrics 9901:9901');
    expect(json.output.state_backend.value).toBe('local');
  });
});

describe('every option changed', () => {
  const { text, json } = synth(EVERYTHING_CHANGED);
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');

  it('matches the snapshot', () => {
    expect(json).toMatchSnapshot();
  });

  it('creates a ServiceMonitor on the metrics Service, with the extra labels, and no dashboard', () => {
    const sm = resources(json, 'kubernetes_manifest');
    expect(sm).toHaveLength(1);
    const m = sm[0].manifest;
    expect(m.kind).toBe('ServiceMonitor');
    expect(m.metadata.labels.release).toBe('kube-prometheus-stack');
    expect(m.spec.selector.matchLabels['app.kubernetes.io/component']).toBe('metrics');
    expect(m.spec.endpoints[0]).toMatchObject({ port: 'metrics', path: '/metrics' });
    expect(resources(json, 'kubernetes_config_map_v1').map((r) => r.metadata.name)).not.toContain('ws-admission-dashboard');
  });

  it('uses an existing namespace, the other cluster and region', () => {
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
  });
});

describe('options one by one', () => {
  it('the stack validates the config it is given', () => {
    expect(() => synth({ maxConnectionsPerPod: 0 })).toThrow('maxConnectionsPerPod must be a positive integer, got 0.');
  });
});
