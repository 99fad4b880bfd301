import * as fs from 'fs';
import * as path from 'path';
import { Testing } from 'cdktf';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { DASHBOARD_FILE } from '../../constructs/monitoring';
import { EVERYTHING_CHANGED, Json, byName, resources, synth, unescapeTemplate } from './support/synth';

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

  it('looks up the EKS cluster and configures the providers from it', () => {
    expect(Testing.toHaveDataSourceWithProperties(text, 'aws_eks_cluster', { name: 'ws-eks' })).toBe(true);
    expect(json.provider.aws[0].region).toBe('us-east-1');
    const k8s = json.provider.kubernetes[0];
    expect(k8s.host).toMatch(/^\$\{data\.aws_eks_cluster\.[^.]+\.endpoint\}$/);
    expect(k8s.cluster_ca_certificate).toMatch(/^\$\{base64decode\(data\.aws_eks_cluster\.[^.]+\.certificate_authority\[0\]\.data\)\}$/);
  });

  it('authenticates kubernetes and helm with `aws eks get-token` (an exec plugin), not a 15-minute token read once', () => {
    // GIVEN the EKS profile with a Helm release (the controller)
    const policy = path.join(__dirname, 'fixtures', 'iam', 'lb-controller-policy.json');
    const { json } = synth({ installLbController: true, lbControllerIamPolicyFile: policy });
    const exec = {
      api_version: 'client.authentication.k8s.io/v1beta1',
      command: 'aws',
      args: ['eks', 'get-token', '--cluster-name', 'ws-eks', '--region', 'us-east-1', '--output', 'json'],
    };
    const k8s = json.provider.kubernetes[0];
    // THEN both providers run the plugin, and no token is read at plan time
    expect(k8s.exec).toStrictEqual([exec]);
    expect(k8s.token).toBeUndefined();
    expect(json.data.aws_eks_cluster_auth).toBeUndefined();
    // helm 3.x takes `kubernetes` (and its `exec`) as nested objects, not blocks
    expect(json.provider.helm[0].kubernetes).toStrictEqual({ host: k8s.host, cluster_ca_certificate: k8s.cluster_ca_certificate, exec });
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

  it('uses the S3 backend without the lock file when asked', () => {
    expect(json.terraform.backend).toEqual({
      s3: { bucket: 'acme-tfstate', key: 'realtime/ws.tfstate', region: 'eu-central-1', encrypt: true },
    });
    expect(json.output.state_backend.value).toBe('s3://acme-tfstate/realtime/ws.tfstate');
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

describe('TLS at the NLB with the defaults around it', () => {
  const arn = 'arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
  const { json } = synth({ nlbTls: true, nlbTlsCertificateArns: [arn] });
  const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');

  it('closes the plain port, listens on 443 with the current default policy, and gives the wss:// URL of the NLB', () => {
    expect(nlb.spec.port).toEqual([{ name: 'https', port: 443, target_port: 'http', protocol: 'TCP' }]);
    expect(nlb.metadata.annotations['service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy']).toBe(
      'ELBSecurityPolicy-TLS13-1-2-2021-06',
    );
    // AWS fixes a TLS listener's idle timeout at 350 s: the attribute is for TCP listeners
    // only, so there is none here, and the kept plain port gets its own.
    expect(Object.keys(nlb.metadata.annotations).filter((k) => k.includes('listener-attributes'))).toEqual([]);
    const kept = byName(
      synth({ nlbTls: true, nlbTlsCertificateArns: [arn], nlbKeepPlainPort: true }).json,
      'kubernetes_service_v1',
      'ws-envoy-nlb',
    );
    expect(Object.entries(kept.metadata.annotations).filter(([k]) => k.includes('listener-attributes'))).toEqual([
      ['service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-80', 'tcp.idle_timeout.seconds=330'],
    ]);
    expect(nlb.spec.load_balancer_source_ranges).toBeUndefined();
    expect(json.output.websocket_url.value).toBe(
      'wss://${try(kubernetes_service_v1.nlb_service_D1F1CBFF.status[0].load_balancer[0].ingress[0].hostname, "")}/',
    );
    // No autoscaler by default: the Deployment keeps its count.
    expect(json.resource.kubernetes_horizontal_pod_autoscaler_v2).toBeUndefined();
    expect(byName(json, 'kubernetes_deployment_v1', 'ws-envoy').spec.replicas).toBe('2');
  });
});

describe('remote state', () => {
  it('uses the S3 backend with use_lockfile, in the cluster region by default', () => {
    const { json } = synth({ remoteStateBucket: 'acme-tfstate' });
    expect(json.terraform.backend).toEqual({
      s3: { bucket: 'acme-tfstate', key: 'ws-envoy-admission/terraform.tfstate', region: 'us-east-1', encrypt: true, use_lockfile: true },
    });
  });
});

describe('options one by one', () => {
  it('the stack validates the config it is given', () => {
    expect(() => synth({ maxConnectionsPerPod: 0 })).toThrow('maxConnectionsPerPod must be a positive integer, got 0.');
  });
});

describe('kubeconfig target', () => {
  // GIVEN a kubeconfig file and context instead of the EKS lookup
  const { json } = synth({ kubeconfigPath: '/etc/ws/kubeconfig', kubeContext: 'staging' });
  const text = JSON.stringify(json);

  it('configures kubernetes from the file and context (no helm: the one Helm release is EKS only)', () => {
    expect(json.provider.kubernetes).toStrictEqual([{ config_path: '/etc/ws/kubeconfig', config_context: 'staging' }]);
    expect(json.provider.helm).toBeUndefined();
    expect(json.provider.random).toStrictEqual([{}]);
  });

  it('has no AWS in the output: no aws provider, no aws_* data source or resource, no AWS requirement', () => {
    expect(Object.keys(json.provider).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(Object.keys(json.terraform.required_providers).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(json.data).toBeUndefined();
    expect(Object.keys(json.resource).filter((t) => t.startsWith('aws_'))).toStrictEqual([]);
    expect(text).not.toMatch(/aws_eks|"aws"|get-token/);
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

  it("uses the file's current-context when kubeContext is empty", () => {
    const own = synth({ kubeconfigPath: '~/.kube/config' }).json;
    expect(own.provider.kubernetes).toStrictEqual([{ config_path: '~/.kube/config' }]);
  });
});
