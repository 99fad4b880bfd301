// constructs/envoy.ts (EnvoyProxy): the Envoy Deployment, its lease-log sidecar, its PDB and
// NetworkPolicy, as the stack synthesizes them.
// (Each block: GIVEN the profile its describe names, WHEN the stack is synthesized, THEN the
// resources it checks.)
import { ENVOY_RELEASE } from '../../envoy/release';
import { EVERYTHING_CHANGED, Json, byName, resources, synth } from '../support/synth';
import { parse } from 'yaml';

describe('GIVEN the defaults', () => {
  const { json } = synth();
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const pod = envoy.spec.template.spec;
  const container = pod.container[0];

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

  it('passes the limits to the filter through settings.lua', () => {
    const settings = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua'];
    expect(settings).toContain('max_connections_per_pod = 2,');
    expect(settings).toContain('rate_limit = 60,');
    // Fully qualified with the trailing dot: no search-domain lookups on an Envoy worker.
    expect(settings).toContain('redis_host = "ws-redis.ws-admission.svc.cluster.local.",');
  });
});

describe('GIVEN every option changed (EVERYTHING_CHANGED)', () => {
  const { json } = synth(EVERYTHING_CHANGED);
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');

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
    // The backend cluster's own endpoint (the admin listens on 9000 too: a text search for
    // the port could not fail).
    const backend = parse(yaml).static_resources.clusters.find((c: Json) => c.name === 'backend');
    expect(backend.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({
      address: 'chat-backend.realtime.svc.cluster.local',
      port_value: 9000,
    });
    expect(yaml).toContain('path: /healthz');
    expect(yaml).toContain('stream_idle_timeout: 120s');
    expect(yaml).toContain('max_stream_duration: 7200s');
    expect(yaml).toContain('envoy.filters.listener.proxy_protocol');
    expect(byName(json, 'kubernetes_service_v1', 'chat-backend').spec.selector).toEqual({ app: 'chat', tier: 'ws' });
    expect(resources(json, 'kubernetes_deployment_v1').some((d: Json) => d.metadata.name === 'ws-echo')).toBe(false);
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
