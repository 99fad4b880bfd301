import { isIP } from 'net';
import { FIELDS, FieldSpec, LEASE_MARGIN_SECONDS, NLB_IDLE_MARGIN_SECONDS, NLB_TCP_IDLE_TIMEOUT, StackConfig } from './schema';
import { NAMES, componentLabels, selectorLabels } from './names';
import { redisImageAdvisory } from './redis-advisories';
import { METRICS_PORT } from '../envoy/bootstrap';

/**
 * Thrown for a configuration the stack refuses. `problems` holds one line per fault
 * (all faults are reported at once); `message` joins them.
 */
export class ConfigError extends Error {
  public readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(
      problems.length === 1
        ? `Invalid configuration: ${problems[0]}`
        : `Invalid configuration (${problems.length} problems):\n- ${problems.join('\n- ')}`,
    );
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

// Docker reference grammar (distribution/reference), reduced to what a pod spec takes:
// [registry[:port]/]path[:tag][@sha256:digest]
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?';
const IMAGE_REF = new RegExp(
  `^(?:${DOMAIN}/)?${COMPONENT}(?:/${COMPONENT})*(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$`,
);

/** Shows a value the way it was written: strings quoted, the rest as JSON. */
export function show(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

/** `null` when `value` is a DNS-1123 label, else what is wrong with it. */
export function dns1123LabelProblem(value: string): string | null {
  if (value.length === 0) return 'must not be empty';
  if (value.length > 63) return `must be at most 63 characters (has ${value.length})`;
  if (!DNS1123_LABEL.test(value)) {
    return 'must be a DNS-1123 label (lower-case letters, digits and "-", starting and ending with a letter or digit)';
  }
  return null;
}

/** `null` when `ref` is a pinned image reference, else what is wrong with it. */
export function imageProblem(ref: string): string | null {
  const m = IMAGE_REF.exec(ref);
  if (!m) return 'must be an image reference like "registry.example.com/team/app:1.2.3" or "app@sha256:<64 hex>"';
  const tag = m[1];
  const digest = m[2];
  if (!tag && !digest) return 'must be pinned with a tag or an @sha256 digest (an untagged image means "latest")';
  if (tag === 'latest' && !digest) return 'must not use the "latest" tag (it moves; pin a version or a digest)';
  return null;
}

/** `null` when the labels are valid Kubernetes selector labels, else the problem. */
export function labelsProblem(labels: Record<string, unknown>): string | null {
  const keys = Object.keys(labels);
  if (keys.length === 0) return 'must hold at least one label';
  for (const key of keys) {
    const value = labels[key];
    const slash = key.lastIndexOf('/');
    const prefix = slash >= 0 ? key.slice(0, slash) : '';
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (slash >= 0 && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
      return `has a label key ${show(key)} whose prefix is not a DNS subdomain`;
    }
    if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
      return `has an invalid label key ${show(key)} (name part: 1-63 letters, digits, "-", "_", ".")`;
    }
    if (typeof value !== 'string') return `has a non-string value for label ${show(key)}`;
    if (value.length > 63 || (value.length > 0 && !LABEL_NAME.test(value))) {
      return `has an invalid value ${show(value)} for label ${show(key)} (0-63 letters, digits, "-", "_", ".")`;
    }
  }
  return null;
}

function integerProblem(f: FieldSpec, value: number): string | null {
  const min = f.min ?? Number.MIN_SAFE_INTEGER;
  const max = f.max ?? Number.MAX_SAFE_INTEGER;
  const range = f.max !== undefined ? `between ${min} and ${max}` : min === 1 ? 'a positive integer' : `an integer of at least ${min}`;
  if (!Number.isSafeInteger(value)) {
    return `${f.key} must be ${f.max !== undefined ? `an integer ${range}` : range}, got ${show(value)}. Fix: use a whole number such as ${show(f.default)}.`;
  }
  if (value < min || value > max) {
    return `${f.key} must be ${f.max !== undefined ? `an integer ${range}` : range}, got ${value}. Fix: use a value ${f.max !== undefined ? range : `of at least ${min}`} (default ${show(f.default)}).`;
  }
  return null;
}

/** Why `v` is not a CIDR block (IPv4 /0-32 or IPv6 /0-128, the address its network), or null. */
export function cidrProblem(v: string): string | null {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(v);
  if (!m) return 'not address/prefix';
  const family = isIP(m[1]);
  if (family === 0) return `${show(m[1])} is not an IP address`;
  const prefix = Number(m[2]);
  if (prefix > (family === 4 ? 32 : 128)) return `prefix /${prefix} is longer than an IPv${family} address`;
  return null;
}

/** Checks one field's value; returns the problem line or null. */
export function fieldProblem(f: FieldSpec, value: unknown): string | null {
  switch (f.kind) {
    case 'integer':
      if (typeof value !== 'number')
        return `${f.key} must be a number, got ${show(value)}. Fix: write it without quotes, e.g. ${show(f.default)}.`;
      return integerProblem(f, value);
    case 'boolean':
      if (typeof value !== 'boolean') return `${f.key} must be true or false, got ${show(value)}.`;
      return null;
    case 'enum':
      if (typeof value !== 'string' || !(f.values ?? []).includes(value)) {
        return `${f.key} must be one of ${(f.values ?? []).map((v) => show(v)).join(', ')}, got ${show(value)}.`;
      }
      return null;
    case 'labels': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        return `${f.key} must be an object of label names to values, got ${show(value)}. Fix: e.g. ${show(f.default)}.`;
      }
      if (f.optional && Object.keys(value).length === 0) return null;
      const p = labelsProblem(value as Record<string, unknown>);
      return p ? `${f.key} ${p}, got ${show(value)}.` : null;
    }
    case 'cidrs': {
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
        return `${f.key} must be a list of CIDR blocks, got ${show(value)}. Fix: e.g. ["10.0.0.0/16"] (environment: 10.0.0.0/16,10.1.0.0/16).`;
      }
      if (value.length === 0 && !f.optional) return `${f.key} must not be empty.`;
      const bad = (value as string[]).find((v) => cidrProblem(v) !== null);
      return bad !== undefined ? `${f.key} has ${show(bad)}: ${cidrProblem(bad)}. Fix: write address/prefix, e.g. "10.0.0.0/16".` : null;
    }
    case 'list': {
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
        return `${f.key} must be a list of strings, got ${show(value)}. Fix: e.g. ["…", "…"] (environment: a comma-separated list).`;
      }
      if (value.length === 0 && !f.optional) return `${f.key} must not be empty.`;
      const bad = f.pattern ? (value as string[]).find((v) => !f.pattern!.re.test(v)) : undefined;
      return bad !== undefined ? `${f.key} has ${show(bad)}, which is not ${f.pattern!.says}.` : null;
    }
    case 'image': {
      if (typeof value !== 'string') return `${f.key} must be a string, got ${show(value)}.`;
      const p = imageProblem(value);
      return p ? `${f.key} ${p}, got ${show(value)}.` : null;
    }
    case 'dns1123Label': {
      if (typeof value !== 'string') return `${f.key} must be a string, got ${show(value)}.`;
      if (value === '' && f.optional) return null;
      const p = dns1123LabelProblem(value);
      return p ? `${f.key} ${p}, got ${show(value)}. Fix: e.g. ${show(f.default || 'my-name')}.` : null;
    }
    case 'string': {
      if (typeof value !== 'string') return `${f.key} must be a string, got ${show(value)}.`;
      if (value === '' && f.optional) return null;
      if (value === '') return `${f.key} must not be empty. Fix: e.g. ${show(f.default)}.`;
      if (f.pattern && !f.pattern.re.test(value)) return `${f.key} must be ${f.pattern.says}, got ${show(value)}.`;
      return null;
    }
  }
}

/**
 * A rule that ties fields together: the fields it reads, when the config breaks it, and
 * its message (the field, the value, the fix).
 */
export interface CrossFieldRule {
  readonly reads: readonly (keyof StackConfig)[];
  readonly broken: (c: StackConfig) => boolean;
  readonly message: (c: StackConfig) => string;
}

/** The client headers the stack removes (`x-ws-*`, the addresses) or that a client writes itself. */
const RESERVED_CLIENT_HEADERS = ['x-forwarded-for', 'forwarded', 'x-envoy-original-dst-host'];
/** The longest idle timeout the NLB's own TCP idle timeout (not raised by the stack) lets Envoy close first. */
const NLB_DEFAULT_IDLE_CAP = NLB_TCP_IDLE_TIMEOUT.default - NLB_IDLE_MARGIN_SECONDS;

/** The lease TTL that survives one late renewal. */
function leaseTtlNeeded(c: StackConfig): number {
  return 2 * c.renewIntervalSeconds + LEASE_MARGIN_SECONDS;
}

/** What else on the NLB uses nlbTlsPort, if anything. */
function tlsPortClash(c: StackConfig): string | undefined {
  const used: Array<[number, string]> = [];
  if (c.nlbKeepPlainPort) used.push([80, 'the plain port (nlbKeepPlainPort)']);
  if (c.exposeMetricsOnNlb) used.push([METRICS_PORT, 'the metrics port (exposeMetricsOnNlb)']);
  return used.find(([p]) => p === c.nlbTlsPort)?.[1];
}

/** The NLB settings set away from their defaults. */
function nlbOnlySettings(c: StackConfig): string[] {
  return [
    ...(c.nlbTls ? ['nlbTls'] : []),
    ...(c.exposeMetricsOnNlb ? ['exposeMetricsOnNlb'] : []),
    ...(c.nlbSourceRanges.length > 0 ? ['nlbSourceRanges'] : []),
    ...(c.nlbScheme !== 'internet-facing' ? ['nlbScheme'] : []),
  ];
}

/** The stack's own Services: a backend Service of the same name would make the apply fail half-way ("already exists") or, worse, replace one of them. */
const OWN_SERVICES: readonly string[] = [NAMES.redis, NAMES.nlb, NAMES.envoyMetrics];

/** Envoy would offer its own pods (or Redis) as WebSocket backends. */
function selectsOwnPods(what: string, name: string, component: string): CrossFieldRule {
  const podLabels: { [k: string]: string } = { ...componentLabels(name, component), ...selectorLabels(name) };
  return {
    reads: ['backendSelector'],
    broken: (c) => {
      const sel = Object.entries(c.backendSelector);
      return sel.length > 0 && sel.every(([k, v]) => podLabels[k] === v);
    },
    message: (c) =>
      `backendSelector must not select the stack's own ${what} pods, got ${show(c.backendSelector)}. ` +
      'Fix: use labels that only the WebSocket backend pods carry, e.g. {"app.kubernetes.io/name":"ws-echo"}.',
  };
}

/** The rules across fields, in the order their messages are reported. */
export const CROSS_FIELD_RULES: readonly CrossFieldRule[] = [
  {
    reads: ['redisImage', 'externalRedisHost'],
    broken: (c) => c.externalRedisHost === '' && redisImageAdvisory(c.redisImage) !== null,
    message: (c) =>
      `redisImage ${redisImageAdvisory(c.redisImage)}, got ${show(c.redisImage)}. ` +
      'Fix: use a patched release (e.g. the default, or a later patch release of it); docs/operations.md, "Keeping Redis patched".',
  },
  {
    reads: ['clientIdentity', 'clientHeader'],
    broken: (c) => c.clientIdentity === 'header' && c.clientHeader === '',
    message: () =>
      'clientIdentity is "header" but clientHeader is empty: the filter would not know which header names the client. ' +
      'Fix: set clientHeader to the header your trusted layer sets (e.g. "x-user-id"), or set clientIdentity to "address".',
  },
  {
    reads: ['clientHeader'],
    broken: (c) => c.clientHeader.startsWith('x-ws-') || RESERVED_CLIENT_HEADERS.includes(c.clientHeader),
    message: (c) =>
      `clientHeader must not be a header the stack removes or one a client writes, got ${show(c.clientHeader)}. ` +
      'Fix: name the header your trusted layer sets, e.g. "x-user-id" (for addresses behind proxies use clientTrustedHops).',
  },
  {
    reads: [
      'maxConnectionsPerClient',
      'maxConnectionsPerClientPercent',
      'rateLimitPerClientPerMinute',
      'clientIdentity',
      'kubeconfigPath',
      'nlbProxyProtocol',
      'clientTrustedHops',
    ],
    broken: (c) =>
      (c.maxConnectionsPerClient > 0 || c.maxConnectionsPerClientPercent > 0 || c.rateLimitPerClientPerMinute > 0) &&
      c.clientIdentity === 'address' &&
      c.kubeconfigPath === '' &&
      !c.nlbProxyProtocol &&
      c.clientTrustedHops === 0,
    message: () =>
      'the per-client limits key on the client address, but nlbProxyProtocol is false and clientTrustedHops is 0: behind the NLB ' +
      '(IP targets) every connection comes from one of its own addresses, so all clients would share one limit. ' +
      'Fix: set nlbProxyProtocol to true (the default), or clientTrustedHops for proxies in front that set X-Forwarded-For, ' +
      'or clientIdentity "header", or turn the per-client limits off (maxConnectionsPerClient, maxConnectionsPerClientPercent ' +
      'and rateLimitPerClientPerMinute 0).',
  },
  {
    reads: ['leaseTtlSeconds', 'renewIntervalSeconds'],
    broken: (c) => c.leaseTtlSeconds < leaseTtlNeeded(c),
    message: (c) =>
      `leaseTtlSeconds must be at least 2 x renewIntervalSeconds + ${LEASE_MARGIN_SECONDS} ` +
      `(2 x ${c.renewIntervalSeconds} + ${LEASE_MARGIN_SECONDS} = ${leaseTtlNeeded(c)}), got ${c.leaseTtlSeconds}: ` +
      `an open connection whose renewal is one entry late would lose its lease and its slot be handed out twice. ` +
      `Fix: raise leaseTtlSeconds to ${leaseTtlNeeded(c)} or more, or lower renewIntervalSeconds.`,
  },
  {
    reads: ['idleTimeoutSeconds', 'nlbSetIdleTimeout'],
    broken: (c) => !c.nlbSetIdleTimeout && c.idleTimeoutSeconds > NLB_DEFAULT_IDLE_CAP,
    message: (c) =>
      `idleTimeoutSeconds must be at most ${NLB_DEFAULT_IDLE_CAP} while nlbSetIdleTimeout is false, got ${c.idleTimeoutSeconds}: ` +
      `the NLB keeps its ${NLB_TCP_IDLE_TIMEOUT.default} s TCP idle timeout and would drop quiet WebSockets silently before Envoy closes them. ` +
      `Fix: lower idleTimeoutSeconds to ${NLB_DEFAULT_IDLE_CAP} or less, or set nlbSetIdleTimeout to true.`,
  },
  {
    // The metrics listener has no authentication: per-pod counts, proxy and worker names.
    reads: ['exposeMetricsOnNlb', 'nlbScheme'],
    broken: (c) => c.exposeMetricsOnNlb && c.nlbScheme === 'internet-facing',
    message: () =>
      `exposeMetricsOnNlb must be false while nlbScheme is "internet-facing", got true: the metrics port (${METRICS_PORT}) would be open to the internet without authentication. ` +
      'Fix: set nlbScheme to "internal", or leave exposeMetricsOnNlb false and scrape through the ws-envoy-metrics Service.',
  },
  {
    reads: ['nlbTls', 'nlbTlsCertificateArns'],
    broken: (c) => c.nlbTls && c.nlbTlsCertificateArns.length === 0,
    message: () =>
      'nlbTls is true but nlbTlsCertificateArns is empty: a TLS listener needs a certificate. ' +
      'Fix: set nlbTlsCertificateArns to your ACM certificate ARN(s) (aws acm list-certificates), or set nlbTls false.',
  },
  {
    reads: ['nlbTls', 'nlbTlsCertificateArns', 'nlbKeepPlainPort', 'nlbTlsHostname'],
    broken: (c) => !c.nlbTls && (c.nlbTlsCertificateArns.length > 0 || c.nlbKeepPlainPort || c.nlbTlsHostname !== ''),
    message: () =>
      'nlbTlsCertificateArns / nlbKeepPlainPort / nlbTlsHostname apply only with nlbTls, which is false. ' +
      'Fix: set nlbTls true, or leave those at their defaults.',
  },
  {
    reads: ['nlbTls', 'nlbTlsPort', 'nlbKeepPlainPort', 'exposeMetricsOnNlb'],
    broken: (c) => c.nlbTls && tlsPortClash(c) !== undefined,
    message: (c) => `nlbTlsPort ${c.nlbTlsPort} is also ${tlsPortClash(c)} on the NLB. Fix: choose another nlbTlsPort, e.g. 443.`,
  },
  {
    // AWS: "The connection idle timeout for TLS listeners is 350 seconds and can't be
    // modified" (Network Load Balancers, "Update the TCP idle timeout").
    reads: ['nlbTls', 'idleTimeoutSeconds'],
    broken: (c) => c.nlbTls && c.idleTimeoutSeconds + NLB_IDLE_MARGIN_SECONDS > NLB_TCP_IDLE_TIMEOUT.default,
    message: (c) =>
      `idleTimeoutSeconds must be at most ${NLB_TCP_IDLE_TIMEOUT.default - NLB_IDLE_MARGIN_SECONDS} with nlbTls, got ${c.idleTimeoutSeconds}: an NLB TLS listener drops a flow idle for ${NLB_TCP_IDLE_TIMEOUT.default} s (fixed by AWS), and Envoy must close a quiet WebSocket ${NLB_IDLE_MARGIN_SECONDS} s before that. ` +
      `Fix: lower idleTimeoutSeconds to ${NLB_TCP_IDLE_TIMEOUT.default - NLB_IDLE_MARGIN_SECONDS} or less (clients can keep a connection with pings).`,
  },
  {
    reads: ['installLbController', 'kubeconfigPath'],
    broken: (c) => c.installLbController && c.kubeconfigPath !== '',
    message: () =>
      'installLbController needs the EKS cluster (its OIDC provider, VPC and region), but kubeconfigPath is set. ' +
      'Fix: install the controller yourself on that cluster, or deploy in EKS mode (clear kubeconfigPath).',
  },
  {
    reads: ['installLbController', 'lbControllerIamPolicyFile'],
    broken: (c) => c.installLbController && c.lbControllerIamPolicyFile === '',
    message: () =>
      "installLbController is true but lbControllerIamPolicyFile is empty: the controller's IAM role needs its policy. " +
      'Fix: download docs/install/iam_policy.json of kubernetes-sigs/aws-load-balancer-controller v3.5.0 and set lbControllerIamPolicyFile to its path.',
  },
  {
    reads: ['installLbController', 'lbControllerIamPolicyFile'],
    broken: (c) => !c.installLbController && c.lbControllerIamPolicyFile !== '',
    message: (c) =>
      `lbControllerIamPolicyFile is set (${JSON.stringify(c.lbControllerIamPolicyFile)}) but installLbController is false. Fix: set installLbController true, or clear lbControllerIamPolicyFile.`,
  },
  {
    reads: ['envoyAutoscaling', 'envoyMaxReplicas', 'envoyReplicas'],
    broken: (c) => c.envoyAutoscaling && c.envoyMaxReplicas < c.envoyReplicas,
    message: (c) =>
      `envoyMaxReplicas (${c.envoyMaxReplicas}) is below envoyReplicas (${c.envoyReplicas}), the autoscaler's minimum. ` +
      `Fix: raise envoyMaxReplicas to ${c.envoyReplicas} or more, or lower envoyReplicas.`,
  },
  {
    reads: ['publicServiceType', 'kubeconfigPath'],
    broken: (c) => c.publicServiceType !== 'LoadBalancer' && c.kubeconfigPath === '',
    message: (c) =>
      `publicServiceType ${show(c.publicServiceType)} applies only with kubeconfigPath: in EKS mode the public Service is the NLB (type LoadBalancer). ` +
      'Fix: leave publicServiceType at "LoadBalancer", or deploy through a kubeconfig (kubeconfigPath) to a cluster without a load balancer controller.',
  },
  {
    reads: ['publicServiceType', 'nlbTls', 'exposeMetricsOnNlb', 'nlbSourceRanges', 'nlbScheme'],
    broken: (c) => c.publicServiceType !== 'LoadBalancer' && nlbOnlySettings(c).length > 0,
    message: (c) => {
      const nlbOnly = nlbOnlySettings(c);
      return (
        `${nlbOnly.join(', ')} ${nlbOnly.length === 1 ? 'is a setting' : 'are settings'} of the NLB, which publicServiceType ${show(c.publicServiceType)} does not create. ` +
        'Fix: set publicServiceType to "LoadBalancer", or leave those at their defaults.'
      );
    },
  },
  {
    reads: ['kubeContext', 'kubeconfigPath'],
    broken: (c) => c.kubeContext !== '' && c.kubeconfigPath === '',
    message: (c) =>
      `kubeContext applies only with kubeconfigPath, but kubeconfigPath is empty (kubeContext is ${show(c.kubeContext)}). ` +
      'Fix: set kubeconfigPath to the kubeconfig file holding that context, or leave kubeContext empty for the EKS cluster clusterName.',
  },
  {
    reads: ['redisPersistence', 'redisStorageClass'],
    broken: (c) => c.redisPersistence === 'none' && c.redisStorageClass !== '',
    message: (c) =>
      `redisStorageClass is set (${JSON.stringify(c.redisStorageClass)}) but redisPersistence is "none": no volume would use it. ` +
      'Fix: set redisPersistence to "aof", or clear redisStorageClass.',
  },
  {
    reads: ['redisPersistence', 'externalRedisHost'],
    broken: (c) => c.redisPersistence === 'aof' && c.externalRedisHost !== '',
    message: () =>
      'redisPersistence "aof" applies to the in-cluster Redis, but externalRedisHost is set (that Redis persists as its owner configured it). ' +
      'Fix: set redisPersistence to "none", or clear externalRedisHost.',
  },
  {
    reads: ['externalRedisHost', 'externalRedisTls', 'externalRedisPasswordSecret', 'externalRedisUsername'],
    broken: (c) =>
      c.externalRedisHost === '' && (c.externalRedisTls || c.externalRedisPasswordSecret !== '' || c.externalRedisUsername !== ''),
    message: () =>
      `externalRedisTls / externalRedisPasswordSecret / externalRedisUsername apply only to an external Redis, but externalRedisHost is empty. ` +
      'Fix: set externalRedisHost, or leave those at their defaults for the in-cluster Redis.',
  },
  {
    reads: ['externalRedisUsername', 'externalRedisPasswordSecret'],
    broken: (c) => c.externalRedisUsername !== '' && c.externalRedisPasswordSecret === '',
    message: (c) =>
      `externalRedisUsername is set (${JSON.stringify(c.externalRedisUsername)}) but externalRedisPasswordSecret is empty: an ACL user needs its password. ` +
      "Fix: set externalRedisPasswordSecret to the Secret holding that user's password, or clear externalRedisUsername.",
  },
  {
    reads: ['backendServiceName'],
    broken: (c) => OWN_SERVICES.includes(c.backendServiceName),
    message: (c) =>
      `backendServiceName must not be the name of a Service the stack creates itself (${OWN_SERVICES.map((n) => show(n)).join(', ')}), ` +
      `got ${show(c.backendServiceName)}. Fix: choose another name, e.g. "ws-backend".`,
  },
  selectsOwnPods('Envoy', NAMES.envoy, 'proxy'),
  selectsOwnPods('Redis', NAMES.redis, 'state'),
];

/** The message of every cross-field rule the config breaks, in table order. */
export function crossFieldProblems(c: StackConfig): string[] {
  return CROSS_FIELD_RULES.filter((rule) => rule.broken(c)).map((rule) => rule.message(c));
}

/** Every problem of a complete config (field by field, then across fields). */
export function configProblems(c: StackConfig): string[] {
  const problems: string[] = [];
  for (const f of FIELDS) {
    const p = fieldProblem(f, c[f.key]);
    if (p) problems.push(p);
  }
  // Cross-field rules only make sense once every field is well-formed.
  if (problems.length === 0) problems.push(...crossFieldProblems(c));
  return problems;
}

/** Validates a complete config; throws `ConfigError` listing every problem. */
export function validateConfig(c: StackConfig): StackConfig {
  const problems = configProblems(c);
  if (problems.length > 0) throw new ConfigError(problems);
  return c;
}
