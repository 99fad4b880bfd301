import Redis from 'ioredis';
import { startRedis, RedisServer } from '../support/redis-server';
import { AdmitRequest, Scripts } from './support/scripts';

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
beforeEach(async () => { await redis.flushall(); });

const base: AdmitRequest = { rateLimit: 10, windowMs: 60000, maxPerPod: 2, ttlMs: 30000, id: 'x', pods: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'] };
const [P1, P2, P3] = base.pods;
const admit = (over: Partial<AdmitRequest>) => s.admit({ ...base, ...over });
/** The stats hash's counters (without admit.lua's "all full" hint; counter names have no ':'). */
const stats = async () => {
  const h = await redis.hgetall(s.keys.stats);
  return Object.fromEntries(Object.entries(h).filter(([k]) => !k.includes(':')).map(([k, v]) => [k, Number(v)]));
};
/**
 * admit.lua's "all full" hint (stats field hint:full): 16 digits h * 1000 + m, then
 * the candidates' lease-set keys joined by NUL; decoded, or null when absent.
 */
const hint = async () => {
  const v = await redis.hget(s.keys.stats, 'hint:full');
  if (v === null) return null;
  const x = Number(v.slice(0, 16));
  return { until: Math.floor(x / 1000), atLeast: x % 1000, pods: v.slice(16).split('\0').map((k) => k.slice(s.keys.pod('').length)) };
};
/** Everything the scripts keep, to show that a refusal changed nothing. */
const state = async () => {
  const keys = (await redis.keys('*')).filter((k) => k !== s.keys.stats).sort();
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    const type = await redis.type(k);
    out[k] = type === 'zset' ? await redis.zrange(k, 0, -1, 'WITHSCORES') : (await redis.smembers(k)).sort();
  }
  return out;
};

describe('admit.lua replies', () => {
  test('ADMITTED: lease, window entry, index, counter, reply fields', async () => {
    const before = await s.nowMs();
    const r = await admit({ id: 'envoy-a|0|1|ab' });
    const after = await s.nowMs();
    expect(r).toEqual({ status: 'ADMITTED', pod: P1, activeOnPod: 1, retryAfterMs: 0, rateRemaining: 9 });
    const expiry = Number(await redis.zscore(s.keys.pod(P1), 'envoy-a|0|1|ab'));
    expect(expiry).toBeGreaterThanOrEqual(before + 30000);
    expect(expiry).toBeLessThanOrEqual(after + 30000);
    const admittedAt = Number(await redis.zscore(s.keys.rate, 'envoy-a|0|1|ab'));
    expect(admittedAt).toBeGreaterThanOrEqual(before);
    expect(admittedAt).toBeLessThanOrEqual(after);
    expect(await redis.smembers(s.keys.pods)).toEqual([P1]);
    expect(await stats()).toEqual({ admitted: 1 });
    // The lease set outlives its newest lease by 60 s; the window by one window.
    const pttl = await redis.pttl(s.keys.pod(P1));
    expect(pttl).toBeGreaterThan(89000);
    expect(pttl).toBeLessThanOrEqual(90000);
    // The window needs no TTL: trimmed on each admission, it never exceeds the limit.
    expect(await redis.pttl(s.keys.rate)).toBe(-1);
    // Small sets stay in the compact encoding (memory per lease).
    expect(await redis.object('ENCODING', s.keys.pod(P1))).toBe('listpack');
  });

  test('rate limit 0 disables it: rateRemaining -1, no window key', async () => {
    const r = await admit({ rateLimit: 0, id: 'c1' });
    expect(r).toEqual({ status: 'ADMITTED', pod: P1, activeOnPod: 1, retryAfterMs: 0, rateRemaining: -1 });
    expect(await redis.exists(s.keys.rate)).toBe(0);
  });

  test('least-loaded candidate wins; ties go to the first in the given order', async () => {
    const order = [];
    for (let i = 0; i < 4; i++) order.push((await admit({ id: `c${i}`, maxPerPod: 3 })).pod);
    expect(order).toEqual([P1, P2, P3, P1]); // P1:2 P2:1 P3:1
    const r = await admit({ id: 'c4', maxPerPod: 3, pods: [P1, P3, P2] });
    expect(r.pod).toBe(P3); // P3 and P2 tie at 1, P3 comes first here
    expect(r.activeOnPod).toBe(2);
    expect((await admit({ id: 'c5', maxPerPod: 3, pods: [P3, P1, P2] })).pod).toBe(P2);
  });

  test('a pod at the limit is skipped even when it comes first', async () => {
    await admit({ id: 'a', pods: [P1] });
    await admit({ id: 'b', pods: [P1] });
    const r = await admit({ id: 'c', pods: [P1, P2] });
    expect(r).toMatchObject({ status: 'ADMITTED', pod: P2, activeOnPod: 1 });
  });

  test('FULL: every candidate at the limit; retryAfterMs = earliest expiry among them; nothing consumed', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20000 });
    await admit({ id: 'b', pods: [P1], ttlMs: 30000 });
    await admit({ id: 'c', pods: [P2], ttlMs: 9000 });
    await admit({ id: 'd', pods: [P2], ttlMs: 40000 });
    const before = await state();
    const t0 = await s.nowMs();
    const r = await admit({ id: 'e', pods: [P1, P2] });
    expect(r.status).toBe('FULL');
    expect(r.pod).toBe('');
    expect(r.activeOnPod).toBe(0);
    expect(r.retryAfterMs).toBeGreaterThan(8500);
    expect(r.retryAfterMs).toBeLessThanOrEqual(9000);
    expect(r.rateRemaining).toBe(6); // 4 of 10 used, the refusal took none
    expect(Number(await redis.zscore(s.keys.pod(P2), 'c')) - t0).toBeGreaterThanOrEqual(r.retryAfterMs);
    expect(await state()).toEqual(before);
    expect(await stats()).toEqual({ admitted: 4, rejected_capacity: 1 });
  });

  test('FULL with no candidates at all: retryAfterMs 0 (no hint)', async () => {
    const r = await admit({ pods: [] });
    expect(r).toEqual({ status: 'FULL', pod: '', activeOnPod: 0, retryAfterMs: 0, rateRemaining: 10 });
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
    expect(r.status).toBe('RATE_LIMITED');
    expect(r.pod).toBe('');
    expect(r.activeOnPod).toBe(0);
    expect(r.rateRemaining).toBe(0);
    const oldest = Number(await redis.zscore(s.keys.rate, 'a'));
    expect(oldest).toBeGreaterThanOrEqual(t0);
    expect(r.retryAfterMs).toBeGreaterThanOrEqual(oldest + 5000 - t1);
    expect(r.retryAfterMs).toBeLessThanOrEqual(5000);
    expect(await state()).toEqual(before);
    expect(await stats()).toEqual({ admitted: 2, rejected_rate_limited: 1 });
  });

  test('the rate limit is checked before capacity', async () => {
    await admit({ id: 'a', rateLimit: 1, maxPerPod: 1, pods: [P1] });
    expect((await admit({ id: 'b', rateLimit: 1, maxPerPod: 1, pods: [P1] })).status).toBe('RATE_LIMITED');
  });

  test('after the limit is lowered, the wait is for the entry that brings the count under it', async () => {
    for (const id of ['a', 'b', 'c', 'd']) { await admit({ id, rateLimit: 4, windowMs: 10000, maxPerPod: 9 }); await sleep(5); }
    const r = await admit({ id: 'e', rateLimit: 2, windowMs: 10000, maxPerPod: 9 });
    const now = await s.nowMs();
    const third = Number(await redis.zscore(s.keys.rate, 'c')); // a, b, c must leave
    expect(r.status).toBe('RATE_LIMITED');
    expect(r.retryAfterMs).toBeGreaterThanOrEqual(third + 10000 - now);
    expect(r.retryAfterMs).toBeLessThanOrEqual(third + 10000 - now + 50);
  });
});

describe('time edges (short windows and TTLs, real waiting)', () => {
  test('window edge: refused until exactly retryAfterMs has passed, then admitted', async () => {
    const w = { rateLimit: 2, windowMs: 600, maxPerPod: 99 };
    await admit({ ...w, id: 'a' });
    await sleep(100);
    await admit({ ...w, id: 'b' });
    const r = await admit({ ...w, id: 'c' });
    expect(r.status).toBe('RATE_LIMITED');
    const oldest = Number(await redis.zscore(s.keys.rate, 'a'));
    // just inside the window: still refused
    while ((await s.nowMs()) < oldest + 600 - 150) await sleep(5);
    const inside = await admit({ ...w, id: 'd' });
    expect(inside.status).toBe('RATE_LIMITED');
    expect(inside.retryAfterMs).toBeLessThanOrEqual(150);
    // the instant the oldest entry is 600 ms old it no longer counts
    while ((await s.nowMs()) < oldest + 600) await sleep(2);
    const ok = await admit({ ...w, id: 'e' });
    expect(ok).toMatchObject({ status: 'ADMITTED', rateRemaining: 0 });
    // the trimmed entry is gone from the set
    expect(await redis.zscore(s.keys.rate, 'a')).toBeNull();
    expect(await redis.zcard(s.keys.rate)).toBe(2);
  });

  test('an expired lease frees its slot and is counted as expired', async () => {
    await admit({ id: 'a', maxPerPod: 1, ttlMs: 300, pods: [P1] });
    expect((await admit({ id: 'b', maxPerPod: 1, ttlMs: 300, pods: [P1] })).status).toBe('FULL');
    await sleep(350);
    const r = await admit({ id: 'b', maxPerPod: 1, ttlMs: 300, pods: [P1] });
    expect(r).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 1 });
    expect(await redis.zrange(s.keys.pod(P1), 0, -1)).toEqual(['b']);
    expect(await stats()).toMatchObject({ admitted: 2, rejected_capacity: 1, expired: 1 });
    expect(await redis.smembers(s.keys.pods)).toEqual([P1]);
  });

  test('expired leases are pruned before counting on every candidate visited', async () => {
    await admit({ id: 'a', ttlMs: 100, pods: [P1] });
    await admit({ id: 'b', ttlMs: 100, pods: [P1] });
    await admit({ id: 'c', ttlMs: 60000, pods: [P2] });
    await admit({ id: 'd', ttlMs: 60000, pods: [P2] });
    await sleep(150);
    const r = await admit({ id: 'e', pods: [P2, P1, P3] });
    expect(r).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 1 });
    expect(await stats()).toMatchObject({ expired: 2 });
  });

  test('large per-pod limits (more leases than one fetch) are counted exactly', async () => {
    const big = { maxPerPod: 12, pods: [P1] };
    for (let i = 0; i < 5; i++) await admit({ ...big, id: `old${i}`, ttlMs: 100, rateLimit: 0 });
    for (let i = 0; i < 7; i++) await admit({ ...big, id: `new${i}`, ttlMs: 60000, rateLimit: 0 });
    expect((await admit({ ...big, id: 'over', rateLimit: 0 })).status).toBe('FULL');
    await sleep(150);
    const r = await admit({ ...big, id: 'n8', rateLimit: 0 });
    expect(r).toMatchObject({ status: 'ADMITTED', activeOnPod: 8 });
    for (let i = 9; i <= 12; i++) expect((await admit({ ...big, id: `n${i}`, rateLimit: 0 })).activeOnPod).toBe(i);
    const full = await admit({ ...big, id: 'n13', rateLimit: 0 });
    expect(full.status).toBe('FULL');
    expect(full.retryAfterMs).toBeGreaterThan(29000); // n8..n12 took the default 30 s TTL
    expect(full.retryAfterMs).toBeLessThanOrEqual(30000);
    expect(await stats()).toMatchObject({ expired: 5 });
  });

  test('FULL hint: when the maxPer-th newest lease expires (a slot frees there unless renewed)', async () => {
    await admit({ id: 'a', ttlMs: 100, pods: [P1], maxPerPod: 1 });
    await admit({ id: 'b', ttlMs: 100, pods: [P1], maxPerPod: 2 });
    await sleep(150);
    // two leases expired, two live ones, plus an over-limit third (re-registered)
    const now = await s.nowMs();
    await redis.zadd(s.keys.pod(P1), now + 5000, 'c', now + 7000, 'd', now + 9000, 'e');
    const r = await admit({ id: 'f', pods: [P1], maxPerPod: 2 });
    expect(r.status).toBe('FULL');
    expect(r.retryAfterMs).toBeGreaterThan(6500); // d: then only e is live
    expect(r.retryAfterMs).toBeLessThanOrEqual(7000);
    // A pod proven full is not pruned: its expired leases cannot change a refusal.
    // The next call that counts it (here the snapshot) prunes and counts them.
    expect(await redis.zcard(s.keys.pod(P1))).toBe(5);
    expect((await s.snapshot(1000, [P1])).pods[P1]).toBe(3);
    expect(await stats()).toMatchObject({ expired: 2, rejected_capacity: 1 });
  });

  test('a pod whose maxPer-th newest lease expired is pruned and counted exactly', async () => {
    const now = await s.nowMs();
    await redis.zadd(s.keys.pod(P1), now - 50, 'old1', now - 20, 'old2', now + 9000, 'live');
    const r = await admit({ id: 'x', pods: [P1], maxPerPod: 2 });
    expect(r).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 2 });
    expect((await redis.zrange(s.keys.pod(P1), 0, -1)).sort()).toEqual(['live', 'x']);
    expect(await stats()).toMatchObject({ expired: 2 });
    // fewer leases than the limit, one of them expired: counted live, pruned
    await redis.zadd(s.keys.pod(P2), now - 50, 'gone', now + 9000, 'here');
    const r2 = await admit({ id: 'y', pods: [P2, P3], maxPerPod: 3 });
    expect(r2).toMatchObject({ status: 'ADMITTED', pod: P3, activeOnPod: 1 });
    expect((await redis.zrange(s.keys.pod(P2), 0, -1))).toEqual(['here']);
    expect(await stats()).toMatchObject({ expired: 3 });
  });

  test('large limits: a pod proven full by its maxPer-th newest lease is refused without pruning', async () => {
    const now = await s.nowMs();
    const members: (string | number)[] = [now - 10, 'old'];
    for (let i = 0; i < 12; i++) members.push(now + 20000 + i, `m${i}`);
    await redis.zadd(s.keys.pod(P1), ...members);
    const r = await admit({ id: 'x', pods: [P1], maxPerPod: 12 });
    expect(r.status).toBe('FULL');
    expect(r.retryAfterMs).toBeGreaterThan(19500);
    expect(r.retryAfterMs).toBeLessThanOrEqual(20000);
    // the expired lease cannot change a refusal; the next count (here the snapshot) prunes it
    expect(await redis.zcard(s.keys.pod(P1))).toBe(13);
    expect((await s.snapshot(1000, [P1])).pods[P1]).toBe(12);
    expect(await stats()).toMatchObject({ expired: 1 });
  });
});

describe('"all full" hint (stats field hint:full)', () => {
  /** Calls of one command since the last CONFIG RESETSTAT. */
  const calls = async (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(await redis.info('commandstats'))?.[1] ?? 0);
  const fill = async (pod: string, ttls: number[], maxPerPod = 2) => {
    for (const [i, ttlMs] of ttls.entries()) {
      expect(await admit({ id: `${pod}-${i}`, pods: [pod], ttlMs, maxPerPod })).toMatchObject({ status: 'ADMITTED', pod });
    }
  };
  const expiries = async (pod: string) => (await redis.zrange(s.keys.pod(pod), 0, -1, 'WITHSCORES')).filter((_, i) => i % 2 === 1).map(Number);

  test('an exact FULL writes the hint (earliest maxPer-th newest expiry); the next refusal reads only the hint', async () => {
    await fill(P1, [20000, 30000]);
    await fill(P2, [9000, 40000]);
    expect(await hint()).toBeNull(); // admissions write none
    const first = await admit({ id: 'e', pods: [P1, P2] });
    expect(first.status).toBe('FULL');
    const e2 = await expiries(P2);
    expect(await hint()).toEqual({ until: e2[0], atLeast: 2, pods: [P1, P2] });

    await redis.config('RESETSTAT');
    const t0 = await s.nowMs();
    const r = await admit({ id: 'f', pods: [P1, P2] });
    expect(r).toMatchObject({ status: 'FULL', pod: '', activeOnPod: 0, rateRemaining: 6 });
    expect(r.retryAfterMs).toBeGreaterThan(e2[0] - t0 - 100);
    expect(r.retryAfterMs).toBeLessThanOrEqual(e2[0] - t0);
    expect(r.retryAfterMs).toBeLessThanOrEqual(first.retryAfterMs);
    // TIME, the window (ZCARD), the hint (HGET), the counter: no lease set read.
    for (const cmd of ['zrange', 'zcount', 'zscore', 'zremrangebyscore', 'hset']) {
      expect({ cmd, calls: await calls(cmd) }).toEqual({ cmd, calls: 0 });
    }
    expect(await calls('zcard')).toBe(1);
    expect(await calls('hget')).toBe(1);
    expect(await stats()).toEqual({ admitted: 4, rejected_capacity: 2 });
  });

  test('the hint holds only for the same candidate list: any other list is counted exactly', async () => {
    await fill(P1, [30000, 30000]);
    await fill(P2, [30000, 30000]);
    expect((await admit({ id: 'x', pods: [P1, P2] })).status).toBe('FULL');
    // P3 has room: a list with it is counted (the hint says nothing about P3)
    expect(await admit({ id: 'y', pods: [P1, P2, P3] })).toMatchObject({ status: 'ADMITTED', pod: P3, activeOnPod: 1 });
    // a subset or another order is counted too (and refused: all full), and rewrites the hint
    await redis.config('RESETSTAT');
    expect((await admit({ id: 'z', pods: [P2, P1] })).status).toBe('FULL');
    expect(await calls('zrange')).toBe(2);
    expect((await hint())!.pods).toEqual([P2, P1]);
    expect((await admit({ id: 'z', pods: [P1] })).status).toBe('FULL');
    expect((await hint())!.pods).toEqual([P1]);
    // a lease set not named by a pod's usual key (the list is of lease-set keys)
    const other = await s.raw('admit', [s.keys.rate, s.keys.stats, s.keys.pods, `{ws}:other:pod:${P1}`], [10, 60000, 2, 30000, 'w', P1]) as unknown[];
    expect(other.slice(0, 3)).toEqual(['ADMITTED', P1, 1]);
  });

  test('a release by another proxy clears the hint: the pod is admittable at once', async () => {
    await fill(P1, [30000, 30000]);
    await fill(P2, [30000, 30000]);
    expect((await admit({ id: 'x', pods: [P1, P2] })).status).toBe('FULL');
    expect(await hint()).not.toBeNull();
    // another proxy (its own connection) releases one of the leases on P2
    const other = new Redis({ host: server.host, port: server.port, lazyConnect: true });
    await other.connect();
    try {
      expect(await new Scripts(other, 'ws', s.shas).release(`${P2}-0`, P2)).toBe(1);
    } finally { other.disconnect(); }
    expect(await hint()).toBeNull();
    expect(await admit({ id: 'y', pods: [P1, P2] })).toMatchObject({ status: 'ADMITTED', pod: P2, activeOnPod: 2 });
  });

  test('expired leases make a pod admittable again with the hint in place (hint <= earliest expiry), pruned and counted', async () => {
    await fill(P1, [300, 400]);
    expect((await admit({ id: 'x', pods: [P1] })).status).toBe('FULL');
    const [first] = await expiries(P1);
    const h = await hint();
    expect(h).toEqual({ until: first, atLeast: 2, pods: [P1] }); // the earliest live expiry: a slot frees then
    while ((await s.nowMs()) <= first) await sleep(10);
    expect(await admit({ id: 'y', pods: [P1] })).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 2 });
    expect(await stats()).toMatchObject({ expired: 1 });
    expect(await redis.zrange(s.keys.pod(P1), 0, -1)).toEqual([`${P1}-1`, 'y']);
    expect(await hint()).toEqual(h); // past, harmless; replaced by the next exact FULL
    expect((await admit({ id: 'z', pods: [P1] })).status).toBe('FULL');
    expect((await hint())!.until).toBe((await expiries(P1))[0]);
  });

  test('renewals only make the hint early (conservative): after it passes, the exact count refuses and refreshes it', async () => {
    await fill(P1, [300, 300]);
    expect((await admit({ id: 'x', pods: [P1] })).status).toBe('FULL');
    const h = (await hint())!;
    for (const id of [`${P1}-0`, `${P1}-1`]) expect(await s.renew(id, P1, 30000)).toBe(1);
    expect(Math.min(...(await expiries(P1)))).toBeGreaterThan(h.until);
    // a renewal with a shorter TTL keeps the later expiry (never moves it earlier)
    const before = await expiries(P1);
    expect(await s.renew(`${P1}-0`, P1, 1000)).toBe(1);
    expect(await expiries(P1)).toEqual(before);
    expect(await redis.pttl(s.keys.pod(P1))).toBeGreaterThan(89000);
    // before h: refused by the hint (early, so a lower bound of the real wait)
    expect((await admit({ id: 'y', pods: [P1] })).status).toBe('FULL');
    while ((await s.nowMs()) <= h.until + 50) await sleep(10);
    const r = await admit({ id: 'y', pods: [P1] });
    expect(r.status).toBe('FULL');
    expect(r.retryAfterMs).toBeGreaterThan(29000);
    expect(await hint()).toEqual({ until: Math.min(...(await expiries(P1))), atLeast: 2, pods: [P1] });
    expect(await stats()).toEqual({ admitted: 2, rejected_capacity: 3 });
  });

  test('the hint holds for the per-pod limit it was proven with, or a lower one', async () => {
    await fill(P1, [30000, 30000], 3);
    expect((await admit({ id: 'x', pods: [P1], maxPerPod: 2 })).status).toBe('FULL');
    expect((await hint())!.atLeast).toBe(2);
    // the limit raised to 3: the hint proves nothing, the pod has room
    expect(await admit({ id: 'y', pods: [P1], maxPerPod: 3 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 3 });
    expect((await admit({ id: 'z', pods: [P1], maxPerPod: 3 })).status).toBe('FULL');
    expect((await hint())!.atLeast).toBe(3);
    await redis.config('RESETSTAT');
    expect((await admit({ id: 'z', pods: [P1], maxPerPod: 2 })).status).toBe('FULL');
    expect(await calls('zrange')).toBe(0); // 3 >= 2: proven by the hint
  });

  test('one field, whatever the number of pods; gone once a lease is released; pods leave the index as before', async () => {
    await fill(P1, [30000, 30000]);
    await fill(P2, [200, 200]);
    expect((await admit({ id: 'x', pods: [P1, P2] })).status).toBe('FULL');
    expect((await admit({ id: 'x', pods: [P2] })).status).toBe('FULL');
    expect((await redis.hkeys(s.keys.stats)).filter((k) => k.includes(':'))).toEqual(['hint:full']);
    await s.release(`${P1}-0`, P1);
    await s.release(`${P1}-1`, P1);
    expect(await redis.sismember(s.keys.pods, P1)).toBe(0);
    expect(await hint()).toBeNull();
    await sleep(250); // P2's leases expire; the snapshot drops it from the index
    expect((await s.snapshot(60000)).pods).toEqual({ [P2]: 0 });
    expect(await redis.smembers(s.keys.pods)).toEqual([]);
    expect((await redis.hkeys(s.keys.stats)).sort()).toEqual(['admitted', 'expired', 'rejected_capacity', 'released']);
  });

  test('the snapshot does not report the hint as a stat (reply shape unchanged)', async () => {
    await fill(P1, [30000, 30000]);
    expect((await admit({ id: 'x', pods: [P1] })).status).toBe('FULL');
    expect(await redis.hexists(s.keys.stats, 'hint:full')).toBe(1);
    const snap = await s.snapshot(60000);
    expect(snap.stats).toEqual({ admitted: 2, rejected_capacity: 1 });
    expect(snap.pods).toEqual({ [P1]: 2 });
    const raw = (await s.raw('snapshot', [s.keys.rate, s.keys.stats, s.keys.pods, s.keys.pod(P1)], [60000, P1])) as unknown[];
    expect(raw).toHaveLength(5);
    expect(raw[2]).toEqual(['admitted', '2', 'rejected_capacity', '1']);
  });

  test('a malformed hint is ignored (exact count) and overwritten', async () => {
    await fill(P1, [30000, 30000]);
    for (const bad of ['garbage', '9999999999999002', `9999999999999002${s.keys.pod(P1)}x`]) {
      await redis.hset(s.keys.stats, 'hint:full', bad);
      expect(await admit({ id: 'y', pods: [P1, P2] })).toMatchObject({ status: 'ADMITTED', pod: P2 });
      await s.release('y', P2);
    }
    await redis.hset(s.keys.stats, 'hint:full', 'garbage');
    expect((await admit({ id: 'x', pods: [P1] })).status).toBe('FULL');
    expect((await hint())!.pods).toEqual([P1]);
  });
});

describe('renew.lua', () => {
  test('renews a live lease: new expiry from Redis TIME, key lifetime extended', async () => {
    await admit({ id: 'a', ttlMs: 1000, pods: [P1] });
    const t0 = await s.nowMs();
    expect(await s.renew('a', P1, 50000)).toBe(1);
    const exp = Number(await redis.zscore(s.keys.pod(P1), 'a'));
    expect(exp).toBeGreaterThanOrEqual(t0 + 50000);
    expect(exp).toBeLessThan(t0 + 50100);
    expect(await redis.pttl(s.keys.pod(P1))).toBeGreaterThan(109000);
  });

  test('returns 0 for an unknown lease and after expiry (and does not resurrect it)', async () => {
    expect(await s.renew('nobody', P1, 1000)).toBe(0);
    await admit({ id: 'a', ttlMs: 100, pods: [P1] });
    await sleep(150);
    expect(await s.renew('a', P1, 1000)).toBe(0);
    // left in place for admit/snapshot/reregister to prune and count
    expect(await redis.zcard(s.keys.pod(P1))).toBe(1);
    expect(Number(await redis.zscore(s.keys.pod(P1), 'a'))).toBeLessThanOrEqual(await s.nowMs());
  });

  test('a TTL of 1e14 ms and more is written as digits (no exponent form Redis would refuse half-way)', async () => {
    await admit({ id: 'a', ttlMs: 1000, pods: [P1] });
    const t0 = await s.nowMs();
    expect(await s.renew('a', P1, 100000000000000)).toBe(1);
    expect(Number(await redis.zscore(s.keys.pod(P1), 'a'))).toBeGreaterThanOrEqual(t0 + 100000000000000);
    expect(await redis.pttl(s.keys.pod(P1))).toBeGreaterThan(99999999000000);
  });
});

describe('release.lua', () => {
  test('1 then 0; counts only real removals; index follows the set', async () => {
    await admit({ id: 'a', pods: [P1] });
    await admit({ id: 'b', pods: [P1] });
    expect(await s.release('a', P1)).toBe(1);
    expect(await s.release('a', P1)).toBe(0);
    expect(await redis.smembers(s.keys.pods)).toEqual([P1]); // b still there
    expect(await s.release('b', P1)).toBe(1);
    expect(await redis.exists(s.keys.pod(P1))).toBe(0);
    expect(await redis.smembers(s.keys.pods)).toEqual([]);
    expect(await s.release('zz', P2)).toBe(0);
    expect(await stats()).toEqual({ admitted: 2, released: 2 });
  });

  test('a released slot is free again at once', async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1 });
    expect((await admit({ id: 'b', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await s.release('a', P1);
    expect((await admit({ id: 'b', pods: [P1], maxPerPod: 1 })).status).toBe('ADMITTED');
  });
});

describe('reregister.lua', () => {
  test('after Redis lost its state: renew 0, reregister puts the lease and the index back', async () => {
    await admit({ id: 'a', pods: [P1] });
    await redis.flushall();
    expect(await s.renew('a', P1, 30000)).toBe(0);
    expect(await s.reregister('a', P1, 30000)).toBe(1);
    expect(await redis.smembers(s.keys.pods)).toEqual([P1]);
    expect(await stats()).toEqual({ reregistered: 1 });
    expect(await s.renew('a', P1, 30000)).toBe(1);
  });

  test('ignores the per-pod limit; new admissions wait until the count fits', async () => {
    await admit({ id: 'a', pods: [P1] });
    await admit({ id: 'b', pods: [P1] });
    expect(await s.reregister('c', P1, 30000)).toBe(3);
    expect((await admit({ id: 'd', pods: [P1] })).status).toBe('FULL');
    await s.release('a', P1);
    expect((await admit({ id: 'd', pods: [P1] })).status).toBe('FULL'); // 2 live, limit 2
    await s.release('b', P1);
    expect((await admit({ id: 'd', pods: [P1] })).status).toBe('ADMITTED');
  });

  test('prunes expired leases first and counts them', async () => {
    await admit({ id: 'a', ttlMs: 100, pods: [P1] });
    await sleep(150);
    expect(await s.reregister('a', P1, 30000)).toBe(1);
    expect(await stats()).toMatchObject({ expired: 1, reregistered: 1 });
  });
});

describe('snapshot.lua (metrics path: SMEMBERS index, then the script)', () => {
  test('per-pod and per-proxy live counts, stats, window usage; prunes and cleans the index', async () => {
    await admit({ id: 'envoy-a|0|1|x', pods: [P1] });
    await admit({ id: 'envoy-b|1|1|y', pods: [P1] });
    await admit({ id: 'envoy-a|1|2|z', pods: [P2] });
    await admit({ id: 'legacy-id', pods: [P3] });
    await admit({ id: 'envoy-b|0|9|q', pods: [P3], ttlMs: 100 });
    await admit({ id: 'envoy-c|0|1|q', pods: ['10.0.0.9:8080'], ttlMs: 100 });
    await admit({ id: 'full', pods: [P1] }); // refused
    await sleep(150);
    const snap = await s.snapshot(60000);
    expect(snap.windowUsed).toBe(6);
    expect(snap.pods).toEqual({ [P1]: 2, [P2]: 1, [P3]: 1, '10.0.0.9:8080': 0 });
    expect(snap.proxies).toEqual({ 'envoy-a': 2, 'envoy-b': 1, unknown: 1 });
    expect(snap.stats).toEqual({ admitted: 6, rejected_capacity: 1, expired: 2 });
    expect(Math.abs(snap.nowMs - (await s.nowMs()))).toBeLessThan(100);
    // the pod whose only lease expired left the index
    expect((await redis.smembers(s.keys.pods)).sort()).toEqual([P1, P2, P3]);
    // a second scrape counts nothing twice
    expect((await s.snapshot(60000)).stats.expired).toBe(2);
  });

  test('window usage only counts the last window; an empty deployment snapshots empty', async () => {
    expect(await s.snapshot(1000)).toMatchObject({ windowUsed: 0, stats: {}, pods: {}, proxies: {} });
    await admit({ id: 'a', windowMs: 200 });
    expect((await s.snapshot(200)).windowUsed).toBe(1);
    await sleep(250);
    expect((await s.snapshot(200)).windowUsed).toBe(0);
  });
});

describe('bad input is refused with a clear error', () => {
  const k = () => s.keys;
  const good = ['10', '60000', '2', '30000', 'id', P1];
  const admitRaw = (args: string[], pods = [P1]) => s.raw('admit', [k().rate, k().stats, k().pods, ...pods.map(k().pod)], args);
  test.each([
    [['x', '60000', '2', '30000', 'id', P1], "ARGV[1] rate limit must be an integer >= 0, got 'x'"],
    [['-1', '60000', '2', '30000', 'id', P1], "ARGV[1] rate limit must be an integer >= 0, got '-1'"],
    [['inf', '60000', '2', '30000', 'id', P1], "ARGV[1] rate limit must be an integer >= 0, got 'inf'"],
    [['', '60000', '2', '30000', 'id', P1], "ARGV[1] rate limit must be an integer >= 0, got ''"],
    [['10', '0', '2', '30000', 'id', P1], "ARGV[2] window ms must be an integer >= 1, got '0'"],
    [['10', '60000', '0', '30000', 'id', P1], "ARGV[3] max connections per pod must be an integer >= 1, got '0'"],
    [['10', '60000', '2', '1.5', 'id', P1], "ARGV[4] lease TTL ms must be an integer >= 1, got '1.5'"],
    [['10', '60000', '2', '30000', '', P1], 'ARGV[5] connection id must not be empty'],
    [['10', '60000', '2', '30000', 'id'], 'expected 3+n KEYS and 5+n ARGV (6+n with an epoch) for n candidate pods, got 4 KEYS and 5 ARGV'],
    [[...good, P2, 'epoch'], 'expected 3+n KEYS and 5+n ARGV (6+n with an epoch) for n candidate pods, got 4 KEYS and 8 ARGV'],
  ])('admit %j', async (args, message) => {
    await expect(admitRaw(args)).rejects.toThrow(`ERR admit.lua: ${message}`);
    expect(await redis.dbsize()).toBe(0);
  });

  it('admit with an epoch that is not the stats field epoch:id decides nothing and writes nothing: EPOCH', async () => {
    expect(await admitRaw([...good, 'e1'])).toEqual(['EPOCH', '', 0, 0, 0]); // none set (state lost, or first use)
    expect(await redis.dbsize()).toBe(0);
    await redis.hset(k().stats, 'epoch:id', 'e2');
    expect(await admitRaw([...good, 'e1'])).toEqual(['EPOCH', 'e2', 0, 0, 0]);
    expect(await redis.hlen(k().stats)).toBe(1);
    expect(await redis.exists(k().pod(P1), k().rate)).toBe(0);
    // The epoch it holds: decided as without one.
    expect(await admitRaw([...good, 'e2'])).toEqual(['ADMITTED', P1, 1, 0, 9]);
    // The field is not a counter: the snapshot leaves it out (as the hints).
    expect(Object.keys((await s.snapshot(60000)).stats)).not.toContain('epoch:id');
  });

  test('release, renew, reregister, snapshot', async () => {
    await expect(s.raw('release', [k().pod(P1), k().stats], ['a', P1])).rejects.toThrow('ERR release.lua: expected 3 KEYS and 2 ARGV, got 2 KEYS and 2 ARGV');
    await expect(s.raw('release', [k().pod(P1), k().stats, k().pods], ['', P1])).rejects.toThrow('ERR release.lua: ARGV[1] connection id must not be empty');
    await expect(s.raw('release', [k().pod(P1), k().stats, k().pods], ['a', P2])).rejects.toThrow(`ERR release.lua: KEYS[1] '{ws}:pod:${P1}' is not the lease set of pod ARGV[2] '${P2}'`);
    await expect(s.raw('renew', [k().pod(P1)], ['a', 'soon'])).rejects.toThrow("ERR renew.lua: ARGV[2] lease TTL ms must be an integer >= 1, got 'soon'");
    await expect(s.raw('renew', [k().pod(P1)], ['a'])).rejects.toThrow('ERR renew.lua: expected 1 KEYS and 2 ARGV, got 1 KEYS and 1 ARGV');
    await expect(s.raw('reregister', [k().pod(P1), k().stats, k().pods], ['a', P1, '0'])).rejects.toThrow("ERR reregister.lua: ARGV[3] lease TTL ms must be an integer >= 1, got '0'");
    await expect(s.raw('snapshot', [k().rate, k().stats, k().pods, k().pod(P1)], ['1000'])).rejects.toThrow('ERR snapshot.lua: expected 3+n KEYS and 1+n ARGV for n pods, got 4 KEYS and 1 ARGV');
    await expect(s.raw('snapshot', [k().rate, k().stats, k().pods], ['-5'])).rejects.toThrow("ERR snapshot.lua: ARGV[1] window ms must be an integer >= 1, got '-5'");
    expect(await redis.dbsize()).toBe(0);
  });
});
