// lua/envoy/filter.lua (and redis_link.lua under it) when Redis fails: down, hanging,
// slow, restarted empty, wrong password; and a proxy that crashes. Several proxies and
// workers where the fault is about the fleet. The back-off follows the worker's clock,
// driven by the tests; Redis and socket timeouts keep real time, so time bounds are wide.
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { FaultProxy } from '../../tools/rig/fault-proxy';
import { loadLibrary } from '../redis/support/functions';
import { PODS, PROXY, useAdmissionRig } from '../support/admission-rig';
import { freePort } from '../../tools/rig/redis-server';
import { PLAIN, UPGRADE, Worker, admission, defaultSettings, openSocket } from './harness/worker';

const rig = useAdmissionRig();
const [P1, P2] = PODS;
const BACKOFF_MS = 500; // lua/envoy/redis_link.lua M.BACKOFF_MS

/** Counters the workers wrote under WS_STATE_DIR (lua/envoy/worker_stats.lua), summed over workers. */
function workerCounters(dir = rig.fleet.stateDir): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.counters'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const [k, v] = line.split(' ');
      if (k && /^\d+$/.test(v ?? '')) sum[k] = (sum[k] ?? 0) + Number(v);
    }
  }
  return sum;
}

/** A server that accepts connections and never answers; counts them. */
async function hangingServer(): Promise<{ port: number; connections: () => number; stop: () => Promise<void> }> {
  const held: net.Socket[] = [];
  const srv = net.createServer((s) => {
    held.push(s);
    s.on('error', () => undefined);
  });
  const port = await freePort();
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
  return {
    port,
    connections: () => held.length,
    stop: async () => {
      held.forEach((s) => s.destroy());
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const r = await f();
  return [r, Date.now() - t0];
}

describe('Redis down', () => {
  it('GIVEN failure_mode open THEN upgrades are routed without a decision, recorded unregistered, counted; one Redis attempt per back-off', async () => {
    const w = await rig.worker({ failure_mode: 'open' });
    await w.clock({ at: Date.now() });
    expect((await w.request(UPGRADE)).override).toBeDefined(); // connected and working
    await rig.stopRedis();
    for (let i = 0; i < 5; i++) {
      const r = await w.request(UPGRADE);
      expect(r.reply).toBeUndefined();
      expect(r.override).toBeUndefined(); // Envoy's load balancer chooses
      expect(admission(r)).toEqual({ connection_id: expect.stringMatching(/^envoy-test-0\|/), kind: 'h1', registered: '0', lease: 'held' });
      // The answer calls nothing: there is no lease to give back.
      expect(admission(await w.response(r.sid, i % 2 ? '101' : '403')).lease).toBe('held');
    }
    await w.clock({ advance: BACKOFF_MS + 1 });
    await w.request(UPGRADE); // the back-off is over: one more attempt
    await w.clock({ advance: 1001 });
    await w.request(PLAIN);
    expect(workerCounters()).toMatchObject({ fail_open_total: 6, redis_errors_total: 2 });
    // Logged at most once a second per worker (its clock moved 0.5 s between the failures).
    const { logs } = await w.logs();
    expect(logs.filter((l) => l.level === 'warn')).toEqual([
      { level: 'warn', msg: expect.stringMatching(/^ws-admission: redis admit failed: connect 127\.0\.0\.1:\d+: connection refused$/) },
    ]);
  });

  it('GIVEN failure_mode closed THEN 503 redis_unavailable with Retry-After 1, counted at once (no flush wait)', async () => {
    const w = await rig.worker({ failure_mode: 'closed' });
    await rig.stopRedis();
    for (let i = 0; i < 3; i++) {
      const r = await w.request(UPGRADE);
      expect(r.reply?.headers).toMatchObject({ ':status': '503', 'x-ws-admission': 'redis_unavailable', 'retry-after': '1' });
      expect(admission(r)).toEqual({});
    }
    expect(workerCounters()).toMatchObject({ rejected_redis_unavailable_total: 3, redis_errors_total: 1 });
  });

  it('WHEN Redis is back (library, epoch, hosts as the loader and agent put them) THEN the first upgrade after the back-off is decided again', async () => {
    const w = await rig.worker({ failure_mode: 'closed' });
    await w.clock({ at: Date.now() });
    await rig.stopRedis();
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    await rig.startRedis();
    await rig.ready();
    await rig.f.reach(PROXY, PODS);
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('redis_unavailable'); // backing off
    await w.clock({ advance: BACKOFF_MS + 1 });
    expect((await w.request(UPGRADE)).override?.host).toBe(P1);
  });
});

describe('Redis hanging or slow: each worker stalls at most one read timeout per back-off', () => {
  it('GIVEN a server that accepts and never answers, 3 proxies x 2 workers THEN each worker pays one read timeout, then none while backing off', async () => {
    const hang = await hangingServer();
    try {
      const rt = 300;
      const ws: Worker[] = [];
      for (const proxy of ['envoy-a', 'envoy-b', 'envoy-c']) {
        for (let i = 0; i < 2; i++)
          ws.push(await rig.fleet.worker({ redis_port: hang.port, redis_read_timeout_ms: rt }, { podName: proxy }));
      }
      await Promise.all(ws.map((w) => w.clock({ at: Date.now() })));
      // All at once, as in production: each worker stalls on its own.
      const [first, took] = await timed(() => Promise.all(ws.map((w) => timed(() => w.request(UPGRADE)))));
      for (const [r, ms] of first) {
        expect(r.override).toBeUndefined();
        expect(admission(r).registered).toBe('0'); // failed open
        expect(ms).toBeGreaterThanOrEqual(rt - 20);
        expect(ms).toBeLessThan(rt + 1500); // one read timeout (AUTH's), no retry on a fresh connection
      }
      expect(took).toBeLessThan(2 * rt + 2000); // in parallel, not one after another
      expect(hang.connections()).toBe(ws.length);
      // Backing off: answered at once, no new connection.
      const [, fast] = await timed(() => Promise.all(ws.map((w) => w.request(UPGRADE))));
      expect(fast).toBeLessThan(rt);
      expect(hang.connections()).toBe(ws.length);
      // After the back-off: one more attempt each, again bounded.
      await Promise.all(ws.map((w) => w.clock({ advance: BACKOFF_MS + 1 })));
      const [, again] = await timed(() => Promise.all(ws.map((w) => w.request(UPGRADE))));
      expect(again).toBeLessThan(2 * rt + 2000);
      expect(hang.connections()).toBe(2 * ws.length);
    } finally {
      await hang.stop();
    }
  });

  it('GIVEN replies later than the read timeout THEN the admission is not sent twice; its lease (a phantom) stays for the agent or its TTL', async () => {
    const port = await freePort();
    const proxy = await FaultProxy.start('127.0.0.1', port, '127.0.0.1', rig.redis.port);
    try {
      await rig.f.reach(PROXY, PODS);
      const w = await rig.fleet.worker({ redis_port: port, redis_read_timeout_ms: 300, failure_mode: 'closed' }, { podName: PROXY });
      expect((await w.request(UPGRADE)).override).toBeDefined(); // connected through the proxy
      const calls = await rig.calls('fcall');
      proxy.set({ silent: true }); // Redis runs the call; its reply does not come back in time
      const r = await w.request(UPGRADE);
      expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
      expect(await rig.calls('fcall')).toBe(calls + 1); // run once, never resent
      expect(await rig.leases()).toHaveLength(2); // the first, and the phantom of the timed-out one
      const { logs } = await w.logs();
      expect(logs.map((l) => l.msg).join('\n')).toMatch(/redis admit failed: receive: timeout/);
    } finally {
      await proxy.stop();
    }
  });
});

describe('Redis restarted empty (no persistence)', () => {
  it('GIVEN the library not loaded yet THEN the call fails with a clear log line (per failure_mode), the worker reconnects by itself', async () => {
    const w = await rig.worker({ failure_mode: 'open' });
    await w.clock({ at: Date.now() });
    expect((await w.request(UPGRADE)).override).toBeDefined();
    await rig.restartRedis();
    const r = await w.request(UPGRADE);
    expect(r.override).toBeUndefined();
    expect(admission(r).registered).toBe('0');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg)).toContainEqual(
      expect.stringMatching(
        /^ws-admission: redis admit failed: ERR Function not found \(the ws_admission library is not loaded in this Redis: an administrator loads it/,
      ),
    );
    // The loader and the agent do their part: the same connection decides again.
    await rig.ready();
    await rig.f.reach(PROXY, PODS);
    await w.clock({ advance: BACKOFF_MS + 1 });
    expect((await w.request(UPGRADE)).override?.host).toBe(P1);
  });

  it('WHEN the library is back but no epoch THEN every worker of every proxy waits (503 recovering, even failing open) until all agents put their open streams back; then the counts are exact', async () => {
    const s = { failure_mode: 'open' as const, max_connections_per_pod: 1 };
    const a = [await rig.worker(s, { proxy: 'envoy-a' }), await rig.worker(s, { proxy: 'envoy-a' })];
    const b = [await rig.worker(s, { proxy: 'envoy-b' }), await rig.worker(s, { proxy: 'envoy-b' })];
    const all = [...a, ...b];
    await Promise.all(all.map((w) => w.clock({ at: Date.now() })));
    const open = [await openSocket(a[0]), await openSocket(b[1])]; // one stream on each pod, one per proxy
    expect(open.map((o) => o.pod)).toEqual([P1, P2]);
    await rig.restartRedis();
    await loadLibrary(rig.admin); // the loader; no agent has begun a recovery yet
    const refusals = async () => {
      await Promise.all(all.map((w) => w.clock({ advance: BACKOFF_MS + 1 })));
      return Promise.all(all.map(async (w) => (await w.request(UPGRADE)).reply?.headers['x-ws-admission']));
    };
    expect(await refusals()).toEqual(['recovering', 'recovering', 'recovering', 'recovering']);
    // Proxy a's agent: a new epoch (it knew b alive), its hosts, its open stream (R), done.
    const putBack = async (proxy: string, o: (typeof open)[number]) => {
      await rig.f.reach(proxy, PODS);
      expect(await rig.f.leases(30000, 0, [['R', admission(o.req).connection_id!, o.pod!]])).toEqual([0, 1, 0, 0]);
      await rig.f.recoverDone(proxy);
    };
    await rig.f.recoverBegin('envoy-a', 'c0ffeec0ffeec0ff', ['envoy-b']);
    await putBack('envoy-a', open[0]);
    // b has not put its stream back: P2's count would be wrong, so nothing is decided yet.
    expect(await refusals()).toEqual(['recovering', 'recovering', 'recovering', 'recovering']);
    await rig.f.recoverBegin('envoy-b', 'c0ffeec0ffeec0ff');
    await putBack('envoy-b', open[1]);
    // Everyone known is back; an agent nobody knew has until 3 s after the loss to ask to
    // be waited for (RECOVERY_MIN_MS): still recovering until then, no longer.
    const left = Number(await rig.admin.hget(rig.f.keys.stats, 'recovering_until')) - (await rig.f.nowMs());
    expect(left).toBeLessThanOrEqual(3000);
    await new Promise((r) => setTimeout(r, Math.max(0, left) + 300)); // (the workers' 250 ms cache too)
    // Both pods are full again: refused on exact counts, not admitted on lost ones.
    expect(await refusals()).toEqual(['capacity', 'capacity', 'capacity', 'capacity']);
    expect(await rig.perPod()).toEqual({ [P1]: 1, [P2]: 1 });
  });
});

describe('wrong credentials', () => {
  it('GIVEN a wrong password THEN AUTH fails, per failure_mode, with a clear log line', async () => {
    const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-secret-')), 'password');
    fs.writeFileSync(bad, 'not-the-password\n');
    const w = await rig.worker({ redis_password_file: bad, failure_mode: 'closed' });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/redis admit failed: AUTH failed: WRONGPASS/);
  });

  it("GIVEN no user (the `default` user is off in the stack's ACL) THEN the same", async () => {
    const w = await rig.worker({ redis_username: '', failure_mode: 'closed' });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/AUTH failed: WRONGPASS/);
  });
});

describe('a proxy that crashes', () => {
  it('GIVEN proxy a holding every slot WHEN it is killed (no drain, no agent) THEN its leases expire within the TTL and proxy b gets them', async () => {
    const ttl = 1000;
    const s = { lease_ttl_ms: ttl, renew_interval_ms: 300, max_connections_per_pod: 1 };
    const a = await rig.worker(s, { proxy: 'envoy-a' });
    const b = await rig.worker(s, { proxy: 'envoy-b' });
    await openSocket(a);
    await openSocket(a);
    expect((await b.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    await a.kill('SIGKILL');
    const killedAt = Date.now();
    let admitted = 0;
    while (admitted < 2 && Date.now() - killedAt < ttl + 3000) {
      if ((await b.request(UPGRADE)).override) admitted += 1;
      else await new Promise((r) => setTimeout(r, 50));
    }
    expect(admitted).toBe(2);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(ttl - 200); // not before the TTL (Redis time vs ours)
    expect(await rig.stats()).toMatchObject({ expired: 2 });
  });
});

describe('a worker whose settings are refused', () => {
  it('never connects to Redis', async () => {
    const hang = await hangingServer();
    try {
      const s = { ...defaultSettings(hang.port), rate_limit: -1 };
      const w = await rig.fleet.worker({}, { settings: s as unknown as Record<string, unknown> });
      expect((await w.request(UPGRADE)).state).toBe('done');
      expect(hang.connections()).toBe(0);
    } finally {
      await hang.stop();
    }
  });
});
