import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { ConfigMapV1 } from '@cdktf/provider-kubernetes/lib/config-map-v1';
import {
  DeploymentV1,
  DeploymentV1SpecTemplateSpecContainer,
  DeploymentV1SpecTemplateSpecVolume,
} from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { NetworkPolicyV1 } from '@cdktf/provider-kubernetes/lib/network-policy-v1';
import { PersistentVolumeClaimV1 } from '@cdktf/provider-kubernetes/lib/persistent-volume-claim-v1';
import { SecretV1 } from '@cdktf/provider-kubernetes/lib/secret-v1';
import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { Password } from '@cdktf/provider-random/lib/password';
import { Fn, TerraformStack } from 'cdktf';
import { Construct } from 'constructs';
import { imageProblem } from '../config/validate';
import { escapeTerraformTemplate } from './filter-config';
import { NAMES, REDIS_SELECTOR, componentLabels } from './names';
import { ResourceSpec, containerSecurityContext, podSecurityContext, resources } from './security';

export const REDIS_PORT = 6379;
/** Where the loader container finds the library (the `ws-redis-functions` ConfigMap). */
const FUNCTIONS_DIR = '/etc/redis/functions';
/** Names of the ephemeral passwords (`ephemeral.random_password.<prefix>proxy|admin`). */
const EPHEMERAL_PREFIX = 'ws_redis_';
/** uid/gid of the `redis` user in the official images. */
const REDIS_UID = 999;

/** The ACL user of the proxies: their keys and their commands only. */
export const REDIS_PROXY_USER = 'ws-proxy';
/** The ACL user of the probe, the library loader and an operator's `redis-cli` (every key and command). */
export const REDIS_ADMIN_USER = 'ws-admin';
/** The Redis Functions library every decision runs in (lua/redis/ws_admission.lua). */
export const FUNCTION_LIBRARY = { name: 'ws_admission', file: path.resolve(__dirname, '..', 'lua', 'redis', 'ws_admission.lua') } as const;

/** The library's source, as an administrator loads it (`FUNCTION LOAD REPLACE`). */
export function readFunctionLibrary(): string {
  return fs.readFileSync(FUNCTION_LIBRARY.file, 'utf8');
}

/**
 * Every command the proxies send (FCALL, PING) and the ones the library's functions call:
 * Redis checks a function's own calls against the caller's ACL too, so those must be
 * granted. What is not here is refused: no SCRIPT, EVAL, EVALSHA or FUNCTION (a proxy can
 * run no code of its own), no KEYS, no FLUSH*, no CONFIG. The end-to-end tests run the
 * real Envoy against a Redis with exactly this ACL.
 */
export const REDIS_PROXY_COMMANDS = [
  'ping',
  'fcall',
  'time',
  'del',
  'hdel',
  'hexists',
  'hget',
  'hgetall',
  'hincrby',
  'hlen',
  'hmget',
  'hscan',
  'hset',
  'hsetnx',
  'zadd',
  'zcard',
  'zcount',
  'zincrby',
  'zlexcount',
  'zrange',
  'zrangebylex',
  'zrangebyscore',
  'zrem',
  'zremrangebyscore',
  'zscan',
  'zscore',
] as const;

/**
 * The library loader beside Redis: loads the library when Redis has none (a start, a
 * restart, a FUNCTION FLUSH) within a second, and again every minute with REPLACE, so a
 * changed library (the ConfigMap, updated in place by the kubelet) is taken without a
 * Redis restart. As the admin user (REDISCLI_AUTH), on the pod's loopback. "Has none"
 * means FUNCTION LIST does not name the library: an error reply (NOAUTH, LOADING) is not
 * a library, so the load is tried and its failure said at once.
 */
export function functionLoaderCommand(libraryFile: string): string[] {
  const cli = `redis-cli --no-auth-warning --user ${REDIS_ADMIN_USER} -h 127.0.0.1 -p ${REDIS_PORT}`;
  const load = `${cli} -x FUNCTION LOAD REPLACE < ${libraryFile}`;
  return [
    'sh',
    '-c',
    [
      "trap 'exit 0' TERM INT",
      'n=0',
      'while :; do',
      `  if ! ${cli} FUNCTION LIST LIBRARYNAME ${FUNCTION_LIBRARY.name} | grep -q ${FUNCTION_LIBRARY.name} || [ $n -ge 60 ]; then`,
      `    out="$(${load} 2>&1)"; [ "$out" = "${FUNCTION_LIBRARY.name}" ] && n=0 || echo "functions: FUNCTION LOAD failed: $out" >&2`,
      '  fi',
      '  n=$((n + 1)); sleep 1 & wait $!',
      'done',
    ].join('\n'),
  ];
}

export interface RedisConfOptions {
  readonly port: number;
  readonly bind: string;
  readonly maxMemory: string;
  readonly dir: string;
  /** Keys of the proxy user: `{<hashTag>}:*` (config: hashTag has no glob character). */
  readonly hashTag: string;
  readonly proxyPassword: string;
  readonly adminPassword: string;
  /**
   * Append-only file with `appendfsync everysec` (in `dir`), or nothing on disk.
   * @default false
   */
  readonly appendOnly?: boolean;
}

/**
 * redis.conf of the stack's Redis (also the local rig's): no RDB snapshots (AOF when asked), `noeviction`,
 * the `default` user off, the proxies' user limited to their keys and commands.
 * Passwords must be alphanumeric (they stand unquoted in the file).
 */
export function redisConf(o: RedisConfOptions): string {
  for (const [name, v] of [
    ['proxyPassword', o.proxyPassword],
    ['adminPassword', o.adminPassword],
  ] as const) {
    // Terraform tokens (`${...}`) pass: the value is generated alphanumeric.
    if (!/^[A-Za-z0-9]+$/.test(v) && !/^\$\{.*\}$/.test(v)) throw new Error(`redisConf: ${name} must be alphanumeric`);
  }
  return [
    `port ${o.port}`,
    `bind ${o.bind}`,
    'protected-mode yes',
    `maxmemory ${o.maxMemory}`,
    'maxmemory-policy noeviction',
    // Without AOF a restart starts empty: every worker then re-registers its open
    // connections (the state epoch, docs/filter.md). No RDB snapshots either way.
    'save ""',
    ...(o.appendOnly ? ['appendonly yes', 'appendfsync everysec'] : ['appendonly no']),
    `dir ${o.dir}`,
    // Nobody connects as `default`: an AUTH without a user name fails. Its permissions are
    // for the AOF alone: Redis replays a MULTI/EXEC of the AOF (every write a function
    // makes) as `default` and re-checks the ACL at EXEC, so without them an AOF restart
    // drops every lease silently (https://github.com/redis/redis/issues/14541).
    'user default off ~* &* +@all',
    `user ${REDIS_PROXY_USER} on >${o.proxyPassword} resetkeys ~{${o.hashTag}}:* resetchannels -@all ${REDIS_PROXY_COMMANDS.map((c) => '+' + c).join(' ')}`,
    `user ${REDIS_ADMIN_USER} on >${o.adminPassword} ~* &* +@all`,
    '',
  ].join('\n');
}

export interface RedisProps {
  /** Namespace of every object. */
  readonly namespace: string;
  /** Pinned image reference (tag or digest). */
  readonly image: string;
  /** Labels of the only pods allowed to connect (the Envoy pods). */
  readonly clientSelector: { readonly [key: string]: string };
  /**
   * Redis `maxmemory`. With `noeviction`, a full Redis answers errors (the filter's
   * failure mode applies) instead of silently evicting live leases.
   * @default '192mb'
   */
  readonly maxMemory?: string;
  /**
   * The filter's Redis key hash tag (config hashTag): the proxy user's keys.
   * @default 'ws'
   */
  readonly hashTag?: string;
  /**
   * Keep the passwords in the Terraform state (`random_password` resources, the Secret's
   * `data`), as Terraform < 1.11 needs. Otherwise they are ephemeral and write-only.
   * @default false
   */
  readonly passwordInState?: boolean;
  /**
   * Bump to rotate both passwords (the Secret is rewritten, Redis restarts).
   * @default 1
   */
  readonly passwordRevision?: number;
  /**
   * Keep the state on a PersistentVolumeClaim (AOF, `appendfsync everysec`).
   * @default - none: a restart starts empty
   */
  readonly persistence?: { readonly size: string; readonly storageClass?: string };
  /**
   * Container resources.
   * @default - 100m/256Mi requested, 1 CPU/256Mi limit
   */
  readonly resources?: ResourceSpec;
}

/** Labels of every object of the Redis. */
const LABELS = { ...componentLabels(NAMES.redis, 'state'), ...REDIS_SELECTOR };
/** The admin password, from the Secret, for `redis-cli --user ws-admin` in the pod (probe, loader, an operator's exec). */
const ADMIN_AUTH_ENV = { name: 'REDISCLI_AUTH', valueFrom: { secretKeyRef: { name: NAMES.redisSecret, key: 'admin-password' } } };

/** The Secret with both passwords and the redis.conf that holds them, and the checksum that rolls the pod when any changes. */
interface RenderedSecret {
  readonly secret: SecretV1;
  readonly confChecksum: string;
}

/**
 * The in-cluster Redis that holds the admission state: a Deployment of one replica
 * (independent Redis pods behind one Service would split the state; a replicated Redis is
 * an external one, externalRedisHost), a ClusterIP Service, and a NetworkPolicy that lets
 * only the Envoy pods reach port 6379.
 *
 * - ACL users, the `default` user off: `ws-proxy` (the proxies: their `{tag}:*` keys and
 *   the commands of REDIS_PROXY_COMMANDS only) and `ws-admin` (every key and command: the
 *   readiness probe, the library loader, an operator's `redis-cli`).
 * - The Functions library (lua/redis/ws_admission.lua) in the `ws-redis-functions`
 *   ConfigMap, loaded by the pod's `functions` container (functionLoaderCommand); the pod is
 *   ready once the library is loaded.
 * - Passwords: two generated, alphanumeric, in the `ws-redis-auth` Secret with a complete
 *   `redis.conf` mounted as a file; never in the pod spec (the containers read the admin
 *   password through `REDISCLI_AUTH` from a secretKeyRef). Ephemeral and write-only by
 *   default (never in the Terraform state; Terraform >= 1.11), or `random_password`
 *   resources in the state with `passwordInState`. `passwordRevision` rotates both.
 * - Persistence: none by default (a restart starts empty and the agents put every open
 *   stream back, ws_recover); with `persistence`, an AOF on a PersistentVolumeClaim.
 */
export class Redis extends Construct {
  public readonly serviceName: string;
  public readonly host: string;
  public readonly port = REDIS_PORT;
  /** Secret holding `password` (for clients) and `redis.conf` (for the server). */
  public readonly secretName: string;
  public readonly deployment: DeploymentV1;
  public readonly service: ServiceV1;
  public readonly secret: SecretV1;
  /** The Functions library (lua/redis/ws_admission.lua), loaded by the pod's `functions` container. */
  public readonly functions: ConfigMapV1;
  public readonly networkPolicy: NetworkPolicyV1;
  /** The data volume, with `persistence`. */
  public readonly volumeClaim?: PersistentVolumeClaimV1;

  constructor(scope: Construct, id: string, props: RedisProps) {
    super(scope, id);
    const imageErr = imageProblem(props.image);
    if (imageErr) throw new Error(`Redis: image ${imageErr}, got ${JSON.stringify(props.image)}`);
    const revision = props.passwordRevision ?? 1;
    if (!Number.isSafeInteger(revision) || revision < 1) {
      throw new Error(`Redis: passwordRevision must be an integer >= 1, got ${revision}`);
    }
    this.serviceName = NAMES.redis;
    this.secretName = NAMES.redisSecret;
    this.host = `${NAMES.redis}.${props.namespace}.svc.cluster.local`;

    this.functions = this.renderFunctions(props.namespace);
    const { secret, confChecksum } = props.passwordInState
      ? this.renderPasswordsInState(props, revision)
      : this.renderEphemeralPasswords(props, revision);
    this.secret = secret;
    if (props.persistence) this.volumeClaim = this.renderVolumeClaim(props.namespace, props.persistence);
    this.deployment = this.renderDeployment(props, confChecksum);
    this.service = this.renderService(props.namespace);
    this.networkPolicy = this.renderNetworkPolicy(props.namespace, props.clientSelector);
  }

  /** redis.conf with these passwords (alphanumeric only: unquoted in the file, and read by Lua from a file). */
  private renderConf(props: RedisProps, proxyPassword: string, adminPassword: string): string {
    return redisConf({
      port: REDIS_PORT,
      bind: '0.0.0.0',
      maxMemory: props.maxMemory ?? '192mb',
      dir: '/data',
      hashTag: props.hashTag ?? 'ws',
      proxyPassword,
      adminPassword,
      appendOnly: props.persistence !== undefined,
    });
  }

  /** sha256 of redis.conf without its passwords: the settings part of the pod's checksum. */
  private settingsHash(props: RedisProps): string {
    return createHash('sha256')
      .update(this.renderConf(props, 'PROXYPASSWORD', 'ADMINPASSWORD'))
      .digest('hex');
  }

  private renderFunctions(namespace: string): ConfigMapV1 {
    return new ConfigMapV1(this, 'functions', {
      metadata: { name: NAMES.redisFunctions, namespace, labels: LABELS },
      // Terraform reads every string as a template: a `${` or `%{` of the Lua must stay text.
      data: { [path.basename(FUNCTION_LIBRARY.file)]: escapeTerraformTemplate(readFunctionLibrary()) },
    });
  }

  /** `random_password` resources and the Secret's `data`: in the Terraform state, as Terraform < 1.11 needs. */
  private renderPasswordsInState(props: RedisProps, revision: number): RenderedSecret {
    const password = new Password(this, 'password', { length: 40, special: false, keepers: { revision: String(revision) } });
    const adminPassword = new Password(this, 'admin-password', { length: 40, special: false, keepers: { revision: String(revision) } });
    const secret = new SecretV1(this, 'secret', {
      metadata: { name: NAMES.redisSecret, namespace: props.namespace, labels: LABELS },
      type: 'Opaque',
      data: {
        password: password.result,
        'admin-password': adminPassword.result,
        'redis.conf': this.renderConf(props, password.result, adminPassword.result),
      },
    });
    // The settings and the passwords (hashed by Terraform): a new password rolls the pod.
    return { secret, confChecksum: Fn.sha256(`${this.settingsHash(props)}:${password.result}:${adminPassword.result}`) };
  }

  /**
   * Passwords that never reach the Terraform state (or a plan): ephemeral values (Terraform
   * >= 1.10) written through the Secret's write-only `data_wo` (>= 1.11), which the provider
   * sends on create and when data_wo_revision changes, and never stores.
   */
  private renderEphemeralPasswords(props: RedisProps, revision: number): RenderedSecret {
    const stack = TerraformStack.of(this);
    const ephemeral = (name: string) => {
      stack.addOverride(`ephemeral.random_password.${name}`, { length: 40, special: false });
      return `\${ephemeral.random_password.${name}.result}`;
    };
    // Older Terraform would fail at `ephemeral` with a less clear message.
    stack.addOverride('terraform.required_version', '>= 1.11.0');
    const proxyPassword = ephemeral(`${EPHEMERAL_PREFIX}proxy`);
    const adminPassword = ephemeral(`${EPHEMERAL_PREFIX}admin`);
    const secret = new SecretV1(this, 'secret', {
      metadata: { name: NAMES.redisSecret, namespace: props.namespace, labels: LABELS },
      type: 'Opaque',
      dataWo: {
        password: proxyPassword,
        'admin-password': adminPassword,
        'redis.conf': this.renderConf(props, proxyPassword, adminPassword),
      },
      dataWoRevision: revision,
    });
    // The settings, the revision (a rotation) and the Secret's uid (a Secret created
    // again has new passwords): any of them rolls the pod, which reads them at start.
    return { secret, confChecksum: Fn.sha256(`${this.settingsHash(props)}:${revision}:${secret.metadata.uid}`) };
  }

  private renderVolumeClaim(namespace: string, persistence: NonNullable<RedisProps['persistence']>): PersistentVolumeClaimV1 {
    return new PersistentVolumeClaimV1(this, 'data', {
      metadata: { name: NAMES.redisData, namespace, labels: LABELS },
      spec: {
        accessModes: ['ReadWriteOnce'],
        resources: { requests: { storage: persistence.size } },
        ...(persistence.storageClass ? { storageClassName: persistence.storageClass } : {}),
      },
      // A WaitForFirstConsumer class (gp3 of the EBS CSI driver) binds only once the
      // pod is scheduled, which comes after this resource: waiting would never end.
      waitUntilBound: false,
    });
  }

  private renderDeployment(props: RedisProps, confChecksum: string): DeploymentV1 {
    return new DeploymentV1(this, 'deployment', {
      metadata: { name: NAMES.redis, namespace: props.namespace, labels: LABELS },
      spec: {
        replicas: '1',
        // Recreate: two Redis pods must never serve at once (two states).
        strategy: { type: 'Recreate' },
        selector: { matchLabels: REDIS_SELECTOR },
        template: {
          metadata: { labels: LABELS, annotations: { 'checksum/config': confChecksum } },
          spec: {
            automountServiceAccountToken: false,
            enableServiceLinks: false,
            securityContext: podSecurityContext(REDIS_UID),
            container: [this.renderRedisContainer(props), this.renderFunctionsContainer(props.image)],
            volume: this.renderVolumes(),
          },
        },
      },
      dependsOn: [this.secret, this.functions],
    });
  }

  private renderRedisContainer(props: RedisProps): DeploymentV1SpecTemplateSpecContainer {
    return {
      name: 'redis',
      image: props.image,
      command: ['redis-server'],
      args: ['/etc/redis/redis.conf'],
      port: [{ name: 'redis', containerPort: REDIS_PORT, protocol: 'TCP' }],
      // For the probe and `kubectl exec ... redis-cli --user ws-admin`.
      env: [ADMIN_AUTH_ENV],
      resources: resources(props.resources ?? { cpuRequest: '100m', memoryRequest: '256Mi', cpuLimit: '1', memoryLimit: '256Mi' }),
      securityContext: containerSecurityContext(),
      ...this.renderProbes(),
      volumeMount: [
        { name: 'config', mountPath: '/etc/redis', readOnly: true },
        { name: 'data', mountPath: '/data' },
      ],
    };
  }

  /**
   * Ready once the library is loaded: a Redis without it answers every FCALL with an
   * error, so the Service sends no proxy to it before. Live: the port answers.
   */
  private renderProbes(): Pick<DeploymentV1SpecTemplateSpecContainer, 'readinessProbe' | 'livenessProbe'> {
    return {
      readinessProbe: {
        exec: {
          command: [
            'sh',
            '-c',
            `redis-cli --no-auth-warning --user ${REDIS_ADMIN_USER} -h 127.0.0.1 FUNCTION LIST LIBRARYNAME ${FUNCTION_LIBRARY.name} | grep -q ${FUNCTION_LIBRARY.name}`,
          ],
        },
        periodSeconds: 5,
        timeoutSeconds: 2,
        failureThreshold: 3,
      },
      livenessProbe: {
        tcpSocket: [{ port: String(REDIS_PORT) }],
        initialDelaySeconds: 10,
        periodSeconds: 10,
        timeoutSeconds: 2,
        failureThreshold: 3,
      },
    };
  }

  /** The library loader (functionLoaderCommand), as `ws-admin`. */
  private renderFunctionsContainer(image: string): DeploymentV1SpecTemplateSpecContainer {
    return {
      name: 'functions',
      image,
      command: functionLoaderCommand(`${FUNCTIONS_DIR}/${path.basename(FUNCTION_LIBRARY.file)}`),
      env: [ADMIN_AUTH_ENV],
      resources: resources({ cpuRequest: '10m', memoryRequest: '16Mi', cpuLimit: '100m', memoryLimit: '32Mi' }),
      securityContext: containerSecurityContext(),
      volumeMount: [{ name: 'functions', mountPath: FUNCTIONS_DIR, readOnly: true }],
    };
  }

  /** redis.conf from the Secret, the data directory (the claim, else an emptyDir), the library. */
  private renderVolumes(): DeploymentV1SpecTemplateSpecVolume[] {
    return [
      {
        name: 'config',
        secret: { secretName: NAMES.redisSecret, defaultMode: '0400', items: [{ key: 'redis.conf', path: 'redis.conf' }] },
      },
      this.volumeClaim
        ? { name: 'data', persistentVolumeClaim: { claimName: this.volumeClaim.metadata.name } }
        : { name: 'data', emptyDir: { sizeLimit: '256Mi' } },
      { name: 'functions', configMap: { name: this.functions.metadata.name, defaultMode: '0444' } },
    ];
  }

  private renderService(namespace: string): ServiceV1 {
    return new ServiceV1(this, 'service', {
      metadata: { name: NAMES.redis, namespace, labels: LABELS },
      spec: {
        type: 'ClusterIP',
        selector: REDIS_SELECTOR,
        port: [{ name: 'redis', port: REDIS_PORT, targetPort: 'redis', protocol: 'TCP' }],
      },
    });
  }

  /** Enforced only where the CNI implements NetworkPolicy (EKS: VPC CNI with network policy enabled, or Calico/Cilium). */
  private renderNetworkPolicy(namespace: string, clientSelector: RedisProps['clientSelector']): NetworkPolicyV1 {
    return new NetworkPolicyV1(this, 'network-policy', {
      metadata: { name: NAMES.redisPolicy, namespace, labels: LABELS },
      spec: {
        podSelector: { matchLabels: REDIS_SELECTOR },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [{ podSelector: { matchLabels: { ...clientSelector } } }],
            ports: [{ port: String(REDIS_PORT), protocol: 'TCP' }],
          },
        ],
      },
    });
  }
}
