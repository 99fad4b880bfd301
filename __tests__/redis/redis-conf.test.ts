// The in-cluster Redis's redis.conf (constructs/redis.ts redisConf) on a real redis-server:
// the default user is off, the proxies' user runs every script of the filter and nothing
// else, on its own keys only; the admin user (probe, operators) runs anything; with
// appendOnly the state survives a kill.
import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import Redis from 'ioredis';
import { REDIS_ADMIN_USER, REDIS_PROXY_USER, redisConf } from '../../constructs/redis';
import { freePort } from '../support/redis-server';

const ROOT = path.resolve(__dirname, '..', '..');
const script = (rel: string) => fs.readFileSync(path.join(ROOT, rel), 'utf8');

let proc: ChildProcess;
let port: number;
let dir: string;
const proxyPassword = 'proxy0123456789';
const adminPassword = 'admin0123456789';

beforeAll(async () => {
  port = await freePort();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-acl-'));
  const conf = path.join(dir, 'redis.conf');
  fs.writeFileSync(conf, redisConf({ port, bind: '127.0.0.1', maxMemory: '64mb', dir, hashTag: 'ws', proxyPassword, adminPassword }));
  proc = spawn('redis-server', [conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; ; i++) {
    const admin = client(REDIS_ADMIN_USER, adminPassword);
    try {
      await admin.ping();
      break;
    } catch (e) {
      if (i > 200) throw e;
      await new Promise((r) => setTimeout(r, 25));
    } finally {
      admin.disconnect();
    }
  }
});
afterAll(async () => {
  proc.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function client(username: string | undefined, password: string): Redis {
  return new Redis({
    host: '127.0.0.1',
    port,
    username,
    password,
    lazyConnect: false,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: true,
  });
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return (e as Error).message;
  }
}

/** Raw RESP commands on one connection; answers the reply lines. */
function raw(commands: string[][]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => {
      got += d.toString();
      const lines = got.split('\r\n').filter((l) => l !== '');
      if (lines.length >= commands.length) {
        sock.destroy();
        resolve(lines);
      }
    });
    sock.on('error', reject);
    sock.write(commands.map((c) => `*${c.length}\r\n` + c.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')).join(''));
  });
}

it('refuses the default user: an AUTH with the password alone fails, and nothing runs without AUTH', async () => {
  const [auth, ping] = await raw([['AUTH', proxyPassword], ['PING']]);
  expect(auth).toMatch(/^-WRONGPASS/);
  expect(ping).toMatch(/^-NOAUTH/);
  const [ok, pong] = await raw([['AUTH', REDIS_PROXY_USER, proxyPassword], ['PING']]);
  expect([ok, pong]).toEqual(['+OK', '+PONG']);
});

it("lets the proxies' user run every script of the filter, metrics, drain and lease log", async () => {
  const c = client(REDIS_PROXY_USER, proxyPassword);
  const sha = async (rel: string) => String(await c.script('LOAD', script(rel)));
  const id = 'envoy-a|abcdef|1|123456';
  const pod = '10.0.0.1:8080';
  const [admit, registerView, renew, reregister, release, snapshot, releaseProxy, requestRate, inventory] = await Promise.all(
    [
      'lua/redis/admit.lua',
      'lua/redis/register_view.lua',
      'lua/redis/renew.lua',
      'lua/redis/reregister.lua',
      'lua/redis/release.lua',
      'lua/redis/snapshot.lua',
      'lua/redis/release_proxy.lua',
      'lua/redis/request_rate.lua',
      'lua/redis/conn_inventory.lua',
    ].map(sha),
  );
  const K = {
    rate: '{ws}:rate',
    stats: '{ws}:stats',
    leases: '{ws}:leases',
    load: '{ws}:load',
    views: '{ws}:views',
    hosts: '{ws}:hosts',
    conn: `{ws}:conn:${id}`,
  };
  const A = [K.rate, K.stats, K.leases, K.load, K.views, K.hosts];
  const L = [K.leases, K.load, K.stats];
  const view = '0123456789abcdef';
  // The filter's state epoch (sync_epoch): two plain commands.
  expect(await c.hsetnx(K.stats, 'epoch:id', 'e1')).toBe(1);
  expect(await c.hget(K.stats, 'epoch:id')).toBe('e1');
  // An unknown view, its registration (with a dead view to delete: ZREMRANGEBYLEX), an
  // admission, two refusals (the second after an expired lease was given back).
  expect(((await c.evalsha(admit, 6, ...A, '10', '60000', '1', '30000', id, view)) as unknown[])[0]).toBe('HOSTS');
  await c.zadd(K.views, '1', 'fedcba9876543210');
  expect(await c.evalsha(registerView, 3, K.views, K.hosts, K.load, view, pod)).toBe(1);
  expect(await c.evalsha(admit, 6, ...A, '10', '60000', '1', '30000', id, view, 'e1')).toEqual(['ADMITTED', pod, 1, 0, 9]);
  expect(((await c.evalsha(admit, 6, ...A, '10', '60000', '1', '30000', id + '9', view)) as unknown[])[0]).toBe('FULL');
  await c.zadd(K.leases, '1', `gone|0|0|0 ${pod}`);
  await c.zincrby(K.load, 1, pod);
  expect(((await c.evalsha(admit, 6, ...A, '10', '60000', '1', '30000', id + '8', view)) as unknown[])[0]).toBe('FULL');
  expect(await c.evalsha(inventory, 2, K.conn, K.leases, id, pod, '30000', 'envoy-a', '127.0.0.1')).toBe(1);
  expect(await c.evalsha(renew, 1, K.leases, id, pod, '30000')).toBe(1);
  await c.pexpire(K.conn, 30000);
  expect(await c.evalsha(release, 3, ...L, id, pod)).toBe(1);
  await c.del(K.conn);
  expect(await c.evalsha(reregister, 3, ...L, id, pod, '30000')).toBe(1);
  expect(await c.evalsha(snapshot, 4, K.rate, K.stats, K.leases, K.load, '60000')).toBeDefined();
  expect(await c.evalsha(releaseProxy, 3, ...L, 'envoy-a', '0')).toEqual(['0', 1]);
  expect(await c.evalsha(requestRate, 2, '{ws}:rate:requests', K.stats, '10', '60000', 'req-1')).toBeDefined();
  expect(await c.zcard(K.leases)).toBe(0);
  c.disconnect();
});

it("refuses the proxies' user any other command, and any key outside {ws}, also from inside a script", async () => {
  const c = client(REDIS_PROXY_USER, proxyPassword);
  for (const [what, p] of [
    ['FLUSHALL', c.flushall()],
    ['CONFIG GET', c.config('GET', 'requirepass')],
    ['KEYS', c.keys('*')],
    ['EVAL', c.eval('return 1', 0)],
    ['ACL LIST', c.acl('LIST')],
    ['GET', c.get('{ws}:stats')],
    ['SCRIPT FLUSH', c.script('FLUSH')],
    ['CLIENT LIST', c.call('CLIENT', 'LIST')],
  ] as const) {
    expect({ what, err: await errorOf(p) }).toEqual({ what, err: expect.stringMatching(/NOPERM/) });
  }
  expect(await errorOf(c.zadd('other:pod:x', 1, 'a'))).toMatch(/NOPERM/);
  expect(await errorOf(c.zadd('{wsx}:pod:x', 1, 'a'))).toMatch(/NOPERM/);
  // One of our scripts handed a foreign key: Redis checks the script's call too.
  const renew = String(await c.script('LOAD', script('lua/redis/renew.lua')));
  expect(await errorOf(c.evalsha(renew, 1, 'other:leases', 'id', '10.0.0.1:80', '1000'))).toMatch(/NOPERM/);
  c.disconnect();
});

it('lets the admin user (probe, operators) run anything', async () => {
  const a = client(REDIS_ADMIN_USER, adminPassword);
  expect(await a.ping()).toBe('PONG');
  expect(await a.set('other:key', '1')).toBe('OK');
  expect(await a.acl('WHOAMI')).toBe(REDIS_ADMIN_USER);
  a.disconnect();
});

it('with appendOnly, a Redis killed (SIGKILL) comes back with the leases written more than a second before', async () => {
  const aofPort = await freePort();
  const aofDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-aof-'));
  const conf = path.join(aofDir, 'redis.conf');
  fs.writeFileSync(
    conf,
    redisConf({
      port: aofPort,
      bind: '127.0.0.1',
      maxMemory: '64mb',
      dir: aofDir,
      hashTag: 'ws',
      proxyPassword,
      adminPassword,
      appendOnly: true,
    }),
  );
  const start = async (): Promise<ChildProcess> => {
    const p = spawn('redis-server', [conf], { stdio: ['ignore', 'ignore', 'inherit'] });
    for (let i = 0; ; i++) {
      const c = new Redis({
        host: '127.0.0.1',
        port: aofPort,
        username: REDIS_PROXY_USER,
        password: proxyPassword,
        lazyConnect: true,
        enableReadyCheck: false,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      try {
        await c.connect();
        await c.ping();
        return p;
      } catch (e) {
        if (i > 200) throw e;
        await new Promise((r) => setTimeout(r, 25));
      } finally {
        c.disconnect();
      }
    }
  };
  const stop = (p: ChildProcess) =>
    new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  let p = await start();
  try {
    const c = new Redis({ host: '127.0.0.1', port: aofPort, username: REDIS_PROXY_USER, password: proxyPassword, enableReadyCheck: false });
    await c.zadd('{ws}:pod:10.0.0.1:8080', String(Date.now() + 60000), 'envoy-a|abcdef|1|123456');
    await c.hsetnx('{ws}:stats', 'epoch:id', 'e1');
    c.disconnect();
    await new Promise((r) => setTimeout(r, 1500)); // appendfsync everysec
    await stop(p);
    p = await start();
    const again = new Redis({
      host: '127.0.0.1',
      port: aofPort,
      username: REDIS_PROXY_USER,
      password: proxyPassword,
      enableReadyCheck: false,
    });
    expect(await again.zrange('{ws}:pod:10.0.0.1:8080', 0, -1)).toEqual(['envoy-a|abcdef|1|123456']);
    expect(await again.hget('{ws}:stats', 'epoch:id')).toBe('e1'); // same epoch: nothing to re-register
    again.disconnect();
  } finally {
    await stop(p);
    fs.rmSync(aofDir, { recursive: true, force: true });
  }
});
