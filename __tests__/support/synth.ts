import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Testing, TerraformStack } from 'cdktf';
import { StackConfig, defaults } from '../../config/schema';
import { FilterConfig } from '../../constructs/filter-config';
import { WsAdmissionStack } from '../../constructs/stack';

export const ROOT = path.resolve(__dirname, '..', '..');
export const FIXTURES = path.resolve(__dirname, 'fixtures');

/** A small, stable set of Lua files in two directories (as lua/envoy and lua/agent), so these tests do not move with lua/. */
export const FIXTURE_LUA_DIRS = [path.join(FIXTURES, 'lua', 'envoy'), path.join(FIXTURES, 'lua', 'agent')];

export type Json = any;

export function config(overrides: Partial<StackConfig> = {}): StackConfig {
  return { ...defaults(), ...overrides };
}

export function makeStack(overrides: Partial<StackConfig> = {}, luaDirs: readonly string[] = FIXTURE_LUA_DIRS) {
  const app = Testing.app();
  const stack = new WsAdmissionStack(app, 'ws-envoy-admission', { config: config(overrides), luaDirs });
  return { app, stack };
}

/** The synthesized stack as a string (for the cdktf matchers) and as parsed JSON. */
export function synth(overrides: Partial<StackConfig> = {}, luaDirs: readonly string[] = FIXTURE_LUA_DIRS) {
  const { stack } = makeStack(overrides, luaDirs);
  const text = Testing.synth(stack);
  return { text, json: JSON.parse(text), stack };
}

/**
 * A small test chart: an empty stack to build the construct under test in (cdk8s-plus
 * style), and its synthesized JSON. The whole stack is `synth` below.
 */
export function testStack(): TerraformStack {
  return new TerraformStack(Testing.app(), 'test');
}

/** The synthesized JSON of a test chart. */
export function synthStack(stack: TerraformStack): Json {
  return JSON.parse(Testing.synth(stack));
}

/** The one resource of `type` (a test chart builds one of each). */
export function only(json: Json, type: string): Json {
  const all = resources(json, type);
  if (all.length !== 1) throw new Error(`expected one ${type}, found ${all.length}`);
  return all[0];
}

/** The Envoy ConfigMap an EnvoyProxy needs, from the fixture Lua files. */
export function fixtureFilterConfig(stack: TerraformStack, namespace = 'ns'): FilterConfig {
  return new FilterConfig(stack, 'filter-config', {
    namespace,
    envoyYaml: 'admin: {}\n',
    settingsLua: 'return {}\n',
    luaDirs: FIXTURE_LUA_DIRS,
  });
}

/** All resources of one type, as an array of their bodies. */
export function resources(json: Json, type: string): Json[] {
  return Object.values(json.resource?.[type] ?? {});
}

/** The one resource of `type` whose metadata.name is `name`. */
export function byName(json: Json, type: string, name: string): Json {
  const found = resources(json, type).filter((r) => r.metadata?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${type} named ${name}, found ${found.length}`);
  return found[0];
}

/** Undoes the Terraform template escaping of ConfigMap data. */
export function unescapeTemplate(text: string): string {
  return text.replace(/\$\$\{/g, '${').replace(/%%\{/g, '%{');
}

/**
 * A container's security context under the "restricted" Pod Security Standard, as the
 * stack synthesizes it (constructs/security.ts, containerSecurityContext).
 */
export const RESTRICTED_CONTAINER = {
  run_as_non_root: true,
  allow_privilege_escalation: false,
  privileged: false,
  read_only_root_filesystem: true,
  capabilities: { drop: ['ALL'] },
  seccomp_profile: { type: 'RuntimeDefault' },
};

/** A pod's security context under "restricted", for the user and group `uid` (podSecurityContext). */
export function restrictedPod(uid: number) {
  const id = String(uid);
  return { run_as_non_root: true, run_as_user: id, run_as_group: id, fs_group: id, seccomp_profile: { type: 'RuntimeDefault' } };
}

/** A temporary copy of the fixture Lua directories, to change files in. */
export function tempLuaDirs(): { dirs: string[]; root: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stack-lua-'));
  const dirs = FIXTURE_LUA_DIRS.map((d) => {
    const to = path.join(root, path.basename(d));
    fs.cpSync(d, to, { recursive: true });
    return to;
  });
  return { dirs, root };
}

/** The "every option changed" profile. */
export const EVERYTHING_CHANGED: StackConfig = {
  clusterName: 'prod-eks',
  region: 'eu-west-1',
  // The connection mode has its own profile (KUBECONFIG_PROFILE): this one stays on EKS.
  kubeconfigPath: '',
  kubeContext: '',
  // EKS mode keeps the NLB; the other types are tested in kubeconfig mode (constructs/nlb.test.ts).
  publicServiceType: 'LoadBalancer',
  namespace: 'realtime',
  createNamespace: false,
  maxConnectionsPerClientPercent: 25,
  maxConnectionsPerClient: 40,
  rateLimitPerClientPerMinute: 50,
  clientIdentity: 'header',
  clientHeader: 'x-user-id',
  clientTrustedHops: 1,
  clientIpv6PrefixBits: 56,
  handshakeTimeoutSeconds: 20,
  maxConnectionsPerPod: 5,
  rateLimitPerMinute: 600,
  envoyReplicas: 4,
  envoyConcurrency: 4,
  envoyMaxConnections: 50000,
  backendServiceName: 'chat-backend',
  backendPort: 9000,
  backendSelector: { app: 'chat', tier: 'ws' },
  backendHealthCheckPath: '/healthz',
  deploySampleBackend: false,
  sampleBackendReplicas: 5,
  envoyImage: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/ws-envoy-lua:1.36.2-7',
  redisImage: 'public.ecr.aws/docker/library/redis:7.4.3-alpine',
  sampleBackendImage: 'ghcr.io/example/echo@sha256:' + 'a'.repeat(64),
  leaseTtlSeconds: 200,
  renewIntervalSeconds: 15,
  idleTimeoutSeconds: 120,
  maxStreamDurationSeconds: 7200,
  redisFailureMode: 'closed',
  hashTag: 'chat',
  capacityCacheMs: 500,
  redisConnectTimeoutMs: 50,
  redisReadTimeoutMs: 100,
  limitAllRequests: true,
  connectionInventory: true,
  externalRedisHost: 'master.chat.abc123.euw1.cache.amazonaws.com',
  externalRedisPort: 6380,
  externalRedisTls: true,
  externalRedisPasswordSecret: 'elasticache-auth',
  externalRedisUsername: 'ws-proxy-user',
  nlbTls: true,
  nlbTlsCertificateArns: ['arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b'],
  nlbTlsPort: 8443,
  nlbTlsPolicy: 'ELBSecurityPolicy-TLS13-1-3-2021-06',
  nlbTlsHostname: 'chat.example.com',
  nlbKeepPlainPort: true,
  nlbSourceRanges: ['203.0.113.0/24', '198.51.100.0/24'],
  envoyAutoscaling: true,
  installLbController: false,
  lbControllerIamPolicyFile: '',
  envoyMaxReplicas: 12,
  envoyTargetCpuPercent: 70,
  redisPersistence: 'none',
  redisPasswordInState: true,
  redisPasswordRevision: 3,
  redisVolumeSize: '2Gi',
  redisStorageClass: '',
  envoyNetworkPolicy: true,
  metricsAllowedCidrs: ['10.20.0.0/16', '100.64.0.0/16'],
  metricsScraperNamespaceLabels: { 'kubernetes.io/metadata.name': 'observability' },
  nlbScheme: 'internal',
  nlbProxyProtocol: true,
  nlbSetIdleTimeout: false,
  exposeMetricsOnNlb: true,
  grafanaDashboard: false,
  serviceMonitor: true,
  serviceMonitorLabels: { release: 'kube-prometheus-stack' },
  remoteStateBucket: 'acme-tfstate',
  remoteStateKey: 'realtime/ws.tfstate',
  remoteStateRegion: 'eu-central-1',
  remoteStateLockfile: false,
};
