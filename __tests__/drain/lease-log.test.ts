// lua/cli/lease_log.lua, the lease-log sidecar, run as the pod runs it (`luajit
// lease_log.lua`, WS_LUA_DIR and WS_STATE_DIR) against a real redis-server with a password.
// End to end through real Envoy: __tests__/e2e/release.test.ts.
import { spawn, spawnSync } from 'child_process';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { leaseLogLivenessCommand } from '../../constructs/envoy';
import { STATE_DIR } from '../../envoy/bootstrap';
import { startRedis, RedisServer } from '../support/redis-server';
import { defaultSettings, makeLuaDir } from '../filter/harness/worker';

const ROOT = path.resolve(__dirname, '..', '..');
const PROGRAM = path.join(ROOT, 'lua', 'cli', 'lease_log.lua');
const PASSWORD = 'lease-log-s3cret';
const FAR = 9_999_999_999_999;
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';

let redis: RedisServer;
let luaDir: string;
let pwFile: string;

beforeAll(async () => {
  redis = await startRedis({ password: PASSWORD });
  pwFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-lease-log-auth-')), 'password');
  fs.writeFileSync(pwFile, PASSWORD, { mode: 0o400 });
  luaDir = makeLuaDir({ ...defaultSettings(redis.port, { redis_password_file: pwFile }) });
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
});

/** A lease as the scripts write it (lua/redis/README.md): the member in {ws}:leases and its pod's count. */
function lease(pod: string, id: string) {
  redis.cli('ZADD', '{ws}:leases', String(FAR), `${id} ${pod}`);
  redis.cli('ZINCRBY', '{ws}:load', '1', pod);
}
/** Connection ids of the leases on `pod`. */
const members = (pod: string) =>
  redis
    .cli('ZRANGE', '{ws}:leases', '0', '-1')
    .split('\n')
    .filter(Boolean)
    .filter((m) => m.endsWith(` ${pod}`))
    .map((m) => m.slice(0, m.indexOf(' ')))
    .sort();

function run(stateDir: string, args: string[] = ['--once'], dir = luaDir): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('luajit', [PROGRAM, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', WS_LUA_DIR: dir, WS_STATE_DIR: stateDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const guard = setTimeout(() => p.kill('SIGKILL'), 20000);
    p.on('close', (code) => {
      clearTimeout(guard);
      resolve({ code, out });
    });
  });
}

const stateDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'ws-lease-log-state-'));

describe('lease_log.lua', () => {
  it('releases the lease of every line, skips lines that are not a lease line (no key is made of them)', async () => {
    lease(P1, 'envoy-a|abc123|1|00ff00');
    lease(P1, 'envoy-a|abc123|2|00ff01');
    lease(P2, 'envoy-b|def456|7|0000aa');
    const dir = stateDir();
    fs.writeFileSync(
      path.join(dir, 'leases.log'),
      [
        `lease envoy-a|abc123|1|00ff00 ${P1}`,
        `lease envoy-b|def456|7|0000aa ${P2}`,
        'lease evil|x|1|1 {ws}:rate', // a key-like pod
        `lease ../../etc|1|1|1 ${P1}`, // not a connection id
        `lease envoy-a|abc123|2|00ff01 ${P1} extra`, // trailing field
        `lease envoy-a|abc123|1|00ff00 ${P1}`, // twice: harmless
        '',
      ].join('\n'),
    );
    const r = await run(dir);
    expect(r.code).toBe(0);
    expect(r.out).toContain('released 2 leases; 3 unreadable lines');
    expect(members(P1)).toEqual(['envoy-a|abc123|2|00ff01']);
    expect(members(P2)).toEqual([]);
    expect(redis.cli('HGET', '{ws}:stats', 'released')).toBe('2');
    expect(redis.cli('--scan', '--pattern', '*').split('\n').filter(Boolean).sort()).toEqual(['{ws}:leases', '{ws}:load', '{ws}:stats']);
  });

  it('follows the file as Envoy appends to it', async () => {
    const dir = stateDir();
    const file = path.join(dir, 'leases.log');
    fs.writeFileSync(file, '');
    const p = spawn('luajit', [PROGRAM], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', WS_LUA_DIR: luaDir, WS_STATE_DIR: dir },
      stdio: 'ignore',
    });
    try {
      lease(P1, 'e|aa|1|01');
      lease(P1, 'e|aa|2|02');
      fs.appendFileSync(file, `lease e|aa|1|01 ${P1}\n`);
      await waitFor(() => members(P1).length === 1);
      fs.appendFileSync(file, `lease e|aa|2|02 ${P1}\n`);
      await waitFor(() => members(P1).length === 0);
      // Its heartbeat for the liveness probe.
      expect(Number(fs.readFileSync(path.join(dir, 'lease-log.alive'), 'utf8'))).toBeGreaterThan(Date.now() / 1000 - 5);
    } finally {
      p.kill('SIGKILL');
    }
  });

  it("rotates the file through Envoy's admin /reopen_logs without losing a line, while lines keep coming", async () => {
    const dir = stateDir();
    const file = path.join(dir, 'leases.log');
    // Envoy's side, as its file access log does it: one O_APPEND descriptor, replaced by a
    // fresh open of the path (creating it) shortly after POST /reopen_logs.
    let fd = fs.openSync(file, 'a');
    let reopens = 0;
    const admin = http.createServer((req, res) => {
      if (req.method === 'POST' && req.url === '/reopen_logs') {
        setTimeout(() => {
          fs.closeSync(fd);
          fd = fs.openSync(file, 'a');
          reopens++;
        }, 30);
        res.end('OK\n');
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => admin.listen(0, '127.0.0.1', () => r()));
    const N = 4000;
    const ids = Array.from({ length: N }, (_, i) => `envoy-r|abcdef|${i}|0a0b0c`);
    redis.cli('ZADD', '{ws}:leases', ...ids.flatMap((id) => [String(FAR), `${id} ${P1}`]));
    redis.cli('ZADD', '{ws}:load', String(N), P1);
    const p = spawn('luajit', [PROGRAM], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        WS_LUA_DIR: luaDir,
        WS_STATE_DIR: dir,
        WS_ENVOY_ADMIN: `127.0.0.1:${(admin.address() as AddressInfo).port}`,
        WS_LEASE_LOG_ROTATE_BYTES: '16384',
      },
      stdio: 'ignore',
    });
    try {
      for (let i = 0; i < N; i += 50) {
        fs.writeSync(
          fd,
          ids
            .slice(i, i + 50)
            .map((id) => `lease ${id} ${P1}\n`)
            .join(''),
        );
        await new Promise((r) => setTimeout(r, 12));
      }
      await waitFor(() => members(P1).length === 0, 15000);
      // ~40 bytes a line, 160 KB in about a second through a 16 KB rotation size: several
      // rotations happened while lines kept coming, and none was lost.
      expect(reopens).toBeGreaterThanOrEqual(3);
      expect(fs.existsSync(`${file}.old`)).toBe(false);
    } finally {
      p.kill('SIGKILL');
      admin.close();
      fs.closeSync(fd);
    }
  });

  it('without an admin to ask, keeps the file and truncates it only past 8 MiB', async () => {
    const dir = stateDir();
    const file = path.join(dir, 'leases.log');
    fs.writeFileSync(file, 'not a lease line\n'.repeat(70000)); // 1.19 MB: over the rotation size
    expect((await run(dir)).code).toBe(0);
    expect(fs.statSync(file).size).toBe(1190000);
    fs.writeFileSync(file, 'not a lease line\n'.repeat(500000)); // 8.5 MB
    const r = await run(dir);
    expect(r.code).toBe(0);
    expect(fs.statSync(file).size).toBe(0);
    expect(r.out).toContain('truncated');
  });

  it("with connection_inventory, also deletes the connection's inventory hash", async () => {
    const inv = makeLuaDir({ ...defaultSettings(redis.port, { redis_password_file: pwFile, connection_inventory: true }) });
    lease(P1, 'e|aa|9|09');
    redis.cli('HSET', '{ws}:conn:e|aa|9|09', 'pod', P1);
    const dir = stateDir();
    fs.writeFileSync(path.join(dir, 'leases.log'), `lease e|aa|9|09 ${P1}\n`);
    expect((await run(dir, ['--once'], inv)).code).toBe(0);
    expect(members(P1)).toEqual([]);
    expect(redis.cli('EXISTS', '{ws}:conn:e|aa|9|09')).toBe('0');
  });

  it('an error reply (e.g. a read-only replica after a failover) is a failure: the lines are kept for a retry', async () => {
    lease(P1, 'e|aa|8|08');
    const dir = stateDir();
    fs.writeFileSync(path.join(dir, 'leases.log'), `lease e|aa|8|08 ${P1}\n`);
    // A script that fails with an error reply: the key is of the wrong type.
    redis.cli('DEL', '{ws}:stats');
    redis.cli('SET', '{ws}:stats', 'not a hash');
    const r = await run(dir);
    expect(r.code).toBe(1);
    expect(r.out).toContain('keeping 1 lines');
    redis.cli('DEL', '{ws}:stats');
    expect((await run(dir)).code).toBe(0);
    expect(members(P1)).toEqual([]);
  });

  it('Redis unavailable: keeps the lines (exit 1 with --once) so a later run releases them', async () => {
    const dir = stateDir();
    fs.writeFileSync(path.join(dir, 'leases.log'), `lease e|aa|1|01 ${P1}\n`);
    const down = makeLuaDir({ ...defaultSettings(1, { redis_connect_timeout_ms: 50 }) });
    const r = await run(dir, ['--once'], down);
    expect(r.code).toBe(1);
    expect(r.out).toContain('Redis unavailable');
    expect(fs.readFileSync(path.join(dir, 'leases.log'), 'utf8')).toContain('lease e|aa|1|01');
  });

  it('refuses bad settings with the reason, and unknown arguments', async () => {
    const bad = makeLuaDir({ ...defaultSettings(redis.port), lease_ttl_ms: -1 });
    const r = await run(stateDir(), ['--once'], bad);
    expect(r.code).toBe(1);
    expect(r.out).toContain('FAILED: bad settings: settings.lease_ttl_ms must be a positive integer, got -1');
    const u = await run(stateDir(), ['--forever']);
    expect(u.code).toBe(2);
    expect(u.out).toContain('usage: luajit lease_log.lua [--once]');
  });

  it("the sidecar's liveness command passes on a fresh heartbeat and fails on a stale or missing one", () => {
    const dir = stateDir();
    const cmd = leaseLogLivenessCommand().map((a) => a.split(STATE_DIR).join(dir));
    const probe = () => spawnSync(cmd[0], cmd.slice(1)).status;
    expect(probe()).toBe(1); // missing
    fs.writeFileSync(path.join(dir, 'lease-log.alive'), `${Math.floor(Date.now() / 1000)}\n`);
    expect(probe()).toBe(0);
    fs.writeFileSync(path.join(dir, 'lease-log.alive'), `${Math.floor(Date.now() / 1000) - 60}\n`);
    expect(probe()).toBe(1);
  });
});

async function waitFor(pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 25));
  }
}
