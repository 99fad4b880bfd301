// config/validate.ts: every field's check (the field, the bad value, the fix) and the rules
// across fields, on complete configs; and config/ standing on its own (no constructs/).
import * as fs from 'fs';
import * as path from 'path';
import { loadConfig } from '../../config/load';
import { StackConfig, defaults } from '../../config/schema';
import { CROSS_FIELD_RULES, crossFieldProblems, imageProblem, validateConfig } from '../../config/validate';

const bad = (overrides: Record<string, unknown>) => () => validateConfig({ ...defaults(), ...overrides });

describe('limits must be integers and positive', () => {
  it.each([
    ['maxConnectionsPerPod', 0, 'maxConnectionsPerPod must be a positive integer, got 0. Fix: use a value of at least 1 (default 2).'],
    ['maxConnectionsPerPod', -1, 'maxConnectionsPerPod must be a positive integer, got -1.'],
    ['maxConnectionsPerPod', 1.5, 'maxConnectionsPerPod must be a positive integer, got 1.5. Fix: use a whole number such as 2.'],
    ['envoyReplicas', 0, 'envoyReplicas must be a positive integer, got 0.'],
    ['rateLimitPerMinute', -5, 'rateLimitPerMinute must be an integer of at least 0, got -5.'],
    ['backendPort', 70000, 'backendPort must be an integer between 1 and 65535, got 70000.'],
    ['envoyConcurrency', 65, 'envoyConcurrency must be an integer between 1 and 64, got 65.'],
    ['leaseTtlSeconds', Number.NaN, 'leaseTtlSeconds must be a positive integer, got null.'],
  ])('%s = %p', (key, value, message) => {
    expect(bad({ [key]: value })).toThrow(message);
  });

  it('accepts rateLimitPerMinute 0 (no rate limit)', () => {
    expect(validateConfig({ ...defaults(), rateLimitPerMinute: 0 }).rateLimitPerMinute).toBe(0);
  });
});

describe('names', () => {
  it.each([
    ['namespace', '', 'namespace must not be empty, got "".'],
    [
      'namespace',
      'Bad_NS',
      'namespace must be a DNS-1123 label (lower-case letters, digits and "-", starting and ending with a letter or digit), got "Bad_NS". Fix: e.g. "ws-admission".',
    ],
    ['namespace', 'a'.repeat(64), 'namespace must be at most 63 characters (has 64)'],
    ['backendServiceName', '-backend', 'backendServiceName must be a DNS-1123 label'],
    ['externalRedisPasswordSecret', 'Secret!', 'externalRedisPasswordSecret must be a DNS-1123 label'],
    ['namespace', 42, 'namespace must be a string, got 42.'],
  ])('%s = %p', (key, value, message) => {
    expect(bad({ [key]: value })).toThrow(message);
  });

  it.each([
    ['clusterName', '', 'clusterName must not be empty. Fix: e.g. "ws-eks".'],
    ['clusterName', 'my cluster', 'clusterName must be an EKS cluster name'],
    ['region', 'mars-north-1x', 'region must be an AWS region such as "eu-west-1", got "mars-north-1x".'],
    ['hashTag', '{ws}', 'hashTag must be 1-32 characters of letters, digits, "_", ".", ":" or "-" (no braces), got "{ws}".'],
    [
      'backendHealthCheckPath',
      'healthz',
      'backendHealthCheckPath must be an absolute HTTP path starting with "/" without spaces, got "healthz".',
    ],
    ['remoteStateBucket', 'Bad_Bucket', 'remoteStateBucket must be an S3 bucket name'],
    ['remoteStateKey', '/abs/key', 'remoteStateKey must be an S3 object key without spaces, not starting with "/"'],
    ['externalRedisHost', 'bad host', 'externalRedisHost must be a DNS name or IPv4 address, got "bad host".'],
    ['region', false, 'region must be a string, got false.'],
  ])('%s = %p', (key, value, message) => {
    expect(bad({ [key]: value })).toThrow(message);
  });
});

describe('images must be pinned references', () => {
  it.each([
    ['redis', 'must be pinned with a tag or an @sha256 digest'],
    ['redis:latest', 'must not use the "latest" tag'],
    ['Redis:7.4', 'must be an image reference like'],
    ['redis:7.4@sha256:123', 'must be an image reference like'],
    ['', 'must be an image reference like'],
  ])('refuses %p', (ref, problem) => {
    expect(bad({ redisImage: ref })).toThrow(`redisImage ${problem}`);
  });

  it('refuses a non-string', () => {
    expect(bad({ envoyImage: 7 })).toThrow('envoyImage must be a string, got 7.');
  });

  it.each([
    'redis:7.4.2-alpine',
    'ws-envoy-lua:1.36.2-1',
    '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-1',
    'localhost:5000/team/app:v1',
    'redis@sha256:' + 'b'.repeat(64),
    'redis:latest@sha256:' + 'b'.repeat(64),
  ])('accepts %p', (ref) => {
    expect(imageProblem(ref)).toBeNull();
  });
});

describe('labels', () => {
  it.each([
    [[], 'backendSelector must be an object of label names to values, got [].'],
    [{}, 'backendSelector must hold at least one label, got {}.'],
    [{ 'bad key!': 'x' }, 'backendSelector has an invalid label key "bad key!"'],
    [{ 'Bad_Prefix/app': 'x' }, 'backendSelector has a label key "Bad_Prefix/app" whose prefix is not a DNS subdomain'],
    [{ app: 'not valid!' }, 'backendSelector has an invalid value "not valid!" for label "app"'],
    [{ app: 3 }, 'backendSelector has a non-string value for label "app"'],
  ])('refuses %p', (labels, message) => {
    expect(bad({ backendSelector: labels })).toThrow(message);
  });
});

describe('TLS at the NLB, source ranges, autoscaling', () => {
  const arn = 'arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
  it('refuses an ARN that is not an ACM certificate ARN', () => {
    expect(bad({ nlbTls: true, nlbTlsCertificateArns: ['arn:aws:iam::123456789012:server-certificate/x'] })).toThrow(
      'nlbTlsCertificateArns has "arn:aws:iam::123456789012:server-certificate/x", which is not an ACM certificate ARN, arn:aws:acm:<region>:<account>:certificate/<uuid>.',
    );
  });
  it('refuses TLS without a certificate, and TLS settings without TLS', () => {
    expect(bad({ nlbTls: true })).toThrow(
      'nlbTls is true but nlbTlsCertificateArns is empty: a TLS listener needs a certificate. Fix: set nlbTlsCertificateArns to your ACM certificate ARN(s) (aws acm list-certificates), or set nlbTls false.',
    );
    expect(bad({ nlbTlsCertificateArns: [arn] })).toThrow('apply only with nlbTls, which is false. Fix: set nlbTls true');
  });
  it('refuses a port clash on the NLB', () => {
    expect(bad({ nlbTls: true, nlbTlsCertificateArns: [arn], nlbTlsPort: 80, nlbKeepPlainPort: true })).toThrow(
      'nlbTlsPort 80 is also the plain port (nlbKeepPlainPort) on the NLB. Fix: choose another nlbTlsPort, e.g. 443.',
    );
    expect(bad({ nlbTls: true, nlbTlsCertificateArns: [arn], nlbTlsPort: 9901, exposeMetricsOnNlb: true, nlbScheme: 'internal' })).toThrow(
      'nlbTlsPort 9901 is also the metrics port (exposeMetricsOnNlb) on the NLB.',
    );
    expect(() => loadConfig({ env: {}, overrides: { nlbTls: true, nlbTlsCertificateArns: [arn], nlbTlsPort: 80 } })).not.toThrow();
  });
  it('refuses an idle timeout the fixed 350 s of a TLS listener would cut', () => {
    expect(bad({ nlbTls: true, nlbTlsCertificateArns: [arn], idleTimeoutSeconds: 600, leaseTtlSeconds: 700 })).toThrow(
      'idleTimeoutSeconds must be at most 320 with nlbTls, got 600',
    );
  });
  it('refuses a bad source range and an autoscaler maximum below its minimum', () => {
    expect(bad({ nlbSourceRanges: ['0.0.0.0'] })).toThrow('nlbSourceRanges has "0.0.0.0": not address/prefix.');
    expect(bad({ envoyAutoscaling: true, envoyReplicas: 4, envoyMaxReplicas: 3 })).toThrow(
      "envoyMaxReplicas (3) is below envoyReplicas (4), the autoscaler's minimum. Fix: raise envoyMaxReplicas to 4 or more, or lower envoyReplicas.",
    );
  });
  it('reads a certificate list from the environment', () => {
    expect(
      loadConfig({
        env: { WS_ADMISSION_NLB_TLS: 'true', WS_ADMISSION_NLB_TLS_CERTIFICATE_ARNS: `${arn}, ${arn.replace('eu-west-1', 'us-east-1')}` },
      }).nlbTlsCertificateArns,
    ).toHaveLength(2);
  });
});

describe('installLbController', () => {
  it('needs the policy file, the EKS target, and the file only with the install', () => {
    expect(bad({ installLbController: true })).toThrow('installLbController is true but lbControllerIamPolicyFile is empty');
    expect(bad({ lbControllerIamPolicyFile: 'p.json' })).toThrow(
      'lbControllerIamPolicyFile is set ("p.json") but installLbController is false.',
    );
    expect(bad({ installLbController: true, lbControllerIamPolicyFile: 'p.json', kubeconfigPath: '~/.kube/config' })).toThrow(
      'installLbController needs the EKS cluster (its OIDC provider, VPC and region), but kubeconfigPath is set.',
    );
  });
});

describe('CIDR lists', () => {
  it('refuses a value that is not a CIDR block, naming the field, the value and the fix', () => {
    expect(bad({ metricsAllowedCidrs: ['10.0.0.0/33'] })).toThrow(
      'metricsAllowedCidrs has "10.0.0.0/33": prefix /33 is longer than an IPv4 address. Fix: write address/prefix, e.g. "10.0.0.0/16".',
    );
    expect(bad({ metricsAllowedCidrs: ['10.0.0.0'] })).toThrow('metricsAllowedCidrs has "10.0.0.0": not address/prefix.');
    expect(bad({ metricsAllowedCidrs: ['vpc/16'] })).toThrow('"vpc" is not an IP address');
    expect(bad({ metricsAllowedCidrs: '10.0.0.0/16' })).toThrow('metricsAllowedCidrs must be a list of CIDR blocks');
  });
  it('accepts IPv4 and IPv6 blocks, from a file or as a comma list in the environment', () => {
    expect(loadConfig({ env: {}, overrides: { metricsAllowedCidrs: ['10.0.0.0/16', 'fd00::/8'] } }).metricsAllowedCidrs).toEqual([
      '10.0.0.0/16',
      'fd00::/8',
    ]);
    expect(loadConfig({ env: { WS_ADMISSION_METRICS_ALLOWED_CIDRS: ' 10.0.0.0/16, 10.1.0.0/16 ' } }).metricsAllowedCidrs).toEqual([
      '10.0.0.0/16',
      '10.1.0.0/16',
    ]);
    expect(loadConfig({ env: {} }).metricsAllowedCidrs).toEqual([]);
  });
});

describe('enums and booleans', () => {
  it('refuses an unknown failure mode', () => {
    expect(bad({ redisFailureMode: 'maybe' })).toThrow('redisFailureMode must be one of "open", "closed", got "maybe".');
  });
  it('refuses an idle timeout the NLB cannot outlast (its TCP idle timeout tops out at 6000 s)', () => {
    expect(bad({ idleTimeoutSeconds: 5971, leaseTtlSeconds: 7000 })).toThrow(
      'idleTimeoutSeconds must be an integer between 1 and 5970, got 5971. Fix: use a value between 1 and 5970 (default 300).',
    );
    expect(() => bad({ idleTimeoutSeconds: 5970, leaseTtlSeconds: 7000 })()).not.toThrow();
  });
  it('refuses an unknown NLB scheme', () => {
    expect(bad({ nlbScheme: 'public' })).toThrow('nlbScheme must be one of "internet-facing", "internal", got "public".');
  });
  it('refuses a non-boolean', () => {
    expect(bad({ createNamespace: 'yes' })).toThrow('createNamespace must be true or false, got "yes".');
  });
});

describe('rules across fields', () => {
  it("refuses an idle timeout the NLB's own 350 s would cut when the stack may not raise it", () => {
    expect(bad({ nlbSetIdleTimeout: false, idleTimeoutSeconds: 321, leaseTtlSeconds: 400 })).toThrow(
      'idleTimeoutSeconds must be at most 320 while nlbSetIdleTimeout is false, got 321: the NLB keeps its 350 s TCP idle timeout ' +
        'and would drop quiet WebSockets silently before Envoy closes them. Fix: lower idleTimeoutSeconds to 320 or less, or set nlbSetIdleTimeout to true.',
    );
    expect(() => bad({ nlbSetIdleTimeout: false, idleTimeoutSeconds: 320, leaseTtlSeconds: 400 })()).not.toThrow();
    expect(() => bad({ nlbSetIdleTimeout: true, idleTimeoutSeconds: 321, leaseTtlSeconds: 400 })()).not.toThrow();
  });
  it('refuses a lease TTL shorter than two renew intervals + margin, with the fix', () => {
    expect(bad({ leaseTtlSeconds: 64, renewIntervalSeconds: 30 })).toThrow(
      'leaseTtlSeconds must be at least 2 x renewIntervalSeconds + 5 (2 x 30 + 5 = 65), got 64: ' +
        'an open connection whose renewal is one entry late would lose its lease and its slot be handed out twice. ' +
        'Fix: raise leaseTtlSeconds to 65 or more, or lower renewIntervalSeconds.',
    );
  });
  it('accepts exactly the minimum, whatever the idle timeout (renewals come from Envoy, traffic or not)', () => {
    expect(() => bad({ leaseTtlSeconds: 65, renewIntervalSeconds: 30 })()).not.toThrow();
    expect(() => bad({ leaseTtlSeconds: 25, renewIntervalSeconds: 10, idleTimeoutSeconds: 3600 })()).not.toThrow();
    expect(() => bad({ leaseTtlSeconds: 7, renewIntervalSeconds: 1, idleTimeoutSeconds: 1 })()).not.toThrow();
  });
  it('refuses a renew interval above an hour (the lease log entry interval)', () => {
    expect(bad({ renewIntervalSeconds: 3601, leaseTtlSeconds: 8000 })).toThrow(
      'renewIntervalSeconds must be an integer between 1 and 3600, got 3601.',
    );
  });
  it("refuses a backend Service named like one of the stack's own Services", () => {
    for (const name of ['ws-redis', 'ws-envoy-nlb', 'ws-envoy-metrics']) {
      expect(bad({ backendServiceName: name })).toThrow(
        'backendServiceName must not be the name of a Service the stack creates itself ("ws-redis", "ws-envoy-nlb", "ws-envoy-metrics"), ' +
          `got "${name}". Fix: choose another name, e.g. "ws-backend".`,
      );
    }
  });
  it('refuses a backend selector that picks the Envoy or Redis pods', () => {
    expect(bad({ backendSelector: { 'app.kubernetes.io/part-of': 'ws-admission' } })).toThrow(
      'backendSelector must not select the stack\'s own Envoy pods, got {"app.kubernetes.io/part-of":"ws-admission"}. ' +
        'Fix: use labels that only the WebSocket backend pods carry, e.g. {"app.kubernetes.io/name":"ws-echo"}.',
    );
    expect(bad({ backendSelector: { 'app.kubernetes.io/name': 'ws-redis' } })).toThrow(
      'backendSelector must not select the stack\'s own Redis pods, got {"app.kubernetes.io/name":"ws-redis"}.',
    );
    expect(() => bad({ backendSelector: { 'app.kubernetes.io/part-of': 'ws-admission', app: 'chat' } })()).not.toThrow();
  });
  it('refuses the metrics port on an internet-facing NLB', () => {
    expect(bad({ exposeMetricsOnNlb: true })).toThrow(
      'exposeMetricsOnNlb must be false while nlbScheme is "internet-facing", got true: the metrics port (9901) would be open to the internet without authentication. Fix: set nlbScheme to "internal"',
    );
    expect(() => loadConfig({ env: {}, overrides: { exposeMetricsOnNlb: true, nlbScheme: 'internal' } })).not.toThrow();
  });
  it('refuses a publicServiceType other than LoadBalancer in EKS mode, naming the value and the fix', () => {
    expect(bad({ publicServiceType: 'NodePort' })).toThrow(
      'publicServiceType "NodePort" applies only with kubeconfigPath: in EKS mode the public Service is the NLB (type LoadBalancer). Fix: leave publicServiceType at "LoadBalancer", or deploy through a kubeconfig (kubeconfigPath)',
    );
    for (const t of ['NodePort', 'ClusterIP'] as const) {
      expect(() => loadConfig({ env: {}, overrides: { publicServiceType: t, kubeconfigPath: '/etc/kubeconfig' } })).not.toThrow();
    }
  });
  it('refuses an unknown publicServiceType (from the environment too), listing the types', () => {
    expect(bad({ publicServiceType: 'ExternalName' })).toThrow(
      'publicServiceType must be one of "LoadBalancer", "NodePort", "ClusterIP", got "ExternalName".',
    );
    expect(() => loadConfig({ env: { WS_ADMISSION_PUBLIC_SERVICE_TYPE: 'nodeport' } })).toThrow(
      'publicServiceType must be one of "LoadBalancer", "NodePort", "ClusterIP", got "nodeport".',
    );
  });
  it('refuses NLB settings without an NLB (publicServiceType NodePort or ClusterIP), naming each and the fix', () => {
    const kube = { kubeconfigPath: '/etc/kubeconfig', publicServiceType: 'ClusterIP' } as const;
    expect(bad({ ...kube, nlbSourceRanges: ['10.0.0.0/8'], nlbScheme: 'internal' })).toThrow(
      'nlbSourceRanges, nlbScheme are settings of the NLB, which publicServiceType "ClusterIP" does not create. Fix: set publicServiceType to "LoadBalancer", or leave those at their defaults.',
    );
    // nlbProxyProtocol (on by default) is left to the NLB: without one Envoy expects no PROXY header.
    expect(() => loadConfig({ env: {}, overrides: { ...kube, nlbProxyProtocol: true } })).not.toThrow();
  });
  it('refuses kubeContext without kubeconfigPath, naming the value and the fix', () => {
    expect(bad({ kubeContext: 'staging' })).toThrow(
      'kubeContext applies only with kubeconfigPath, but kubeconfigPath is empty (kubeContext is "staging"). Fix: set kubeconfigPath to the kubeconfig file holding that context',
    );
    expect(() => loadConfig({ env: {}, overrides: { kubeContext: 'staging', kubeconfigPath: '/etc/kubeconfig' } })).not.toThrow();
  });
  it('refuses a kubeconfigPath with a newline or leading space, and a context with a newline', () => {
    expect(bad({ kubeconfigPath: ' /etc/kubeconfig' })).toThrow(
      'kubeconfigPath must be a file path (no leading space, no newline), got " /etc/kubeconfig".',
    );
    expect(bad({ kubeconfigPath: '/etc/kube\nconfig' })).toThrow(
      'kubeconfigPath must be a file path (no leading space, no newline), got "/etc/kube\\nconfig".',
    );
    expect(bad({ kubeconfigPath: '/k', kubeContext: 'a\nb' })).toThrow(
      'kubeContext must be a kubeconfig context name (no leading space, no newline), got "a\\nb".',
    );
  });
  it('refuses external Redis options without externalRedisHost', () => {
    expect(bad({ externalRedisTls: true })).toThrow(
      'externalRedisTls / externalRedisPasswordSecret / externalRedisUsername apply only to an external Redis, but externalRedisHost is empty.',
    );
    expect(bad({ externalRedisUsername: 'app' })).toThrow('apply only to an external Redis');
  });
  it('refuses a Redis StorageClass without persistence, and persistence for an external Redis', () => {
    expect(bad({ redisStorageClass: 'gp3' })).toThrow(
      'redisStorageClass is set ("gp3") but redisPersistence is "none": no volume would use it. Fix: set redisPersistence to "aof", or clear redisStorageClass.',
    );
    expect(bad({ redisPersistence: 'aof', externalRedisHost: 'redis.example.com' })).toThrow(
      'redisPersistence "aof" applies to the in-cluster Redis',
    );
    expect(bad({ redisPersistence: 'aof', redisVolumeSize: '1G' })).toThrow(
      'redisVolumeSize must be a size such as 512Mi or 1Gi, got "1G".',
    );
    expect(() => loadConfig({ env: {}, overrides: { redisPersistence: 'aof', redisStorageClass: 'ebs.gp3' } })).not.toThrow();
  });
  it('refuses an external Redis user name without its password Secret', () => {
    expect(bad({ externalRedisHost: 'redis.example.com', externalRedisUsername: 'app' })).toThrow(
      'externalRedisUsername is set ("app") but externalRedisPasswordSecret is empty: an ACL user needs its password. Fix: set externalRedisPasswordSecret',
    );
    expect(bad({ externalRedisHost: 'redis.example.com', externalRedisUsername: 'a b', externalRedisPasswordSecret: 's' })).toThrow(
      'externalRedisUsername',
    );
  });
});

describe('the table of rules across fields', () => {
  /** A config that records the name of every field read from it. */
  const recording = (c: StackConfig, read: Set<string>): StackConfig =>
    new Proxy(c, {
      get: (target, key) => {
        read.add(String(key));
        return target[key as keyof StackConfig];
      },
    });

  it('each rule reads only the fields it names, whether it holds or not', () => {
    const configs: StackConfig[] = [
      defaults(),
      {
        ...defaults(),
        clientIdentity: 'header',
        nlbProxyProtocol: false,
        nlbTls: true,
        nlbKeepPlainPort: true,
        nlbTlsPort: 80,
        exposeMetricsOnNlb: true,
        installLbController: true,
        envoyAutoscaling: true,
        publicServiceType: 'NodePort',
        kubeContext: 'staging',
        redisStorageClass: 'gp3',
        externalRedisUsername: 'user',
        backendSelector: {},
      },
    ];
    for (const [i, rule] of CROSS_FIELD_RULES.entries()) {
      for (const c of configs) {
        const read = new Set<string>();
        rule.broken(recording(c, read));
        rule.message(recording(c, read));
        expect({ rule: i, extra: [...read].filter((k) => !(rule.reads as readonly string[]).includes(k)) }).toEqual({ rule: i, extra: [] });
      }
    }
  });

  it('reports every rule a config breaks, in the order of the table', () => {
    const problems = crossFieldProblems({
      ...defaults(),
      backendServiceName: 'ws-redis',
      kubeContext: 'staging',
      leaseTtlSeconds: 20,
      clientHeader: 'forwarded',
    });
    expect(problems.map((p) => p.split(' ').slice(0, 2).join(' '))).toEqual([
      'clientHeader must',
      'leaseTtlSeconds must',
      'kubeContext applies',
      'backendServiceName must',
    ]);
  });
});

describe('config/ stands on its own', () => {
  it('imports nothing from constructs/ (constructs import config: no circle of folders)', () => {
    const dir = path.join(__dirname, '..', '..', 'config');
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
      const imports = [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/from '([^']+)'/g)].map((m) => m[1]);
      expect({ f, fromConstructs: imports.filter((i) => i.includes('constructs/')) }).toEqual({ f, fromConstructs: [] });
    }
  });
});

describe('the per-client limits and who a client is', () => {
  it.each([
    ['maxConnectionsPerClientPercent', 101, 'maxConnectionsPerClientPercent must be an integer between 0 and 100, got 101.'],
    ['maxConnectionsPerClient', -1, 'maxConnectionsPerClient must be an integer of at least 0, got -1.'],
    ['rateLimitPerClientPerMinute', 2.5, 'rateLimitPerClientPerMinute must be an integer of at least 0, got 2.5.'],
    ['clientIpv6PrefixBits', 0, 'clientIpv6PrefixBits must be an integer between 1 and 128, got 0.'],
    ['clientIpv6PrefixBits', 129, 'clientIpv6PrefixBits must be an integer between 1 and 128, got 129.'],
    ['handshakeTimeoutSeconds', 0, 'handshakeTimeoutSeconds must be an integer between 1 and 3600, got 0.'],
    ['clientIdentity', 'cookie', 'clientIdentity'],
  ])('%s = %p is refused', (key, value, message) => {
    expect(bad({ [key]: value })).toThrow(message);
  });

  it('refuses the header identity without a header, and a header the stack removes or a client writes', () => {
    expect(bad({ clientIdentity: 'header', clientHeader: '' })).toThrow(
      'clientIdentity is "header" but clientHeader is empty: the filter would not know which header names the client. Fix: set clientHeader',
    );
    for (const h of ['x-forwarded-for', 'forwarded', 'x-ws-client', 'x-envoy-original-dst-host']) {
      expect(bad({ clientIdentity: 'header', clientHeader: h })).toThrow(
        `clientHeader must not be a header the stack removes or one a client writes, got "${h}".`,
      );
    }
    expect(() => validateConfig({ ...defaults(), clientIdentity: 'header', clientHeader: 'x-user-id' })).not.toThrow();
  });

  it("refuses address-keyed limits behind the NLB without its proxy protocol (every client would be the NLB's address), naming every way out", () => {
    const message =
      'the per-client limits key on the client address, but nlbProxyProtocol is false and clientTrustedHops is 0: behind the NLB ' +
      '(IP targets) every connection comes from one of its own addresses, so all clients would share one limit. ' +
      'Fix: set nlbProxyProtocol to true (the default)';
    expect(bad({ nlbProxyProtocol: false })).toThrow(message);
    expect(
      bad({ nlbProxyProtocol: false, maxConnectionsPerClientPercent: 0, rateLimitPerClientPerMinute: 0, maxConnectionsPerClient: 3 }),
    ).toThrow(message);
    const ok = [
      {},
      { nlbProxyProtocol: false, clientTrustedHops: 1 },
      { nlbProxyProtocol: false, clientIdentity: 'header' as const, clientHeader: 'x-user-id' },
      { nlbProxyProtocol: false, maxConnectionsPerClientPercent: 0, rateLimitPerClientPerMinute: 0, maxConnectionsPerClient: 0 },
      { nlbProxyProtocol: false, kubeconfigPath: '/etc/kubeconfig' }, // no NLB of ours: the operator knows the path
    ];
    for (const o of ok) expect({ o, ok: (() => (validateConfig({ ...defaults(), ...o }), true))() }).toEqual({ o, ok: true });
  });
});
