import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse } from 'yaml';
import { E2E_BACKEND_REPLICAS, E2E_HOSTS, generate } from '../../e2e/generate';
import { collectLuaFiles, DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import { leaseLogCommand } from '../../constructs/envoy';
import { envoyArgs } from '../../envoy/bootstrap';

const ROOT = path.join(__dirname, '..', '..');
const COMPOSE = path.join(ROOT, 'e2e', 'docker-compose.yml');

interface Service {
  image?: string;
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

  it('the compose file parses and has Redis, 3 backends and two Envoys built from envoy/Dockerfile', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['backend', 'envoy-a', 'envoy-b', 'lease-log-a', 'lease-log-b', 'redis']);
    expect(compose.services.backend.deploy?.replicas).toBe(E2E_BACKEND_REPLICAS);
    for (const name of ['envoy-a', 'envoy-b']) {
      const s = compose.services[name];
      expect(s.build).toEqual({ context: '..', dockerfile: 'envoy/Dockerfile' });
      expect(fs.existsSync(path.join(ROOT, 'e2e', s.build!.context, s.build!.dockerfile))).toBe(true);
      expect(s.environment?.POD_NAME).toBe(name);
      expect(s.command).toEqual(['envoy', ...envoyArgs('/etc/envoy/envoy.yaml', 2)]);
      // Its lease-log reader: the pod's sidecar command, in the Envoy's network namespace
      // (admin on loopback) and on its state volume. Compose reads "$$" as "$".
      const side = compose.services[name.replace('envoy', 'lease-log')] as Service & { network_mode?: string };
      expect(side.command!.map((a) => a.replace(/\$\$/g, '$'))).toEqual(leaseLogCommand());
      expect(side.network_mode).toBe(`service:${name}`);
      const state = s.volumes!.find((v) => v.endsWith(':/var/run/ws-admission'));
      expect(state).toBeDefined();
      expect(side.volumes).toContain(state);
      expect(side.environment?.WS_ENVOY_ADMIN).toBe('127.0.0.1:9000');
    }
    // The stack's redis.conf: the proxies' ACL user, the default user off.
    expect(compose.services.redis.command).toEqual(['redis-server', '/etc/redis/redis.conf']);
    const conf = fs.readFileSync(path.join(out, 'redis', 'redis.conf'), 'utf8');
    expect(conf).toContain('user default off\n');
    expect(conf).toContain(`user ws-proxy on >${fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8').trim()} `);
    expect(Object.keys(compose.services)).toEqual(expect.arrayContaining(Object.values(E2E_HOSTS)));
  });

  it('every bind mount of the compose file is a file or directory the generator writes', () => {
    for (const [name, s] of Object.entries(compose.services)) {
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
    expect(x).toMatchObject({ maxConnectionsPerPod: 2, rateLimitPerMinute: 10, backendReplicas: 3 });
  });

  it('keeps the Redis password across runs', () => {
    const before = fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8');
    generate(out);
    expect(fs.readFileSync(path.join(out, 'redis', 'password'), 'utf8')).toBe(before);
    expect(before).toMatch(/^[0-9a-f]{48}$/);
  });
});
