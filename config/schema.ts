/**
 * The one typed configuration of the stack, and the table that describes every field.
 *
 * The table drives everything else: the defaults, the environment variable names, the
 * parsing of environment strings, the validation and the README's configuration table
 * (`npm run docs:config`). Adding a field means adding it to `StackConfig` and to
 * `FIELDS`; a test fails if the two disagree.
 */
import { ENVOY_IMAGE_REPOSITORY, envoyImageTag } from '../envoy/release';
import { METRICS_PATH, METRICS_PORT, READY_PATH } from '../envoy/bootstrap';

/** Labels as Kubernetes takes them (`key: value`). */
export type Labels = { readonly [key: string]: string };

/** What Envoy does with an upgrade when Redis cannot be asked. */
export type RedisFailureMode = 'open' | 'closed';

/** Scheme of the NLB (AWS Load Balancer Controller `aws-load-balancer-scheme`). */
export type NlbScheme = 'internet-facing' | 'internal';

export type RedisPersistence = 'none' | 'aof';

/** Type of the public Service in front of Envoy (`publicServiceType`). */
export type PublicServiceType = 'LoadBalancer' | 'NodePort' | 'ClusterIP';

export type FieldKind = 'integer' | 'boolean' | 'string' | 'enum' | 'labels' | 'cidrs' | 'list' | 'image' | 'dns1123Label';

export interface FieldSpec {
  readonly key: string;
  readonly kind: FieldKind;
  readonly default: string | number | boolean | Labels | readonly string[];
  readonly description: string;
  /** Smallest accepted integer (inclusive). */
  readonly min?: number;
  /** Largest accepted integer (inclusive). */
  readonly max?: number;
  /** Accepted values of an `enum` field. */
  readonly values?: readonly string[];
  /** A `string`/`dns1123Label`/`labels` field that may be empty (meaning "off"/"derived"/"none"). */
  readonly optional?: boolean;
  /** Extra check for `string` fields, and for each item of a `list`: a pattern and what it means. */
  readonly pattern?: { readonly re: RegExp; readonly says: string };
}

/** Prefix of every environment variable the stack reads. */
export const ENV_PREFIX = 'WS_ADMISSION_';

/** Environment variable naming the JSON config file (not a field itself). */
export const CONFIG_FILE_ENV = `${ENV_PREFIX}CONFIG`;

/** The range AWS allows for an NLB TCP listener's `tcp.idle_timeout.seconds`. */
export const NLB_TCP_IDLE_TIMEOUT = { min: 60, max: 6000, default: 350 } as const;
/** The NLB's TCP idle timeout is set this much above Envoy's idle timeout (Envoy closes first). */
export const NLB_IDLE_MARGIN_SECONDS = 30;

/**
 * A lease must outlive two renew intervals plus this: one lost periodic entry (an agent
 * restart, a slow Redis) never lets an open stream's lease lapse.
 */
export const LEASE_MARGIN_SECONDS = 5;

/** The sliding window of the global rate limit (the limit is "per minute"). */
export const RATE_WINDOW_MS = 60_000;

/**
 * The one definition of the configuration: every field with its kind, default, bounds and
 * description. The TypeScript type (StackConfig), the defaults, the environment variable
 * names, the validation, the README table and the config file's JSON Schema all follow
 * from this table.
 */
const FIELD_TABLE = [
  {
    key: 'clusterName',
    kind: 'string',
    default: 'ws-eks',
    description: 'Name of the existing EKS cluster to deploy into (`data.aws_eks_cluster`).',
    pattern: {
      re: /^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/,
      says: 'an EKS cluster name (letters, digits, "-" and "_", 1-100 characters, starting with a letter or digit)',
    },
  },
  {
    key: 'region',
    kind: 'string',
    default: 'us-east-1',
    description: 'AWS region of the cluster (aws provider).',
    pattern: { re: /^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+$/, says: 'an AWS region such as "eu-west-1"' },
  },
  {
    key: 'kubeconfigPath',
    kind: 'string',
    default: '',
    optional: true,
    description:
      'Connect to the cluster through this kubeconfig file (and `kubeContext`) instead of looking up the EKS cluster: no aws provider and no AWS data source in the output (`clusterName` and `region` are then unused; `~` is expanded by the providers). With the default `publicServiceType` the apply waits for the `ws-envoy-nlb` Service to get a load balancer address, so the cluster needs a LoadBalancer implementation; otherwise choose `NodePort` or `ClusterIP` there. Empty = the EKS cluster `clusterName`, authenticated with `aws eks get-token`.',
    pattern: { re: /^[^\s\0][^\0\n]*$/, says: 'a file path (no leading space, no newline)' },
  },
  {
    key: 'kubeContext',
    kind: 'string',
    default: '',
    optional: true,
    description: "Context of `kubeconfigPath` to use; empty = the file's `current-context`. Only with `kubeconfigPath`.",
    pattern: { re: /^[^\s][^\n]{0,252}$/, says: 'a kubeconfig context name (no leading space, no newline)' },
  },
  {
    key: 'publicServiceType',
    kind: 'enum',
    default: 'LoadBalancer',
    values: ['LoadBalancer', 'NodePort', 'ClusterIP'],
    description:
      'Type of the public Service `ws-envoy-nlb` in front of Envoy. `LoadBalancer` (always in EKS mode): the AWS Load Balancer Controller makes it an NLB and the apply waits for its address. With `kubeconfigPath`, for a cluster without a load balancer implementation (kind, k3s, on premises): `NodePort` (Envoy on a port of every node) or `ClusterIP` (inside the cluster, or behind an ingress of your own); the apply then waits for no address, and the NLB settings (`nlb*`, `exposeMetricsOnNlb`) do not apply.',
  },
  {
    key: 'namespace',
    kind: 'dns1123Label',
    default: 'ws-admission',
    description: 'Kubernetes namespace of every resource of the stack.',
  },
  {
    key: 'createNamespace',
    kind: 'boolean',
    default: true,
    description:
      'Create the namespace, labelled `elbv2.k8s.aws/pod-readiness-gate-inject=enabled` so an Envoy rollout waits for healthy NLB targets (false: it must already exist; give it that label).',
  },
  {
    key: 'maxConnectionsPerPod',
    kind: 'integer',
    default: 2,
    min: 1,
    description: 'Open WebSockets allowed per backend pod, across all Envoy proxies.',
  },
  {
    key: 'rateLimitPerMinute',
    kind: 'integer',
    default: 60,
    min: 0,
    description: 'WebSocket upgrades allowed in any rolling 60 s window, across all proxies (0 = no rate limit).',
  },
  {
    key: 'maxConnectionsPerClientPercent',
    kind: 'integer',
    default: 50,
    min: 0,
    max: 100,
    description:
      "One client's open WebSockets may take at most this share (%) of the slots of the proxy it comes through (its healthy pods x maxConnectionsPerPod; at least 1), across all proxies (0 = no share cap). Scales with the fleet: one client cannot fill it, however large, and a shared address (a NAT, an office) still gets half of it.",
  },
  {
    key: 'maxConnectionsPerClient',
    kind: 'integer',
    default: 0,
    min: 0,
    description: 'Open WebSockets one client may hold at most, across all proxies (0 = no absolute cap; the share above still applies).',
  },
  {
    key: 'rateLimitPerClientPerMinute',
    kind: 'integer',
    default: 20,
    min: 0,
    description:
      "Upgrades one client may start in any rolling 60 s window, across all proxies (0 = off). A third of the default global budget: one client's reconnect loop cannot spend the minute for everyone; refused attempts spend nothing.",
  },
  {
    key: 'clientIdentity',
    kind: 'enum',
    default: 'address',
    values: ['address', 'header'],
    description:
      "Who a client is for the per-client limits: `address`, the client address as Envoy sees it (the NLB's proxy protocol header with `nlbProxyProtocol`, or `X-Forwarded-For` at `clientTrustedHops`); `header`, the request header `clientHeader` that a trusted layer in front sets (e.g. an authenticated user id; the address when it is absent). Hashed before it reaches Redis.",
  },
  {
    key: 'clientHeader',
    kind: 'string',
    default: '',
    optional: true,
    description:
      'With `clientIdentity: header`: the request header that names the client, set (and overwritten) by a trusted layer in front of the NLB.',
    pattern: { re: /^[a-z0-9][a-z0-9-]{0,62}$/, says: 'a lower-case HTTP header name such as "x-user-id"' },
  },
  {
    key: 'clientTrustedHops',
    kind: 'integer',
    default: 0,
    min: 0,
    max: 10,
    description:
      "Proxies in front of the NLB that append to `X-Forwarded-For` (Envoy's `xff_num_trusted_hops`): the client address is then taken that many entries from the right. 0: the connection's own address (or the proxy protocol's). A client cannot choose its address with either.",
  },
  {
    key: 'clientIpv6PrefixBits',
    kind: 'integer',
    default: 64,
    min: 1,
    max: 128,
    description: 'IPv6 clients are one client per prefix of this length (a /64 is usually one household or host).',
  },
  {
    key: 'handshakeTimeoutSeconds',
    kind: 'integer',
    default: 10,
    min: 1,
    max: 3600,
    description:
      "A backend that does not answer an upgrade within this long gets it ended with a 504 (the route's response timeout; it stops at the 101), so a half-open upgrade holds a slot no longer.",
  },
  {
    key: 'envoyReplicas',
    kind: 'integer',
    default: 2,
    min: 1,
    description: 'Envoy proxy replicas behind the NLB.',
  },
  {
    key: 'envoyConcurrency',
    kind: 'integer',
    default: 2,
    min: 1,
    max: 64,
    description:
      'Envoy worker threads per proxy (`--concurrency`); each worker holds its own Redis connection. The pod requests 250m CPU per worker; its limit is 1 CPU per worker plus 500m (main thread, admin, preStop drain).',
  },
  {
    key: 'envoyMaxConnections',
    kind: 'integer',
    default: 2000,
    min: 1,
    max: 1000000,
    description:
      "Open client connections one Envoy accepts (the overload manager's global downstream limit, and the backend cluster's circuit breakers; beyond it new connections are closed at once). Probes and scrapes on the metrics listener are exempt. Each open WebSocket is one and costs Envoy about 65 KB: 2000 fit the 256Mi container.",
  },
  {
    key: 'redisPasswordInState',
    kind: 'boolean',
    default: false,
    description:
      'Keep the in-cluster Redis passwords in the Terraform state (`random_password`). Off: they are ephemeral and written only to the Secret (write-only `data_wo`; needs Terraform >= 1.11), so neither the state nor a plan holds them.',
  },
  {
    key: 'redisPasswordRevision',
    kind: 'integer',
    default: 1,
    min: 1,
    description: 'Increase to rotate the in-cluster Redis passwords: the Secret is rewritten with new ones and Redis restarts.',
  },
  {
    key: 'redisPersistence',
    kind: 'enum',
    default: 'none',
    values: ['none', 'aof'],
    description:
      "In-cluster Redis persistence. `none`: a restart starts empty; each proxy's agent puts its open WebSockets back and nothing is admitted until every live proxy has (at most 10 s). `aof`: append-only file, `appendfsync everysec`, on a PersistentVolumeClaim (needs a StorageClass, e.g. the EBS CSI driver): a restart keeps the leases and the rate window, losing at most about a second.",
  },
  {
    key: 'redisVolumeSize',
    kind: 'string',
    default: '1Gi',
    description: 'Size of the Redis volume with `redisPersistence: aof`.',
    pattern: { re: /^[1-9][0-9]{0,5}(Mi|Gi)$/, says: 'a size such as 512Mi or 1Gi' },
  },
  {
    key: 'redisStorageClass',
    kind: 'string',
    default: '',
    optional: true,
    description:
      'StorageClass of the Redis volume; empty = the cluster default (EKS 1.30+ has none unless you set one, e.g. gp3 of the EBS CSI driver).',
    pattern: { re: /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, says: 'a StorageClass name (lower-case DNS subdomain)' },
  },
  {
    key: 'backendServiceName',
    kind: 'dns1123Label',
    default: 'ws-backend',
    description: 'Name of the headless Service the stack creates for the backend pods (Envoy resolves it with STRICT_DNS).',
  },
  {
    key: 'backendPort',
    kind: 'integer',
    default: 8080,
    min: 1,
    max: 65535,
    description: 'Container port of the WebSocket backend pods.',
  },
  {
    key: 'backendSelector',
    kind: 'labels',
    default: { 'app.kubernetes.io/name': 'ws-echo' },
    description: 'Labels selecting the backend pods, which must run in `namespace` (env: `k=v,k2=v2`).',
  },
  {
    key: 'backendHealthCheckPath',
    kind: 'string',
    default: '/',
    description: "HTTP path of Envoy's active health check on each backend pod.",
    pattern: { re: /^\/[\x21-\x7e]*$/, says: 'an absolute HTTP path starting with "/" without spaces' },
  },
  {
    key: 'deploySampleBackend',
    kind: 'boolean',
    default: true,
    description: 'Deploy a small WebSocket echo backend labelled with `backendSelector`, so a default deploy works end to end.',
  },
  {
    key: 'sampleBackendReplicas',
    kind: 'integer',
    default: 3,
    min: 1,
    description: 'Replicas of the sample echo backend.',
  },
  {
    // `ws-envoy-lua:<Envoy version>-<our build>`, both from envoy/release.json.
    key: 'envoyImage',
    kind: 'image',
    default: `${ENVOY_IMAGE_REPOSITORY}:${envoyImageTag()}`,
    description: 'The custom Envoy image with luasocket/luasec (`envoy/Dockerfile`); push it to a registry the cluster can pull from.',
  },
  {
    key: 'redisImage',
    kind: 'image',
    default: 'redis:8.6.3-alpine',
    description:
      'Image of the in-cluster Redis (7.0 or later: the admission runs in a Redis Functions library). An official `redis:<version>` known to be vulnerable (config/redis-advisories.ts) is refused.',
  },
  {
    key: 'sampleBackendImage',
    kind: 'image',
    default: 'jmalloc/echo-server:v0.3.7',
    description: 'Image of the sample WebSocket echo backend (listens on `$PORT`).',
  },
  {
    key: 'leaseTtlSeconds',
    kind: 'integer',
    default: 30,
    min: 1,
    description: `Expiry of a connection's slot lease without renewal: a proxy that dies (SIGKILL, a lost node) gives its slots back this long after its last renewal. Must be at least 2 x renewIntervalSeconds + ${LEASE_MARGIN_SECONDS}.`,
  },
  {
    key: 'renewIntervalSeconds',
    kind: 'integer',
    default: 10,
    min: 1,
    max: 3600,
    description:
      "Envoy writes an entry for every open WebSocket to the lease log this often (`access_log_flush_interval`), and the proxy's agent renews the lease from it: quiet sockets keep their slot, traffic or not.",
  },
  {
    key: 'idleTimeoutSeconds',
    kind: 'integer',
    default: 300,
    min: 1,
    max: NLB_TCP_IDLE_TIMEOUT.max - NLB_IDLE_MARGIN_SECONDS,
    description: `Envoy closes a WebSocket without traffic in either direction for this long (stream idle timeout). The NLB's TCP idle timeout is set ${NLB_IDLE_MARGIN_SECONDS} s above it (at least ${NLB_TCP_IDLE_TIMEOUT.min} s), so Envoy, not the NLB, ends a quiet connection; the NLB allows at most ${NLB_TCP_IDLE_TIMEOUT.max} s.`,
  },
  {
    key: 'maxStreamDurationSeconds',
    kind: 'integer',
    default: 3600,
    min: 1,
    description: 'Envoy closes any WebSocket after this long (`max_stream_duration`), bounding every lease.',
  },
  {
    key: 'redisFailureMode',
    kind: 'enum',
    default: 'open',
    values: ['open', 'closed'],
    description: 'When Redis is unavailable: `open` admits (and counts it), `closed` answers 503.',
  },
  {
    key: 'hashTag',
    kind: 'string',
    default: 'ws',
    description: 'Redis key hash tag without braces; every key is `{<hashTag>}:...` so one call hits one shard.',
    pattern: { re: /^[A-Za-z0-9_.:-]{1,32}$/, says: '1-32 characters of letters, digits, "_", ".", ":" or "-" (no braces)' },
  },
  {
    key: 'capacityCacheMs',
    kind: 'integer',
    default: 250,
    min: 0,
    max: 5000,
    description:
      'After Redis answered "every pod is full", a worker refuses upgrades to the same pods without asking Redis for this long (ms; never past the first lease expiry; 0 = always ask). A slot freed on another proxy meanwhile is seen that much later.',
  },
  {
    key: 'redisConnectTimeoutMs',
    kind: 'integer',
    default: 200,
    min: 1,
    max: 10000,
    description: 'Redis connect timeout of the filter (ms); a blocked call stalls a whole Envoy worker.',
  },
  {
    key: 'redisReadTimeoutMs',
    kind: 'integer',
    default: 200,
    min: 1,
    max: 10000,
    description: 'Redis read timeout of the filter (ms).',
  },
  {
    key: 'limitAllRequests',
    kind: 'boolean',
    default: false,
    description:
      "Also rate-limit plain HTTP requests, not only WebSocket upgrades: the same limit per rolling 60 s, counted in a window of their own (plain requests never spend the upgrades' budget).",
  },
  {
    key: 'connectionInventory',
    kind: 'boolean',
    default: false,
    description:
      'Keep a field per open connection (pod, proxy, client address, start) in the `{<hashTag>}:inventory` hash in Redis, for debugging; written by the admission itself and removed with the lease.',
  },
  {
    key: 'externalRedisHost',
    kind: 'string',
    default: '',
    optional: true,
    description:
      'Use this Redis (e.g. an ElastiCache primary endpoint) instead of the in-cluster one; empty = deploy Redis in the cluster.',
    pattern: { re: /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/, says: 'a DNS name or IPv4 address' },
  },
  {
    key: 'externalRedisPort',
    kind: 'integer',
    default: 6379,
    min: 1,
    max: 65535,
    description: 'Port of the external Redis.',
  },
  {
    key: 'externalRedisTls',
    kind: 'boolean',
    default: false,
    description: 'TLS to the external Redis (ElastiCache in-transit encryption).',
  },
  {
    key: 'externalRedisPasswordSecret',
    kind: 'dns1123Label',
    default: '',
    optional: true,
    description: 'Existing Secret (key `password`) holding the external Redis AUTH token; empty = no AUTH.',
  },
  {
    key: 'externalRedisUsername',
    kind: 'string',
    default: '',
    optional: true,
    description: 'ACL user name of the external Redis AUTH (ElastiCache RBAC user); empty = AUTH with the token alone.',
    pattern: { re: /^[A-Za-z0-9_.-]{1,64}$/, says: '1-64 letters, digits, "_", "." or "-"' },
  },
  {
    key: 'nlbScheme',
    kind: 'enum',
    default: 'internet-facing',
    values: ['internet-facing', 'internal'],
    description: 'Scheme of the NLB.',
  },
  {
    key: 'nlbProxyProtocol',
    kind: 'boolean',
    default: true,
    description:
      "Proxy protocol v2 from the NLB to Envoy, so Envoy sees each client's address (IP targets otherwise show the NLB's own, and the per-client limits would take every client for one). Works with the TLS listener too. Envoy also accepts connections without the header, so turning it on or off is no outage.",
  },
  {
    key: 'nlbSetIdleTimeout',
    kind: 'boolean',
    default: true,
    description: `Set the NLB listeners' TCP idle timeout to idleTimeoutSeconds + ${NLB_IDLE_MARGIN_SECONDS} s (AWS Load Balancer Controller v2.9.0+ annotation \`aws-load-balancer-listener-attributes\`; its IAM policy needs \`elasticloadbalancing:ModifyListenerAttributes\`). false leaves the NLB's ${NLB_TCP_IDLE_TIMEOUT.default} s (for an older controller, or a policy without that action): then keep idleTimeoutSeconds at ${NLB_TCP_IDLE_TIMEOUT.default - NLB_IDLE_MARGIN_SECONDS} or less.`,
  },
  {
    key: 'nlbTls',
    kind: 'boolean',
    default: false,
    description:
      'Terminate TLS at the NLB (`wss://`) with the ACM certificates of `nlbTlsCertificateArns`; Envoy still speaks plain HTTP behind it. The plain port closes unless `nlbKeepPlainPort`.',
  },
  {
    key: 'nlbTlsCertificateArns',
    kind: 'list',
    default: [],
    optional: true,
    description: 'ACM certificate ARNs of the TLS listener (the first is the default; the others are offered by SNI).',
    pattern: {
      re: /^arn:aws(-cn|-us-gov)?:acm:[a-z]{2}(-[a-z]+)+-\d:\d{12}:certificate\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
      says: 'an ACM certificate ARN, arn:aws:acm:<region>:<account>:certificate/<uuid>',
    },
  },
  {
    key: 'nlbTlsPort',
    kind: 'integer',
    default: 443,
    min: 1,
    max: 65535,
    description: "Port of the NLB's TLS listener.",
  },
  {
    key: 'nlbTlsPolicy',
    kind: 'string',
    default: 'ELBSecurityPolicy-TLS13-1-2-2021-06',
    description: "TLS security policy of the NLB's TLS listener (TLS 1.3 and 1.2 by default).",
    pattern: {
      re: /^ELBSecurityPolicy-[A-Za-z0-9-]{1,100}$/,
      says: 'an ELB security policy name such as ELBSecurityPolicy-TLS13-1-2-2021-06',
    },
  },
  {
    key: 'nlbTlsHostname',
    kind: 'string',
    default: '',
    optional: true,
    description:
      "The DNS name clients use (covered by the certificate, pointing at the NLB): the `wss://` URL output, and the name `npm run deploy` checks the certificate against. Empty: the URL uses the NLB's own name and deploy skips the TLS check (the certificate cannot cover it).",
    pattern: {
      re: /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/,
      says: 'a lower-case DNS name such as ws.example.com',
    },
  },
  {
    key: 'nlbKeepPlainPort',
    kind: 'boolean',
    default: false,
    description: 'With `nlbTls`, keep the plain `ws://` port 80 open too.',
  },
  {
    key: 'nlbSourceRanges',
    kind: 'cidrs',
    default: [],
    optional: true,
    description:
      'Client address blocks allowed to reach the NLB (`loadBalancerSourceRanges`); empty = anywhere. With `nlbScheme: internal`, only addresses inside the VPC can reach it anyway.',
  },
  {
    key: 'installLbController',
    kind: 'boolean',
    default: false,
    description:
      "Install the AWS Load Balancer Controller (Helm chart 3.5.0 in kube-system, with an IAM role for its service account) for a cluster that has none. Needs the cluster's OIDC provider in IAM and `lbControllerIamPolicyFile`.",
  },
  {
    key: 'lbControllerIamPolicyFile',
    kind: 'string',
    default: '',
    optional: true,
    description:
      "The controller's IAM policy JSON for its version (`docs/install/iam_policy.json` of kubernetes-sigs/aws-load-balancer-controller at v3.5.0), with `installLbController`.",
  },
  {
    key: 'envoyAutoscaling',
    kind: 'boolean',
    default: false,
    description:
      'A HorizontalPodAutoscaler for the Envoy Deployment on CPU, from `envoyReplicas` to `envoyMaxReplicas` (needs metrics-server). Terraform then leaves the replica count to the autoscaler.',
  },
  {
    key: 'envoyMaxReplicas',
    kind: 'integer',
    default: 10,
    min: 1,
    max: 1000,
    description: 'Most Envoy replicas the autoscaler may run (with `envoyAutoscaling`).',
  },
  {
    key: 'envoyTargetCpuPercent',
    kind: 'integer',
    default: 60,
    min: 10,
    max: 95,
    description: 'Average CPU use (percent of the request) the autoscaler keeps the Envoys at.',
  },
  {
    key: 'exposeMetricsOnNlb',
    kind: 'boolean',
    default: false,
    description: `Also publish the metrics listener (port ${METRICS_PORT}) on the NLB; only with \`nlbScheme: internal\` (it has no authentication). Off: reach it with \`kubectl port-forward\` or the \`ws-envoy-metrics\` Service.`,
  },
  {
    key: 'grafanaDashboard',
    kind: 'boolean',
    default: true,
    description: 'Create the Grafana dashboard ConfigMap (picked up by the Grafana sidecar).',
  },
  {
    key: 'serviceMonitor',
    kind: 'boolean',
    default: false,
    description: 'Create a Prometheus Operator ServiceMonitor (needs its CRDs in the cluster).',
  },
  {
    key: 'serviceMonitorLabels',
    kind: 'labels',
    default: {},
    optional: true,
    description:
      'Extra labels on the ServiceMonitor, for a Prometheus whose selector wants them (kube-prometheus-stack: `release=<helm release>`).',
  },
  {
    key: 'envoyNetworkPolicy',
    kind: 'boolean',
    default: true,
    description: `A NetworkPolicy on the Envoy pods: the public port open to all, the metrics port (${METRICS_PORT}: \`${METRICS_PATH}\`, \`${READY_PATH}\`) only to \`metricsAllowedCidrs\` and the namespaces of \`metricsScraperNamespaceLabels\`.`,
  },
  {
    key: 'metricsAllowedCidrs',
    kind: 'cidrs',
    default: [],
    optional: true,
    description: `Sources allowed to reach port ${METRICS_PORT}: the NLB health checks and the kubelet probes come from inside the VPC. Empty = the EKS cluster VPC's primary CIDR (looked up; list secondary CIDRs here too if nodes or the NLB use them); with kubeconfigPath there is no VPC to look up, and empty means no Envoy NetworkPolicy.`,
  },
  {
    key: 'metricsScraperNamespaceLabels',
    kind: 'labels',
    default: { 'kubernetes.io/metadata.name': 'monitoring' },
    optional: true,
    description: `Labels of the namespaces whose pods may scrape port ${METRICS_PORT} (Prometheus); empty = none besides \`metricsAllowedCidrs\`.`,
  },
  {
    key: 'remoteStateBucket',
    kind: 'string',
    default: '',
    optional: true,
    description: 'S3 bucket for the Terraform state (S3 backend with `use_lockfile`); empty = local state.',
    pattern: { re: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, says: 'an S3 bucket name (3-63 lower-case letters, digits, "." or "-")' },
  },
  {
    key: 'remoteStateKey',
    kind: 'string',
    default: 'ws-envoy-admission/terraform.tfstate',
    description: 'Object key of the state in the bucket.',
    pattern: { re: /^[^/\s][^\s]{0,1023}$/, says: 'an S3 object key without spaces, not starting with "/"' },
  },
  {
    key: 'remoteStateRegion',
    kind: 'string',
    default: '',
    optional: true,
    description: 'Region of the state bucket; empty = `region`.',
    pattern: { re: /^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+$/, says: 'an AWS region such as "eu-west-1"' },
  },
  {
    key: 'remoteStateLockfile',
    kind: 'boolean',
    default: true,
    description: 'Lock the S3 state with a lock file next to it (`use_lockfile`, Terraform 1.10+).',
  },
] as const satisfies readonly FieldSpec[];

/** The TypeScript type of a field's value, from its kind (and an enum's values). */
type ValueOf<F> = F extends { readonly kind: 'integer' }
  ? number
  : F extends { readonly kind: 'boolean' }
    ? boolean
    : F extends { readonly kind: 'enum'; readonly values: readonly (infer V)[] }
      ? V
      : F extends { readonly kind: 'labels' }
        ? Labels
        : F extends { readonly kind: 'cidrs' | 'list' }
          ? readonly string[]
          : string;

/** The resolved configuration: one readonly property per field of FIELD_TABLE. */
export type StackConfig = { readonly [F in (typeof FIELD_TABLE)[number] as F['key']]: ValueOf<F> };

/** Every field (the table, typed for the code that walks it). */
export const FIELDS: readonly (FieldSpec & { readonly key: keyof StackConfig })[] = FIELD_TABLE;

/**
 * Settings that were removed, and what replaced them: a config file or an environment that
 * still sets one is told why, not only that the key is unknown.
 */
export const REMOVED_FIELDS: Readonly<Record<string, string>> = {
  redisReplicas:
    'the in-cluster Redis always runs one replica (independent Redis pods would split the state); for a replicated Redis set externalRedisHost',
  hostsCacheMs: "each proxy's agent registers its healthy hosts in Redis now; there is no host list cache to size",
};

/** `maxConnectionsPerPod` -> `WS_ADMISSION_MAX_CONNECTIONS_PER_POD`. */
export function envName(key: string): string {
  return ENV_PREFIX + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** The defaults, straight from the table. */
export function defaults(): StackConfig {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const d: unknown = f.default;
    out[f.key] = Array.isArray(d) ? [...(d as unknown[])] : typeof d === 'object' && d !== null ? { ...d } : d;
  }
  return out as unknown as StackConfig;
}
