/**
 * Writes what e2e/docker-compose.yml mounts, with the same generators the stack uses:
 *
 *   .e2e/envoy/envoy.yaml          buildEnvoyBootstrap + bootstrapToYaml (envoy/)
 *   .e2e/envoy/lua/settings.lua    renderSettingsLua (config/settings.ts)
 *   .e2e/envoy/lua/<name>.lua      collectLuaFiles(DEFAULT_LUA_DIRS), as the ConfigMap holds them
 *   .e2e/redis/password            a random password of the proxies' Redis user (ws-proxy)
 *   .e2e/redis/admin-password      a random password of the admin user (probe, check)
 *   .e2e/redis/redis.conf          the stack's redis.conf (constructs/redis.ts) with both
 *   .e2e/redis/functions/ws_admission.lua   the Functions library, as the ConfigMap holds it
 *   .e2e/redis/functions.env       REDISCLI_AUTH for the library loader (the admin password)
 *   .e2e/expect.json               the limits, for e2e/check.ts
 *
 * Limits are small so the check can reach them quickly: 2 connections per pod,
 * 10 upgrades per 60 s window, short leases.
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { defaults, StackConfig } from '../config/schema';
import { validateConfig } from '../config/validate';
import { renderSettingsLua } from '../config/settings';
import { buildEnvoyBootstrap, METRICS_SNAPSHOT_MS } from '../envoy/bootstrap';
import { bootstrapToYaml } from '../envoy/yaml';
import { DEFAULT_LUA_DIRS, collectLuaFiles } from '../constructs/filter-config';
import { FUNCTION_LIBRARY, REDIS_PROXY_USER, readFunctionLibrary, redisConf } from '../constructs/redis';

/** Compose service names, as DNS names inside the compose network. */
export const E2E_HOSTS = { redis: 'redis', backend: 'backend' } as const;
export const E2E_BACKEND_REPLICAS = 3;
export const E2E_BACKEND_PORT = 8080;
/** Where the library loader (service redis-functions) finds the library, as in the Redis pod. */
export const E2E_FUNCTIONS_DIR = '/etc/redis/functions';
export const E2E_LIBRARY_FILE = `redis/functions/${path.basename(FUNCTION_LIBRARY.file)}`;

export interface Expectations {
  readonly maxConnectionsPerPod: number;
  readonly rateLimitPerMinute: number;
  readonly rateWindowSeconds: number;
  readonly backendReplicas: number;
  readonly leaseTtlSeconds: number;
  /** How often each proxy's agent snapshots the Redis-held metrics: how stale /metrics can be. */
  readonly metricsSnapshotSeconds: number;
  /** Public listeners of the two proxies on the host, and their metrics endpoints. */
  readonly proxies: ReadonlyArray<{ readonly name: string; readonly ws: string; readonly metrics: string }>;
}

export function e2eConfig(): StackConfig {
  return validateConfig({
    ...defaults(),
    maxConnectionsPerPod: 2,
    rateLimitPerMinute: 10,
    idleTimeoutSeconds: 20,
    renewIntervalSeconds: 5,
    leaseTtlSeconds: 30,
    maxStreamDurationSeconds: 300,
    backendPort: E2E_BACKEND_PORT,
    redisFailureMode: 'open',
  });
}

/** Writes every file into `outDir` (default `.e2e` at the repository root); answers the paths written. */
export function generate(outDir: string): string[] {
  const c = e2eConfig();
  const written: string[] = [];
  const write = (rel: string, text: string, mode = 0o644): void => {
    const p = path.join(outDir, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, text, { mode });
    fs.chmodSync(p, mode);
    written.push(rel);
  };

  fs.rmSync(path.join(outDir, 'envoy'), { recursive: true, force: true });
  fs.rmSync(path.join(outDir, 'redis', 'functions'), { recursive: true, force: true });
  const bootstrap = buildEnvoyBootstrap({
    backendHost: E2E_HOSTS.backend,
    backendPort: c.backendPort,
    healthCheckPath: c.backendHealthCheckPath,
    idleTimeoutSeconds: c.idleTimeoutSeconds,
    maxStreamDurationSeconds: c.maxStreamDurationSeconds,
    renewIntervalSeconds: c.renewIntervalSeconds,
    handshakeTimeoutSeconds: c.handshakeTimeoutSeconds,
    trustedHops: c.clientTrustedHops,
  });
  write('envoy/envoy.yaml', bootstrapToYaml(bootstrap));
  write(
    'envoy/lua/settings.lua',
    renderSettingsLua(c, { host: E2E_HOSTS.redis, port: 6379, tls: false, auth: true, username: REDIS_PROXY_USER }),
  );
  for (const f of collectLuaFiles(DEFAULT_LUA_DIRS)) write(`envoy/lua/${f.name}`, f.content);

  // Kept across runs so a running Redis and a regenerated config agree. Readable by
  // the non-root Envoy user through the bind mount: this is a local test kit.
  const keep = (rel: string): string => {
    const p = path.join(outDir, rel);
    if (!fs.existsSync(p)) write(rel, randomBytes(24).toString('hex'));
    else written.push(rel);
    return fs.readFileSync(p, 'utf8').trim();
  };
  const proxyPassword = keep('redis/password');
  const adminPassword = keep('redis/admin-password');
  // The stack's own redis.conf: the default user off, the proxies' ACL user.
  write(
    'redis/redis.conf',
    redisConf({
      port: 6379,
      bind: '0.0.0.0',
      maxMemory: '192mb',
      dir: '/data',
      hashTag: c.hashTag,
      proxyPassword,
      adminPassword,
    }),
  );

  // What the Redis pod's `functions` container loads, and its admin password (compose
  // reads the env_file when it starts the loader).
  write(E2E_LIBRARY_FILE, readFunctionLibrary());
  write('redis/functions.env', `REDISCLI_AUTH=${adminPassword}\n`, 0o600);

  const expect: Expectations = {
    maxConnectionsPerPod: c.maxConnectionsPerPod,
    rateLimitPerMinute: c.rateLimitPerMinute,
    rateWindowSeconds: 60,
    backendReplicas: E2E_BACKEND_REPLICAS,
    leaseTtlSeconds: c.leaseTtlSeconds,
    metricsSnapshotSeconds: METRICS_SNAPSHOT_MS / 1000,
    proxies: [
      { name: 'envoy-a', ws: 'ws://127.0.0.1:18080/', metrics: 'http://127.0.0.1:19901/metrics' },
      { name: 'envoy-b', ws: 'ws://127.0.0.1:18081/', metrics: 'http://127.0.0.1:19902/metrics' },
    ],
  };
  write('expect.json', JSON.stringify(expect, null, 2) + '\n');
  return written;
}

if (require.main === module) {
  const out = path.resolve(__dirname, '..', '.e2e');
  const files = generate(out);
  process.stdout.write(
    `wrote ${files.length} files to ${path.relative(process.cwd(), out) || '.'}:\n${files.map((f) => `  ${f}`).join('\n')}\n`,
  );
}
