// constructs/redis.ts (Redis), built in a small test chart: its Deployment (Redis and the
// `functions` loader beside it), the library's ConfigMap, the Secret with redis.conf and
// the two passwords, Service, NetworkPolicy and volume. The ACL and the loader on a real
// redis-server: __tests__/redis/redis-conf.test.ts. The stack's choice between this and an
// external Redis: constructs/stack.test.ts.
import * as fs from 'fs';
import * as path from 'path';
import {
  FUNCTION_LIBRARY,
  REDIS_ADMIN_USER,
  REDIS_PORT,
  REDIS_PROXY_COMMANDS,
  Redis,
  RedisProps,
  functionLoaderCommand,
  readFunctionLibrary,
} from '../../constructs/redis';
import { REDIS_SELECTOR } from '../../constructs/names';
import { Json, RESTRICTED_CONTAINER, only, restrictedPod, synthStack, testStack, unescapeTemplate } from '../support/synth';

const CLIENTS = { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' };

/** A Redis in a test chart; the chart's JSON and the pieces tests read. */
function build(props: Partial<RedisProps> = {}) {
  const stack = testStack();
  const redis = new Redis(stack, 'redis', { namespace: 'ns', image: 'redis:7.4.2-alpine', clientSelector: CLIENTS, ...props });
  const json = synthStack(stack);
  const deployment = only(json, 'kubernetes_deployment_v1');
  const pod = deployment.spec.template.spec;
  const container = (name: string): Json => pod.container.find((c: Json) => c.name === name);
  const secret = only(json, 'kubernetes_secret_v1');
  return { redis, stack, json, deployment, pod, container, secret };
}
const checksum = (j: Json): string => only(j, 'kubernetes_deployment_v1').spec.template.metadata.annotations['checksum/config'];

describe('GIVEN the defaults', () => {
  const { redis, json, deployment, pod, container, secret } = build();
  const server = container('redis');
  const loader = container('functions');

  it('runs one Redis pod, replaced (never two at once), from its config in the Secret, as the image user 999', () => {
    expect(deployment.metadata).toMatchObject({ name: 'ws-redis', namespace: 'ns' });
    expect(deployment.spec.replicas).toBe('1');
    expect(deployment.spec.strategy).toEqual({ type: 'Recreate' });
    expect(pod.container.map((c: Json) => c.name)).toEqual(['redis', 'functions']);
    expect(server.image).toBe('redis:7.4.2-alpine');
    expect(server.command).toEqual(['redis-server']);
    expect(server.args).toEqual(['/etc/redis/redis.conf']);
    expect(server.port).toEqual([{ name: 'redis', container_port: REDIS_PORT, protocol: 'TCP' }]);
    expect(JSON.stringify(pod)).not.toMatch(/random_password/); // no password in the pod spec
    expect(server.env).toEqual([
      { name: 'REDISCLI_AUTH', value_from: { secret_key_ref: { name: 'ws-redis-auth', key: 'admin-password' } } },
    ]);
    expect(pod.security_context.run_as_user).toBe('999');
    expect(redis.host).toBe('ws-redis.ns.svc.cluster.local');
    expect([redis.serviceName, redis.secretName, redis.port]).toEqual(['ws-redis', 'ws-redis-auth', REDIS_PORT]);
  });

  it('is ready only with the library loaded, and live while it listens', () => {
    expect(server.readiness_probe).toEqual({
      exec: {
        command: [
          'sh',
          '-c',
          `redis-cli --no-auth-warning --user ${REDIS_ADMIN_USER} -h 127.0.0.1 FUNCTION LIST LIBRARYNAME ws_admission | grep -q ws_admission`,
        ],
      },
      period_seconds: 5,
      timeout_seconds: 2,
      failure_threshold: 3,
    });
    expect(server.liveness_probe.tcp_socket).toEqual([{ port: String(REDIS_PORT) }]);
  });

  it('holds the library, escaped for Terraform, in the ws-redis-functions ConfigMap', () => {
    const cm = only(json, 'kubernetes_config_map_v1');
    expect(cm.metadata).toMatchObject({ name: 'ws-redis-functions', namespace: 'ns' });
    expect(Object.keys(cm.data)).toEqual(['ws_admission.lua']);
    expect(unescapeTemplate(cm.data['ws_admission.lua'])).toBe(fs.readFileSync(FUNCTION_LIBRARY.file, 'utf8'));
    expect(readFunctionLibrary().startsWith(`#!lua name=${FUNCTION_LIBRARY.name}\n`)).toBe(true);
    expect(FUNCTION_LIBRARY.file).toBe(path.resolve(__dirname, '..', '..', 'lua', 'redis', 'ws_admission.lua'));
  });

  it('loads it with the `functions` container: the loader loop, as the admin user, from the read-only ConfigMap mount', () => {
    expect(loader.image).toBe('redis:7.4.2-alpine');
    expect(loader.command).toEqual(functionLoaderCommand('/etc/redis/functions/ws_admission.lua'));
    expect(loader.env).toEqual([
      { name: 'REDISCLI_AUTH', value_from: { secret_key_ref: { name: 'ws-redis-auth', key: 'admin-password' } } },
    ]);
    expect(loader.volume_mount).toEqual([{ name: 'functions', mount_path: '/etc/redis/functions', read_only: true }]);
    expect(loader.resources).toEqual({ requests: { cpu: '10m', memory: '16Mi' }, limits: { cpu: '100m', memory: '32Mi' } });
    expect(loader.readiness_probe).toBeUndefined();
    // The command itself: as the admin, on the pod's loopback, REPLACE, and why it failed.
    const script = functionLoaderCommand('/x/lib.lua')[2];
    expect(script).toContain(
      `redis-cli --no-auth-warning --user ${REDIS_ADMIN_USER} -h 127.0.0.1 -p ${REDIS_PORT} -x FUNCTION LOAD REPLACE < /x/lib.lua`,
    );
    expect(script).toContain('functions: FUNCTION LOAD failed: $out');
    expect(script.startsWith("trap 'exit 0' TERM INT\n")).toBe(true);
  });

  it('mounts redis.conf from the Secret (0400), the data on an emptyDir, the library from its ConfigMap (0444); created after both', () => {
    expect(pod.volume).toEqual([
      {
        name: 'config',
        secret: { secret_name: 'ws-redis-auth', default_mode: '0400', items: [{ key: 'redis.conf', path: 'redis.conf' }] },
      },
      { name: 'data', empty_dir: { size_limit: '256Mi' } },
      {
        name: 'functions',
        config_map: {
          name: expect.stringMatching(/^\$\{kubernetes_config_map_v1\.redis_functions_[0-9A-F]+\.metadata\[0\]\.name\}$/),
          default_mode: '0444',
        },
      },
    ]);
    expect(server.volume_mount).toEqual([
      { name: 'config', mount_path: '/etc/redis', read_only: true },
      { name: 'data', mount_path: '/data' },
    ]);
    expect(deployment.depends_on).toEqual([
      expect.stringMatching(/^kubernetes_secret_v1\.redis_secret_/),
      expect.stringMatching(/^kubernetes_config_map_v1\.redis_functions_/),
    ]);
  });

  it('runs both containers restricted, with requests and limits', () => {
    expect(pod.security_context).toMatchObject(restrictedPod(999));
    expect(pod.automount_service_account_token).toBe(false);
    for (const c of pod.container) {
      expect(c.security_context).toEqual(RESTRICTED_CONTAINER);
      expect(c.resources.requests.cpu).toBeDefined();
      expect(c.resources.limits.memory).toBeDefined();
    }
  });

  it("generates the passwords outside the state, into the Secret only: the default user off, the proxies' user limited", () => {
    // Ephemeral values (never in the state or a plan) through the write-only data_wo.
    expect(json.resource.random_password).toBeUndefined();
    expect(json.ephemeral).toEqual({
      random_password: { ws_redis_proxy: { length: 40, special: false }, ws_redis_admin: { length: 40, special: false } },
    });
    expect(json.terraform.required_version).toBe('>= 1.11.0');
    expect(secret.metadata.name).toBe('ws-redis-auth');
    expect(secret.data).toBeUndefined();
    const wo = secret.data_wo;
    expect(wo.password).toBe('${ephemeral.random_password.ws_redis_proxy.result}');
    expect(wo['admin-password']).toBe('${ephemeral.random_password.ws_redis_admin.result}');
    expect(secret.data_wo_revision).toBe(1);
    const conf: string = wo['redis.conf'];
    expect(conf).not.toContain('requirepass');
    expect(conf.split('\n').filter((l) => l.startsWith('user '))).toEqual([
      'user default off ~* &* +@all',
      `user ws-proxy on >${wo.password} resetkeys ~{ws}:* resetchannels -@all ${REDIS_PROXY_COMMANDS.map((x) => '+' + x).join(' ')}`,
      `user ws-admin on >${wo['admin-password']} ~* &* +@all`,
    ]);
    // The proxies call the library and run no code of their own.
    expect(REDIS_PROXY_COMMANDS).toContain('fcall');
    for (const c of REDIS_PROXY_COMMANDS) expect(c).not.toMatch(/^(eval|evalsha|script|function|keys|flush|config)/);
    expect(conf).toContain('save ""');
    expect(conf).toContain('maxmemory 192mb\nmaxmemory-policy noeviction');
    expect(conf).toContain('appendonly no\n');
    // The settings' hash, the password revision and the Secret's uid, hashed by Terraform.
    expect(checksum(json)).toMatch(
      /^\$\{sha256\("[0-9a-f]{64}:1:\$\{kubernetes_secret_v1\.redis_secret_[0-9A-F]+\.metadata\[0\]\.uid\}"\)\}$/,
    );
  });

  it('lets only the client pods reach 6379', () => {
    const np = only(json, 'kubernetes_network_policy_v1');
    expect(np.metadata.name).toBe('ws-redis-envoy-only');
    expect(np.spec).toEqual({
      pod_selector: { match_labels: REDIS_SELECTOR },
      policy_types: ['Ingress'],
      ingress: [{ from: [{ pod_selector: { match_labels: CLIENTS } }], ports: [{ port: String(REDIS_PORT), protocol: 'TCP' }] }],
    });
  });

  it('exposes Redis as a ClusterIP Service on 6379; no volume claim', () => {
    expect(only(json, 'kubernetes_service_v1')).toMatchObject({
      metadata: { name: 'ws-redis', namespace: 'ns' },
      spec: {
        type: 'ClusterIP',
        selector: REDIS_SELECTOR,
        port: [{ name: 'redis', port: REDIS_PORT, target_port: 'redis', protocol: 'TCP' }],
      },
    });
    expect(json.resource.kubernetes_persistent_volume_claim_v1).toBeUndefined();
  });
});

describe('GIVEN one prop at a time', () => {
  it('rolls Redis when its settings change (the checksum), and not when nothing does', () => {
    const base = checksum(build().json);
    expect(checksum(build().json)).toBe(base);
    expect(checksum(build({ maxMemory: '512mb' }).json)).not.toBe(base);
    expect(checksum(build({ hashTag: 'chat' }).json)).not.toBe(base);
  });

  it('hashTag: the proxies may touch `{<tag>}:*` only', () => {
    const conf: string = build({ hashTag: 'chat' }).secret.data_wo['redis.conf'];
    expect(conf).toMatch(/^user ws-proxy on >\S+ resetkeys ~\{chat\}:\* resetchannels -@all /m);
  });

  it('passwordRevision rotates the passwords: the Secret is rewritten and Redis rolls', () => {
    const next = build({ passwordRevision: 2 });
    expect(next.secret.data_wo_revision).toBe(2);
    expect(checksum(next.json)).toContain(':2:${kubernetes_secret_v1.');
    for (const bad of [0, 1.5])
      expect(() => build({ passwordRevision: bad })).toThrow(`Redis: passwordRevision must be an integer >= 1, got ${bad}`);
  });

  it("passwordInState: random_password resources, the Secret's data, and a checksum over both passwords", () => {
    const { json, secret } = build({ passwordInState: true });
    expect(json.ephemeral).toBeUndefined();
    expect(json.terraform?.required_version).toBeUndefined();
    expect(secret.data.password).toMatch(/^\$\{random_password\.redis_password_[0-9A-F]+\.result\}$/);
    expect(secret.data['admin-password']).toMatch(/^\$\{random_password\.redis_admin-password_[0-9A-F]+\.result\}$/);
    expect(secret.data_wo).toBeUndefined();
    expect(checksum(json)).toContain(secret.data.password);
    expect(checksum(json)).toContain(secret.data['admin-password']);
    // A rotation replaces both (keepers).
    expect(Object.values(json.resource.random_password).map((p) => (p as Json).keepers)).toEqual([{ revision: '1' }, { revision: '1' }]);
  });

  it('persistence: AOF every second on a claim that does not wait for its pod (WaitForFirstConsumer)', () => {
    const { json, pod, secret } = build({ persistence: { size: '2Gi', storageClass: 'gp3' } });
    const pvc = only(json, 'kubernetes_persistent_volume_claim_v1');
    expect(pvc.metadata.name).toBe('ws-redis-data');
    expect(pvc.spec).toEqual({ access_modes: ['ReadWriteOnce'], resources: { requests: { storage: '2Gi' } }, storage_class_name: 'gp3' });
    expect(pvc.wait_until_bound).toBe(false);
    expect(pod.volume.find((v: Json) => v.name === 'data')).toEqual({
      name: 'data',
      persistent_volume_claim: {
        claim_name: expect.stringMatching(/^\$\{kubernetes_persistent_volume_claim_v1\.redis_data_[0-9A-F]+\.metadata\[0\]\.name\}$/),
      },
    });
    const conf: string = secret.data_wo['redis.conf'];
    expect(conf).toContain('appendonly yes\nappendfsync everysec\n');
    expect(conf).toContain('save ""');
    // Without a class: the cluster's default.
    expect(
      only(build({ persistence: { size: '1Gi' } }).json, 'kubernetes_persistent_volume_claim_v1').spec.storage_class_name,
    ).toBeUndefined();
  });

  it('resources: the Redis container takes them, the loader keeps its own', () => {
    const { container } = build({ resources: { cpuRequest: '200m', memoryRequest: '512Mi', cpuLimit: '2', memoryLimit: '512Mi' } });
    expect(container('redis').resources).toEqual({ requests: { cpu: '200m', memory: '512Mi' }, limits: { cpu: '2', memory: '512Mi' } });
    expect(container('functions').resources.limits.memory).toBe('32Mi');
  });

  it('refuses an image that is not pinned', () => {
    expect(() => build({ image: 'redis' })).toThrow(
      'Redis: image must be pinned with a tag or an @sha256 digest (an untagged image means "latest"), got "redis"',
    );
  });
});
