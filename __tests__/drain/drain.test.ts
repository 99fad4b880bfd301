// lua/cli/drain.lua, the preStop program, run as the hook runs it (`luajit drain.lua`,
// WS_LUA_DIR laid out like /etc/envoy/lua) against a real redis-server with a password;
// and end to end with the public filter (the filter harness) taking the leases.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { startRedis, freePort, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, defaultSettings, makeLuaDir, openSocket, statsHash, Settings } from '../filter/harness/worker';

const ROOT = path.resolve(__dirname, '..', '..');
const DRAIN = path.join(ROOT, 'lua', 'cli', 'drain.lua');
const PASSWORD = 'drain-s3cret';
const FAR = 9_999_999_999_999;
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';

let redis: RedisServer;
let passwordFile: string;

beforeAll(async () => {
  redis = await startRedis({ password: PASSWORD });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-auth-'));
  passwordFile = path.join(dir, 'password');
  fs.writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o400 }); // a Secret file often ends in a newline
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  redis.cli('SCRIPT', 'FLUSH');
});

// (An object literal type, so it passes as makeLuaDir's Record<string, unknown>.)
const settings = (overrides: Partial<Settings> = {}) => ({
  ...defaultSettings(redis.port, { redis_password_file: passwordFile, ...overrides }),
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `luajit drain.lua` as the preStop hook runs it: WS_LUA_DIR, POD_NAME, nothing else. */
function runDrain(opts: { luaDir?: string; podName?: string | null; args?: string[]; env?: Record<string, string> } = {}): Promise<Run> {
  const luaDir = opts.luaDir ?? makeLuaDir(settings());
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    WS_LUA_DIR: luaDir,
    WS_STATE_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-state-')),
    ...opts.env,
  };
  if (opts.podName !== null) env.POD_NAME = opts.podName ?? 'ws-envoy-6f7c9d8b5d-x7k2p';
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn('luajit', [DRAIN, ...(opts.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    const guard = setTimeout(() => p.kill('SIGKILL'), 15000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** A lease as the scripts write it (lua/redis/README.md): the member in {ws}:leases and its pod's count. */
function lease(pod: string, id: string, expiry = FAR) {
  redis.cli('ZADD', '{ws}:leases', String(expiry), `${id} ${pod}`);
  redis.cli('ZINCRBY', '{ws}:load', '1', pod);
}
/** Connection ids of the leases on `pod`. */
const members = (pod: string) => {
  const out = redis.cli('ZRANGE', '{ws}:leases', '0', '-1');
  return (out === '' ? [] : out.split('\n'))
    .filter((m) => m.endsWith(` ${pod}`))
    .map((m) => m.slice(0, m.indexOf(' ')))
    .sort();
};
const count = (pod: string) => Number(redis.cli('ZSCORE', '{ws}:load', pod));

describe('drain.lua', () => {
  it('releases every lease of this proxy (POD_NAME) across pods with AUTH, prints one line, exits 0', async () => {
    const me = 'ws-envoy-6f7c9d8b5d-x7k2p';
    lease(P1, `${me}|a1b2c3|1|k2`);
    lease(P1, 'ws-envoy-6f7c9d8b5d-q9zzz|d4e5f6|1|k3');
    lease(P2, `${me}|a1b2c3|2|k4`);
    lease(P2, `${me}-2|a1b2c3|2|k4`); // another pod whose name extends ours
    redis.cli('HSET', '{ws}:stats', 'released', '3');

    const r = await runDrain({ podName: me });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^drain: released 2 leases of proxy ${me} \\(1 scan steps, \\d+ ms\\)\\n$`));
    expect(r.code).toBe(0);
    expect(members(P1)).toEqual(['ws-envoy-6f7c9d8b5d-q9zzz|d4e5f6|1|k3']);
    expect(members(P2)).toEqual([`${me}-2|a1b2c3|2|k4`]);
    expect([count(P1), count(P2)]).toEqual([1, 1]);
    expect(statsHash(redis.cli)).toEqual({ released: 5 });
  });

  it('derives the proxy id exactly as filter.lua does: POD_NAME lower-cased, other characters -> "-", at most 63', async () => {
    const name = 'WS_Envoy.Pod:' + 'x'.repeat(80);
    const id = ('ws-envoy.pod-' + 'x'.repeat(80)).slice(0, 63);
    lease(P1, `${id}|a|1|b`);
    lease(P1, `${id}x|a|1|b`);
    const r = await runDrain({ podName: name });
    expect(r.stdout).toContain(`drain: released 1 leases of proxy ${id} (`);
    expect(members(P1)).toEqual([`${id}x|a|1|b`]);
  });

  it('falls back to the host name without POD_NAME (or with an empty one), as filter.lua does', async () => {
    const host = os
      .hostname()
      .toLowerCase()
      .replace(/[^a-z0-9.-]/g, '-')
      .slice(0, 63);
    lease(P1, `${host}|a|1|b`);
    lease(P1, `${host}|a|2|c`);
    expect((await runDrain({ podName: null })).stdout).toContain(`drain: released 2 leases of proxy ${host} (`);
    lease(P1, `${host}|a|3|d`);
    expect((await runDrain({ podName: '' })).stdout).toContain(`drain: released 1 leases of proxy ${host} (`);
  });

  it('says so when it cannot write the draining marker, and still releases', async () => {
    lease(P1, 'ws-envoy-6f7c9d8b5d-x7k2p|w|1|a');
    const r = await runDrain({ env: { WS_STATE_DIR: '/nonexistent/ws-state' } });
    expect(r.stdout).toMatch(
      /^drain: released 1 leases of proxy ws-envoy-6f7c9d8b5d-x7k2p \(1 scan steps, \d+ ms\); no draining marker \(\/nonexistent\/ws-state\/draining: No such file or directory\): a connection renewing before SIGTERM may re-register\n$/,
    );
    expect(r.code).toBe(0);
  });

  it('answers 0 with no lease at all (nothing to do is success)', async () => {
    const r = await runDrain();
    expect(r.stdout).toMatch(/^drain: released 0 leases of proxy ws-envoy-6f7c9d8b5d-x7k2p \(1 scan steps, \d+ ms\)\n$/);
    expect(r.code).toBe(0);
  });

  it('covers any number of leases in scan steps of about 1000 (each release_proxy.lua call stays short)', async () => {
    const me = 'envoy-big';
    // 450 pods with 5 leases of ours and one of another proxy each (one EVAL to set up).
    redis.cli(
      'EVAL',
      `for i = 0, 449 do
      local pod = '10.1.' .. math.floor(i / 256) .. '.' .. (i % 256) .. ':8080'
      for j = 1, 5 do redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2] .. '|w|' .. j .. '|x ' .. pod) end
      redis.call('ZADD', KEYS[1], ARGV[1], 'other|w|1|x ' .. pod)
      redis.call('ZADD', KEYS[2], 6, pod)
    end`,
      '2',
      '{ws}:leases',
      '{ws}:load',
      String(FAR),
      me,
    );
    redis.cli('CONFIG', 'RESETSTAT');
    const r = await runDrain({ podName: me });
    const steps = Number(/\((\d+) scan steps,/.exec(r.stdout)?.[1]);
    expect(r.stdout).toContain(`drain: released 2250 leases of proxy ${me} (`);
    expect(r.code).toBe(0);
    const calls = Number(/cmdstat_evalsha:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1]);
    expect(calls).toBe(steps); // one call per step (SCRIPT LOAD once before)
    expect(steps).toBeGreaterThanOrEqual(3); // 2700 leases, ~1000 per step
    expect(Number(redis.cli('ZCARD', '{ws}:leases'))).toBe(450);
    expect(count('10.1.0.7:8080')).toBe(1);
  });

  it('copies its line to --log-file (the hook passes /proc/1/fd/1), best effort', async () => {
    lease(P1, 'ws-envoy-6f7c9d8b5d-x7k2p|a|1|b');
    const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-log-')), 'out');
    fs.writeFileSync(log, 'envoy says hi\n');
    const r = await runDrain({ args: ['--log-file', log] });
    expect(r.code).toBe(0);
    expect(fs.readFileSync(log, 'utf8')).toBe(`envoy says hi\n${r.stdout}`); // appended, same line
    // An unwritable log file does not turn a good drain into a failure.
    const r2 = await runDrain({ args: ['--log-file', '/nonexistent/dir/out'] });
    expect(r2.stdout).toMatch(/^drain: released 0 leases /);
    expect(r2.code).toBe(0);
  });

  describe('on failure: one clear line, exit 1 (a FailedPreStopHook event; SIGTERM still follows), bounded time', () => {
    it('Redis down (connection refused)', async () => {
      const port = await freePort();
      const r = await runDrain({ luaDir: makeLuaDir(settings({ redis_port: port })) });
      expect(r.stdout).toBe(
        `drain: FAILED to release the leases of proxy ws-envoy-6f7c9d8b5d-x7k2p: Redis 127.0.0.1:${port} unavailable: ` +
          `connect 127.0.0.1:${port}: connection refused (they expire by themselves within the lease TTL)\n`,
      );
      expect(r.code).toBe(1);
      expect(r.ms).toBeLessThan(2000);
    });

    it('Redis accepts but never answers: bounded by redis_read_timeout_ms', async () => {
      const sockets: net.Socket[] = [];
      const silent = net.createServer((s) => {
        sockets.push(s);
      });
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
      const port = (silent.address() as net.AddressInfo).port;
      try {
        const r = await runDrain({
          luaDir: makeLuaDir(settings({ redis_port: port, redis_connect_timeout_ms: 300, redis_read_timeout_ms: 300 })),
        });
        expect(r.stdout).toMatch(
          /^drain: FAILED to release the leases of proxy ws-envoy-6f7c9d8b5d-x7k2p: Redis 127\.0\.0\.1:\d+ unavailable: receive: timeout \(they expire/,
        );
        expect(r.code).toBe(1);
        expect(r.ms).toBeGreaterThanOrEqual(250);
        expect(r.ms).toBeLessThan(3000); // AUTH's round trip, then the error: no retry loop
      } finally {
        for (const s of sockets) s.destroy();
        silent.close();
      }
    });

    it('wrong password, and a missing password file', async () => {
      const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-auth-')), 'password');
      fs.writeFileSync(bad, 'wrong\n');
      const r = await runDrain({ luaDir: makeLuaDir(settings({ redis_password_file: bad })) });
      expect(r.stdout).toMatch(
        /^drain: FAILED to release the leases of proxy \S+: Redis 127\.0\.0\.1:\d+ unavailable: AUTH failed: WRONGPASS/,
      );
      expect(r.code).toBe(1);
      const r2 = await runDrain({ luaDir: makeLuaDir(settings({ redis_password_file: '/nonexistent/password' })) });
      expect(r2.stdout).toContain('unavailable: cannot read redis_password_file /nonexistent/password');
      expect(r2.code).toBe(1);
    });

    it('bad settings.lua: names the field', async () => {
      const s: Record<string, unknown> = { ...settings() };
      delete s.redis_port;
      const r = await runDrain({ luaDir: makeLuaDir(s) });
      expect(r.stdout).toBe(
        'drain: FAILED to release the leases of proxy ws-envoy-6f7c9d8b5d-x7k2p: bad settings: ' +
          'settings.redis_port is missing (want integer) (they expire by themselves within the lease TTL)\n',
      );
      expect(r.code).toBe(1);
    });

    it('refuses the shared fallback id "unknown" (its leases may be other proxies\')', async () => {
      lease(P1, 'unknown|a|1|b');
      const r = await runDrain({ podName: 'unknown' });
      expect(r.stdout).toContain("refusing to release the shared id 'unknown'");
      expect(r.code).toBe(1);
      expect(members(P1)).toEqual(['unknown|a|1|b']);
    });

    it('a missing release_proxy.lua, and an unknown argument', async () => {
      const dir = makeLuaDir(settings());
      fs.unlinkSync(path.join(dir, 'release_proxy.lua'));
      lease(P1, 'ws-envoy-6f7c9d8b5d-x7k2p|a|1|b');
      const r = await runDrain({ luaDir: dir });
      expect(r.stdout).toContain(`unavailable: cannot read Redis script ${dir}/release_proxy.lua`);
      expect(r.code).toBe(1);
      const r2 = await runDrain({ args: ['--verbose'] });
      expect(r2.stdout).toContain("unknown argument '--verbose' (usage: luajit drain.lua [--log-file PATH])");
      expect(r2.code).toBe(1);
    });
  });
});

describe('drain.lua with the public filter taking the leases (harness)', () => {
  let fleet: Fleet;
  beforeEach(() => {
    fleet = new Fleet(redis.port);
  });
  afterEach(async () => {
    await fleet.closeAll();
  });

  it("after a rollout's drain, the slots of the old proxy's connections are free at once for the new one", async () => {
    const s = { max_connections_per_pod: 1, lease_ttl_ms: 60000, renew_interval_ms: 30000, redis_password_file: passwordFile };
    const hosts: Array<[string, string]> = [
      [P1, 'healthy'],
      [P2, 'healthy'],
    ];
    const oldProxy = await fleet.worker(s, { podName: 'ws-envoy-old-abcde', hosts });
    const newProxy = await fleet.worker(s, { podName: 'ws-envoy-new-fghij', hosts });
    expect((await openSocket(oldProxy)).pod).toBe(P1);
    expect((await openSocket(oldProxy)).pod).toBe(P2);
    const refused = await newProxy.request(UPGRADE);
    expect(refused.reply?.headers[':status']).toBe('503'); // every pod full: the old proxy holds both slots

    // preStop of the old proxy (its connections are about to be reset by SIGTERM).
    const r = await runDrain({ luaDir: makeLuaDir(settings(s)), podName: 'ws-envoy-old-abcde' });
    expect(r.stdout).toMatch(/^drain: released 2 leases of proxy ws-envoy-old-abcde \(1 scan steps/);
    await oldProxy.kill();

    const admitted = await openSocket(newProxy);
    expect(admitted.pod).toBe(P1);
    expect(statsHash(redis.cli)).toMatchObject({ admitted: 3, released: 2, rejected_capacity: 1 });
  });

  it('a connection that sends data between the drain and SIGTERM does not take its slot back (drain marker)', async () => {
    const s = { max_connections_per_pod: 1, lease_ttl_ms: 60000, renew_interval_ms: 50, redis_password_file: passwordFile };
    const hosts: Array<[string, string]> = [[P1, 'healthy']];
    const oldProxy = await fleet.worker(s, { podName: 'ws-envoy-old-abcde', hosts });
    const conn = await openSocket(oldProxy);
    expect(conn.pod).toBe(P1);

    const r = await runDrain({ luaDir: makeLuaDir(settings(s)), podName: 'ws-envoy-old-abcde', env: { WS_STATE_DIR: fleet.stateDir } });
    expect(r.stdout).toMatch(/^drain: released 1 leases of proxy ws-envoy-old-abcde/);
    const [at, who] = fs.readFileSync(path.join(fleet.stateDir, 'draining'), 'utf8').split('\n');
    expect(who).toBe('ws-envoy-old-abcde');
    expect(Math.abs(Number(at) - Date.now())).toBeLessThan(5000); // ms, this node's clock

    await new Promise((res) => setTimeout(res, 100)); // past the renew interval
    await oldProxy.data(conn.sid, 'response'); // renew answers 0: without the marker it would re-register
    expect(members(P1)).toEqual([]);
    expect(statsHash(redis.cli).reregistered).toBeUndefined();
    expect((await oldProxy.logs()).logs.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(/^ws-admission: lease of \S+ on 10\.0\.0\.1:8080 is gone and this proxy is draining; not re-registered$/),
    );
    const newProxy = await fleet.worker(s, { podName: 'ws-envoy-new-fghij', hosts });
    expect((await openSocket(newProxy)).pod).toBe(P1);
  });

  it('a marker stops counting after its life (2 minutes; 300 ms here): renewals re-register again', async () => {
    const s = { max_connections_per_pod: 1, lease_ttl_ms: 60000, renew_interval_ms: 50, redis_password_file: passwordFile };
    const proxy = await fleet.worker(s, { podName: 'ws-envoy-old-abcde', hosts: [[P1, 'healthy']], env: { WS_DRAIN_MARKER_MS: '300' } });
    const conn = await openSocket(proxy);
    const r = await runDrain({ luaDir: makeLuaDir(settings(s)), podName: 'ws-envoy-old-abcde', env: { WS_STATE_DIR: fleet.stateDir } });
    expect(r.stdout).toMatch(/^drain: released 1 leases/);
    await new Promise((res) => setTimeout(res, 100));
    await proxy.data(conn.sid, 'response'); // within the marker's life: not re-registered
    expect(members(P1)).toEqual([]);
    await new Promise((res) => setTimeout(res, 350));
    await proxy.data(conn.sid, 'response'); // marker expired: re-registered
    expect(members(P1)).toHaveLength(1);
    expect(statsHash(redis.cli).reregistered).toBe(1);
  });

  it.each([
    ['no marker', null],
    ['a marker from before this worker loaded (an earlier container of the pod)', 'before-load'],
    ['a marker dated in the future', 'future'],
    ['a marker without a time', 'garbage'],
  ])('re-registers as usual with %s (what a valid marker prevents)', async (_what, kind) => {
    const marker = path.join(fleet.stateDir, 'draining');
    if (kind === 'before-load') fs.writeFileSync(marker, `${Date.now() - 1000}\nws-envoy-old-abcde\n`);
    const s = { max_connections_per_pod: 1, lease_ttl_ms: 60000, renew_interval_ms: 50, redis_password_file: passwordFile };
    const proxy = await fleet.worker(s, { podName: 'ws-envoy-old-abcde', hosts: [[P1, 'healthy']] });
    if (kind === 'future') fs.writeFileSync(marker, `${Date.now() + 60000}\nws-envoy-old-abcde\n`);
    if (kind === 'garbage') fs.writeFileSync(marker, 'draining\n');
    const conn = await openSocket(proxy);
    redis.cli('DEL', '{ws}:leases', '{ws}:load'); // the lease is gone (as after a drain, or Redis losing state)
    await new Promise((res) => setTimeout(res, 100));
    await proxy.data(conn.sid, 'response');
    expect(members(P1)).toHaveLength(1);
    expect(statsHash(redis.cli).reregistered).toBe(1);
  });
});
