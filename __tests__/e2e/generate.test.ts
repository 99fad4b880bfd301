// The compose kit: e2e/generate.ts (what it writes) and e2e/docker-compose.yml (what mounts
// and runs it), held equal to the stack's own commands and files.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import { E2E_BACKEND_REPLICAS, E2E_FUNCTIONS_DIR, E2E_HOSTS, E2E_LIBRARY_FILE, generate } from '../../e2e/generate';
import { collectLuaFiles, DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { agentCommand } from '../../constructs/envoy';
import { REDIS_ADMIN_USER, functionLoaderCommand, readFunctionLibrary } from '../../constructs/redis';
import { ADMIN_ADDRESS, ADMIN_PORT, METRICS_SNAPSHOT_MS, envoyArgs } from '../../envoy/bootstrap';

const ROOT = path.join(__dirname, '..', '..');
const COMPOSE = path.join(ROOT, 'e2e', 'docker-compose.yml');

interface Service {
  image?: string;
  network_mode?: string;
  env_file?: string;
  read_only?: boolean;
  depends_on?: string[] | Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  build?: { context: string; dockerfile: string };
  command?: string[];
  volumes?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  deploy?: { replicas?: number };
}

describe('e2e kit (Docker does not run here: this checks the files, not the containers)', () => {
  let out: string;
  let written: string[];
  const compose = parse(fs.readFileSync(COMPOSE, 'utf8'), { merge: true }) as { services: Record<string, Service> };

  beforeAll(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-'));
    written = generate(out);
  });
  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  /** A command as the container runs it: compose reads "$$" as "$". */
  const unescaped = (command: string[] | undefined) => (command ?? []).map((a) => a.replace(/\$\$/g, '$'));

  it('the compose file parses and has Redis with its library loader, 3 backends, and two Envoys built from envoy/Dockerfile, each with its agent', () => {
    expect(Object.keys(compose.services).sort()).toEqual([
      'agent-a',
      'agent-b',
      'backend',
      'envoy-a',
      'envoy-b',
      'redis',
      'redis-functions',
    ]);
    expect(compose.services.backend.deploy?.replicas).toBe(E2E_BACKEND_REPLICAS);
    for (const name of ['envoy-a', 'envoy-b']) {
      const s = compose.services[name];
      expect(s.build).toEqual({ context: '..', dockerfile: 'envoy/Dockerfile' });
      expect(fs.existsSync(path.join(ROOT, 'e2e', s.build!.context, s.build!.dockerfile))).toBe(true);
      expect(s.environment?.POD_NAME).toBe(name);
      expect(s.command).toEqual(['envoy', ...envoyArgs('/etc/envoy/envoy.yaml', 2)]);
      expect(s.depends_on).toMatchObject({ redis: { condition: 'service_healthy' } });
      // Its agent: the pod's sidecar command, in the Envoy's network namespace (admin on
      // loopback), on its state volume, as the same proxy (POD_NAME: the proxy id).
      const agent = compose.services[name.replace('envoy', 'agent')];
      expect(unescaped(agent.command)).toEqual(agentCommand());
      expect(agent.network_mode).toBe(`service:${name}`);
      expect(agent.environment).toEqual({
        POD_NAME: name,
        WS_LUA_DIR: '/etc/envoy/lua',
        WS_STATE_DIR: '/var/run/ws-admission',
        WS_ENVOY_ADMIN: `${ADMIN_ADDRESS}:${ADMIN_PORT}`,
      });
      const state = s.volumes!.find((v) => v.endsWith(':/var/run/ws-admission'));
      expect(state).toBeDefined();
      expect(agent.volumes).toEqual(
        expect.arrayContaining([state, '../.e2e/envoy:/etc/envoy:ro', '../.e2e/redis/password:/etc/ws-redis/password:ro']),
      );
      expect(agent.read_only).toBe(true);
    }
    // The stack's redis.conf: the proxies' ACL user, the default user off.
    expect(compose.services.redis.command).toEqual(['redis-server', '/etc/redis/redis.conf']);
    const conf = fs.readFileSync(path.join(out, 'redis', 'redis.conf'), 'utf8');
    expect(conf).toMatch(/^user default off /m);
    expect(conf).toContain(`user ws-proxy on >${fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8').trim()} `);
    expect(conf).toContain(' +fcall ');
    expect(Object.keys(compose.services)).toEqual(expect.arrayContaining(Object.values(E2E_HOSTS)));
  });

  it("loads the library as the Redis pod does: the loader's command on Redis's loopback as the admin user, and Redis healthy only with it", () => {
    const loader = compose.services['redis-functions'];
    expect(loader.image).toBe(compose.services.redis.image);
    expect(unescaped(loader.command)).toEqual(functionLoaderCommand(`${E2E_FUNCTIONS_DIR}/ws_admission.lua`));
    expect(loader.network_mode).toBe('service:redis');
    expect(loader.volumes).toEqual([`../.e2e/redis/functions:${E2E_FUNCTIONS_DIR}:ro`]);
    expect(fs.readFileSync(path.join(out, E2E_LIBRARY_FILE), 'utf8')).toBe(readFunctionLibrary());
    // The admin password reaches it as REDISCLI_AUTH (compose reads the env_file), and only the owner reads that file.
    expect(loader.env_file).toBe('../.e2e/redis/functions.env');
    const adminPassword = fs.readFileSync(path.join(out, 'redis', 'admin-password'), 'utf8').trim();
    expect(fs.readFileSync(path.join(out, 'redis', 'functions.env'), 'utf8')).toBe(`REDISCLI_AUTH=${adminPassword}\n`);
    expect(fs.statSync(path.join(out, 'redis', 'functions.env')).mode & 0o777).toBe(0o600);
    // Healthy (and the Envoys start) once the library is loaded, as the pod's readiness probe.
    const check = unescaped(compose.services.redis.healthcheck?.test).join(' ');
    expect(check).toContain(
      `redis-cli --no-auth-warning --user ${REDIS_ADMIN_USER} FUNCTION LIST LIBRARYNAME ws_admission | grep -q ws_admission`,
    );
  });

  it('every bind mount of the compose file is a file or directory the generator writes', () => {
    for (const [name, s] of Object.entries(compose.services)) {
      if (s.env_file) expect(written).toContain(s.env_file.slice('../.e2e/'.length));
      for (const v of s.volumes ?? []) {
        const [src] = v.split(':');
        if (/^state-[ab]$/.test(src)) continue; // the named state volumes (not generated files)
        expect(src.startsWith('../.e2e/')).toBe(true);
        const rel = src.slice('../.e2e/'.length);
        const exists = written.includes(rel) || written.some((w) => w.startsWith(`${rel}/`));
        expect({ service: name, mount: v, generated: exists }).toEqual({ service: name, mount: v, generated: true });
      }
    }
  });

  it('mounts the generated files where the filter expects them (docs/internals.md)', () => {
    const envoy = compose.services['envoy-a'].volumes!;
    expect(envoy).toContain('../.e2e/envoy:/etc/envoy:ro');
    expect(envoy).toContain('../.e2e/redis/password:/etc/ws-redis/password:ro');
    const yaml = parse(fs.readFileSync(path.join(out, 'envoy', 'envoy.yaml'), 'utf8'));
    const text = JSON.stringify(yaml);
    for (const m of text.matchAll(/\/etc\/envoy\/lua\/([\w.-]+\.lua)/g))
      expect(fs.existsSync(path.join(out, 'envoy', 'lua', m[1]))).toBe(true);
    expect(text).toContain(`"address":"${E2E_HOSTS.backend}"`);
  });

  it('ships the same Lua files as the stack ConfigMap, and settings.lua pointing at the compose Redis', () => {
    const luaNames = collectLuaFiles(DEFAULT_LUA_DIRS).map((f) => f.name);
    for (const n of luaNames) {
      expect(fs.readFileSync(path.join(out, 'envoy', 'lua', n), 'utf8')).toBe(
        fs.readFileSync(collectLuaFiles(DEFAULT_LUA_DIRS).find((f) => f.name === n)!.source, 'utf8'),
      );
    }
    const settings = fs.readFileSync(path.join(out, 'envoy', 'lua', 'settings.lua'), 'utf8');
    expect(settings).toContain('redis_host = "redis",');
    expect(settings).toContain('redis_password_file = "/etc/ws-redis/password",');
    expect(settings).toContain('max_connections_per_pod = 2,');
    expect(settings).toContain('rate_limit = 10,');
    const x = JSON.parse(fs.readFileSync(path.join(out, 'expect.json'), 'utf8'));
    expect(x).toMatchObject({
      maxConnectionsPerPod: 2,
      rateLimitPerMinute: 10,
      backendReplicas: 3,
      metricsSnapshotSeconds: METRICS_SNAPSHOT_MS / 1000,
    });
    // Not the Redis library: Redis loads that (above).
    expect(fs.existsSync(path.join(out, 'envoy', 'lua', 'ws_admission.lua'))).toBe(false);
  });

  it('keeps the Redis password across runs', () => {
    const before = fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8');
    generate(out);
    expect(fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8')).toBe(before);
    expect(before).toMatch(/^[0-9a-f]{48}$/);
  });
});
