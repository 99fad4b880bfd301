import * as fs from 'fs';
import * as path from 'path';
import { TerraformStack, Testing } from 'cdktf';
import { REDIS_PROXY_COMMANDS, Redis } from '../../constructs/redis';
import { DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { DASHBOARD_FILE } from '../../constructs/monitoring';
import { ENVOY_RELEASE } from '../../envoy/release';
import { EVERYTHING_CHANGED, Json, byName, resources, synth, unescapeTemplate } from './support/synth';

const LBC = 'service.beta.kubernetes.io/aws-load-balancer';

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
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const pod = envoy.spec.template.spec;
  const container = pod.container[0];

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

  it('runs two Envoy replicas of the pinned custom image with the config file and concurrency', () => {
    expect(envoy.spec.replicas).toBe('2');
    expect(container.image).toBe(`ws-envoy-lua:${ENVOY_RELEASE.version}-${ENVOY_RELEASE.imageBuild}`);
    expect(container.command).toEqual(['envoy']);
    expect(container.args).toEqual([
      '-c',
      '/etc/envoy/envoy.yaml',
      '--concurrency',
      '2',
      '--disable-hot-restart',
      '--log-level',
      'info',
      '--file-flush-interval-msec',
      '100',
    ]);
    expect(envoy.spec.strategy).toEqual({ type: 'RollingUpdate', rolling_update: { max_surge: '1', max_unavailable: '0' } });
  });

  it('runs the lease-log reader beside Envoy: same image, settings, state and password; restricted; no readiness probe', () => {
    const containers = envoy.spec.template.spec.container;
    expect(containers.map((c: Json) => c.name)).toEqual(['envoy', 'lease-log']);
    const side = containers[1];
    expect(side.image).toBe(container.image);
    expect(side.command).toEqual(['sh', '-c', "trap 'exit 0' TERM INT; luajit /etc/envoy/lua/lease_log.lua & wait $!; exit $?"]);
    expect(side.env).toEqual([
      { name: 'WS_LUA_DIR', value: '/etc/envoy/lua' },
      { name: 'WS_STATE_DIR', value: '/var/run/ws-admission' },
      { name: 'WS_ENVOY_ADMIN', value: '127.0.0.1:9000' },
    ]);
    expect(side.volume_mount.map((m: Json) => m.name)).toEqual(['config', 'state', 'redis-auth']);
    expect(side.readiness_probe).toBeUndefined();
    // It outlives Envoy's preStop sleep, so streams ending during it are still released.
    expect(side.lifecycle.pre_stop).toEqual([{ exec: { command: ['sleep', '15'] } }]);
    expect(side.liveness_probe.exec.command[0]).toBe('luajit');
    expect(side.liveness_probe.exec.command[2]).toContain('/var/run/ws-admission/lease-log.alive');
    expect(side.resources).toEqual({ requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '200m', memory: '64Mi' } });
  });

  it("sizes Envoy's CPU by its worker threads: 250m requested per worker, 1 CPU per worker + 500m allowed", () => {
    expect(container.resources).toEqual({
      requests: { cpu: '500m', memory: '128Mi' },
      limits: { cpu: '2500m', memory: '256Mi' },
    });
  });

  it('gives Envoy its identity, Lua and state directories through the environment', () => {
    expect(container.env).toEqual([
      { name: 'POD_NAME', value_from: { field_ref: { field_path: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', value_from: { field_ref: { field_path: 'metadata.namespace' } } },
      { name: 'WS_LUA_DIR', value: '/etc/envoy/lua' },
      { name: 'WS_STATE_DIR', value: '/var/run/ws-admission' },
    ]);
  });

  it('mounts the Redis password as /etc/ws-redis/password (mode 0400), state and tmp as emptyDirs', () => {
    expect(pod.volume.find((v: Json) => v.name === 'redis-auth')).toEqual({
      name: 'redis-auth',
      secret: { secret_name: 'ws-redis-auth', default_mode: '0400', items: [{ key: 'password', path: 'password' }] },
    });
    expect(container.volume_mount).toEqual([
      { name: 'config', mount_path: '/etc/envoy', read_only: true },
      { name: 'state', mount_path: '/var/run/ws-admission' },
      { name: 'tmp', mount_path: '/tmp' },
      { name: 'redis-auth', mount_path: '/etc/ws-redis', read_only: true },
    ]);
    expect(pod.volume.find((v: Json) => v.name === 'state').empty_dir).toBeDefined();
  });

  it("runs Envoy as the image's non-root user, group-owning the mounted Secret", () => {
    expect(pod.security_context).toMatchObject({ run_as_user: '10101', run_as_group: '10101', fs_group: '10101' });
  });

  it('probes readiness and liveness on the metrics listener /ready', () => {
    expect(container.readiness_probe.http_get).toEqual({ path: '/ready', port: '9901' });
    expect(container.liveness_probe.http_get).toEqual({ path: '/ready', port: '9901' });
    expect(container.port).toEqual([
      { name: 'http', container_port: 8080, protocol: 'TCP' },
      { name: 'metrics', container_port: 9901, protocol: 'TCP' },
    ]);
  });

  it('runs every pod restricted: non-root, read-only root, no escalation, no capabilities, RuntimeDefault seccomp', () => {
    for (const d of resources(json, 'kubernetes_deployment_v1')) {
      const spec = d.spec.template.spec;
      expect(spec.security_context).toMatchObject({ run_as_non_root: true, seccomp_profile: { type: 'RuntimeDefault' } });
      expect(spec.automount_service_account_token).toBe(false);
      for (const c of spec.container) {
        expect(c.security_context).toEqual({
          run_as_non_root: true,
          allow_privilege_escalation: false,
          privileged: false,
          read_only_root_filesystem: true,
          capabilities: { drop: ['ALL'] },
          seccomp_profile: { type: 'RuntimeDefault' },
        });
        expect(c.resources.requests.cpu).toBeDefined();
        expect(c.resources.limits.memory).toBeDefined();
        // The lease-log sidecar has no readiness probe on purpose (the pod serves without it).
        if (c.name !== 'lease-log') expect(c.readiness_probe).toBeDefined();
        expect(c.liveness_probe).toBeDefined();
      }
    }
  });

  it('spreads Envoy over zones and hosts and keeps a PDB', () => {
    expect(pod.topology_spread_constraint.map((t: Json) => t.topology_key)).toEqual([
      'topology.kubernetes.io/zone',
      'kubernetes.io/hostname',
    ]);
    for (const t of pod.topology_spread_constraint) {
      expect(t.label_selector).toEqual([
        { match_labels: { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' } },
      ]);
      expect(t.max_skew).toBe(1);
    }
    expect(byName(json, 'kubernetes_pod_disruption_budget_v1', 'ws-envoy').spec).toEqual({
      max_unavailable: '1',
      selector: { match_labels: { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' } },
    });
  });

  it('annotates Envoy pods for Prometheus and with the config checksum', () => {
    const a = envoy.spec.template.metadata.annotations;
    expect(a['prometheus.io/scrape']).toBe('true');
    expect(a['prometheus.io/port']).toBe('9901');
    expect(a['prometheus.io/path']).toBe('/metrics');
    expect(a['checksum/config']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('deploys Redis with one replica, its config from the Secret and no persistence', () => {
    const redis = byName(json, 'kubernetes_deployment_v1', 'ws-redis');
    expect(redis.spec.replicas).toBe('1');
    expect(redis.spec.strategy).toEqual({ type: 'Recreate' });
    const c = redis.spec.template.spec.container[0];
    expect(c.image).toBe('redis:7.4.2-alpine');
    expect(c.command).toEqual(['redis-server']);
    expect(c.args).toEqual(['/etc/redis/redis.conf']);
    expect(JSON.stringify(c)).not.toMatch(/random_password/);
    expect(c.env).toEqual([{ name: 'REDISCLI_AUTH', value_from: { secret_key_ref: { name: 'ws-redis-auth', key: 'admin-password' } } }]);
    expect(c.readiness_probe.exec.command).toEqual(['sh', '-c', 'redis-cli --user ws-admin -h 127.0.0.1 ping | grep -q PONG']);
    expect(c.liveness_probe.tcp_socket).toEqual([{ port: '6379' }]);
    expect(redis.spec.template.spec.security_context.run_as_user).toBe('999');
    expect(redis.spec.template.spec.volume.map((v: Json) => v.name)).toEqual(['config', 'data']);
    // The settings' hash and both passwords, hashed by Terraform.
    // The settings' hash, the password revision and the Secret's uid, hashed by Terraform.
    expect(redis.spec.template.metadata.annotations['checksum/config']).toMatch(
      /^\$\{sha256\("[0-9a-f]{64}:1:\$\{kubernetes_secret_v1\.redis_secret_[0-9A-F]+\.metadata\[0\]\.uid\}"\)\}$/,
    );
  });

  it('rolls Redis when its settings change', () => {
    const sum = (j: Json) => byName(j, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    const { stack } = synth();
    expect(sum(json)).toBe(sum(JSON.parse(Testing.synth(stack))));
    const other = new Redis(new TerraformStack(Testing.app(), 'x'), 'r', {
      namespace: 'ws-admission',
      image: 'redis:7.4.2-alpine',
      clientSelector: { a: 'b' },
      maxMemory: '512mb',
    });
    expect(other.deployment).toBeDefined();
    const otherJson = JSON.parse(Testing.synth(other.node.scope as TerraformStack));
    expect(sum(otherJson)).not.toBe(sum(json));
  });

  it('rotates the passwords when redisPasswordRevision grows: the Secret is rewritten and Redis rolls', () => {
    const sum = (j: Json): string =>
      byName(j, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    const next = synth({ redisPasswordRevision: 2 }).json;
    expect(byName(json, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo_revision).toBe(1);
    expect(byName(next, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo_revision).toBe(2);
    expect(sum(next)).not.toBe(sum(json));
    expect(sum(next)).toContain(':2:${kubernetes_secret_v1.');
  });

  it("with redisPasswordInState: random_password resources, the Secret's data, and a checksum over both passwords", () => {
    const inState = synth({ redisPasswordInState: true }).json;
    expect(inState.ephemeral).toBeUndefined();
    expect(inState.terraform.required_version).toBeUndefined();
    const secret = byName(inState, 'kubernetes_secret_v1', 'ws-redis-auth');
    expect(secret.data.password).toMatch(/^\$\{random_password\.redis_password_[0-9A-F]+\.result\}$/);
    expect(secret.data['admin-password']).toMatch(/^\$\{random_password\.redis_admin-password_[0-9A-F]+\.result\}$/);
    expect(secret.data_wo).toBeUndefined();
    const sum: string = byName(inState, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    expect(sum).toContain(secret.data.password);
    expect(sum).toContain(secret.data['admin-password']);
    // A rotation replaces both (keepers).
    expect(Object.values(inState.resource.random_password).map((p) => (p as Json).keepers)).toEqual([{ revision: '1' }, { revision: '1' }]);
  });

  it("generates the Redis passwords outside the state, into the Secret only: the default user off, the proxies' user limited", () => {
    // Ephemeral values (never in the state or a plan) through the write-only data_wo.
    expect(json.resource.random_password).toBeUndefined();
    expect(json.ephemeral).toEqual({
      random_password: {
        ws_redis_proxy: { length: 40, special: false },
        ws_redis_admin: { length: 40, special: false },
      },
    });
    expect(json.terraform.required_version).toBe('>= 1.11.0');
    const secret = byName(json, 'kubernetes_secret_v1', 'ws-redis-auth');
    expect(secret.data).toBeUndefined();
    const wo = secret.data_wo;
    expect(wo.password).toBe('${ephemeral.random_password.ws_redis_proxy.result}');
    expect(wo['admin-password']).toBe('${ephemeral.random_password.ws_redis_admin.result}');
    const conf: string = wo['redis.conf'];
    expect(conf).not.toContain('requirepass');
    expect(conf.split('\n').filter((l) => l.startsWith('user '))).toEqual([
      'user default off',
      `user ws-proxy on >${wo.password} resetkeys ~{ws}:* resetchannels -@all ${REDIS_PROXY_COMMANDS.map((x) => '+' + x).join(' ')}`,
      `user ws-admin on >${wo['admin-password']} ~* &* +@all`,
    ]);
    expect(conf).toContain('save ""');
    expect(conf).toContain('maxmemory-policy noeviction');
    // The filter authenticates as the proxies' user.
    const settings = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua'];
    expect(settings).toContain('redis_username = "ws-proxy",');
  });

  it('lets only the Envoy pods reach Redis on 6379', () => {
    const np = byName(json, 'kubernetes_network_policy_v1', 'ws-redis-envoy-only');
    expect(np.spec).toEqual({
      pod_selector: { match_labels: { 'app.kubernetes.io/name': 'ws-redis', 'app.kubernetes.io/part-of': 'ws-admission' } },
      policy_types: ['Ingress'],
      ingress: [
        {
          from: [{ pod_selector: { match_labels: { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' } } }],
          ports: [{ port: '6379', protocol: 'TCP' }],
        },
      ],
    });
    const envoyLabels = envoy.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(np.spec.ingress[0].from[0].pod_selector.match_labels)) expect(envoyLabels[k]).toBe(v);
  });

  it('opens the Envoy public port to all and the metrics port only to the cluster VPC and the monitoring namespace', () => {
    const np = byName(json, 'kubernetes_network_policy_v1', 'ws-envoy-metrics-restricted');
    expect(np.spec).toEqual({
      pod_selector: { match_labels: { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' } },
      policy_types: ['Ingress'],
      ingress: [
        { ports: [{ port: '8080', protocol: 'TCP' }] },
        {
          from: [
            { ip_block: { cidr: '${data.aws_vpc.cluster-vpc.cidr_block}' } },
            { namespace_selector: { match_labels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
          ],
          ports: [{ port: '9901', protocol: 'TCP' }],
        },
      ],
    });
    // The VPC is the cluster's, and the ports are the ones the containers and the NLB use.
    expect(json.data.aws_vpc['cluster-vpc'].id).toMatch(/^\$\{data\.aws_eks_cluster\.[^.]+\.vpc_config\[0\]\.vpc_id\}$/);
    const ports = envoy.spec.template.spec.container[0].port.map((p: Json) => [p.name, p.container_port]);
    expect(ports).toEqual(
      expect.arrayContaining([
        ['http', 8080],
        ['metrics', 9901],
      ]),
    );
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.metadata.annotations['service.beta.kubernetes.io/aws-load-balancer-healthcheck-port']).toBe('9901');
  });

  it('takes the metrics sources from the config, and no NetworkPolicy on Envoy when envoyNetworkPolicy is false', () => {
    const own = synth({ metricsAllowedCidrs: ['10.1.0.0/16'], metricsScraperNamespaceLabels: {} }).json;
    expect(byName(own, 'kubernetes_network_policy_v1', 'ws-envoy-metrics-restricted').spec.ingress[1].from).toEqual([
      { ip_block: { cidr: '10.1.0.0/16' } },
    ]);
    expect(own.data.aws_vpc).toBeUndefined();
    const off = synth({ envoyNetworkPolicy: false }).json;
    expect(Object.keys(off.resource.kubernetes_network_policy_v1)).toHaveLength(1); // Redis's only
    expect(off.data.aws_vpc).toBeUndefined();
  });

  it('keeps Redis on a volume with redisPersistence aof: AOF every second, a claim that does not wait for its pod', () => {
    const aof = synth({ redisPersistence: 'aof', redisStorageClass: 'gp3', redisVolumeSize: '2Gi' }).json;
    const pvc = byName(aof, 'kubernetes_persistent_volume_claim_v1', 'ws-redis-data');
    expect(pvc.spec).toEqual({ access_modes: ['ReadWriteOnce'], resources: { requests: { storage: '2Gi' } }, storage_class_name: 'gp3' });
    expect(pvc.wait_until_bound).toBe(false);
    const spec = byName(aof, 'kubernetes_deployment_v1', 'ws-redis').spec;
    expect(spec.strategy).toEqual({ type: 'Recreate' }); // one writer of the volume at a time
    expect(spec.template.spec.volume.find((v: Json) => v.name === 'data')).toEqual({
      name: 'data',
      persistent_volume_claim: {
        claim_name: expect.stringMatching(/^\$\{kubernetes_persistent_volume_claim_v1\.redis_data_[0-9A-F]+\.metadata\[0\]\.name\}$/),
      },
    });
    const conf: string = byName(aof, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo['redis.conf'];
    expect(conf).toContain('appendonly yes\nappendfsync everysec\n');
    expect(conf).toContain('save ""');
    // The default: no claim, an emptyDir, no AOF.
    expect(json.resource.kubernetes_persistent_volume_claim_v1).toBeUndefined();
    expect(byName(json, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo['redis.conf']).toContain('appendonly no\n');
  });

  it('exposes Redis as a ClusterIP Service on 6379', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-redis').spec).toMatchObject({
      type: 'ClusterIP',
      port: [{ name: 'redis', port: 6379, target_port: 'redis', protocol: 'TCP' }],
    });
  });

  it('creates a headless Service over the backend pods', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-backend').spec).toEqual({
      cluster_ip: 'None',
      publish_not_ready_addresses: false,
      selector: { 'app.kubernetes.io/name': 'ws-echo' },
      port: [{ name: 'ws', port: 8080, target_port: '8080', protocol: 'TCP' }],
    });
  });

  it('deploys the sample echo backend: 3 pinned replicas the headless Service selects', () => {
    const echo = byName(json, 'kubernetes_deployment_v1', 'ws-echo');
    expect(echo.spec.replicas).toBe('3');
    expect(echo.spec.template.spec.container[0].image).toBe('jmalloc/echo-server:v0.3.7');
    expect(echo.spec.template.metadata.labels['app.kubernetes.io/name']).toBe('ws-echo');
    expect(echo.spec.template.spec.container[0].env).toEqual([{ name: 'PORT', value: '8080' }]);
  });

  it('puts Envoy behind an internet-facing NLB with IP targets, cross-zone and a /ready health check', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.wait_for_load_balancer).toBe(true);
    expect(nlb.spec.type).toBe('LoadBalancer');
    expect(nlb.spec.port).toEqual([{ name: 'http', port: 80, target_port: 'http', protocol: 'TCP' }]);
    expect(nlb.metadata.annotations).toEqual({
      [`${LBC}-type`]: 'external',
      [`${LBC}-nlb-target-type`]: 'ip',
      [`${LBC}-scheme`]: 'internet-facing',
      [`${LBC}-attributes`]: 'load_balancing.cross_zone.enabled=true',
      [`${LBC}-target-group-attributes`]: 'deregistration_delay.timeout_seconds=30',
      // Envoy's idle timeout (300 s) + 30 s: Envoy ends a quiet WebSocket, not the NLB.
      [`${LBC}-listener-attributes.TCP-80`]: 'tcp.idle_timeout.seconds=330',
      [`${LBC}-healthcheck-protocol`]: 'HTTP',
      [`${LBC}-healthcheck-port`]: '9901',
      [`${LBC}-healthcheck-path`]: '/ready',
      [`${LBC}-healthcheck-interval`]: '10',
      [`${LBC}-healthcheck-timeout`]: '5',
      [`${LBC}-healthcheck-healthy-threshold`]: '2',
      [`${LBC}-healthcheck-unhealthy-threshold`]: '2',
    });
  });

  it('serves metrics on a ClusterIP Service, not on the NLB', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-metrics').spec).toMatchObject({
      type: 'ClusterIP',
      port: [{ name: 'metrics', port: 9901, target_port: 'metrics', protocol: 'TCP' }],
    });
  });

  it('labels the metrics Service uniquely, so a ServiceMonitor selects only it', () => {
    const labels = byName(json, 'kubernetes_service_v1', 'ws-envoy-metrics').metadata.labels;
    expect(labels['app.kubernetes.io/component']).toBe('metrics');
    const matching = resources(json, 'kubernetes_service_v1').filter((svc: Json) =>
      Object.entries(labels).every(([k, v]) => svc.metadata.labels?.[k] === v),
    );
    expect(matching.map((svc: Json) => svc.metadata.name)).toEqual(['ws-envoy-metrics']);
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

  it('passes the limits to the filter through settings.lua', () => {
    const settings = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua'];
    expect(settings).toContain('max_connections_per_pod = 2,');
    expect(settings).toContain('rate_limit = 60,');
    // Fully qualified with the trailing dot: no search-domain lookups on an Envoy worker.
    expect(settings).toContain('redis_host = "ws-redis.ws-admission.svc.cluster.local.",');
  });
});

describe('every option changed', () => {
  const { text, json } = synth(EVERYTHING_CHANGED);
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');

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

  it('uses the external Redis: no Redis of its own, the given Secret, TLS in settings.lua', () => {
    expect(resources(json, 'random_password')).toHaveLength(0);
    // No Redis NetworkPolicy (no Redis here); the Envoy one, with the given sources.
    expect(resources(json, 'kubernetes_network_policy_v1').map((p: Json) => p.metadata.name)).toEqual(['ws-envoy-metrics-restricted']);
    expect(resources(json, 'kubernetes_deployment_v1').map((d: Json) => d.metadata.name)).toEqual(['ws-envoy']);
    expect(envoy.spec.template.spec.volume.find((v: Json) => v.name === 'redis-auth').secret.secret_name).toBe('elasticache-auth');
    const s = cm.data['settings.lua'];
    expect(s).toContain('redis_host = "master.chat.abc123.euw1.cache.amazonaws.com",');
    expect(s).toContain('redis_port = 6380,');
    expect(s).toContain('redis_tls = true,');
    expect(s).toContain('failure_mode = "closed",');
    expect(s).toContain('hash_tag = "chat",');
    expect(s).toContain('lease_ttl_ms = 200000,');
    expect(s).toContain('renew_interval_ms = 15000,');
    expect(s).toContain('hosts_cache_ms = 2000,');
    expect(s).toContain('limit_all_requests = true,');
    expect(s).toContain('connection_inventory = true,');
    expect(json.output.redis_service.value).toBe('master.chat.abc123.euw1.cache.amazonaws.com:6380');
  });

  it('scales Envoy and its workers (4 workers: 1000m CPU requested, 4500m allowed)', () => {
    // The autoscaler owns the count (min 4 = envoyReplicas), so the Deployment sets none.
    expect(envoy.spec.replicas).toBeUndefined();
    expect(byName(json, 'kubernetes_horizontal_pod_autoscaler_v2', 'ws-envoy').spec.min_replicas).toBe(4);
    expect(envoy.spec.template.spec.container[0].args).toContain('4');
    expect(envoy.spec.template.spec.container[0].resources.requests.cpu).toBe('1000m');
    expect(envoy.spec.template.spec.container[0].resources.limits.cpu).toBe('4500m');
    expect(envoy.spec.template.spec.container[0].image).toBe('123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-7');
  });

  it('points Envoy at the renamed backend Service and health path, without the sample backend', () => {
    const yaml = cm.data['envoy.yaml'];
    expect(yaml).toContain('address: chat-backend.realtime.svc.cluster.local');
    expect(yaml).toContain('port_value: 9000');
    expect(yaml).toContain('path: /healthz');
    expect(yaml).toContain('stream_idle_timeout: 120s');
    expect(yaml).toContain('max_stream_duration: 7200s');
    expect(yaml).toContain('envoy.filters.listener.proxy_protocol');
    expect(byName(json, 'kubernetes_service_v1', 'chat-backend').spec.selector).toEqual({ app: 'chat', tier: 'ws' });
    expect(resources(json, 'kubernetes_deployment_v1').some((d: Json) => d.metadata.name === 'ws-echo')).toBe(false);
  });

  it('makes the NLB internal, with proxy protocol and the metrics port', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.metadata.annotations[`${LBC}-scheme`]).toBe('internal');
    expect(nlb.metadata.annotations[`${LBC}-proxy-protocol`]).toBe('*');
    expect(nlb.spec.port.map((p: Json) => p.port)).toEqual([80, 8443, 9901]);
  });

  it('terminates TLS at the NLB: the certificate, the port, the policy, the wss:// URL, the source ranges', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    const a = nlb.metadata.annotations;
    expect(a[`${LBC}-ssl-cert`]).toBe('arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b');
    expect(a[`${LBC}-ssl-ports`]).toBe('8443');
    expect(a[`${LBC}-ssl-negotiation-policy`]).toBe('ELBSecurityPolicy-TLS13-1-3-2021-06');
    // The TLS port goes to Envoy's plain listener; the plain port was kept (nlbKeepPlainPort).
    expect(nlb.spec.port.find((p: Json) => p.name === 'https')).toEqual({
      name: 'https',
      port: 8443,
      target_port: 'http',
      protocol: 'TCP',
    });
    expect(nlb.spec.load_balancer_source_ranges).toEqual(['203.0.113.0/24', '198.51.100.0/24']);
    expect(json.output.websocket_url.value).toBe('wss://chat.example.com:8443/');
  });

  it('scales Envoy with an autoscaler: CPU target, envoyReplicas as minimum, slow scale-down', () => {
    const hpa = byName(json, 'kubernetes_horizontal_pod_autoscaler_v2', 'ws-envoy');
    expect(hpa.spec).toEqual({
      scale_target_ref: {
        api_version: 'apps/v1',
        kind: 'Deployment',
        name: expect.stringMatching(/^\$\{kubernetes_deployment_v1\.envoy_deployment_[0-9A-F]+\.metadata\[0\]\.name\}$/),
      },
      min_replicas: 4,
      max_replicas: 12,
      metric: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', average_utilization: 70 } } }],
      behavior: {
        scale_down: [
          { stabilization_window_seconds: 600, select_policy: 'Min', policy: [{ type: 'Pods', value: 1, period_seconds: 300 }] },
        ],
      },
    });
    // The disruption budget holds for any count the autoscaler picks.
    expect(byName(json, 'kubernetes_pod_disruption_budget_v1', 'ws-envoy').spec.max_unavailable).toBe('1');
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
  it('deploySampleBackend=false leaves the backend to the user', () => {
    const { json } = synth({ deploySampleBackend: false });
    expect(
      resources(json, 'kubernetes_deployment_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-envoy', 'ws-redis']);
    expect(byName(json, 'kubernetes_service_v1', 'ws-backend')).toBeDefined();
  });

  it('an external Redis without a password Secret mounts no password and says so in settings.lua', () => {
    const { json } = synth({ externalRedisHost: 'redis.example.internal' });
    const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
    expect(envoy.spec.template.spec.volume.map((v: Json) => v.name)).toEqual(['config', 'state', 'tmp']);
    expect(byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua']).toContain('redis_password_file = "",');
  });

  it("keeps the NLB's TCP idle timeout above Envoy's on every listener it publishes (120 s -> 150 s; 10 s -> the NLB minimum 60 s)", () => {
    for (const [idle, nlbIdle] of [
      [120, 150],
      [10, 60],
    ]) {
      const { json } = synth({ idleTimeoutSeconds: idle, renewIntervalSeconds: 5, exposeMetricsOnNlb: true, nlbScheme: 'internal' });
      const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
      const ports = nlb.spec.port.map((p: Json) => p.port);
      expect(ports).toEqual([80, 9901]);
      const attrs = Object.entries(nlb.metadata.annotations as Record<string, string>).filter(([k]) =>
        k.startsWith(`${LBC}-listener-attributes.`),
      );
      expect(attrs).toEqual(ports.map((p: number) => [`${LBC}-listener-attributes.TCP-${p}`, `tcp.idle_timeout.seconds=${nlbIdle}`]));
    }
  });

  it("nlbSetIdleTimeout=false leaves the NLB's listener attributes alone (for a controller whose IAM policy lacks them)", () => {
    const { json } = synth({ nlbSetIdleTimeout: false, idleTimeoutSeconds: 300 });
    const keys = Object.keys(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').metadata.annotations);
    expect(keys.filter((k) => k.includes('listener-attributes'))).toEqual([]);
    expect(keys).toContain(`${LBC}-target-group-attributes`);
  });

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

describe('installLbController: the AWS Load Balancer Controller with its IAM role', () => {
  const policyFile = path.join(__dirname, 'fixtures', 'iam', 'lb-controller-policy.json');
  const { json } = synth({ installLbController: true, lbControllerIamPolicyFile: policyFile });

  it('installs the pinned chart in kube-system with the cluster, region, VPC and the role on its service account', () => {
    const release = Object.values(json.resource.helm_release)[0] as Json;
    expect(release).toMatchObject({
      name: 'aws-load-balancer-controller',
      namespace: 'kube-system',
      repository: 'https://aws.github.io/eks-charts',
      chart: 'aws-load-balancer-controller',
      version: '3.5.0',
      wait: true,
    });
    const values = JSON.parse(release.values[0]);
    expect(values).toEqual({
      clusterName: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.name\}$/),
      region: 'us-east-1',
      vpcId: expect.stringMatching(/^\$\{data\.aws_eks_cluster\.[^.]+\.vpc_config\[0\]\.vpc_id\}$/),
      serviceAccount: {
        create: true,
        name: 'aws-load-balancer-controller',
        annotations: { 'eks.amazonaws.com/role-arn': expect.stringMatching(/^\$\{aws_iam_role\.[^.]+\.arn\}$/) },
      },
    });
  });

  it("trusts only the controller's service account through the cluster's OIDC provider, with the policy from the file", () => {
    const role = Object.values(json.resource.aws_iam_role)[0] as Json;
    expect(role.assume_role_policy).toMatch(/^\$\{data\.aws_iam_policy_document\.[^.]+\.json\}$/);
    const trust = Object.values(json.data.aws_iam_policy_document)[0] as Json;
    const issuer = '${replace(data.aws_eks_cluster.eks_cluster_55B0C966.identity[0].oidc[0].issuer, "https://", "")}';
    expect(trust.statement).toEqual([
      {
        effect: 'Allow',
        actions: ['sts:AssumeRoleWithWebIdentity'],
        principals: [
          {
            type: 'Federated',
            identifiers: [
              expect.stringMatching(
                /^arn:\$\{data\.aws_partition\.[^}]+\}:iam::\$\{data\.aws_caller_identity\.[^}]+\}:oidc-provider\/\$\{replace\(/,
              ),
            ],
          },
        ],
        condition: [
          { test: 'StringEquals', variable: `${issuer}:sub`, values: ['system:serviceaccount:kube-system:aws-load-balancer-controller'] },
          { test: 'StringEquals', variable: `${issuer}:aud`, values: ['sts.amazonaws.com'] },
        ],
      },
    ]);
    const policy = Object.values(json.resource.aws_iam_policy)[0] as Json;
    expect(JSON.parse(policy.policy)).toEqual(JSON.parse(fs.readFileSync(policyFile, 'utf8')));
    expect(Object.keys(json.resource.aws_iam_role_policy_attachment)).toHaveLength(1);
  });

  it('creates the NLB Service and the Envoy pods after the controller (its webhooks act on them)', () => {
    const release = Object.keys(json.resource.helm_release)[0];
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').depends_on).toContain(`helm_release.${release}`);
    expect(byName(json, 'kubernetes_deployment_v1', 'ws-envoy').depends_on).toContain(`helm_release.${release}`);
    // Off by default: no release, no IAM.
    const off = synth().json;
    expect(off.resource.helm_release).toBeUndefined();
    expect(off.resource.aws_iam_role).toBeUndefined();
  });

  it('refuses a policy file that cannot be read or is not an IAM policy, naming the file and the fix', () => {
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: '/nonexistent/policy.json' })).toThrow(
      'lbControllerIamPolicyFile "/nonexistent/policy.json" cannot be read',
    );
    const notPolicy = path.join(__dirname, 'fixtures', 'config', 'good.json');
    expect(() => synth({ installLbController: true, lbControllerIamPolicyFile: notPolicy })).toThrow(
      'is not an IAM policy (Version "2012-10-17" and a list of Statement)',
    );
  });
});
