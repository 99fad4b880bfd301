import Redis from 'ioredis';
import { startRedis, RedisServer } from '../support/redis-server';
import { AdmitRequest, lease, Scripts, viewId } from './support/scripts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: RedisServer;
let redis: Redis;
let s: Scripts;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis({ host: server.host, port: server.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await redis.connect();
  s = await Scripts.load(redis, 'ws');
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall();
});

const base: AdmitRequest = {
  rateLimit: 10,
  windowMs: 60000,
  maxPerPod: 2,
  ttlMs: 30000,
  id: 'x',
  pods: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
};
const [P1, P2, P3] = base.pods;
const admit = (over: Partial<AdmitRequest>) => s.admit({ ...base, ...over });
/** The stats hash's counters (fields with a ':' are not counters: the epoch, the leases per proxy). */
const stats = async () => {
  const h = await redis.hgetall(s.keys.stats);
  return Object.fromEntries(
    Object.entries(h)
      .filter(([k]) => !k.includes(':'))
      .map(([k, v]) => [k, Number(v)]),
  );
};
/** Everything the scripts keep but the stats hash, to show that a refusal changed nothing. */
const state = async () => {
  const out: Record<string, unknown> = {};
  for (const k of (await redis.keys('*')).filter((k) => k !== s.keys.stats).sort()) {
    out[k] = await redis.zrange(k, 0, -1, 'WITHSCORES');
  }
  return out;
};
/**
 * The invariants every script keeps: `load`'s count of a pod = its members in `leases`, and
 * the stats field `leases:<proxy>` = the leases whose connection id starts with `<proxy>|`
 * (absent at 0).
 */
const expectCountsConsistent = async () => {
  const { leases, load, byProxy, proxyFields } = await s.counts();
  expect(load).toEqual(leases);
  expect(proxyFields).toEqual(byProxy);
};

describe('admit.lua replies', () => {
  test("ADMITTED: lease, window entry, the pod's count, counter, reply fields", async () => {
    const before = await s.nowMs();
    const r = await admit({ id: 'envoy-a|0|1|ab' });
    const after = await s.nowMs();
    expect(r).toEqual({ status: 'ADMITTED', pod: P1, activeOnPod: 1, retryAfterMs: 0, rateRemaining: 9 });
    const expiry = Number(await redis.zscore(s.keys.leases, lease('envoy-a|0|1|ab', P1)));
    expect(expiry).toBeGreaterThanOrEqual(before + 30000);
    expect(expiry).toBeLessThanOrEqual(after + 30000);
    const admittedAt = Number(await redis.zscore(s.keys.rate, 'envoy-a|0|1|ab'));
    expect(admittedAt).toBeGreaterThanOrEqual(before);
    expect(admittedAt).toBeLessThanOrEqual(after);
    expect(await redis.zrange(s.keys.load, 0, -1, 'WITHSCORES')).toEqual([P2, '0', P3, '0', P1, '1']);
    expect(await stats()).toEqual({ admitted: 1 });
    // No key has a TTL: the window is trimmed on each admission, leases leave by expiry.
    for (const k of [s.keys.rate, s.keys.leases, s.keys.load, s.keys.views, s.keys.hosts]) expect(await redis.pttl(k)).toBe(-1);
  });

  test('rate limit 0 disables it: rateRemaining -1, no window key', async () => {
    const r = await admit({ rateLimit: 0, id: 'c1' });
    expect(r).toEqual({ status: 'ADMITTED', pod: P1, activeOnPod: 1, retryAfterMs: 0, rateRemaining: -1 });
    expect(await redis.exists(s.keys.rate)).toBe(0);
  });

  test('the least-loaded pod wins; ties go to the lowest pod id, whatever the list order', async () => {
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await admit({ id: `c${i}`, maxPerPod: 3 })).pod);
    expect(order).toEqual([P1, P2, P3, P1]); // P1:2 P2:1 P3:1
    const r = await admit({ id: 'c4', maxPerPod: 3, pods: [P3, P1, P2] });
    expect(r).toMatchObject({ pod: P2, activeOnPod: 2 }); // the same view: the order does not matter
    expect((await admit({ id: 'c5', maxPerPod: 3 })).pod).toBe(P3);
    await expectCountsConsistent();
  });

  test('a pod at the limit is never chosen', async () => {
    await admit({ id: 'a', pods: [P1] });
    await admit({ id: 'b', pods: [P1] });
    expect(await admit({ id: 'c', pods: [P1, P2] })).toMatchObject({ status: 'ADMITTED', pod: P2, activeOnPod: 1 });
  });

  test('FULL: every pod of the view at the limit; retryAfterMs = the earliest lease expiry; nothing consumed', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20000 });
    await admit({ id: 'b', pods: [P1], ttlMs: 30000 });
    await admit({ id: 'c', pods: [P2], ttlMs: 9000 });
    await admit({ id: 'd', pods: [P2], ttlMs: 40000 });
    await s.registerView([P1, P2]);
    const before = await state();
    const t0 = await s.nowMs();
    const r = await admit({ id: 'e', pods: [P1, P2] });
    expect(r.status).toBe('FULL');
    expect(r).toMatchObject({ pod: '', activeOnPod: 0, rateRemaining: 6 }); // 4 of 10 used, the refusal took none
    expect(r.retryAfterMs).toBeGreaterThan(8500);
    expect(r.retryAfterMs).toBeLessThanOrEqual(9000);
    expect(Number(await redis.zscore(s.keys.leases, lease('c', P2))) - t0).toBeGreaterThanOrEqual(r.retryAfterMs);
    expect(await state()).toEqual(before);
    expect(await stats()).toEqual({ admitted: 4, rejected_capacity: 1 });
  });

  test('FULL for an empty view: retryAfterMs 0 when no lease is held', async () => {
    expect(await admit({ pods: [] })).toEqual({ status: 'FULL', pod: '', activeOnPod: 0, retryAfterMs: 0, rateRemaining: 10 });
    expect(await stats()).toEqual({ rejected_capacity: 1 });
  });

  test('RATE_LIMITED: retryAfterMs = time until the oldest entry leaves the window; nothing consumed', async () => {
    const t0 = await s.nowMs();
    await admit({ id: 'a', rateLimit: 2, windowMs: 5000 });
    await sleep(30);
    await admit({ id: 'b', rateLimit: 2, windowMs: 5000 });
    const before = await state();
    const r = await admit({ id: 'c', rateLimit: 2, windowMs: 5000 });
    const t1 = await s.nowMs();
    expect(r).toMatchObject({ status: 'RATE_LIMITED', pod: '', activeOnPod: 0, rateRemaining: 0 });
    const oldest = Number(await redis.zscore(s.keys.rate, 'a'));
    expect(oldest).toBeGreaterThanOrEqual(t0);
    expect(r.retryAfterMs).toBeGreaterThanOrEqual(oldest + 5000 - t1);
    expect(r.retryAfterMs).toBeLessThanOrEqual(5000);
    expect(await state()).toEqual(before);
    expect(await stats()).toEqual({ admitted: 2, rejected_rate_limited: 1 });
  });

  test('the rate limit is checked before the view and the pods', async () => {
    await admit({ id: 'a', rateLimit: 1, maxPerPod: 1, pods: [P1] });
    // Even an unregistered view is refused by the rate limit first (no HOSTS round trip).
    expect((await s.admitOnce({ ...base, id: 'b', rateLimit: 1, pods: [P2, P3] })).status).toBe('RATE_LIMITED');
  });

  test('after the limit is lowered, the wait is for the entry that brings the count under it', async () => {
    for (const id of ['a', 'b', 'c', 'd']) {
      await admit({ id, rateLimit: 4, windowMs: 10000, maxPerPod: 9 });
      await sleep(5);
    }
    const r = await admit({ id: 'e', rateLimit: 2, windowMs: 10000, maxPerPod: 9 });
    const now = await s.nowMs();
    const third = Number(await redis.zscore(s.keys.rate, 'c')); // a, b, c must leave
    expect(r.status).toBe('RATE_LIMITED');
    expect(r.retryAfterMs).toBeGreaterThanOrEqual(third + 10000 - now);
    expect(r.retryAfterMs).toBeLessThanOrEqual(third + 10000 - now + 50);
  });
});

describe('host views (register_view.lua)', () => {
  test('an unregistered view: HOSTS, nothing written; registered, the same call is decided', async () => {
    const r = await s.admitOnce({ ...base, id: 'a' });
    expect(r).toEqual({ status: 'HOSTS', pod: '', activeOnPod: 0, retryAfterMs: 0, rateRemaining: 10 });
    expect(await redis.dbsize()).toBe(0);
    expect(await s.registerView(base.pods)).toBe(3);
    expect(await redis.zrange(s.keys.hosts, 0, -1)).toEqual(base.pods.map((p) => `${viewId(base.pods)} ${p}`));
    expect((await s.admitOnce({ ...base, id: 'a' })).status).toBe('ADMITTED');
  });

  test('registering keeps the counts of pods already known (a new list, a re-registration)', async () => {
    await admit({ id: 'a', pods: [P1] });
    await s.registerView([P1, P2]);
    await s.registerView([P1, P2]);
    expect(await redis.zscore(s.keys.load, P1)).toBe('1');
    expect(await admit({ id: 'b', pods: [P1, P2] })).toMatchObject({ pod: P2, activeOnPod: 1 });
  });

  test('a pod only another view holds is passed over, even when it is the least loaded', async () => {
    await admit({ id: 'a', pods: [P2, P3] });
    await admit({ id: 'b', pods: [P2, P3] });
    await s.registerView([P1, P2, P3]); // another proxy also sees P1 (empty)
    // This view (P2, P3) never gets P1.
    expect(await admit({ id: 'c', pods: [P2, P3] })).toMatchObject({ pod: P2, activeOnPod: 2 });
    expect(await admit({ id: 'd', pods: [P2, P3] })).toMatchObject({ pod: P3, activeOnPod: 2 });
    expect((await admit({ id: 'e', pods: [P2, P3] })).status).toBe('FULL');
    // P1 is still in `load` for the other view, which takes it.
    expect(await admit({ id: 'f', pods: base.pods })).toMatchObject({ pod: P1 });
  });

  test('a pod no live view holds and no lease holds leaves `load` on the way; one with leases stays counted', async () => {
    const P0 = '10.0.0.0:8080'; // sorts before P1 and P2
    await admit({ id: 'a', pods: [P1, P2] }); // P1: 1
    await s.registerView([P0, P3]); // a view with P0 and P3 ...
    await redis.zadd(s.keys.views, '1', viewId([P0, P3])); // ... unused for ages: dead
    // The view [P2] holds neither P0 (0 leases, only a dead view: goes on the way to P2), nor P1
    // (1 lease: stays), nor P3 (after P2, not looked at).
    expect(await admit({ id: 'b', pods: [P2] })).toMatchObject({ pod: P2 });
    expect(await redis.zrange(s.keys.load, 0, -1, 'WITHSCORES')).toEqual([P3, '0', P1, '1', P2, '1']);
    await expectCountsConsistent();
  });

  test("a view unused for 10 minutes is dead: HOSTS again; register_view deletes dead views' hosts", async () => {
    await admit({ id: 'a', pods: [P1] });
    const old = viewId([P1]);
    await redis.zadd(s.keys.views, String((await s.nowMs()) - 600001), old);
    expect((await s.admitOnce({ ...base, id: 'b', pods: [P1] })).status).toBe('HOSTS');
    await s.registerView([P2]);
    expect(await redis.zrange(s.keys.hosts, 0, -1)).toEqual([`${viewId([P2])} ${P2}`]);
    expect(await redis.zrange(s.keys.views, 0, -1)).toEqual([viewId([P2])]);
    // The lease on P1 still counts.
    expect(await redis.zscore(s.keys.load, P1)).toBe('1');
  });

  test("a live view's last use is written at most once a minute (not on every call)", async () => {
    await admit({ id: 'a' });
    const id = viewId(base.pods);
    const t = String((await s.nowMs()) - 59000);
    await redis.zadd(s.keys.views, t, id);
    await admit({ id: 'b' });
    expect(await redis.zscore(s.keys.views, id)).toBe(t);
    await redis.zadd(s.keys.views, String((await s.nowMs()) - 61000), id);
    await admit({ id: 'c' });
    expect(Number(await redis.zscore(s.keys.views, id))).toBeGreaterThan((await s.nowMs()) - 1000);
  });

  test('register_view takes lists of any size in one call (batched writes)', async () => {
    const many = Array.from({ length: 2500 }, (_, i) => `10.1.${i >> 8}.${i & 255}:80`);
    expect(await s.registerView(many)).toBe(2500);
    expect(await redis.zcard(s.keys.load)).toBe(2500);
    expect(await redis.zcard(s.keys.hosts)).toBe(2500);
  });
});

describe('time edges (short windows and TTLs, real waiting)', () => {
  test('window edge: refused until exactly retryAfterMs has passed, then admitted', async () => {
    await admit({ id: 'a', rateLimit: 1, windowMs: 150 });
    const r = await admit({ id: 'b', rateLimit: 1, windowMs: 150 });
    expect(r.status).toBe('RATE_LIMITED');
    await sleep(r.retryAfterMs + 5);
    expect((await admit({ id: 'c', rateLimit: 1, windowMs: 150 })).status).toBe('ADMITTED');
  });

  test("an expired lease gives its slot back: removed, the pod's count lowered, counted as expired", async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1, ttlMs: 40 });
    expect((await admit({ id: 'b', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await sleep(60);
    expect(await admit({ id: 'c', pods: [P1], maxPerPod: 1 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 1 });
    expect(await redis.zrange(s.keys.leases, 0, -1)).toEqual([lease('c', P1)]);
    expect(await stats()).toMatchObject({ expired: 1, admitted: 2 });
    await expectCountsConsistent();
  });

  test('a refusal is only made on exact counts: far more expired leases than one batch are all given back first', async () => {
    // 150 pods of another view, then 150 of this one, full with 1 lease each, all expired (a
    // proxy that died): the first batch of 64 frees none of this view's pods.
    const other = Array.from({ length: 150 }, (_, i) => `10.2.0.${i}:80`);
    const mine = Array.from({ length: 150 }, (_, i) => `10.2.1.${i}:80`);
    const t0 = Date.now();
    for (const pods of [other, mine]) {
      for (let i = 0; i < pods.length; i++) await admit({ id: `dead|0|${pods[i]}|0`, pods, maxPerPod: 1, ttlMs: 1500, rateLimit: 0 });
    }
    expect((await admit({ id: 'y', pods: mine, maxPerPod: 1, rateLimit: 0 })).status).toBe('FULL');
    expect(Date.now() - t0).toBeLessThan(1500); // (else the leases expired before the FULL above)
    await sleep(1600 - (Date.now() - t0));
    expect(await admit({ id: 'z', pods: mine, maxPerPod: 1, rateLimit: 0 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 1 });
    expect(await stats()).toMatchObject({ expired: 300 });
    await expectCountsConsistent();
  });

  test('while admitting, at most 64 expired leases are given back per call (bounded work), the rest later', async () => {
    const pods = Array.from({ length: 100 }, (_, i) => `10.3.0.${i}:80`);
    await s.registerView(pods);
    for (let i = 0; i < 100; i++) await admit({ id: `dead|0|${i}|0`, pods, maxPerPod: 5, ttlMs: 30, rateLimit: 0 });
    await sleep(50);
    await admit({ id: 'z1', pods, maxPerPod: 5, rateLimit: 0 });
    expect(await stats()).toMatchObject({ expired: 64 });
    await admit({ id: 'z2', pods, maxPerPod: 5, rateLimit: 0 });
    expect(await stats()).toMatchObject({ expired: 100 });
    await expectCountsConsistent();
  });

  test('large per-pod limits are counted exactly', async () => {
    const big = { pods: [P1], rateLimit: 0 };
    for (let i = 0; i < 12; i++) expect((await admit({ ...big, id: `l${i}`, maxPerPod: 12 })).status).toBe('ADMITTED');
    expect((await admit({ ...big, id: 'l12', maxPerPod: 12 })).status).toBe('FULL');
    expect(await admit({ ...big, id: 'l13', maxPerPod: 13 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 13 });
  });
});

describe('renew.lua', () => {
  test('renews a live lease: new expiry from Redis TIME', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 1000 });
    const before = await s.nowMs();
    expect(await s.renew('a', P1, 50000)).toBe(1);
    const expiry = Number(await redis.zscore(s.keys.leases, lease('a', P1)));
    expect(expiry).toBeGreaterThanOrEqual(before + 50000);
    expect(expiry).toBeLessThanOrEqual((await s.nowMs()) + 50000);
  });

  test('never shortens a lease (a lowered TTL applies from its current expiry on)', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 50000 });
    const expiry = await redis.zscore(s.keys.leases, lease('a', P1));
    expect(await s.renew('a', P1, 1000)).toBe(1);
    expect(await redis.zscore(s.keys.leases, lease('a', P1))).toBe(expiry);
  });

  test('returns 0 for an unknown lease, another pod, and after expiry (and does not resurrect it)', async () => {
    expect(await s.renew('nope', P1, 1000)).toBe(0);
    await admit({ id: 'a', pods: [P1], ttlMs: 30 });
    expect(await s.renew('a', P2, 1000)).toBe(0);
    await sleep(50);
    expect(await s.renew('a', P1, 1000)).toBe(0);
    expect(Number(await redis.zscore(s.keys.leases, lease('a', P1)))).toBeLessThanOrEqual(await s.nowMs());
  });

  test('a TTL of 1e14 ms and more is written as digits (no exponent form Redis would refuse half-way)', async () => {
    await admit({ id: 'a', pods: [P1] });
    expect(await s.renew('a', P1, 100000000000000)).toBe(1);
    expect(await redis.zscore(s.keys.leases, lease('a', P1))).toMatch(/^\d{15}$/);
  });
});

describe('release.lua', () => {
  test("1 then 0; counts only real removals; the pod's count follows", async () => {
    await admit({ id: 'a', pods: [P1] });
    expect(await s.release('a', P1)).toBe(1);
    expect(await s.release('a', P1)).toBe(0);
    expect(await s.release('a', P2)).toBe(0); // the lease of another pod: not this one
    expect(await stats()).toEqual({ admitted: 1, released: 1 });
    expect(await redis.zscore(s.keys.load, P1)).toBe('0');
    await expectCountsConsistent();
  });

  test('a released slot is free again at once', async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1 });
    expect((await admit({ id: 'b', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await s.release('a', P1);
    expect((await admit({ id: 'c', pods: [P1], maxPerPod: 1 })).status).toBe('ADMITTED');
  });

  test('an expired lease not yet given back counts as released, once', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20 });
    await sleep(40);
    expect(await s.release('a', P1)).toBe(1);
    await admit({ id: 'b', pods: [P1] });
    expect(await stats()).toMatchObject({ released: 1 });
    expect((await stats()).expired).toBeUndefined();
    await expectCountsConsistent();
  });
});

describe('reregister.lua', () => {
  test('after Redis lost its state: renew 0, reregister puts the lease and the count back', async () => {
    await admit({ id: 'a', pods: [P1] });
    await redis.flushall();
    expect(await s.renew('a', P1, 30000)).toBe(0);
    expect(await s.reregister('a', P1, 30000)).toBe(1);
    expect(await s.renew('a', P1, 30000)).toBe(1);
    expect(await stats()).toEqual({ reregistered: 1 });
    await expectCountsConsistent();
  });

  test('ignores the per-pod limit; new admissions wait until the count fits', async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1 });
    expect(await s.reregister('b', P1, 30000)).toBe(2);
    expect((await admit({ id: 'c', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await s.release('a', P1);
    expect((await admit({ id: 'd', pods: [P1], maxPerPod: 1 })).status).toBe('FULL'); // 1 left, limit 1
    await s.release('b', P1);
    expect((await admit({ id: 'e', pods: [P1], maxPerPod: 1 })).status).toBe('ADMITTED');
  });

  test('an expired lease not yet given back is renewed in place, not counted twice', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20 });
    await sleep(40);
    expect(await s.renew('a', P1, 30000)).toBe(0);
    expect(await s.reregister('a', P1, 30000)).toBe(1);
    expect(Number(await redis.zscore(s.keys.leases, lease('a', P1)))).toBeGreaterThan(await s.nowMs());
    await expectCountsConsistent();
  });
});

describe('release_proxy.lua', () => {
  test('removes every lease of one proxy (exact prefix), none of the others; counts follow', async () => {
    await admit({ id: 'ab|0|1|0', maxPerPod: 9 });
    await admit({ id: 'a|0|1|0', maxPerPod: 9 });
    await admit({ id: 'a|0|2|0', maxPerPod: 9 });
    await admit({ id: 'b|0|1|0', maxPerPod: 9 });
    expect(await s.releaseProxy('a')).toEqual({ removed: 2, steps: 1 });
    expect((await redis.zrange(s.keys.leases, 0, -1)).map((m) => m.split(' ')[0]).sort()).toEqual(['ab|0|1|0', 'b|0|1|0']);
    expect(await stats()).toMatchObject({ released: 2 });
    await expectCountsConsistent();
  });

  test('with connection ids: only those', async () => {
    for (const id of ['a|0|1|0', 'a|0|2|0', 'a|0|3|0']) await admit({ id, maxPerPod: 9 });
    expect((await s.releaseProxy('a', ['a|0|2|0', 'a|0|9|0'])).removed).toBe(1);
    expect((await redis.zrange(s.keys.leases, 0, -1)).map((m) => m.split(' ')[0]).sort()).toEqual(['a|0|1|0', 'a|0|3|0']);
  });

  test('a scan in steps over many leases finds them all', async () => {
    const pods = Array.from({ length: 50 }, (_, i) => `10.4.0.${i}:80`);
    for (let i = 0; i < 3000; i++) await admit({ id: `${i % 3 ? 'p' : 'q'}|0|${i}|0`, pods, maxPerPod: 100, rateLimit: 0 });
    const r = await s.releaseProxy('p');
    expect(r.removed).toBe(2000);
    expect(r.steps).toBeGreaterThan(1);
    expect(await redis.zcard(s.keys.leases)).toBe(1000);
    await expectCountsConsistent();
  });
});

describe('snapshot.lua (the metrics view, one call)', () => {
  test('per-pod and per-proxy counts, stats, window usage; gives back expired leases', async () => {
    await admit({ id: 'envoy-a|0|1|0', maxPerPod: 9 });
    await admit({ id: 'envoy-a|0|2|0', maxPerPod: 9 });
    await admit({ id: 'envoy-b|0|1|0', maxPerPod: 9 });
    await admit({ id: 'envoy-b|0|2|0', maxPerPod: 9, ttlMs: 20 });
    await sleep(40);
    const snap = await s.snapshot(60000);
    expect(snap.windowUsed).toBe(4);
    expect(snap.pods).toEqual({ [P1]: 1, [P2]: 1, [P3]: 1 });
    expect(snap.proxies).toEqual({ 'envoy-a': 2, 'envoy-b': 1 });
    expect(snap.stats).toEqual({ admitted: 4, expired: 1 });
    await expectCountsConsistent();
  });

  test('window usage only counts the last window; an empty deployment snapshots empty; no non-counter field', async () => {
    expect(await s.snapshot(60000)).toMatchObject({ windowUsed: 0, stats: {}, pods: {}, proxies: {} });
    await admit({ id: 'a', rateLimit: 5, windowMs: 30 });
    await redis.hset(s.keys.stats, 'epoch:id', 'e1');
    await sleep(50);
    const snap = await s.snapshot(30);
    expect(snap.windowUsed).toBe(0);
    expect(Object.keys(snap.stats)).toEqual(['admitted']);
  });
});

describe('the counts stay exact under any sequence of calls', () => {
  test('300 random admits, releases, renewals, re-registrations and expiries', async () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const pods = Array.from({ length: 6 }, (_, i) => `10.5.0.${i}:80`);
    const held: { id: string; pod: string }[] = [];
    for (let i = 0; i < 300; i++) {
      const op = rand(5);
      if (op <= 1) {
        const r = await admit({
          id: `r|0|${i}|0`,
          pods: pods.slice(0, 3 + rand(4)),
          maxPerPod: 3,
          ttlMs: rand(3) === 0 ? 15 : 30000,
          rateLimit: 0,
        });
        if (r.status === 'ADMITTED') held.push({ id: `r|0|${i}|0`, pod: r.pod });
        else expect(r.status).toBe('FULL');
      } else if (op === 2 && held.length) {
        const [h] = held.splice(rand(held.length), 1);
        await s.release(h.id, h.pod);
      } else if (op === 3 && held.length) {
        const h = held[rand(held.length)];
        if ((await s.renew(h.id, h.pod, 30000)) === 0) await s.reregister(h.id, h.pod, 30000);
      } else {
        await sleep(rand(20));
      }
      if (i % 25 === 0) await expectCountsConsistent();
    }
    await expectCountsConsistent();
    // Never more than the limit on a pod from admissions (re-registration can exceed it only
    // for leases that were given back while their connection stayed open).
    const live = (await s.snapshot(60000)).pods;
    for (const c of Object.values(live)) expect(c).toBeLessThanOrEqual(4);
  });
});

describe('bad input is refused with a clear error', () => {
  const k = () => s.keys;
  const KEYS = () => [k().rate, k().stats, k().leases, k().load, k().views, k().hosts];
  const good = ['10', '60000', '2', '30000', 'id', '0123456789abcdef'];
  const admitRaw = (args: string[]) => s.raw('admit', KEYS(), args);
  test.each([
    [['x', '60000', '2', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[1] rate limit must be an integer >= 0, got 'x'"],
    [['-1', '60000', '2', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[1] rate limit must be an integer >= 0, got '-1'"],
    [['inf', '60000', '2', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[1] rate limit must be an integer >= 0, got 'inf'"],
    [['', '60000', '2', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[1] rate limit must be an integer >= 0, got ''"],
    [['10', '0', '2', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[2] window ms must be an integer >= 1, got '0'"],
    [['10', '60000', '0', '30000', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[3] max connections per pod must be an integer >= 1, got '0'"],
    [['10', '60000', '2', '1.5', 'id', 'aaaaaaaaaaaaaaaa'], "ARGV[4] lease TTL ms must be an integer >= 1, got '1.5'"],
    [['10', '60000', '2', '30000', '', 'aaaaaaaaaaaaaaaa'], "ARGV[5] connection id must be non-empty without spaces, got ''"],
    [['10', '60000', '2', '30000', 'a b', 'aaaaaaaaaaaaaaaa'], "ARGV[5] connection id must be non-empty without spaces, got 'a b'"],
    [['10', '60000', '2', '30000', 'id', 'nothex'], "ARGV[6] host view id must be 16 hex digits, got 'nothex'"],
    [['10', '60000', '2', '30000', 'id'], 'expected 6 KEYS and 6 ARGV (7 with an epoch), got 6 KEYS and 5 ARGV'],
    [[...good, 'epoch', 'more'], 'expected 6 KEYS and 6 ARGV (7 with an epoch), got 6 KEYS and 8 ARGV'],
  ])('admit %j', async (args, message) => {
    await expect(admitRaw(args)).rejects.toThrow(`ERR admit.lua: ${message}`);
    expect(await redis.dbsize()).toBe(0);
  });

  it('admit with an epoch that is not the stats field epoch:id decides nothing and writes nothing: EPOCH', async () => {
    await s.registerView([P1]);
    const g = ['10', '60000', '2', '30000', 'id', viewId([P1])];
    const before = await state();
    expect(await admitRaw([...g, 'e1'])).toEqual(['EPOCH', '', 0, 0, 0]); // none set (state lost, or first use)
    await redis.hset(k().stats, 'epoch:id', 'e2');
    expect(await admitRaw([...g, 'e1'])).toEqual(['EPOCH', 'e2', 0, 0, 0]);
    expect(await redis.hlen(k().stats)).toBe(1);
    expect(await state()).toEqual(before);
    // The epoch it holds: decided as without one.
    expect(await admitRaw([...g, 'e2'])).toEqual(['ADMITTED', P1, 1, 0, 9]);
    expect(Object.keys((await s.snapshot(60000)).stats)).not.toContain('epoch:id');
  });

  test('register_view, release, renew, reregister, release_proxy, snapshot, conn_inventory', async () => {
    const L = [k().leases, k().load, k().stats];
    await expect(s.raw('register_view', [k().views, k().hosts, k().load], ['xyz', P1])).rejects.toThrow(
      "ERR register_view.lua: ARGV[1] host view id must be 16 hex digits, got 'xyz'",
    );
    await expect(s.raw('register_view', [k().views, k().hosts, k().load], ['0123456789abcdef', 'a b'])).rejects.toThrow(
      "ERR register_view.lua: ARGV[2] pod id must be 1-64 characters without spaces, got 'a b'",
    );
    await expect(s.raw('register_view', [k().views, k().hosts], ['0123456789abcdef'])).rejects.toThrow(
      'ERR register_view.lua: expected 3 KEYS and 1+n ARGV for n pods, got 2 KEYS and 1 ARGV',
    );
    await expect(s.raw('release', [k().leases, k().load], ['a', P1])).rejects.toThrow(
      'ERR release.lua: expected 3 KEYS and 2 ARGV, got 2 KEYS and 2 ARGV',
    );
    await expect(s.raw('release', L, ['', P1])).rejects.toThrow(
      "ERR release.lua: ARGV[1] connection id must be non-empty without spaces, got ''",
    );
    await expect(s.raw('release', L, ['a', 'x y'])).rejects.toThrow(
      "ERR release.lua: ARGV[2] pod id must be non-empty without spaces, got 'x y'",
    );
    await expect(s.raw('renew', [k().leases], ['a', P1, 'soon'])).rejects.toThrow(
      "ERR renew.lua: ARGV[3] lease TTL ms must be an integer >= 1, got 'soon'",
    );
    await expect(s.raw('renew', [k().leases], ['a', P1])).rejects.toThrow(
      'ERR renew.lua: expected 1 KEYS and 3 ARGV, got 1 KEYS and 2 ARGV',
    );
    await expect(s.raw('reregister', L, ['a', P1, '0'])).rejects.toThrow(
      "ERR reregister.lua: ARGV[3] lease TTL ms must be an integer >= 1, got '0'",
    );
    await expect(s.raw('release_proxy', L, ['Bad|Proxy', '0'])).rejects.toThrow(
      "ERR release_proxy.lua: ARGV[1] proxy id must be 1-253 characters of a-z, 0-9, '.' and '-' (a DNS-1123 name, as filter.lua derives it from POD_NAME), got 'Bad|Proxy'",
    );
    await expect(s.raw('release_proxy', L, ['a', '-1'])).rejects.toThrow(
      "ERR release_proxy.lua: ARGV[2] scan cursor must be digits, got '-1'",
    );
    await expect(s.raw('snapshot', [k().rate, k().stats, k().leases], ['1000'])).rejects.toThrow(
      'ERR snapshot.lua: expected 4 KEYS and 1 ARGV, got 3 KEYS and 1 ARGV',
    );
    await expect(s.raw('snapshot', [k().rate, k().stats, k().leases, k().load], ['-5'])).rejects.toThrow(
      "ERR snapshot.lua: ARGV[1] window ms must be an integer >= 1, got '-5'",
    );
    await expect(s.raw('conn_inventory', [k().conn('a'), k().leases], ['a', P1, 'x', 'p', 'c'])).rejects.toThrow(
      "ERR conn_inventory.lua: ARGV[3] lease TTL ms must be an integer >= 1, got 'x'",
    );
    expect(await redis.dbsize()).toBe(0);
  });
});

describe('conn_inventory.lua', () => {
  test('written for a held lease (expiring with it), not for one that is gone', async () => {
    await admit({ id: 'a', pods: [P1] });
    expect(await s.raw('conn_inventory', [s.keys.conn('a'), s.keys.leases], ['a', P1, '30000', 'envoy-a', '1.2.3.4:5'])).toBe(1);
    expect(await redis.hgetall(s.keys.conn('a'))).toMatchObject({ pod: P1, proxy: 'envoy-a', client: '1.2.3.4:5' });
    expect(await redis.pttl(s.keys.conn('a'))).toBeGreaterThan(29000);
    expect(await s.raw('conn_inventory', [s.keys.conn('b'), s.keys.leases], ['b', P1, '30000', 'envoy-a', '1.2.3.4:5'])).toBe(0);
    expect(await redis.exists(s.keys.conn('b'))).toBe(0);
  });
});
