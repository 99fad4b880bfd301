import {
  DeploymentV1,
  DeploymentV1SpecTemplateSpec,
  DeploymentV1SpecTemplateSpecContainer,
  DeploymentV1SpecTemplateSpecContainerVolumeMount,
  DeploymentV1SpecTemplateSpecVolume,
} from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { HorizontalPodAutoscalerV2 } from '@cdktf/provider-kubernetes/lib/horizontal-pod-autoscaler-v2';
import { NetworkPolicyV1 } from '@cdktf/provider-kubernetes/lib/network-policy-v1';
import { PodDisruptionBudgetV1 } from '@cdktf/provider-kubernetes/lib/pod-disruption-budget-v1';
import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { ITerraformDependable } from 'cdktf';
import { Construct } from 'constructs';
import { imageProblem } from '../config/validate';
import { REDIS_PASSWORD_FILE } from '../config/settings';
import {
  ADMIN_ADDRESS,
  ADMIN_PORT,
  CONFIG_DIR,
  EDGE,
  envoyArgs,
  LIVE_PATH,
  LUA_DIR,
  METRICS_PATH,
  METRICS_PORT,
  PUBLIC_PORT,
  READY_PATH,
  STATE_DIR,
  STATE_FILES,
} from '../envoy/bootstrap';
import { FilterConfig } from './filter-config';
import { ENVOY_SELECTOR, NAMES, componentLabels } from './names';
import { ResourceSpec, containerSecurityContext, podSecurityContext, resources } from './security';

/** uid/gid of the non-root user of our Envoy image (envoy/Dockerfile, `USER 10101:10101`). */
const ENVOY_UID = 10101;
export { STATE_DIR };
/** The program of the agent sidecar (lua/cli/agent.lua, shipped in the ConfigMap). */
export const AGENT_LUA = `${LUA_DIR}/agent.lua`;
/** The agent's heartbeat counts as stale (liveness fails, ready.lua answers 503) past this age. */
export const AGENT_STALE_SECONDS = 15;
/** The program the preStop hook runs after its sleep (lua/cli/drain.lua, shipped in the ConfigMap). */
export const DRAIN_LUA = `${LUA_DIR}/drain.lua`;
/**
 * Hard limit on drain.lua (`timeout`): its Redis round trips are bounded by the Redis
 * timeouts, resolving the Redis name is not. Well inside the 30 s of the grace period
 * left after the sleep.
 */
export const DRAIN_TIMEOUT_SECONDS = 20;

/**
 * The preStop command: keep serving for `sleepSeconds` (the NLB deregisters the pod), then
 * release this proxy's leases (drain.lua), then the kubelet sends SIGTERM. Why at the end
 * of the sleep, the draining marker and what a failure does: docs/operations.md, "Rollouts
 * and leases". `--log-file /proc/1/fd/1` copies drain.lua's line to Envoy's stdout (PID 1):
 * an exec hook's output is not in the log.
 */
export function preStopCommand(sleepSeconds: number): string[] {
  checkPreStopSleep(sleepSeconds);
  return ['sh', '-c', `sleep ${sleepSeconds}; exec timeout ${DRAIN_TIMEOUT_SECONDS} luajit ${DRAIN_LUA} --log-file /proc/1/fd/1`];
}

/** The sleep goes into `sh -c`: an integer >= 0 only. */
function checkPreStopSleep(sleepSeconds: number): void {
  if (!Number.isSafeInteger(sleepSeconds) || sleepSeconds < 0) {
    throw new Error(`EnvoyProxy: preStopSleepSeconds must be an integer >= 0, got ${sleepSeconds}; use e.g. 15`);
  }
}

/**
 * The agent container's command. A process that is PID 1 of its container gets no default
 * signal handling, and luajit installs none: SIGTERM would be ignored and every pod
 * deletion would wait the whole grace period for SIGKILL. So a shell is PID 1; it exits on
 * TERM/INT (the container then stops, luajit with it) and otherwise passes on luajit's exit
 * status (a crash restarts the container).
 */
export function agentCommand(): string[] {
  return ['sh', '-c', `trap 'exit 0' TERM INT; luajit ${AGENT_LUA} & wait $!; exit $?`];
}

/** Exit 0 when the agent's heartbeat ($WS_STATE_DIR/agent.alive) is under AGENT_STALE_SECONDS old. */
export function agentLivenessCommand(): string[] {
  return [
    'luajit',
    '-e',
    `local f = io.open("${STATE_DIR}/${STATE_FILES.agent_alive}") local t = f and tonumber(f:read("*l")) ` +
      `os.exit((t and os.time() - t < ${AGENT_STALE_SECONDS}) and 0 or 1)`,
  ];
}

export interface RedisPasswordSource {
  /** Secret name. */
  readonly secretName: string;
  /** Key in the Secret holding the password. */
  readonly key: string;
}

export interface EnvoyProxyProps {
  readonly namespace: string;
  /** The custom Envoy image (luasocket/luasec for LuaJIT), pinned. */
  readonly image: string;
  /** The ConfigMap with envoy.yaml, settings.lua and the Lua files. */
  readonly config: FilterConfig;
  /**
   * Replicas.
   * @default 2
   */
  readonly replicas?: number;
  /**
   * Worker threads per Envoy (`--concurrency`).
   * @default 2
   */
  readonly concurrency?: number;
  /**
   * Secret holding the Redis password, mounted as /etc/ws-redis/password.
   * @default - no password file (Redis without AUTH)
   */
  readonly redisPassword?: RedisPasswordSource;
  /**
   * Container resources.
   * @default - 250m CPU requested per worker thread (`concurrency`); limit 1 CPU per
   * worker plus 500m for the main thread, admin and the preStop drain (a proxy
   * throttled below its worker count stalls every stream on the starved workers);
   * 128Mi/256Mi memory
   */
  readonly resources?: ResourceSpec;
  /**
   * Seconds Envoy keeps running after the pod is told to stop, so the NLB deregisters it
   * before its listeners close; then the preStop hook releases the proxy's leases
   * (lua/cli/drain.lua) and the kubelet sends SIGTERM.
   * @default 15
   */
  readonly preStopSleepSeconds?: number;
  /**
   * Who may reach the metrics port (9901: `/metrics`, the probes' `/ready` and `/live`, the NLB's health check):
   * a NetworkPolicy opens the public port to all and 9901 to these only.
   * @default - no NetworkPolicy
   */
  readonly metricsSources?: MetricsSources;
  /**
   * Scale on CPU with a HorizontalPodAutoscaler, from `replicas` up to `maxReplicas`; the
   * Deployment then leaves its replica count to the autoscaler.
   * @default - a fixed replica count
   */
  readonly autoscaling?: EnvoyAutoscaling;
  /**
   * Created after these (e.g. the load balancer controller, whose webhook admits the pods).
   * @default - after the ConfigMap only
   */
  readonly dependsOn?: ITerraformDependable[];
}

export interface EnvoyAutoscaling {
  /** The most replicas the autoscaler may run (at least `replicas`, its minimum). */
  readonly maxReplicas: number;
  /** Average CPU use, in percent of the request, it keeps the fleet at. */
  readonly targetCpuPercent: number;
}

export interface MetricsSources {
  /** Address blocks: the NLB's health checks and the kubelet's probes (the VPC). */
  readonly cidrs: readonly string[];
  /** Labels of namespaces whose pods may scrape (Prometheus); empty = none. */
  readonly namespaceLabels: { readonly [key: string]: string };
}

/** Labels of the fleet's objects (the metrics Service has its own, metricsServiceLabels). */
const LABELS = { ...componentLabels(NAMES.envoy, 'proxy'), ...ENVOY_SELECTOR };

/**
 * The Envoy fleet: a Deployment of Envoy with its agent sidecar (config checksum on the pod
 * template, probes on the metrics listener, zone and host spread, restricted security
 * context, Prometheus scrape annotations, the preStop drain), a PodDisruptionBudget, a
 * ClusterIP Service `ws-envoy-metrics` for the metrics listener (port-forward,
 * ServiceMonitor), and optionally a CPU autoscaler and a NetworkPolicy on the metrics port.
 */
export class EnvoyProxy extends Construct {
  public readonly replicas: number;
  public readonly concurrency: number;
  /** Seconds Envoy and its agent keep serving once the pod is told to stop (then the drain). */
  public readonly preStopSleepSeconds: number;
  /** Labels the Envoy pods carry and every selector uses. */
  public readonly selector: { readonly [key: string]: string };
  public readonly deployment: DeploymentV1;
  public readonly pdb: PodDisruptionBudgetV1;
  /** Present when `autoscaling` is given. */
  public readonly autoscaler?: HorizontalPodAutoscalerV2;
  /** Present when `metricsSources` is given. */
  public readonly networkPolicy?: NetworkPolicyV1;
  public readonly metricsService: ServiceV1;
  /** Labels of the `ws-envoy-metrics` Service (unique to it: a ServiceMonitor selects on them). */
  public readonly metricsServiceLabels: { readonly [key: string]: string };

  constructor(scope: Construct, id: string, props: EnvoyProxyProps) {
    super(scope, id);
    this.replicas = props.replicas ?? 2;
    this.concurrency = props.concurrency ?? 2;
    this.preStopSleepSeconds = props.preStopSleepSeconds ?? 15;
    this.validate(props);
    this.selector = ENVOY_SELECTOR;
    this.metricsServiceLabels = componentLabels(NAMES.envoy, 'metrics');

    this.deployment = this.renderDeployment(props);
    if (props.autoscaling) this.autoscaler = this.renderAutoscaler(props.namespace, props.autoscaling);
    this.pdb = this.renderPdb(props.namespace);
    if (props.metricsSources) this.networkPolicy = this.renderNetworkPolicy(props.namespace, props.metricsSources);
    this.metricsService = this.renderMetricsService(props.namespace);
  }

  private validate(props: EnvoyProxyProps): void {
    for (const [field, value] of [
      ['replicas', this.replicas],
      ['concurrency', this.concurrency],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new Error(`EnvoyProxy: ${field} must be a positive integer, got ${value}; use 1 or more`);
      }
    }
    const imageErr = imageProblem(props.image);
    if (imageErr) throw new Error(`EnvoyProxy: image ${imageErr}, got ${JSON.stringify(props.image)}`);
    checkPreStopSleep(this.preStopSleepSeconds);
    const maxReplicas = props.autoscaling?.maxReplicas;
    if (maxReplicas !== undefined && (!Number.isInteger(maxReplicas) || maxReplicas < this.replicas)) {
      throw new Error(`EnvoyProxy: autoscaling.maxReplicas must be an integer >= replicas (${this.replicas}), got ${maxReplicas}`);
    }
  }

  private renderDeployment(props: EnvoyProxyProps): DeploymentV1 {
    return new DeploymentV1(this, 'deployment', {
      metadata: { name: NAMES.envoy, namespace: props.namespace, labels: LABELS },
      spec: {
        // With an autoscaler the count is its own: set here, every apply would scale the
        // fleet back to `replicas`, dropping WebSockets.
        ...(props.autoscaling ? {} : { replicas: String(this.replicas) }),
        selector: { matchLabels: ENVOY_SELECTOR },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: '1', maxUnavailable: '0' } },
        template: {
          metadata: {
            labels: LABELS,
            annotations: {
              // Any change of envoy.yaml, settings.lua or a Lua file rolls the pods.
              'checksum/config': props.config.checksum,
              'prometheus.io/scrape': 'true',
              'prometheus.io/port': String(METRICS_PORT),
              'prometheus.io/path': METRICS_PATH,
            },
          },
          spec: this.renderPodSpec(props),
        },
      },
      dependsOn: [props.config.configMap, ...(props.dependsOn ?? [])],
    });
  }

  private renderPodSpec(props: EnvoyProxyProps): DeploymentV1SpecTemplateSpec {
    const mounts = this.renderVolumeMounts(props.redisPassword !== undefined);
    return {
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: this.preStopSleepSeconds + 30,
      securityContext: podSecurityContext(ENVOY_UID),
      topologySpreadConstraint: ['topology.kubernetes.io/zone', 'kubernetes.io/hostname'].map((topologyKey) => ({
        maxSkew: 1,
        topologyKey,
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: [{ matchLabels: ENVOY_SELECTOR }],
      })),
      container: [this.renderEnvoyContainer(props, mounts), this.renderAgentContainer(props.image, mounts)],
      volume: this.renderVolumes(props.config, props.redisPassword),
    };
  }

  private renderEnvoyContainer(
    props: EnvoyProxyProps,
    mounts: DeploymentV1SpecTemplateSpecContainerVolumeMount[],
  ): DeploymentV1SpecTemplateSpecContainer {
    return {
      name: 'envoy',
      image: props.image,
      command: ['envoy'],
      args: envoyArgs(`${CONFIG_DIR}/envoy.yaml`, this.concurrency),
      port: [
        { name: 'http', containerPort: PUBLIC_PORT, protocol: 'TCP' },
        { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
      ],
      env: [
        { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
        { name: 'WS_LUA_DIR', value: LUA_DIR },
        { name: 'WS_STATE_DIR', value: STATE_DIR },
      ],
      resources: resources(
        props.resources ?? {
          cpuRequest: `${250 * this.concurrency}m`,
          memoryRequest: '128Mi',
          cpuLimit: `${1000 * this.concurrency + 500}m`,
          memoryLimit: `${EDGE.memoryLimitMiB}Mi`,
        },
      ),
      securityContext: containerSecurityContext(),
      ...this.renderEnvoyProbes(),
      // Sleep, then release this proxy's leases right before SIGTERM (preStopCommand).
      lifecycle: { preStop: [{ exec: { command: preStopCommand(this.preStopSleepSeconds) } }] },
      volumeMount: mounts,
    };
  }

  /**
   * Ready: Envoy's admin says so and the agent runs (ready.lua). Live: Envoy's admin alone;
   * a restart drops every WebSocket of the proxy.
   */
  private renderEnvoyProbes(): Pick<DeploymentV1SpecTemplateSpecContainer, 'readinessProbe' | 'livenessProbe'> {
    const probe = (path: string) => ({ httpGet: { path, port: String(METRICS_PORT) } });
    return {
      readinessProbe: { ...probe(READY_PATH), periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 2 },
      livenessProbe: { ...probe(LIVE_PATH), initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 2, failureThreshold: 3 },
    };
  }

  /**
   * Keeps Redis's record of this proxy true to Envoy's own (lua/cli/agent.lua): renews and
   * releases leases from the lease log, registers the healthy hosts, puts everything back
   * after a Redis state loss, and snapshots the metrics. Same image (luajit + luasocket),
   * same settings and password.
   */
  private renderAgentContainer(
    image: string,
    mounts: DeploymentV1SpecTemplateSpecContainerVolumeMount[],
  ): DeploymentV1SpecTemplateSpecContainer {
    return {
      name: 'agent',
      image,
      command: agentCommand(),
      env: [
        { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        { name: 'WS_LUA_DIR', value: LUA_DIR },
        { name: 'WS_STATE_DIR', value: STATE_DIR },
        // The host list and log rotation come from Envoy's admin (same pod: loopback).
        { name: 'WS_ENVOY_ADMIN', value: `${ADMIN_ADDRESS}:${ADMIN_PORT}` },
      ],
      resources: resources({ cpuRequest: '20m', memoryRequest: '32Mi', cpuLimit: '500m', memoryLimit: '128Mi' }),
      securityContext: containerSecurityContext(),
      // No readiness probe of its own: ready.lua makes Envoy's readiness follow the
      // agent's heartbeat. Liveness: the heartbeat is fresh (a hung loop restarts).
      livenessProbe: {
        exec: { command: agentLivenessCommand() },
        initialDelaySeconds: 10,
        periodSeconds: 5,
        timeoutSeconds: 3,
        failureThreshold: 2,
      },
      // The kubelet stops every container of the pod at once, but Envoy keeps serving
      // through its preStop sleep: keep renewing and releasing until then (drain.lua
      // releases whatever is left at its end).
      lifecycle: { preStop: [{ exec: { command: ['sleep', String(this.preStopSleepSeconds)] } }] },
      volumeMount: mounts.filter((m) => m.name !== 'tmp'),
    };
  }

  /** The config read-only, the state shared with the agent, /tmp, and the Redis password when there is one. */
  private renderVolumes(config: FilterConfig, redisPassword?: RedisPasswordSource): DeploymentV1SpecTemplateSpecVolume[] {
    return [
      {
        name: 'config',
        configMap: { name: config.name, defaultMode: '0444', items: config.items.map((i) => ({ key: i.key, path: i.path })) },
      },
      { name: 'state', emptyDir: { sizeLimit: '16Mi' } },
      { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
      ...(redisPassword
        ? [
            {
              name: 'redis-auth',
              secret: {
                secretName: redisPassword.secretName,
                defaultMode: '0400',
                items: [{ key: redisPassword.key, path: 'password' }],
              },
            },
          ]
        : []),
    ];
  }

  /** Envoy's mounts; the agent takes them all but /tmp. */
  private renderVolumeMounts(redisPassword: boolean): DeploymentV1SpecTemplateSpecContainerVolumeMount[] {
    return [
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'state', mountPath: STATE_DIR },
      { name: 'tmp', mountPath: '/tmp' },
      ...(redisPassword ? [{ name: 'redis-auth', mountPath: REDIS_PASSWORD_FILE.replace(/\/[^/]+$/, ''), readOnly: true }] : []),
    ];
  }

  private renderAutoscaler(namespace: string, { maxReplicas, targetCpuPercent }: EnvoyAutoscaling): HorizontalPodAutoscalerV2 {
    return new HorizontalPodAutoscalerV2(this, 'hpa', {
      metadata: { name: NAMES.envoy, namespace, labels: LABELS },
      spec: {
        scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: this.deployment.metadata.name },
        minReplicas: this.replicas,
        maxReplicas,
        metric: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: targetCpuPercent } } }],
        // Up as fast as Kubernetes likes; down slowly, one proxy per 5 minutes after 10
        // quiet minutes: every proxy removed drains and closes its WebSockets.
        behavior: {
          scaleDown: [{ stabilizationWindowSeconds: 600, selectPolicy: 'Min', policy: [{ type: 'Pods', value: 1, periodSeconds: 300 }] }],
        },
      },
    });
  }

  private renderPdb(namespace: string): PodDisruptionBudgetV1 {
    return new PodDisruptionBudgetV1(this, 'pdb', {
      metadata: { name: NAMES.envoyPdb, namespace, labels: LABELS },
      spec: { maxUnavailable: '1', selector: { matchLabels: ENVOY_SELECTOR } },
    });
  }

  /**
   * The public port open to all, the metrics port to `sources` only. Enforced only where the
   * CNI implements NetworkPolicy (as for Redis's). The agent sidecar and the preStop drain
   * reach the admin over the pod's loopback, which no NetworkPolicy filters.
   */
  private renderNetworkPolicy(namespace: string, sources: MetricsSources): NetworkPolicyV1 {
    const from = [
      ...sources.cidrs.map((cidr) => ({ ipBlock: { cidr } })),
      ...(Object.keys(sources.namespaceLabels).length > 0 ? [{ namespaceSelector: { matchLabels: { ...sources.namespaceLabels } } }] : []),
    ];
    return new NetworkPolicyV1(this, 'network-policy', {
      metadata: { name: NAMES.envoyPolicy, namespace, labels: LABELS },
      spec: {
        podSelector: { matchLabels: ENVOY_SELECTOR },
        policyTypes: ['Ingress'],
        ingress: [
          { ports: [{ port: String(PUBLIC_PORT), protocol: 'TCP' }] },
          ...(from.length > 0 ? [{ from, ports: [{ port: String(METRICS_PORT), protocol: 'TCP' }] }] : []),
        ],
      },
    });
  }

  private renderMetricsService(namespace: string): ServiceV1 {
    return new ServiceV1(this, 'metrics-service', {
      metadata: { name: NAMES.envoyMetrics, namespace, labels: this.metricsServiceLabels },
      spec: {
        type: 'ClusterIP',
        selector: ENVOY_SELECTOR,
        port: [{ name: 'metrics', port: METRICS_PORT, targetPort: 'metrics', protocol: 'TCP' }],
      },
    });
  }
}
