// constructs/envoy.ts (EnvoyProxy), built in a small test chart with the Envoy ConfigMap it
// mounts: the Deployment (Envoy and its agent sidecar), probes, preStop drain, PDB,
// autoscaler, NetworkPolicy and metrics Service; and the agent's commands run for real.
// (How the stack wires it, e.g. the Redis password and settings.lua: constructs/stack.test.ts.)
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TerraformStack } from 'cdktf';
import {
  AGENT_LUA,
  AGENT_STALE_SECONDS,
  DRAIN_LUA,
  DRAIN_TIMEOUT_SECONDS,
  EnvoyProxy,
  EnvoyProxyProps,
  agentCommand,
  agentLivenessCommand,
  preStopCommand,
} from '../../constructs/envoy';
import { FilterConfig } from '../../constructs/filter-config';
import { ENVOY_SELECTOR } from '../../constructs/names';
import {
  ADMIN_ADDRESS,
  ADMIN_PORT,
  LIVE_PATH,
  LUA_DIR,
  METRICS_PATH,
  METRICS_PORT,
  PUBLIC_PORT,
  READY_PATH,
  STATE_DIR,
  STATE_FILES,
  envoyArgs,
} from '../../envoy/bootstrap';
import {
  Json,
  RESTRICTED_CONTAINER,
  ROOT,
  fixtureFilterConfig,
  only,
  resources,
  restrictedPod,
  synthStack,
  testStack,
} from '../support/synth';

const IMAGE = 'ws-envoy-lua:1.40.0-1';

/** An EnvoyProxy in a test chart with its ConfigMap; the chart's JSON and the pieces tests read. */
function build(props: Partial<EnvoyProxyProps> = {}, stack: TerraformStack = testStack()) {
  const config = fixtureFilterConfig(stack);
  const envoy = new EnvoyProxy(stack, 'envoy', { namespace: 'ns', image: IMAGE, config, ...props });
  const json = synthStack(stack);
  const deployment = only(json, 'kubernetes_deployment_v1');
  const pod = deployment.spec.template.spec;
  const container = (name: string): Json => pod.container.find((c: Json) => c.name === name);
  return { envoy, config, json, deployment, pod, container };
}

describe('GIVEN the defaults', () => {
  const { envoy, config, deployment, pod, container, json } = build();
  const main = container('envoy');
  const agent = container('agent');

  it('runs two Envoy replicas of the image with the config file, the worker count and a surge-only rollout', () => {
    expect([envoy.replicas, envoy.concurrency]).toEqual([2, 2]);
    expect(deployment.metadata).toMatchObject({ name: 'ws-envoy', namespace: 'ns' });
    expect(deployment.spec.replicas).toBe('2');
    expect(main.image).toBe(IMAGE);
    expect(main.command).toEqual(['envoy']);
    expect(main.args).toEqual(envoyArgs('/etc/envoy/envoy.yaml', 2));
    expect(deployment.spec.strategy).toEqual({ type: 'RollingUpdate', rolling_update: { max_surge: '1', max_unavailable: '0' } });
    // Created after its ConfigMap.
    expect(deployment.depends_on).toEqual([expect.stringMatching(/^kubernetes_config_map_v1\./)]);
  });

  it('runs two containers: Envoy, and its agent beside it', () => {
    expect(pod.container.map((c: Json) => c.name)).toEqual(['envoy', 'agent']);
  });

  it("runs the agent from the ConfigMap with Envoy's image, identity, state and admin (loopback); no readiness probe of its own", () => {
    expect(agent.image).toBe(IMAGE);
    expect(agent.command).toEqual(agentCommand());
    expect(agentCommand()).toEqual(['sh', '-c', `trap 'exit 0' TERM INT; luajit ${AGENT_LUA} & wait $!; exit $?`]);
    expect(AGENT_LUA).toBe(`${LUA_DIR}/agent.lua`);
    expect(agent.env).toEqual([
      { name: 'POD_NAME', value_from: { field_ref: { field_path: 'metadata.name' } } },
      { name: 'WS_LUA_DIR', value: LUA_DIR },
      { name: 'WS_STATE_DIR', value: STATE_DIR },
      { name: 'WS_ENVOY_ADMIN', value: `${ADMIN_ADDRESS}:${ADMIN_PORT}` },
    ]);
    expect(agent.volume_mount.map((m: Json) => m.name)).toEqual(['config', 'state']);
    expect(agent.resources).toEqual({ requests: { cpu: '20m', memory: '32Mi' }, limits: { cpu: '500m', memory: '128Mi' } });
    // ready.lua makes Envoy's readiness follow the agent's heartbeat instead.
    expect(agent.readiness_probe).toBeUndefined();
    expect(agent.liveness_probe).toEqual({
      exec: { command: agentLivenessCommand() },
      initial_delay_seconds: 10,
      period_seconds: 5,
      timeout_seconds: 3,
      failure_threshold: 2,
    });
    // It outlives Envoy's preStop sleep: streams that end during it are still released.
    expect(agent.lifecycle.pre_stop).toEqual([{ exec: { command: ['sleep', '15'] } }]);
  });

  it('probes readiness on READY_PATH (Envoy and its agent) and liveness on LIVE_PATH (Envoy alone), on the metrics port', () => {
    expect(main.readiness_probe).toEqual({
      http_get: { path: READY_PATH, port: String(METRICS_PORT) },
      period_seconds: 5,
      timeout_seconds: 2,
      failure_threshold: 2,
    });
    expect(main.liveness_probe).toEqual({
      http_get: { path: LIVE_PATH, port: String(METRICS_PORT) },
      initial_delay_seconds: 10,
      period_seconds: 10,
      timeout_seconds: 2,
      failure_threshold: 3,
    });
    expect(main.port).toEqual([
      { name: 'http', container_port: PUBLIC_PORT, protocol: 'TCP' },
      { name: 'metrics', container_port: METRICS_PORT, protocol: 'TCP' },
    ]);
  });

  it('holds the probe paths and the heartbeat bound together with ready.lua, which answers them', () => {
    const out = spawnSync(
      'luajit',
      [
        '-e',
        `package.path = "${ROOT}/lua/envoy/?.lua;" .. package.path; local r = require("ready"); io.write(r.PATH, " ", r.LIVE_PATH, " ", r.AGENT_STALE_S)`,
      ],
      { encoding: 'utf8' },
    );
    expect(out.stderr).toBe('');
    expect(out.stdout).toBe(`${READY_PATH} ${LIVE_PATH} ${AGENT_STALE_SECONDS}`);
  });

  it("sizes Envoy's CPU by its worker threads: 250m requested per worker, 1 CPU per worker + 500m allowed", () => {
    expect(main.resources).toEqual({ requests: { cpu: '500m', memory: '128Mi' }, limits: { cpu: '2500m', memory: '256Mi' } });
  });

  it('gives Envoy its identity, Lua and state directories through the environment', () => {
    expect(main.env).toEqual([
      { name: 'POD_NAME', value_from: { field_ref: { field_path: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', value_from: { field_ref: { field_path: 'metadata.namespace' } } },
      { name: 'WS_LUA_DIR', value: LUA_DIR },
      { name: 'WS_STATE_DIR', value: STATE_DIR },
    ]);
  });

  it('mounts the ConfigMap read-only at /etc/envoy (its items), state and tmp as emptyDirs, and no password without redisPassword', () => {
    expect(pod.volume).toEqual([
      {
        name: 'config',
        config_map: { name: 'ws-envoy-config', default_mode: '0444', items: config.items.map((i) => ({ key: i.key, path: i.path })) },
      },
      { name: 'state', empty_dir: { size_limit: '16Mi' } },
      { name: 'tmp', empty_dir: { size_limit: '64Mi' } },
    ]);
    expect(main.volume_mount).toEqual([
      { name: 'config', mount_path: '/etc/envoy', read_only: true },
      { name: 'state', mount_path: STATE_DIR },
      { name: 'tmp', mount_path: '/tmp' },
    ]);
  });

  it("runs restricted: the image's non-root user, read-only root, no escalation, no capabilities, RuntimeDefault seccomp, no token", () => {
    expect(pod.security_context).toMatchObject(restrictedPod(10101));
    expect(pod.automount_service_account_token).toBe(false);
    for (const c of pod.container) {
      expect({ c: c.name, sc: c.security_context }).toEqual({ c: c.name, sc: RESTRICTED_CONTAINER });
      expect(c.resources.requests.cpu).toBeDefined();
      expect(c.resources.limits.memory).toBeDefined();
      expect(c.liveness_probe).toBeDefined();
    }
  });

  it('spreads the proxies over zones and hosts and keeps a PDB of one unavailable', () => {
    expect(pod.topology_spread_constraint.map((t: Json) => t.topology_key)).toEqual([
      'topology.kubernetes.io/zone',
      'kubernetes.io/hostname',
    ]);
    for (const t of pod.topology_spread_constraint) {
      expect(t.label_selector).toEqual([{ match_labels: ENVOY_SELECTOR }]);
      expect(t.max_skew).toBe(1);
    }
    expect(only(json, 'kubernetes_pod_disruption_budget_v1').spec).toEqual({
      max_unavailable: '1',
      selector: { match_labels: ENVOY_SELECTOR },
    });
  });

  it('annotates the pods for Prometheus and with the ConfigMap checksum (a config change rolls them)', () => {
    expect(deployment.spec.template.metadata.annotations).toEqual({
      'checksum/config': config.checksum,
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': String(METRICS_PORT),
      'prometheus.io/path': METRICS_PATH,
    });
  });

  it('serves the metrics port on the ws-envoy-metrics ClusterIP Service, labelled apart from the pods; no NetworkPolicy, no autoscaler', () => {
    const svc = only(json, 'kubernetes_service_v1');
    expect(svc.metadata.name).toBe('ws-envoy-metrics');
    expect(svc.spec).toEqual({
      type: 'ClusterIP',
      selector: ENVOY_SELECTOR,
      port: [{ name: 'metrics', port: METRICS_PORT, target_port: 'metrics', protocol: 'TCP' }],
    });
    expect(svc.metadata.labels).toEqual(envoy.metricsServiceLabels);
    expect(envoy.metricsServiceLabels['app.kubernetes.io/component']).toBe('metrics');
    expect(deployment.spec.template.metadata.labels['app.kubernetes.io/component']).toBe('proxy');
    expect(json.resource.kubernetes_network_policy_v1).toBeUndefined();
    expect(json.resource.kubernetes_horizontal_pod_autoscaler_v2).toBeUndefined();
  });
});

describe('GIVEN the Redis password Secret', () => {
  const { pod, container } = build({ redisPassword: { secretName: 'ws-redis-auth', key: 'password' } });

  it('mounts it as /etc/ws-redis/password (mode 0400) in Envoy and in the agent', () => {
    expect(pod.volume.find((v: Json) => v.name === 'redis-auth')).toEqual({
      name: 'redis-auth',
      secret: { secret_name: 'ws-redis-auth', default_mode: '0400', items: [{ key: 'password', path: 'password' }] },
    });
    for (const name of ['envoy', 'agent']) {
      expect(container(name).volume_mount).toContainEqual({ name: 'redis-auth', mount_path: '/etc/ws-redis', read_only: true });
    }
  });
});

describe('GIVEN metricsSources', () => {
  it('opens the public port to all and the metrics port to those CIDRs and namespaces only', () => {
    const { json } = build({ metricsSources: { cidrs: ['10.0.0.0/16', '10.1.0.0/16'], namespaceLabels: { team: 'obs' } } });
    const np = only(json, 'kubernetes_network_policy_v1');
    expect(np.metadata.name).toBe('ws-envoy-metrics-restricted');
    expect(np.spec).toEqual({
      pod_selector: { match_labels: ENVOY_SELECTOR },
      policy_types: ['Ingress'],
      ingress: [
        { ports: [{ port: String(PUBLIC_PORT), protocol: 'TCP' }] },
        {
          from: [
            { ip_block: { cidr: '10.0.0.0/16' } },
            { ip_block: { cidr: '10.1.0.0/16' } },
            { namespace_selector: { match_labels: { team: 'obs' } } },
          ],
          ports: [{ port: String(METRICS_PORT), protocol: 'TCP' }],
        },
      ],
    });
  });

  it('with neither CIDRs nor namespaces, closes the metrics port (the public port stays open)', () => {
    const { json } = build({ metricsSources: { cidrs: [], namespaceLabels: {} } });
    expect(only(json, 'kubernetes_network_policy_v1').spec.ingress).toEqual([{ ports: [{ port: String(PUBLIC_PORT), protocol: 'TCP' }] }]);
  });
});

describe('GIVEN autoscaling', () => {
  const { deployment, json } = build({ replicas: 4, concurrency: 4, autoscaling: { maxReplicas: 12, targetCpuPercent: 70 } });

  it('scales on CPU from replicas to maxReplicas, slowly down, and leaves the count to the autoscaler', () => {
    expect(deployment.spec.replicas).toBeUndefined();
    expect(only(json, 'kubernetes_horizontal_pod_autoscaler_v2').spec).toEqual({
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
    // 4 workers: 1000m CPU requested, 4500m allowed; the budget holds for any count.
    expect(deployment.spec.template.spec.container[0].resources.requests.cpu).toBe('1000m');
    expect(deployment.spec.template.spec.container[0].resources.limits.cpu).toBe('4500m');
    expect(only(json, 'kubernetes_pod_disruption_budget_v1').spec.max_unavailable).toBe('1');
  });

  it('refuses a maximum below the minimum', () => {
    expect(() => build({ replicas: 4, autoscaling: { maxReplicas: 3, targetCpuPercent: 60 } })).toThrow(
      'EnvoyProxy: autoscaling.maxReplicas must be an integer >= replicas (4), got 3',
    );
  });
});

describe("preStop: sleep, then release the proxy's leases (lua/cli/drain.lua), then SIGTERM", () => {
  it('sleeps preStopSleepSeconds, then runs drain.lua under a hard timeout; the grace period covers both', () => {
    const { pod } = build();
    expect(pod.container[0].lifecycle.pre_stop).toEqual([
      { exec: { command: ['sh', '-c', `sleep 15; exec timeout ${DRAIN_TIMEOUT_SECONDS} luajit ${DRAIN_LUA} --log-file /proc/1/fd/1`] } },
    ]);
    expect(DRAIN_LUA).toBe(`${LUA_DIR}/drain.lua`);
    expect(pod.termination_grace_period_seconds).toBeGreaterThanOrEqual(15 + DRAIN_TIMEOUT_SECONDS);
  });

  it('takes another sleep (the agent sleeps as long), and refuses one that is not an integer >= 0 (it goes into sh -c)', () => {
    const { pod } = build({ preStopSleepSeconds: 5 });
    expect(pod.container[0].lifecycle.pre_stop[0].exec.command[2]).toBe(
      `sleep 5; exec timeout 20 luajit ${DRAIN_LUA} --log-file /proc/1/fd/1`,
    );
    expect(pod.container[1].lifecycle.pre_stop).toEqual([{ exec: { command: ['sleep', '5'] } }]);
    expect(preStopCommand(0)[2]).toMatch(/^sleep 0; exec timeout /);
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => build({ preStopSleepSeconds: bad })).toThrow(
        `EnvoyProxy: preStopSleepSeconds must be an integer >= 0, got ${bad}; use e.g. 15`,
      );
    }
  });
});

describe('props are validated', () => {
  it('replicas and concurrency must be positive integers', () => {
    expect(() => build({ replicas: 0 })).toThrow('EnvoyProxy: replicas must be a positive integer, got 0; use 1 or more');
    expect(() => build({ concurrency: 1.5 })).toThrow('EnvoyProxy: concurrency must be a positive integer, got 1.5; use 1 or more');
  });

  it('the image is pinned, not "latest"', () => {
    expect(() => build({ image: 'envoy:latest' })).toThrow(
      'EnvoyProxy: image must not use the "latest" tag (it moves; pin a version or a digest), got "envoy:latest"',
    );
    expect(() => build({ image: 'envoy' })).toThrow('EnvoyProxy: image must be pinned with a tag or an @sha256 digest');
  });

  it('created after what it is told to depend on (the load balancer controller)', () => {
    const stack = testStack();
    const other = new FilterConfig(stack, 'other', {
      namespace: 'ns',
      envoyYaml: 'x: 1\n',
      settingsLua: 'return {}\n',
      luaDirs: [],
      name: 'other',
    });
    const { deployment } = build({ dependsOn: [other.configMap] }, stack);
    expect(deployment.depends_on).toHaveLength(2);
    expect(deployment.depends_on[1]).toMatch(/^kubernetes_config_map_v1\.other_/);
  });
});

describe("the agent's container commands, run for real", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-cmd-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** agentCommand() with the agent program replaced by `lua` (PID 1's shell is what is tested), in its own process group. */
  function runAgentShell(lua: string) {
    const file = path.join(dir, `agent-${Math.random().toString(36).slice(2)}.lua`);
    fs.writeFileSync(file, lua);
    const [sh, flag, script] = agentCommand();
    expect(script).toContain(AGENT_LUA);
    const p = spawn(sh, [flag, script.replace(AGENT_LUA, file)], { stdio: 'ignore', detached: true });
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    return { p, exited, killGroup: () => process.kill(-p.pid!, 'SIGKILL') };
  }

  it("passes on the agent's exit status (a crash restarts the container)", async () => {
    expect(await runAgentShell('os.exit(3)').exited).toBe(3);
    expect(await runAgentShell('os.exit(0)').exited).toBe(0);
  });

  it('ends at once with status 0 on SIGTERM, though luajit installs no handler (no wait for SIGKILL)', async () => {
    // An agent that sleeps 30 s (without a child process of its own).
    const agent = runAgentShell('local ffi = require("ffi"); ffi.cdef("unsigned int sleep(unsigned int)"); ffi.C.sleep(30)');
    try {
      await new Promise((r) => setTimeout(r, 300));
      const t = Date.now();
      agent.p.kill('SIGTERM');
      expect(await agent.exited).toBe(0);
      expect(Date.now() - t).toBeLessThan(2000);
    } finally {
      agent.killGroup(); // the orphaned luajit
    }
  });

  it(`is live while the heartbeat file is under ${AGENT_STALE_SECONDS} s old, not when stale or missing`, () => {
    const [luajit, flag, code] = agentLivenessCommand();
    const heartbeat = `${STATE_DIR}/${STATE_FILES.agent_alive}`;
    expect(code).toContain(heartbeat);
    const file = path.join(dir, 'agent.alive');
    const run = () => spawnSync(luajit, [flag, code.replace(heartbeat, file)]).status;
    const now = Math.floor(Date.now() / 1000);
    fs.writeFileSync(file, `${now}\n`);
    expect(run()).toBe(0);
    fs.writeFileSync(file, `${now - AGENT_STALE_SECONDS - 1}\n`);
    expect(run()).toBe(1);
    fs.writeFileSync(file, 'garbage\n');
    expect(run()).toBe(1);
    fs.rmSync(file);
    expect(run()).toBe(1);
  });
});

describe('the Lua files the pod runs are in its ConfigMap (lua/envoy, lua/agent, lua/cli)', () => {
  const stack = testStack();
  const fc = new FilterConfig(stack, 'fc', { namespace: 'ns', envoyYaml: 'admin: {}\n', settingsLua: 'return {}\n' });
  // What the image provides besides the ConfigMap (luasocket, luasec, LuaJIT's own).
  const IMAGE_MODULES = new Set(['socket', 'socket.core', 'ssl', 'ffi', 'bit', 'jit']);

  it("ships the agent's and the preStop drain's programs, under the paths the containers run", () => {
    for (const program of [AGENT_LUA, DRAIN_LUA]) {
      const name = path.basename(program);
      expect(fc.items).toContainEqual({ key: name, path: `lua/${name}` });
      expect(fc.data[name]).toBe(fs.readFileSync(path.join(ROOT, 'lua', 'cli', name), 'utf8'));
    }
    expect(fc.items).toContainEqual({ key: 'settings.lua', path: 'lua/settings.lua' });
    // The Redis library is Redis's (constructs/redis.ts), not the proxies'.
    expect(Object.keys(fc.data)).not.toContain('ws_admission.lua');
  });

  it('ships every module the shipped files require', () => {
    const shipped = new Set(
      Object.keys(fc.data)
        .filter((k) => k.endsWith('.lua'))
        .map((k) => k.replace(/\.lua$/, '')),
    );
    const missing: string[] = [];
    for (const name of shipped) {
      const src = fc.data[`${name}.lua`];
      for (const m of src.matchAll(/\brequire\s*\(?\s*["']([\w.]+)["']/g)) {
        if (!shipped.has(m[1]) && !IMAGE_MODULES.has(m[1])) missing.push(`${name}.lua requires ${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
    expect(resources(synthStack(stack), 'kubernetes_config_map_v1')).toHaveLength(1);
  });
});
