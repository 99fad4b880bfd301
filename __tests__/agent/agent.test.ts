// lua/cli/agent.lua, the agent sidecar, run as the pod runs it, against a real redis-server
// with the ws_admission library and an Envoy admin stand-in. Through real Envoy:
// __tests__/e2e/ (release, faults, churn).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Redis from 'ioredis';
import { agentLivenessCommand } from '../../constructs/envoy';
import { STATE_DIR, STATE_FILES } from '../../envoy/bootstrap';
import { Functions, lease, loadLibrary } from '../redis/support/functions';
import { startRedis, RedisServer } from '../support/redis-server';
import { agentSettings, entry, FakeAdmin, leaseLogPath, podLuaDir, runOnce, startAgent, waitFor } from './support';

jest.setTimeout(60000);

const PASSWORD = 'agent-s3cret';
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';
const P3 = '10.0.0.3:8080';

let server: RedisServer;
let redis: Redis;
let f: Functions;
let admin: FakeAdmin;
let luaDir: string;
let pwFile: string;

beforeAll(async () => {
  server = await startRedis({ password: PASSWORD });
  redis = new Redis({ host: server.host, port: server.port, password: PASSWORD, lazyConnect: true, maxRetriesPerRequest: 0 });
  await redis.connect();
  f = await Functions.load(redis, 'ws');
  admin = await FakeAdmin.start();
  pwFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-auth-')), 'password');
  fs.writeFileSync(pwFile, PASSWORD, { mode: 0o400 });
  luaDir = podLuaDir(agentSettings(server.port, pwFile));
});
afterAll(async () => {
  redis.disconnect();
  await admin.stop();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall('SYNC');
  f.forget();
  await f.start();
  admin.healthy(P1, P2);
});

const expiry = async (id: string, pod: string) => Number(await redis.zscore(f.keys.leases, lease(id, pod)));
const stat = async (name: string) => Number((await redis.hget(f.keys.stats, name)) ?? 0);
const admitAs = (proxy: string, n: number) =>
  f.admitOnce({ rateLimit: 100, windowMs: 60000, maxPerPod: 10, ttlMs: 30000, id: `${proxy}|00aa00|${n}|0000${n}` });
const slotOf = async (proxy: string) => redis.hget(f.keys.agents, `p:${proxy}`);

describe("the proxy's healthy hosts (admin /clusters -> ws_hosts)", () => {
  it('registers the healthy ones on a slot of its own, then sends only what changed', async () => {
    admin.hosts = new Map([
      [P1, 'healthy'],
      [P2, 'healthy'],
      [P3, '/failed_active_hc'],
    ]);
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) !== null, 8000, 'the first registration');
      expect(Object.keys(await redis.hgetall(f.keys.reach)).sort()).toEqual([P1, P2]);
      const monitor = await redis.duplicate().monitor();
      const calls: string[][] = [];
      monitor.on('monitor', (_t: string, args: string[]) => {
        if (args[0].toLowerCase() === 'fcall' && args[1] === 'ws_hosts') calls.push(args.slice(3 + Number(args[2])));
      });
      admin.healthy(P2, P3);
      await waitFor(async () => (await redis.hexists(f.keys.reach, P3)) === 1 && (await redis.hexists(f.keys.reach, P1)) === 0);
      monitor.disconnect();
      // One pod added and one removed, each named once: never the whole list.
      expect(calls).toEqual([
        ['add', 'envoy-a', '0', P3],
        ['remove', 'envoy-a', '0', P1],
      ]);
      expect((await admitAs('envoy-a', 1)).status).toBe('ADMITTED');
    } finally {
      await a.stop();
    }
  });

  it("reads /clusters (7 MB at 10,000 hosts) only when the cluster's stats moved: a steady fleet costs one /stats a second", async () => {
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) !== null, 8000, 'the first registration');
      const [pages, stats] = [admin.clustersCalls, admin.statsCalls];
      await new Promise((r) => setTimeout(r, 3000));
      expect(admin.statsCalls - stats).toBeGreaterThanOrEqual(2);
      expect(admin.clustersCalls).toBe(pages);
      // A host fails its health check: the next poll reads the page and reports it.
      admin.hosts.set(P2, '/failed_active_hc');
      await waitFor(async () => (await redis.hexists(f.keys.reach, P2)) === 0, 5000, 'P2 reported unhealthy');
      // Back healthy: the healthy count moved.
      admin.hosts.set(P2, 'healthy');
      await waitFor(async () => (await redis.hexists(f.keys.reach, P2)) === 1, 5000, 'P2 reported healthy again');
      expect(Object.keys(await redis.hgetall(f.keys.reach)).sort()).toEqual([P1, P2]);
    } finally {
      await a.stop();
    }
  });

  it('its slot lost (no beat for 30 s): registers the hosts again on a new one', async () => {
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) === '0');
      await redis.zadd(f.keys.beats, String(Date.now() - 60000), '0'); // as if it had not beaten for a minute
      await waitFor(() => a.output().includes('slot 0 lost'), 8000, 'the agent to notice');
      // Cleaned and freed in the same beat (two pods), so the new slot may be 0 again.
      await waitFor(async () => (await slotOf('envoy-a')) !== null, 8000, 'a new registration');
      expect(Object.keys(await redis.hgetall(f.keys.reach)).sort()).toEqual([P1, P2]);
      expect((await admitAs('envoy-a', 1)).status).toBe('ADMITTED');
    } finally {
      await a.stop();
    }
  });
});

describe('leases from the lease log (ws_leases)', () => {
  it('renews on periodic entries, puts back a lost lease, releases at the end entry; the 101 of an admitted stream costs nothing', async () => {
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) !== null);
      const r = await admitAs('envoy-a', 1);
      const id = 'envoy-a|00aa00|1|00001';
      const first = await expiry(id, r.pod);
      const log = leaseLogPath(a.stateDir);
      fs.appendFileSync(log, entry('open', id, r.pod));
      await new Promise((res) => setTimeout(res, 300));
      expect(await expiry(id, r.pod)).toBe(first);
      fs.appendFileSync(log, entry('periodic', id, r.pod));
      await waitFor(async () => (await expiry(id, r.pod)) > first, 5000, 'the renewal');
      await redis.zrem(f.keys.leases, lease(id, r.pod)); // lost, e.g. with Redis's state
      await redis.zincrby(f.keys.load, -1, r.pod);
      await redis.hincrby(f.keys.stats, 'leases:envoy-a', -1);
      fs.appendFileSync(log, entry('periodic', id, r.pod));
      await waitFor(async () => (await expiry(id, r.pod)) > 0, 5000, 'the lease put back');
      expect(await stat('reregistered')).toBe(1);
      fs.appendFileSync(log, entry('end', id, r.pod));
      await waitFor(async () => (await redis.zcard(f.keys.leases)) === 0, 5000, 'the release');
      expect(await stat('released')).toBe(1);
      expect(await redis.zscore(f.keys.load, r.pod)).toBe('0');
    } finally {
      await a.stop();
    }
  });

  it('an upgrade that never reached its backend (Envoy answered 503 UF/UH itself): its window entry back, its pod penalised', async () => {
    await f.reach('envoy-a', [P1]);
    const r = await admitAs('envoy-a', 1);
    const r2 = await admitAs('envoy-a', 2);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      entry('end', 'envoy-a|00aa00|1|00001', r.pod, { status: 503, flags: 'UF', upstream: r.pod }) +
        entry('end', 'envoy-a|00aa00|2|00002', r2.pod, { status: 403, flags: '-', upstream: r2.pod }),
    );
    expect((await runOnce(luaDir, 'envoy-a', admin.address, dir)).code).toBe(0);
    expect(await redis.zrange(f.keys.rate, 0, -1)).toEqual(['envoy-a|00aa00|2|00002']); // the 403 reached a backend
    expect(await redis.zrange(f.keys.down, 0, -1)).toEqual([P1]);
    expect(await stat('failed_upstream')).toBe(1);
    expect(await redis.zcard(f.keys.leases)).toBe(0);
  });

  it('a stream routed while Redis was unavailable (registered 0) gets its lease on the host Envoy chose, at its 101', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(leaseLogPath(dir), entry('open', 'envoy-a|00aa00|7|00007', '-', { registered: false, upstream: P2 }));
    expect((await runOnce(luaDir, 'envoy-a', admin.address, dir)).code).toBe(0);
    expect(await redis.zrange(f.keys.leases, 0, -1)).toEqual([lease('envoy-a|00aa00|7|00007', P2)]);
    expect(await redis.zscore(f.keys.load, P2)).toBe('1');
  });

  it('at start it acts on what Envoy wrote meanwhile: ended streams released (never put back), open ones renewed, stale ones left to expire', async () => {
    const now = Date.now();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      [
        entry('periodic', 'envoy-a|00aa00|1|00001', P1, { atMs: now - 1500 }),
        entry('periodic', 'envoy-a|00aa00|2|00002', P2, { atMs: now - 1500 }),
        entry('end', 'envoy-a|00aa00|1|00001', P1, { atMs: now - 1000 }),
        // No entry for 10 s (> 2 renew intervals + 5 s): it ended with its end entry lost.
        entry('periodic', 'envoy-a|00aa00|3|00003', P1, { atMs: now - 10000 }),
      ].join(''),
    );
    await f.renew('envoy-a|00aa00|1|00001', P1, 30000); // its lease, still held
    const monitor = await redis.duplicate().monitor();
    const ops: string[] = [];
    monitor.on('monitor', (_t: string, args: string[]) => {
      if (args[0].toLowerCase() === 'fcall' && args[1] === 'ws_leases') ops.push(...args.slice(3 + Number(args[2]) + 2));
    });
    expect((await runOnce(luaDir, 'envoy-a', admin.address, dir)).code).toBe(0);
    monitor.disconnect();
    expect(ops).toEqual(['X', 'envoy-a|00aa00|1|00001', P1, 'R', 'envoy-a|00aa00|2|00002', P2]);
    expect(await redis.zrange(f.keys.leases, 0, -1)).toEqual([lease('envoy-a|00aa00|2|00002', P2)]);
  });

  it('after the drain marker, periodic entries renew nothing (the drain gave the slots back)', async () => {
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) !== null);
      fs.writeFileSync(path.join(a.stateDir, STATE_FILES.draining), `${Date.now()}\nenvoy-a\n`);
      await new Promise((res) => setTimeout(res, 200));
      fs.appendFileSync(leaseLogPath(a.stateDir), entry('periodic', 'envoy-a|00aa00|5|00005', P1));
      await new Promise((res) => setTimeout(res, 1500));
      expect(await redis.zcard(f.keys.leases)).toBe(0);
    } finally {
      await a.stop();
    }
  });

  it('hostile lines never reach Redis: no key is made of them, they are counted unreadable', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(
      leaseLogPath(dir),
      [
        entry('periodic', 'evil|00|1|00', '{ws}:rate'),
        entry('periodic', '../../etc|1|1|1', P1),
        entry('periodic', 'Bad Id', P1),
        `DownstreamPeriodic envoy-a|00aa00|1|00001 ${P1} 1 101 - ${P1} 1 1 extra\n`,
        `${'x'.repeat(600)}\n`,
        'not a lease line\n',
      ].join(''),
    );
    const before = (await redis.keys('*')).sort();
    const r = await runOnce(luaDir, 'envoy-a', admin.address, dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain('5 unreadable line(s)');
    expect(await redis.zcard(f.keys.leases)).toBe(0);
    expect((await redis.keys('*')).sort().filter((k) => !before.includes(k) && !k.startsWith('{ws}:'))).toEqual([]);
  });
});

describe('a Redis that lost its state (ws_recover)', () => {
  it('every agent puts back its open streams and hosts before anything is admitted; ended streams stay gone', async () => {
    const agents = ['envoy-a', 'envoy-b', 'envoy-c'].map((p) => startAgent(luaDir, p, admin.address));
    try {
      for (const p of ['envoy-a', 'envoy-b', 'envoy-c']) await waitFor(async () => (await slotOf(p)) !== null, 8000, `${p} registered`);
      // Each proxy has two open streams and one that ended (its end entry seen).
      for (const [i, a] of agents.entries()) {
        const p = ['envoy-a', 'envoy-b', 'envoy-c'][i];
        const log = leaseLogPath(a.stateDir);
        for (const n of [1, 2, 3]) fs.appendFileSync(log, entry('periodic', `${p}|00aa00|${n}|0000${n}`, n === 2 ? P2 : P1));
        fs.appendFileSync(log, entry('end', `${p}|00aa00|3|00003`, P1));
      }
      await waitFor(async () => (await redis.zcard(f.keys.leases)) === 6, 8000, 'six leases');
      // Let every agent learn who is alive (they ask every 5th beat).
      await new Promise((res) => setTimeout(res, 5500));
      // The restart: Redis comes back empty, its administrator loads the library again.
      await server.restart();
      await redis.connect().catch(() => undefined);
      await waitFor(async () => (await redis.ping().catch(() => '')) === 'PONG', 5000, 'Redis back');
      await loadLibrary(redis);
      expect((await admitAs('envoy-a', 9)).status).toBe('RECOVERING');
      const ms = await waitFor(async () => (await admitAs('envoy-a', 10)).status === 'ADMITTED', 8000, 'admissions to resume');
      expect(ms).toBeLessThan(5000);
      const counts = await f.counts();
      // Two open streams per proxy came back, plus the one admitted just now; the ended ones did not.
      expect(counts.byProxy).toEqual({ 'envoy-a': 3, 'envoy-b': 2, 'envoy-c': 2 });
      expect((await redis.zrange(f.keys.leases, 0, -1)).some((m) => m.includes('|3|'))).toBe(false);
      await waitFor(async () => (await redis.exists(f.keys.recovery)) === 0, 3000, 'the next beat to clear the recovery');
      for (const a of agents) expect(a.output()).toMatch(/put back 2 open stream\(s\)/);
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
    }
  });

  it('a proxy the first agent knew alive but that never comes back holds admissions up for 10 s at most', async () => {
    await f.reach('envoy-gone', [P1]); // known alive: it beat just now
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    try {
      await waitFor(async () => (await slotOf('envoy-a')) !== null);
      await new Promise((res) => setTimeout(res, 5500)); // a beat with the live list
      await redis.flushall('SYNC');
      await loadLibrary(redis);
      const t0 = Date.now();
      await waitFor(async () => (await redis.hget(f.keys.stats, 'epoch')) !== null, 5000, 'the recovery to begin');
      expect((await admitAs('envoy-a', 1)).status).toBe('RECOVERING');
      await waitFor(async () => (await admitAs('envoy-a', 2)).status === 'ADMITTED', 15000, 'the deadline');
      expect(Date.now() - t0).toBeGreaterThan(8000);
    } finally {
      await a.stop();
    }
  });
});

describe('the metrics snapshot', () => {
  it('is written every metrics_snapshot_ms from one ws_snapshot call; Redis unavailable: redis_up 0 with the reason', async () => {
    const a = startAgent(luaDir, 'envoy-a', admin.address);
    const file = path.join(a.stateDir, STATE_FILES.snapshot);
    try {
      await waitFor(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('gauge proxies_live 1'), 8000, 'a snapshot');
      const text = fs.readFileSync(file, 'utf8');
      expect(text).toMatch(/^ws-admission-snapshot 1\nwritten_ms \d+\nredis_up 1\n/);
      expect(text.trimEnd().endsWith('end')).toBe(true);
      await server.stop();
      await waitFor(() => fs.readFileSync(file, 'utf8').includes('redis_up 0'), 8000, 'redis_up 0');
      expect(fs.readFileSync(file, 'utf8')).toMatch(/error .*(refused|closed|connect)/);
    } finally {
      await a.stop();
      await server.restart();
      await redis.connect().catch(() => undefined);
      await waitFor(async () => (await redis.ping().catch(() => '')) === 'PONG');
      await loadLibrary(redis);
    }
  });
});

describe('the lease log file', () => {
  it("rotates through Envoy's admin /reopen_logs without losing an entry, while entries keep coming", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const file = leaseLogPath(dir);
    // Envoy's side, as its file access log does it: one O_APPEND descriptor, replaced by a
    // fresh open of the path (creating it) shortly after POST /reopen_logs.
    let fd = fs.openSync(file, 'a');
    admin.reopens = 0;
    admin.onReopen = () =>
      setTimeout(() => {
        fs.closeSync(fd);
        fd = fs.openSync(file, 'a');
      }, 30);
    const N = 3000;
    const ids = Array.from({ length: N }, (_, i) => `envoy-r|abcdef|${i}|0a0b0c`);
    for (let i = 0; i < N; i += 1000)
      await f.leases(
        30000,
        0,
        ids.slice(i, i + 1000).map((id) => ['R', id, P1] as const),
      );
    const a = startAgent(luaDir, 'envoy-r', admin.address, { stateDir: dir, env: { WS_LEASE_LOG_ROTATE_BYTES: '16384' } });
    try {
      for (let i = 0; i < N; i += 50) {
        fs.writeSync(
          fd,
          ids
            .slice(i, i + 50)
            .map((id) => entry('end', id, P1))
            .join(''),
        );
        await new Promise((r) => setTimeout(r, 12));
      }
      await waitFor(async () => (await redis.zcard(f.keys.leases)) === 0, 20000, 'every lease released');
      expect(admin.reopens).toBeGreaterThanOrEqual(3);
      expect(fs.existsSync(`${file}.old`)).toBe(false);
    } finally {
      await a.stop();
      admin.onReopen = () => undefined;
      fs.closeSync(fd);
    }
  });

  it('without an admin to ask, keeps the file and truncates it only past 8 MiB', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const file = leaseLogPath(dir);
    fs.writeFileSync(file, 'not a lease line\n'.repeat(70000)); // 1.19 MB: over the rotation size
    expect((await runOnce(luaDir, 'envoy-a', '127.0.0.1:1', dir)).code).toBe(0);
    expect(fs.statSync(file).size).toBe(1190000);
    fs.writeFileSync(file, 'not a lease line\n'.repeat(500000)); // 8.5 MB
    const r = await runOnce(luaDir, 'envoy-a', '127.0.0.1:1', dir);
    expect(r.code).toBe(0);
    expect(fs.statSync(file).size).toBe(0);
    expect(r.out).toContain('truncated');
  });
});

describe('failures and settings', () => {
  it('Redis unavailable: keeps the operations (exit 1 with --once) so a later run applies them', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    fs.writeFileSync(leaseLogPath(dir), entry('end', 'envoy-a|00aa00|1|00001', P1));
    const down = podLuaDir(agentSettings(1, pwFile, { redis_connect_timeout_ms: 50 }));
    const r = await runOnce(down, 'envoy-a', admin.address, dir);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/Redis .* failed/);
  });

  it('refuses bad settings with the reason, and unknown arguments', async () => {
    const bad = podLuaDir({ ...agentSettings(server.port, pwFile), lease_ttl_ms: -1 });
    const r = await runOnce(bad, 'envoy-a', admin.address, fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-')));
    expect(r.code).toBe(1);
    expect(r.out).toContain('FAILED: bad settings: settings.lease_ttl_ms must be a positive integer, got -1');
    const u = spawnSync('luajit', [path.join(luaDir, 'agent.lua'), '--forever'], {
      env: { ...process.env, WS_LUA_DIR: luaDir },
      encoding: 'utf8',
    });
    expect(u.status).toBe(2);
    expect(u.stderr).toContain('usage: luajit agent.lua [--once]');
  });

  it('its liveness command passes on a fresh heartbeat and fails on a stale or missing one; it writes the heartbeat', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
    const cmd = agentLivenessCommand().map((a) => a.split(STATE_DIR).join(dir));
    const probe = () => spawnSync(cmd[0], cmd.slice(1)).status;
    expect(probe()).toBe(1); // missing
    fs.writeFileSync(path.join(dir, STATE_FILES.agent_alive), `${Math.floor(Date.now() / 1000) - 60}\n`);
    expect(probe()).toBe(1);
    const a = startAgent(luaDir, 'envoy-a', admin.address, { stateDir: dir });
    try {
      await waitFor(() => probe() === 0, 5000, 'a fresh heartbeat');
    } finally {
      await a.stop();
    }
  });
});
