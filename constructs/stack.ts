import * as fs from 'fs';
import { DataAwsVpc } from '@cdktf/provider-aws/lib/data-aws-vpc';
import { NamespaceV1 } from '@cdktf/provider-kubernetes/lib/namespace-v1';
import { ITerraformDependable, TerraformOutput, TerraformStack } from 'cdktf';
import { Construct } from 'constructs';
import { NLB_IDLE_MARGIN_SECONDS, NLB_TCP_IDLE_TIMEOUT, StackConfig } from '../config/schema';
import { RedisEndpoint, renderSettingsLua } from '../config/settings';
import { validateConfig } from '../config/validate';
import { buildEnvoyBootstrap, METRICS_PORT } from '../envoy/bootstrap';
import { bootstrapToYaml } from '../envoy/yaml';
import { BackendService } from './backend-service';
import { ClusterProviders, EksProviders } from './eks-providers';
import { EnvoyProxy, MetricsSources, RedisPasswordSource } from './envoy';
import { FilterConfig } from './filter-config';
import { LbController } from './lb-controller';
import { Monitoring } from './monitoring';
import { KubeconfigProviders } from './kubeconfig-providers';
import { ENVOY_SELECTOR, NAMES, PART_OF } from './names';
import { Nlb } from './nlb';
import { REDIS_PROXY_USER, Redis } from './redis';
import { configureRemoteState } from './remote-state';
import { SampleBackend } from './sample-backend';

/** The controller's IAM policy file, read and checked at synth (the field, the value, the fix). */
function readIamPolicy(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(
      `lbControllerIamPolicyFile ${JSON.stringify(file)} cannot be read (${(e as Error).message}). Fix: set it to the path of the controller's iam_policy.json.`,
      { cause: e },
    );
  }
  let doc: { Version?: unknown; Statement?: unknown };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (e) {
    throw new Error(
      `lbControllerIamPolicyFile ${JSON.stringify(file)} is not JSON (${(e as Error).message}). Fix: use the controller's iam_policy.json as published.`,
      { cause: e },
    );
  }
  if (doc.Version !== '2012-10-17' || !Array.isArray(doc.Statement) || doc.Statement.length === 0) {
    throw new Error(
      `lbControllerIamPolicyFile ${JSON.stringify(file)} is not an IAM policy (Version "2012-10-17" and a list of Statement). Fix: use the controller's iam_policy.json as published.`,
    );
  }
  return JSON.stringify(doc);
}

/** The clients' URL: wss:// at the TLS port (the name the certificate covers, if known), else ws:// at 80. */
export function websocketUrl(c: Pick<StackConfig, 'nlbTls' | 'nlbTlsPort' | 'nlbTlsHostname'>, nlbHostname: string): string {
  if (!c.nlbTls) return `ws://${nlbHostname}/`;
  const host = c.nlbTlsHostname || nlbHostname;
  return c.nlbTlsPort === 443 ? `wss://${host}/` : `wss://${host}:${c.nlbTlsPort}/`;
}

/**
 * The PROXY protocol header on Envoy's public listener: only an NLB puts one in front of
 * every connection; without one a client could send its own and choose the address it is
 * counted as.
 */
function proxyProtocol(c: StackConfig): boolean {
  return c.nlbProxyProtocol && c.publicServiceType === 'LoadBalancer';
}

/** Namespace label that makes the AWS Load Balancer Controller inject NLB target-health readiness gates. */
export const POD_READINESS_GATE_LABEL = 'elbv2.k8s.aws/pod-readiness-gate-inject';

/** Name of the stack: `cdktf.out/stacks/ws-envoy-admission/cdk.tf.json`. */
export const STACK_NAME = 'ws-envoy-admission';

export interface WsAdmissionStackProps {
  /** The resolved configuration (see `loadConfig`). */
  readonly config: StackConfig;
  /**
   * Directories whose `*.lua` files go into the Envoy ConfigMap.
   * @default DEFAULT_LUA_DIRS (lua/envoy, lua/agent and lua/cli of this repository)
   */
  readonly luaDirs?: readonly string[];
}

/**
 * The whole deployment: providers from the EKS cluster (or a kubeconfig context), the
 * namespace, Redis (or an external one), the backend's headless Service, the optional
 * sample backend, the Envoy fleet with its generated config, the optional AWS Load
 * Balancer Controller, the NLB, the monitoring, and the outputs.
 */
export class WsAdmissionStack extends TerraformStack {
  public readonly config: StackConfig;
  public readonly providers: ClusterProviders;
  public readonly redis?: Redis;
  public readonly backend: BackendService;
  public readonly filterConfig: FilterConfig;
  public readonly envoy: EnvoyProxy;
  public readonly nlb: Nlb;

  constructor(scope: Construct, id: string, props: WsAdmissionStackProps) {
    super(scope, id);
    const c = validateConfig(props.config);
    this.config = c;

    configureRemoteState(this, {
      bucket: c.remoteStateBucket,
      key: c.remoteStateKey,
      region: c.remoteStateRegion || c.region,
      lockfile: c.remoteStateLockfile,
    });
    this.providers = this.renderProviders(c);
    const namespace = this.renderNamespace(c);
    if (c.externalRedisHost === '') this.redis = this.renderRedis(c, namespace);
    const redis = this.redisConnection(c);
    this.backend = this.renderBackend(c, namespace);
    this.filterConfig = this.renderFilterConfig(c, namespace, redis.endpoint, props.luaDirs);
    const lbRelease = this.renderLbController(c);
    this.envoy = this.renderEnvoy(c, namespace, redis.password, lbRelease);
    this.nlb = this.renderNlb(c, namespace, lbRelease);
    if (c.grafanaDashboard || c.serviceMonitor) this.renderMonitoring(c, namespace);
    this.outputs(c, redis.endpoint);
  }

  /** A kubeconfig connection needs no AWS at all; the EKS lookup needs the aws provider. */
  private renderProviders(c: StackConfig): ClusterProviders {
    return c.kubeconfigPath !== ''
      ? new KubeconfigProviders(this, 'kubeconfig', { path: c.kubeconfigPath, context: c.kubeContext || undefined })
      : new EksProviders(this, 'eks', { clusterName: c.clusterName, region: c.region, helm: c.installLbController });
  }

  /** The namespace's name; with createNamespace, a reference to the resource, which orders everything after it. */
  private renderNamespace(c: StackConfig): string {
    if (!c.createNamespace) return c.namespace;
    return new NamespaceV1(this, 'ns', {
      metadata: {
        name: c.namespace,
        labels: {
          'app.kubernetes.io/part-of': PART_OF,
          // Every pod of the stack meets "restricted"; warn (not enforce) because the
          // user's backend pods live in this namespace too (the Service selects here).
          'pod-security.kubernetes.io/warn': 'restricted',
          'pod-security.kubernetes.io/audit': 'restricted',
          // The NLB sends to pod IPs: without the controller's readiness gate a rollout
          // (every config change) can stop old Envoys before the new ones are healthy
          // targets, leaving the NLB no healthy target for a minute or two.
          // @see https://kubernetes-sigs.github.io/aws-load-balancer-controller/latest/deploy/pod_readiness_gate/
          [POD_READINESS_GATE_LABEL]: 'enabled',
        },
      },
    }).metadata.name;
  }

  private renderRedis(c: StackConfig, namespace: string): Redis {
    return new Redis(this, 'redis', {
      namespace,
      image: c.redisImage,
      clientSelector: ENVOY_SELECTOR,
      hashTag: c.hashTag,
      passwordInState: c.redisPasswordInState,
      passwordRevision: c.redisPasswordRevision,
      persistence: c.redisPersistence === 'aof' ? { size: c.redisVolumeSize, storageClass: c.redisStorageClass || undefined } : undefined,
    });
  }

  /** Where the filter reaches Redis (the in-cluster one, else externalRedisHost), and the Secret of its password (none: no AUTH). */
  private redisConnection(c: StackConfig): { endpoint: RedisEndpoint; password?: RedisPasswordSource } {
    if (this.redis) {
      return {
        // Fully qualified, with the trailing dot: the filter resolves it on an Envoy worker
        // (getaddrinfo has no timeout), and with the pod's `ndots:5` a name of 4 dots is
        // first tried under every search domain, each a DNS round trip that stalls the worker.
        endpoint: {
          host: `${NAMES.redis}.${c.namespace}.svc.cluster.local.`,
          port: this.redis.port,
          tls: false,
          auth: true,
          username: REDIS_PROXY_USER,
        },
        password: { secretName: this.redis.secretName, key: 'password' },
      };
    }
    return {
      endpoint: {
        host: c.externalRedisHost,
        port: c.externalRedisPort,
        tls: c.externalRedisTls,
        auth: c.externalRedisPasswordSecret !== '',
        username: c.externalRedisUsername,
      },
      password: c.externalRedisPasswordSecret !== '' ? { secretName: c.externalRedisPasswordSecret, key: 'password' } : undefined,
    };
  }

  /** The headless Service over the user's backend pods, and the sample backend when asked. */
  private renderBackend(c: StackConfig, namespace: string): BackendService {
    const backend = new BackendService(this, 'backend-service', {
      namespace,
      name: c.backendServiceName,
      selector: c.backendSelector,
      port: c.backendPort,
    });
    if (c.deploySampleBackend) {
      new SampleBackend(this, 'sample-backend', {
        namespace,
        image: c.sampleBackendImage,
        labels: c.backendSelector,
        port: c.backendPort,
        replicas: c.sampleBackendReplicas,
        healthCheckPath: c.backendHealthCheckPath,
      });
    }
    return backend;
  }

  /** The Envoy ConfigMap: envoy.yaml and settings.lua generated from the config, and the Lua files. */
  private renderFilterConfig(c: StackConfig, namespace: string, redis: RedisEndpoint, luaDirs?: readonly string[]): FilterConfig {
    const bootstrap = buildEnvoyBootstrap({
      // The plain string (not the namespace token): envoy.yaml must be known at synth time.
      backendHost: `${c.backendServiceName}.${c.namespace}.svc.cluster.local`,
      backendPort: c.backendPort,
      healthCheckPath: c.backendHealthCheckPath,
      idleTimeoutSeconds: c.idleTimeoutSeconds,
      maxStreamDurationSeconds: c.maxStreamDurationSeconds,
      renewIntervalSeconds: c.renewIntervalSeconds,
      handshakeTimeoutSeconds: c.handshakeTimeoutSeconds,
      trustedHops: c.clientTrustedHops,
      proxyProtocol: proxyProtocol(c),
      maxDownstreamConnections: c.envoyMaxConnections,
    });
    return new FilterConfig(this, 'filter-config', {
      namespace,
      envoyYaml: bootstrapToYaml(bootstrap),
      settingsLua: renderSettingsLua(c, redis),
      luaDirs,
    });
  }

  /**
   * The AWS Load Balancer Controller, with installLbController on EKS: its Helm release,
   * which the Envoy pods and the NLB Service wait for (the controller's webhooks, pod
   * readiness gates and Services, must answer before what they act on is created).
   */
  private renderLbController(c: StackConfig): ITerraformDependable | undefined {
    if (!c.installLbController || !(this.providers instanceof EksProviders)) return undefined;
    return new LbController(this, 'lb-controller', {
      cluster: this.providers.cluster,
      region: c.region,
      iamPolicyJson: readIamPolicy(c.lbControllerIamPolicyFile),
      namePrefix: `${c.clusterName}-${c.namespace}`.slice(0, 40),
    }).release;
  }

  private renderEnvoy(
    c: StackConfig,
    namespace: string,
    redisPassword?: RedisPasswordSource,
    lbRelease?: ITerraformDependable,
  ): EnvoyProxy {
    return new EnvoyProxy(this, 'envoy', {
      namespace,
      image: c.envoyImage,
      config: this.filterConfig,
      replicas: c.envoyReplicas,
      concurrency: c.envoyConcurrency,
      redisPassword,
      metricsSources: this.metricsSources(c),
      autoscaling: c.envoyAutoscaling ? { maxReplicas: c.envoyMaxReplicas, targetCpuPercent: c.envoyTargetCpuPercent } : undefined,
      dependsOn: lbRelease ? [lbRelease] : undefined,
    });
  }

  private renderNlb(c: StackConfig, namespace: string, lbRelease?: ITerraformDependable): Nlb {
    return new Nlb(this, 'nlb', {
      namespace,
      selector: this.envoy.selector,
      type: c.publicServiceType,
      scheme: c.nlbScheme,
      proxyProtocol: proxyProtocol(c),
      exposeMetrics: c.exposeMetricsOnNlb,
      tls: c.nlbTls
        ? { certificateArns: c.nlbTlsCertificateArns, port: c.nlbTlsPort, policy: c.nlbTlsPolicy, keepPlainPort: c.nlbKeepPlainPort }
        : undefined,
      sourceRanges: c.nlbSourceRanges,
      dependsOn: lbRelease ? [lbRelease] : undefined,
      // Envoy's idle timeout closes a quiet WebSocket (and releases its slot) before
      // the NLB would drop the flow without a word to either side.
      tcpIdleTimeoutSeconds:
        c.nlbSetIdleTimeout && c.publicServiceType === 'LoadBalancer'
          ? Math.max(NLB_TCP_IDLE_TIMEOUT.min, c.idleTimeoutSeconds + NLB_IDLE_MARGIN_SECONDS)
          : undefined,
    });
  }

  private renderMonitoring(c: StackConfig, namespace: string): Monitoring {
    return new Monitoring(this, 'monitoring', {
      namespace,
      envoyServiceLabels: this.envoy.metricsServiceLabels, // only ws-envoy-metrics has them
      metricsPortName: 'metrics',
      dashboard: c.grafanaDashboard,
      serviceMonitor: c.serviceMonitor,
      serviceMonitorLabels: c.serviceMonitorLabels,
    });
  }

  /**
   * Who may reach port 9901: the configured CIDRs, else the EKS cluster VPC's primary CIDR
   * (where the NLB and the nodes' kubelets are). A kubeconfig target has no VPC to look
   * up: without metricsAllowedCidrs it gets no Envoy NetworkPolicy, rather than one that
   * would block the kubelet's probes and take every proxy out of service.
   */
  private metricsSources(c: StackConfig): MetricsSources | undefined {
    if (!c.envoyNetworkPolicy) return undefined;
    let cidrs = c.metricsAllowedCidrs;
    if (cidrs.length === 0) {
      if (!(this.providers instanceof EksProviders)) return undefined;
      cidrs = [new DataAwsVpc(this, 'cluster-vpc', { id: this.providers.cluster.vpcConfig.get(0).vpcId }).cidrBlock];
    }
    return { cidrs, namespaceLabels: c.metricsScraperNamespaceLabels };
  }

  private outputs(c: StackConfig, redis: RedisEndpoint): void {
    new TerraformOutput(this, 'load_balancer_hostname', {
      description: 'DNS name of the NLB in front of Envoy ("" until the AWS Load Balancer Controller has created it).',
      value: this.nlb.hostname,
    });
    if (c.publicServiceType !== 'LoadBalancer') {
      // No NLB: the Service's own name, which answers inside the cluster (and, for a
      // NodePort, its node port on every node: kubectl get svc ws-envoy-nlb).
      new TerraformOutput(this, 'websocket_url', {
        description: `WebSocket URL of the public Service (type ${c.publicServiceType}, no load balancer) inside the cluster.`,
        value: `ws://${NAMES.nlb}.${c.namespace}.svc.cluster.local/`,
      });
    } else {
      new TerraformOutput(this, 'websocket_url', {
        description: c.nlbTls
          ? `WebSocket URL through the NLB's TLS listener (wss://, port ${c.nlbTlsPort}); with nlbTlsHostname its name, else the NLB's (which the certificate does not cover).`
          : 'WebSocket URL through the NLB (port 80, plain ws://; set nlbTls for wss://); "ws:///" until the NLB has a hostname.',
        value: websocketUrl(c, this.nlb.hostname),
      });
    }
    new TerraformOutput(this, 'namespace', {
      description: 'Kubernetes namespace of the stack.',
      value: c.namespace,
    });
    new TerraformOutput(this, 'redis_service', {
      description: 'Redis endpoint the Envoy filter uses (host:port).',
      value: `${redis.host.replace(/\.$/, '')}:${redis.port}`,
    });
    new TerraformOutput(this, 'redis_password_secret', {
      description: 'Secret holding the Redis password (key "password"); the value itself is never an output.',
      value: this.redis ? this.redis.secretName : c.externalRedisPasswordSecret,
    });
    new TerraformOutput(this, 'metrics_port_forward', {
      description: 'Command that makes the Prometheus metrics of one Envoy reachable on localhost:9901/metrics.',
      value: `kubectl -n ${c.namespace} port-forward svc/${NAMES.envoyMetrics} ${METRICS_PORT}:${METRICS_PORT}`,
    });
    new TerraformOutput(this, 'state_backend', {
      description:
        'Where the Terraform state lives ("local" or s3://bucket/key); README.md, "Remote state", shows how to bootstrap the bucket.',
      value: c.remoteStateBucket === '' ? 'local' : `s3://${c.remoteStateBucket}/${c.remoteStateKey}`,
    });
  }
}
