// Faults: crashed proxies, Redis down / hanging / restarted empty, script cache flushed.
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { startRedis, RedisServer, freePort } from '../support/redis-server';
import { Fleet, UPGRADE, PLAIN, openSocket, sleep, liveLeases, statsHash } from './harness/worker';

const PASSWORD = 'test-secret-0fa1';
let redis: RedisServer;
let fleet: Fleet;
let passwordFile: string;

beforeAll(async () => {
  redis = await startRedis({ password: PASSWORD });
  passwordFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-secret-')), 'password');
  fs.writeFileSync(passwordFile, PASSWORD + '\n', { mode: 0o400 }); // a Secret file often ends with \n
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

const ONE_POD: Array<[string, string]> = [['10.0.0.1:8080', 'healthy']];
const TWO_PODS: Array<[string, string]> = [
  ['10.0.0.1:8080', 'healthy'],
  ['10.0.0.2:8080', 'healthy'],
];

/** Counters the workers wrote under WS_STATE_DIR, summed over workers. */
function workerCounters(dir: string): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.counters'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const [k, v] = line.split(' ');
      if (k && v !== undefined && /^\d+$/.test(v)) sum[k] = (sum[k] ?? 0) + Number(v);
    }
  }
  return sum;
}

describe('proxy crash', () => {
  it('a proxy killed while holding leases gives its slots back within the lease TTL', async () => {
    const ttl = 1000;
    const s = { redis_password_file: passwordFile, lease_ttl_ms: ttl, renew_interval_ms: 300, max_connections_per_pod: 1 };
    const a = await fleet.worker(s, { podName: 'envoy-a', hosts: TWO_PODS });
    const b = await fleet.worker(s, { podName: 'envoy-b', hosts: TWO_PODS });
    await openSocket(a);
    await openSocket(a);
    expect((await b.request(UPGRADE)).reply?.headers[':status']).toBe('503');
    await a.kill('SIGKILL');
    const killedAt = Date.now();
    let admitted = 0;
    while (admitted < 2 && Date.now() - killedAt < ttl + 1000) {
      const r = await b.request(UPGRADE);
      if (r.override) admitted += 1;
      else await sleep(50);
    }
    expect(admitted).toBe(2);
    expect(Date.now() - killedAt).toBeLessThan(ttl + 300);
    expect(statsHash(redis.cli).expired).toBe(2);
  });
});

describe('Redis unavailable', () => {
  it('fail-open connections are counted once Redis is back: their traffic re-registers them, and the limit holds', async () => {
    const settings = {
      redis_password_file: passwordFile,
      failure_mode: 'open' as const,
      max_connections_per_pod: 1,
      renew_interval_ms: 100,
    };
    const w = await fleet.worker(settings, { hosts: TWO_PODS });
    const warm = await w.request(UPGRADE);
    expect(warm.override).toBeDefined(); // connected and working
    await w.response(warm.sid, '500'); // and not open any more
    redis.cli('FLUSHALL');
    await redis.stop();
    const open: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const r = await w.request(UPGRADE);
        expect(r.override).toBeDefined(); // fail open
        await w.response(r.sid, '101');
        open.push(r.sid);
      }
    } finally {
      await redis.restart();
    }
    await sleep(600); // past the filter's back-off and the renew interval
    // The first renewal finds Redis empty (another epoch): every open connection of the
    // worker is re-registered at once, not one by one as each has traffic.
    await w.data(open[0], 'request');
    // Three open connections on two pods of limit 1: all counted again, so no room at all.
    expect(statsHash(redis.cli).reregistered).toBe(3);
    expect(liveLeases(redis.cli, '10.0.0.1:8080').length + liveLeases(redis.cli, '10.0.0.2:8080').length).toBe(3);
    const fourth = await w.request(UPGRADE);
    expect(fourth.reply?.headers[':status']).toBe('503');
    expect(fourth.reply?.headers['x-ws-admission']).toBe('capacity');
  });

  it('a release that fails leaves the stream\'s lease "held", so the lease log line of its end retries it', async () => {
    const w = await fleet.worker({ redis_password_file: passwordFile }, { hosts: ONE_POD });
    const ok = await openSocket(w);
    const down = await openSocket(w, UPGRADE);
    const close = Buffer.from([0x88, 0x02, 0x03, 0xe8]);
    const lease = async (sid: string) =>
      ((await w.data(sid, 'request')).metadata as Record<string, Record<string, unknown>>)['ws.admission'].lease;
    await w.data(ok.sid, 'response', close);
    expect(await lease(ok.sid)).toBe('released');
    await redis.stop();
    try {
      await w.data(down.sid, 'response', close);
      expect(await lease(down.sid)).toBe('held');
    } finally {
      await redis.restart();
    }
  });

  it('fails open: still pins a candidate (no refusal), counted per worker', async () => {
    const w = await fleet.worker({ redis_password_file: passwordFile, failure_mode: 'open' }, { hosts: ONE_POD });
    expect((await w.request(UPGRADE)).override).toBeDefined(); // connected and working
    await redis.stop();
    try {
      for (let i = 0; i < 5; i++) {
        const r = await w.request(UPGRADE);
        expect(r.reply).toBeUndefined();
        expect(r.override).toEqual({ host: ONE_POD[0][0], strict: true });
      }
    } finally {
      await redis.restart();
    }
    // Counter files are rewritten at most about once a second, on the next event.
    await sleep(1050);
    await w.request(PLAIN);
    const c = workerCounters(fleet.stateDir);
    expect(c.fail_open_total).toBe(5);
    expect(c.redis_errors_total).toBeGreaterThanOrEqual(1);
    expect(c.redis_errors_total).toBeLessThanOrEqual(2); // then the worker backs off instead of retrying per request
    const { logs } = await w.logs();
    expect(logs.some((l) => l.level === 'warn' && /redis admit failed/.test(l.msg))).toBe(true);
    // Past the back-off Redis is used again, and it is empty (restarted): the worker first
    // re-registers its six open connections (the five fail-open ones and the first), so the
    // pod (limit 2) is full and the next upgrade is refused instead of admitted as a 7th.
    const next = await w.request(UPGRADE);
    expect(next.reply?.headers['x-ws-admission']).toBe('capacity');
    expect(statsHash(redis.cli).reregistered).toBe(6);
    expect(liveLeases(redis.cli, ONE_POD[0][0])).toHaveLength(6);
  });

  it('fails closed: 503 with Retry-After, counted as redis_unavailable', async () => {
    const w = await fleet.worker({ redis_password_file: passwordFile, failure_mode: 'closed' }, { hosts: ONE_POD });
    await redis.stop();
    try {
      for (let i = 0; i < 3; i++) {
        const r = await w.request(UPGRADE);
        expect(r.reply?.headers[':status']).toBe('503');
        expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
        expect(r.reply?.headers['retry-after']).toBe('1');
      }
    } finally {
      await redis.restart();
    }
    await sleep(1050);
    await w.request(PLAIN);
    expect(workerCounters(fleet.stateDir).rejected_redis_unavailable_total).toBe(3);
  });

  it('a Redis that accepts but never answers costs at most the read timeout per attempt', async () => {
    const port = await freePort();
    const held: net.Socket[] = [];
    const srv = net.createServer((sock) => {
      held.push(sock);
    }); // accepts, never answers
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      const fl = new Fleet(port);
      const w = await fl.worker({ redis_read_timeout_ms: 300, failure_mode: 'open' }, { hosts: ONE_POD });
      const t0 = Date.now();
      const r = await w.request(UPGRADE);
      const first = Date.now() - t0;
      expect(r.override).toEqual({ host: ONE_POD[0][0], strict: true }); // failed open, still pinned
      expect(first).toBeGreaterThanOrEqual(290);
      expect(first).toBeLessThan(300 + 250); // a fresh connection is not retried
      const t1 = Date.now();
      await w.request(UPGRADE); // backing off: no Redis call at all
      expect(Date.now() - t1).toBeLessThan(200); // well under one read timeout
      await fl.closeAll();
    } finally {
      held.forEach((s) => s.destroy());
      srv.close();
    }
  });

  it('a wrong password fails per failure_mode with a clear log line', async () => {
    const bad = path.join(path.dirname(passwordFile), 'wrong');
    fs.writeFileSync(bad, 'not-the-password');
    const w = await fleet.worker({ redis_password_file: bad, failure_mode: 'closed' }, { hosts: ONE_POD });
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('503');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/AUTH failed/);
  });
});

describe('Redis restarted empty', () => {
  it('reconnects and reloads the scripts without a restart; open connections re-register within one renew interval', async () => {
    const renew = 400;
    const s = {
      redis_password_file: passwordFile,
      lease_ttl_ms: 2000,
      renew_interval_ms: renew,
      max_connections_per_pod: 1,
    };
    const w = await fleet.worker(s, { hosts: TWO_PODS });
    const a = await openSocket(w);
    const b = await openSocket(w);
    const idOf = (x: { req: { metadata?: Record<string, Record<string, unknown>> } }) =>
      x.req.metadata!['ws.admission'].connection_id as string;
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('503');

    await redis.restart(); // SIGKILL, then an empty server on the same port
    expect(redis.cli('DBSIZE')).toBe('0');
    const restartedAt = Date.now();
    let back = false;
    while (!back && Date.now() - restartedAt < renew + 1000) {
      await w.data(a.sid, 'response');
      await w.data(b.sid, 'request');
      const live = [...liveLeases(redis.cli, '10.0.0.1:8080'), ...liveLeases(redis.cli, '10.0.0.2:8080')];
      back = live.includes(idOf(a)) && live.includes(idOf(b));
      if (!back) await sleep(25);
    }
    expect(back).toBe(true);
    expect(Date.now() - restartedAt).toBeLessThanOrEqual(renew + 300);
    expect(statsHash(redis.cli).reregistered).toBe(2);
    // The counts are the truth again: both pods are full.
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('503');
    await w.closeHandshake(a.sid);
    expect((await w.request(UPGRADE)).override?.host).toBe(a.pod);
  });

  it('SCRIPT FLUSH under a pipeline (admit + inventory): both are reloaded and re-sent in order', async () => {
    const w = await fleet.worker(
      { redis_password_file: passwordFile, max_connections_per_pod: 10, connection_inventory: true },
      { hosts: ONE_POD },
    );
    expect((await w.request(UPGRADE)).override).toBeDefined();
    redis.cli('SCRIPT', 'FLUSH');
    const r = await w.request(UPGRADE);
    const id = r.metadata!['ws.admission'].connection_id as string;
    expect(redis.cli('HGET', `{ws}:conn:${id}`, 'pod')).toBe('10.0.0.1:8080');
    expect(statsHash(redis.cli).admitted).toBe(2);
    expect(liveLeases(redis.cli, '10.0.0.1:8080')).toHaveLength(2);
  });

  it('SCRIPT FLUSH is survived through the NOSCRIPT fallback', async () => {
    const w = await fleet.worker({ redis_password_file: passwordFile, max_connections_per_pod: 10 }, { hosts: ONE_POD });
    expect((await w.request(UPGRADE)).override).toBeDefined();
    redis.cli('SCRIPT', 'FLUSH');
    expect((await w.request(UPGRADE)).override).toBeDefined();
    expect(statsHash(redis.cli).admitted).toBe(2);
    const { logs } = await w.logs();
    expect(logs.filter((l) => l.level === 'warn' || l.level === 'err')).toEqual([]);
  });
});
