// constructs/redis.ts (Redis): its Deployment, Secret, Service, NetworkPolicy and volume, or
// the external Redis the stack is pointed at, as the stack synthesizes them.
// (Each block: GIVEN the profile its describe names, WHEN the stack is synthesized, THEN the
// resources it checks.)
import { TerraformStack, Testing } from 'cdktf';
import { REDIS_PROXY_COMMANDS, Redis } from '../../constructs/redis';
import { EVERYTHING_CHANGED, Json, byName, resources, synth } from '../support/synth';

describe('GIVEN the defaults', () => {
  const { json } = synth();
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');

  it('deploys Redis with one replica, its config from the Secret and no persistence', () => {
    const redis = byName(json, 'kubernetes_deployment_v1', 'ws-redis');
    expect(redis.spec.replicas).toBe('1');
    expect(redis.spec.strategy).toEqual({ type: 'Recreate' });
    const c = redis.spec.template.spec.container[0];
    expect(c.image).toBe('redis:7.4.2-alpine');
    expect(c.command).toEqual(['redis-server']);
    expect(c.args).toEqual(['/etc/redis/redis.conf']);
    expect(JSON.stringify(c)).not.toMatch(/random_password/);
    expect(c.env).toEqual([{ name: 'REDISCLI_AUTH', value_from: { secret_key_ref: { name: 'ws-redis-auth', key: 'admin-password' } } }]);
    expect(c.readiness_probe.exec.command).toEqual(['sh', '-c', 'redis-cli --user ws-admin -h 127.0.0.1 ping | grep -q PONG']);
    expect(c.liveness_probe.tcp_socket).toEqual([{ port: '6379' }]);
    expect(redis.spec.template.spec.security_context.run_as_user).toBe('999');
    expect(redis.spec.template.spec.volume.map((v: Json) => v.name)).toEqual(['config', 'data']);
    // The settings' hash and both passwords, hashed by Terraform.
    // The settings' hash, the password revision and the Secret's uid, hashed by Terraform.
    expect(redis.spec.template.metadata.annotations['checksum/config']).toMatch(
      /^\$\{sha256\("[0-9a-f]{64}:1:\$\{kubernetes_secret_v1\.redis_secret_[0-9A-F]+\.metadata\[0\]\.uid\}"\)\}$/,
    );
  });

  it('rolls Redis when its settings change', () => {
    const sum = (j: Json) => byName(j, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    const { stack } = synth();
    expect(sum(json)).toBe(sum(JSON.parse(Testing.synth(stack))));
    const other = new Redis(new TerraformStack(Testing.app(), 'x'), 'r', {
      namespace: 'ws-admission',
      image: 'redis:7.4.2-alpine',
      clientSelector: { a: 'b' },
      maxMemory: '512mb',
    });
    expect(other.deployment).toBeDefined();
    const otherJson = JSON.parse(Testing.synth(other.node.scope as TerraformStack));
    expect(sum(otherJson)).not.toBe(sum(json));
  });

  it('rotates the passwords when redisPasswordRevision grows: the Secret is rewritten and Redis rolls', () => {
    const sum = (j: Json): string =>
      byName(j, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    const next = synth({ redisPasswordRevision: 2 }).json;
    expect(byName(json, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo_revision).toBe(1);
    expect(byName(next, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo_revision).toBe(2);
    expect(sum(next)).not.toBe(sum(json));
    expect(sum(next)).toContain(':2:${kubernetes_secret_v1.');
  });

  it("with redisPasswordInState: random_password resources, the Secret's data, and a checksum over both passwords", () => {
    const inState = synth({ redisPasswordInState: true }).json;
    expect(inState.ephemeral).toBeUndefined();
    expect(inState.terraform.required_version).toBeUndefined();
    const secret = byName(inState, 'kubernetes_secret_v1', 'ws-redis-auth');
    expect(secret.data.password).toMatch(/^\$\{random_password\.redis_password_[0-9A-F]+\.result\}$/);
    expect(secret.data['admin-password']).toMatch(/^\$\{random_password\.redis_admin-password_[0-9A-F]+\.result\}$/);
    expect(secret.data_wo).toBeUndefined();
    const sum: string = byName(inState, 'kubernetes_deployment_v1', 'ws-redis').spec.template.metadata.annotations['checksum/config'];
    expect(sum).toContain(secret.data.password);
    expect(sum).toContain(secret.data['admin-password']);
    // A rotation replaces both (keepers).
    expect(Object.values(inState.resource.random_password).map((p) => (p as Json).keepers)).toEqual([{ revision: '1' }, { revision: '1' }]);
  });

  it("generates the Redis passwords outside the state, into the Secret only: the default user off, the proxies' user limited", () => {
    // Ephemeral values (never in the state or a plan) through the write-only data_wo.
    expect(json.resource.random_password).toBeUndefined();
    expect(json.ephemeral).toEqual({
      random_password: {
        ws_redis_proxy: { length: 40, special: false },
        ws_redis_admin: { length: 40, special: false },
      },
    });
    expect(json.terraform.required_version).toBe('>= 1.11.0');
    const secret = byName(json, 'kubernetes_secret_v1', 'ws-redis-auth');
    expect(secret.data).toBeUndefined();
    const wo = secret.data_wo;
    expect(wo.password).toBe('${ephemeral.random_password.ws_redis_proxy.result}');
    expect(wo['admin-password']).toBe('${ephemeral.random_password.ws_redis_admin.result}');
    const conf: string = wo['redis.conf'];
    expect(conf).not.toContain('requirepass');
    expect(conf.split('\n').filter((l) => l.startsWith('user '))).toEqual([
      'user default off',
      `user ws-proxy on >${wo.password} resetkeys ~{ws}:* resetchannels -@all ${REDIS_PROXY_COMMANDS.map((x) => '+' + x).join(' ')}`,
      `user ws-admin on >${wo['admin-password']} ~* &* +@all`,
    ]);
    expect(conf).toContain('save ""');
    expect(conf).toContain('maxmemory-policy noeviction');
    // The filter authenticates as the proxies' user.
    const settings = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua'];
    expect(settings).toContain('redis_username = "ws-proxy",');
  });

  it('lets only the Envoy pods reach Redis on 6379', () => {
    const np = byName(json, 'kubernetes_network_policy_v1', 'ws-redis-envoy-only');
    expect(np.spec).toEqual({
      pod_selector: { match_labels: { 'app.kubernetes.io/name': 'ws-redis', 'app.kubernetes.io/part-of': 'ws-admission' } },
      policy_types: ['Ingress'],
      ingress: [
        {
          from: [{ pod_selector: { match_labels: { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' } } }],
          ports: [{ port: '6379', protocol: 'TCP' }],
        },
      ],
    });
    const envoyLabels = envoy.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(np.spec.ingress[0].from[0].pod_selector.match_labels)) expect(envoyLabels[k]).toBe(v);
  });

  it('keeps Redis on a volume with redisPersistence aof: AOF every second, a claim that does not wait for its pod', () => {
    const aof = synth({ redisPersistence: 'aof', redisStorageClass: 'gp3', redisVolumeSize: '2Gi' }).json;
    const pvc = byName(aof, 'kubernetes_persistent_volume_claim_v1', 'ws-redis-data');
    expect(pvc.spec).toEqual({ access_modes: ['ReadWriteOnce'], resources: { requests: { storage: '2Gi' } }, storage_class_name: 'gp3' });
    expect(pvc.wait_until_bound).toBe(false);
    const spec = byName(aof, 'kubernetes_deployment_v1', 'ws-redis').spec;
    expect(spec.strategy).toEqual({ type: 'Recreate' }); // one writer of the volume at a time
    expect(spec.template.spec.volume.find((v: Json) => v.name === 'data')).toEqual({
      name: 'data',
      persistent_volume_claim: {
        claim_name: expect.stringMatching(/^\$\{kubernetes_persistent_volume_claim_v1\.redis_data_[0-9A-F]+\.metadata\[0\]\.name\}$/),
      },
    });
    const conf: string = byName(aof, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo['redis.conf'];
    expect(conf).toContain('appendonly yes\nappendfsync everysec\n');
    expect(conf).toContain('save ""');
    // The default: no claim, an emptyDir, no AOF.
    expect(json.resource.kubernetes_persistent_volume_claim_v1).toBeUndefined();
    expect(byName(json, 'kubernetes_secret_v1', 'ws-redis-auth').data_wo['redis.conf']).toContain('appendonly no\n');
  });

  it('exposes Redis as a ClusterIP Service on 6379', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-redis').spec).toMatchObject({
      type: 'ClusterIP',
      port: [{ name: 'redis', port: 6379, target_port: 'redis', protocol: 'TCP' }],
    });
  });
});

describe('GIVEN every option changed (EVERYTHING_CHANGED)', () => {
  const { json } = synth(EVERYTHING_CHANGED);
  const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
  const cm = byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config');

  it('uses the external Redis: no Redis of its own, the given Secret, TLS in settings.lua', () => {
    expect(resources(json, 'random_password')).toHaveLength(0);
    // No Redis NetworkPolicy (no Redis here); the Envoy one, with the given sources.
    expect(resources(json, 'kubernetes_network_policy_v1').map((p: Json) => p.metadata.name)).toEqual(['ws-envoy-metrics-restricted']);
    expect(resources(json, 'kubernetes_deployment_v1').map((d: Json) => d.metadata.name)).toEqual(['ws-envoy']);
    expect(envoy.spec.template.spec.volume.find((v: Json) => v.name === 'redis-auth').secret.secret_name).toBe('elasticache-auth');
    const s = cm.data['settings.lua'];
    expect(s).toContain('redis_host = "master.chat.abc123.euw1.cache.amazonaws.com",');
    expect(s).toContain('redis_port = 6380,');
    expect(s).toContain('redis_tls = true,');
    expect(s).toContain('failure_mode = "closed",');
    expect(s).toContain('hash_tag = "chat",');
    expect(s).toContain('lease_ttl_ms = 200000,');
    expect(s).toContain('renew_interval_ms = 15000,');
    expect(s).toContain('hosts_cache_ms = 2000,');
    expect(s).toContain('limit_all_requests = true,');
    expect(s).toContain('connection_inventory = true,');
    expect(json.output.redis_service.value).toBe('master.chat.abc123.euw1.cache.amazonaws.com:6380');
  });
});

describe('GIVEN one option at a time', () => {
  it('an external Redis without a password Secret mounts no password and says so in settings.lua', () => {
    const { json } = synth({ externalRedisHost: 'redis.example.internal' });
    const envoy = byName(json, 'kubernetes_deployment_v1', 'ws-envoy');
    expect(envoy.spec.template.spec.volume.map((v: Json) => v.name)).toEqual(['config', 'state', 'tmp']);
    expect(byName(json, 'kubernetes_config_map_v1', 'ws-envoy-config').data['settings.lua']).toContain('redis_password_file = "",');
  });
});
