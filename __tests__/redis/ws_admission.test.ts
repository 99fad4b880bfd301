// The Redis Functions library lua/redis/ws_admission.lua against a real redis-server, by
// its contract (lua/redis/README.md): each function's replies and writes, the invariants
// after every step, and the exact error of every bad call.
import Redis from 'ioredis';
import { startRedis, RedisServer } from '../../tools/rig/redis-server';
import { AdmitRequest, Functions, lease } from './support/functions';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: RedisServer;
let redis: Redis;
let s: Functions;

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis({ host: server.host, port: server.port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await redis.connect();
  s = await Functions.load(redis, 'ws');
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});
beforeEach(async () => {
  await redis.flushall('SYNC');
  s.forget();
  await s.start();
});

const base: AdmitRequest = {
  rateLimit: 10,
  windowMs: 60000,
  maxPerPod: 2,
  ttlMs: 30000,
  id: 'x',
  pods: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
};
const [P1, P2, P3] = base.pods!;
const admit = (over: Partial<AdmitRequest>) => s.admit({ ...base, ...over });
/** The stats hash's counters (fields with a ':' and the recovery fields are not counters). */
const stats = async () => {
  const h = await redis.hgetall(s.keys.stats);
  return Object.fromEntries(
    Object.entries(h)
      .filter(([k]) => !k.includes(':') && k !== 'epoch' && k !== 'recovering_until')
      .map(([k, v]) => [k, Number(v)]),
  );
};
/** The admission state (leases, window, pod counts), to show that a refusal changed nothing. */
const state = async () => {
  const out: Record<string, unknown> = {};
  for (const k of [s.keys.rate, s.keys.leases, s.keys.load]) out[k] = await redis.zrange(k, 0, -1, 'WITHSCORES');
  return out;
};
/**
 * The invariants every function keeps: `load`'s count of a pod = its members in `leases`; the
 * stats field `leases:<proxy>` = the leases whose connection id starts with `<proxy>|`; a pod
 * is in `load` only while some slot reaches it or it holds a lease.
 */
const expectConsistent = async () => {
  const { leases, load, byProxy, proxyFields, byClient, clientFields } = await s.counts();
  expect(load).toEqual(leases);
  expect(proxyFields).toEqual(byProxy);
  expect(clientFields).toEqual(byClient);
  const reach = new Set(Object.keys(await redis.hgetall(s.keys.reach)));
  for (const pod of await redis.zrange(s.keys.load, 0, -1))
    expect({ pod, kept: reach.has(pod) || (leases[pod] ?? 0) > 0 }).toEqual({ pod, kept: true });
};

describe('ws_admit replies', () => {
  test("ADMITTED: lease, window entry, the pod's count, the proxy's count, counter, reply fields", async () => {
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
    expect(await redis.hget(s.keys.stats, 'leases:envoy-a')).toBe('1');
    expect(await stats()).toEqual({ admitted: 1 });
    // No key has a TTL: the window is trimmed on each admission, leases leave by expiry.
    for (const k of [s.keys.rate, s.keys.leases, s.keys.load, s.keys.reach, s.keys.agents]) expect(await redis.pttl(k)).toBe(-1);
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
    expect(await admit({ id: 'c4', maxPerPod: 3, pods: [P3, P1, P2] })).toMatchObject({ pod: P2, activeOnPod: 2 });
    expect((await admit({ id: 'c5', maxPerPod: 3 })).pod).toBe(P3);
    await expectConsistent();
  });

  test('a pod at the limit is never chosen', async () => {
    await admit({ id: 'a', pods: [P1] });
    await admit({ id: 'b', pods: [P1] });
    expect(await admit({ id: 'c', pods: [P1, P2] })).toMatchObject({ status: 'ADMITTED', pod: P2, activeOnPod: 1 });
  });

  test('FULL: every reachable pod at the limit; retryAfterMs = the earliest lease expiry; nothing consumed', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20000 });
    await admit({ id: 'b', pods: [P1], ttlMs: 30000 });
    await admit({ id: 'c', pods: [P2], ttlMs: 9000 });
    await admit({ id: 'd', pods: [P2], ttlMs: 40000 });
    await s.reach('unknown', [P1, P2]);
    const before = await state();
    const t0 = await s.nowMs();
    const r = await s.admitOnce({ ...base, id: 'e' });
    expect(r.status).toBe('FULL');
    expect(r).toMatchObject({ pod: '', activeOnPod: 0, rateRemaining: 6 }); // 4 of 10 used, the refusal took none
    expect(r.retryAfterMs).toBeGreaterThan(8500);
    expect(r.retryAfterMs).toBeLessThanOrEqual(9000);
    expect(Number(await redis.zscore(s.keys.leases, lease('c', P2))) - t0).toBeGreaterThanOrEqual(r.retryAfterMs);
    expect(await state()).toEqual(before);
    expect(await stats()).toEqual({ admitted: 4, rejected_capacity: 1 });
  });

  test('NOHOSTS: a proxy with no registered hosts (or none healthy) is told so, nothing consumed', async () => {
    expect(await s.admitOnce({ ...base, id: 'lonely|0|1|0' })).toEqual({
      status: 'NOHOSTS',
      pod: '',
      activeOnPod: 0,
      retryAfterMs: 0,
      rateRemaining: 10,
    });
    expect(await admit({ id: 'empty|0|1|0', pods: [] })).toMatchObject({ status: 'NOHOSTS' });
    expect(await stats()).toEqual({});
    expect(await redis.exists(s.keys.rate, s.keys.leases)).toBe(0);
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

  test('the rate limit is checked before the hosts and the pods', async () => {
    await admit({ id: 'a', rateLimit: 1, maxPerPod: 1, pods: [P1] });
    expect((await s.admitOnce({ ...base, id: 'nohosts|0|0|0', rateLimit: 1 })).status).toBe('RATE_LIMITED');
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

  test('the connection inventory is one hash field per lease, written with the admission, gone with the lease', async () => {
    await admit({ id: 'envoy-a|0|1|0', client: '1.2.3.4' });
    const [pod, proxy, client, start] = (await redis.hget(s.keys.inventory, 'envoy-a|0|1|0'))!.split(' ');
    expect({ pod, proxy, client }).toEqual({ pod: P1, proxy: 'envoy-a', client: '1.2.3.4' });
    expect(Number(start)).toBeGreaterThan((await s.nowMs()) - 1000);
    await s.release('envoy-a|0|1|0', P1);
    expect(await redis.exists(s.keys.inventory)).toBe(0);
    await admit({ id: 'envoy-a|0|2|0', client: '1.2.3.4', ttlMs: 20 });
    await sleep(40);
    await s.snapshot(60000); // gives back the expired lease
    expect(await redis.exists(s.keys.inventory)).toBe(0);
  });
});

describe('reach: each proxy admits only onto its own healthy hosts (ws_hosts)', () => {
  test('a pod only another proxy reaches is passed over, even when it is the least loaded; that proxy takes it', async () => {
    await admit({ id: 'a|0|1|0', pods: [P2, P3] });
    await admit({ id: 'a|0|2|0', pods: [P2, P3] });
    await s.reach('b', [P1, P2, P3]); // another proxy also sees P1 (empty)
    expect(await admit({ id: 'a|0|3|0', pods: [P2, P3] })).toMatchObject({ pod: P2, activeOnPod: 2 });
    expect(await admit({ id: 'a|0|4|0', pods: [P2, P3] })).toMatchObject({ pod: P3, activeOnPod: 2 });
    expect((await admit({ id: 'a|0|5|0', pods: [P2, P3] })).status).toBe('FULL');
    expect(await s.admitOnce({ ...base, id: 'b|0|1|0' })).toMatchObject({ pod: P1 });
    await expectConsistent();
  });

  test("claim gives the lowest free slot; add/remove change only that slot; commit makes it the proxy's", async () => {
    expect(await s.hosts('claim', 'a')).toBe(0);
    expect(await s.hosts('claim', 'b')).toBe(1);
    expect(await s.hosts('add', 'a', 0, [P1, P2])).toEqual(['OK', 2]);
    expect(await s.hosts('add', 'b', 1, [P2])).toEqual(['OK', 1]);
    expect(await s.hosts('add', 'a', 0, [P1])).toEqual(['OK', 0]); // already there
    // Not committed: the proxy has no hosts yet.
    expect((await s.admitOnce({ ...base, id: 'a|0|1|0' })).status).toBe('NOHOSTS');
    expect(await s.hosts('commit', 'a', 0)).toEqual(['OK', 2]);
    expect(await redis.hgetall(s.keys.reach)).toEqual({ [P1]: '\x01', [P2]: '\x03' });
    expect(await s.hosts('remove', 'a', 0, [P2])).toEqual(['OK', 1]);
    expect(await redis.hgetall(s.keys.reach)).toEqual({ [P1]: '\x01', [P2]: '\x02' });
    expect(await redis.hgetall(s.keys.agents)).toMatchObject({ 's:0': 'a', 's:1': 'b', 'p:a': '0', 'n:0': '1', 'n:1': '1' });
  });

  test('slots beyond the first byte (bitmask of any width), and a slot the caller does not own: SLOT', async () => {
    for (let i = 0; i < 12; i++) await s.hosts('claim', `p${i}`);
    expect(await s.hosts('add', 'p11', 11, [P1])).toEqual(['OK', 1]);
    expect(Buffer.from((await redis.hgetBuffer(s.keys.reach, P1)) as Buffer)).toEqual(Buffer.from([0, 8]));
    expect(await s.hosts('add', 'p3', 11, [P1])).toEqual(['SLOT']);
    expect(await s.hosts('remove', 'p11', 11, [P1])).toEqual(['OK', 1]);
    expect(await redis.hexists(s.keys.reach, P1)).toBe(0);
  });

  test('a pod nobody reaches leaves reach and load at once unless it holds leases; then when its last lease goes', async () => {
    await admit({ id: 'a|0|1|0', pods: [P1, P2] }); // P1: 1 lease
    await s.reach('a', [P3]);
    expect(await redis.zrange(s.keys.load, 0, -1, 'WITHSCORES')).toEqual([P3, '0', P1, '1']);
    expect(Object.keys(await redis.hgetall(s.keys.reach))).toEqual([P3]);
    await s.release('a|0|1|0', P1);
    expect(await redis.zrange(s.keys.load, 0, -1)).toEqual([P3]);
    await expectConsistent();
  });

  test('an agent restart: a new slot is committed, the old one is cleaned by the beats and freed', async () => {
    const old = await s.reach('a', [P1, P2]);
    const fresh = Number(await s.hosts('claim', 'a'));
    expect(fresh).not.toBe(old);
    await s.hosts('add', 'a', fresh, [P2, P3]);
    await s.hosts('commit', 'a', fresh);
    expect(Number(await redis.zscore(s.keys.beats, String(old)))).toBe(0);
    expect((await s.beat('a', old)).slotOk).toBe(false);
    // The beat cleaned the old slot in one step (few pods): its bits and its fields are gone.
    expect(await redis.hgetall(s.keys.reach)).toEqual({ [P2]: '\x02', [P3]: '\x02' });
    expect(await redis.hget(s.keys.agents, `s:${old}`)).toBeNull();
    expect(await redis.zrange(s.keys.load, 0, -1)).toEqual([P2, P3]);
    expect(await s.hosts('claim', 'b')).toBe(old);
  });

  test('a dead slot with many pods is cleaned in bounded steps, one per beat', async () => {
    const pods = Array.from({ length: 1000 }, (_, i) => `10.9.${i >> 8}.${i & 255}:80`);
    const slot = await s.reach('a', pods);
    await redis.zadd(s.keys.beats, '1', String(slot)); // its agent beat long ago
    let beats = 0;
    while ((await redis.hlen(s.keys.reach)) > 0 && beats < 100) {
      await s.beat('other');
      beats++;
    }
    expect(await redis.hlen(s.keys.reach)).toBe(0);
    expect(beats).toBeGreaterThan(3); // steps, not one call
    await s.beat('other');
    expect(await redis.zcard(s.keys.load)).toBe(0);
    expect(await redis.hgetall(s.keys.agents)).toEqual({});
    expect(await redis.zcard(s.keys.beats)).toBe(0);
  });

  test('a lapsed agent: its proxy has no hosts from the first beat after the lapse', async () => {
    const slot = await s.reach('a', [P1]);
    expect((await s.admitOnce({ ...base, id: 'a|0|1|0' })).status).toBe('ADMITTED');
    await redis.zadd(s.keys.beats, String((await s.nowMs()) - 31000), String(slot));
    await s.beat('b');
    expect((await s.admitOnce({ ...base, id: 'a|0|2|0' })).status).toBe('NOHOSTS');
    expect((await s.beat('a', slot)).slotOk).toBe(false);
    expect(await s.hosts('add', 'a', slot, [P2])).toEqual(['SLOT']);
  });
});

describe('per-client limits (the client key is the fifth part of the connection id)', () => {
  const A = '00000000000000aa';
  const B = '00000000000000bb';
  const id = (proxy: string, n: number, client: string) => `${proxy}|0|${n}|00|${client}`;
  const req = { ...base, rateLimit: 0, maxPerPod: 2 };

  test('an absolute cap on open sockets: the client at it is refused CLIENT, nothing consumed; another client is not', async () => {
    await s.reach('a', base.pods!);
    for (let n = 1; n <= 2; n++) expect((await s.admitOnce({ ...req, id: id('a', n, A), clientMax: 2 })).status).toBe('ADMITTED');
    const before = await state();
    expect(await s.admitOnce({ ...req, id: id('a', 3, A), clientMax: 2 })).toEqual({
      status: 'CLIENT',
      pod: '',
      activeOnPod: 0,
      retryAfterMs: 1000,
      rateRemaining: 0,
    });
    expect(await state()).toEqual(before);
    expect((await s.admitOnce({ ...req, id: id('a', 4, B), clientMax: 2 })).status).toBe('ADMITTED');
    // Its slot back (any way a lease ends), the client may open one more.
    await s.release(id('a', 1, A), (await s.redis.zrange(s.keys.leases, 0, -1)).find((m) => m.startsWith(id('a', 1, A)))!.split(' ')[1]);
    expect((await s.admitOnce({ ...req, id: id('a', 5, A), clientMax: 2 })).status).toBe('ADMITTED');
    expect(await stats()).toMatchObject({ rejected_client: 1 });
    await expectConsistent();
  });

  test("a share of the caller's slots (pods x per-pod limit): 50% of 3 x 2 is 3; at least 1", async () => {
    await s.reach('a', base.pods!);
    for (let n = 1; n <= 3; n++) expect((await s.admitOnce({ ...req, id: id('a', n, A), clientPercent: 50 })).status).toBe('ADMITTED');
    expect((await s.admitOnce({ ...req, id: id('a', 4, A), clientPercent: 50 })).status).toBe('CLIENT');
    // The smaller of the two caps applies.
    expect((await s.admitOnce({ ...req, id: id('a', 5, B), clientPercent: 50, clientMax: 1 })).status).toBe('ADMITTED');
    expect((await s.admitOnce({ ...req, id: id('a', 6, B), clientPercent: 50, clientMax: 1 })).status).toBe('CLIENT');
    await s.reach('b', ['10.0.0.9:8080']);
    const C = '00000000000000cc';
    expect((await s.admitOnce({ ...req, id: id('b', 1, C), clientPercent: 1 })).status).toBe('ADMITTED'); // 1% of 2: at least 1
    expect((await s.admitOnce({ ...req, id: id('b', 2, C), clientPercent: 1 })).status).toBe('CLIENT');
  });

  test("a client's own sliding window: refused with the exact wait, never spending the global budget; the global window goes on for others", async () => {
    await s.reach('a', base.pods!);
    const r = { ...req, maxPerPod: 9, rateLimit: 5, windowMs: 5000, clientRate: 2 };
    await s.admitOnce({ ...r, id: id('a', 1, A) });
    await sleep(20);
    await s.admitOnce({ ...r, id: id('a', 2, A) });
    const t1 = await s.nowMs();
    const refused = await s.admitOnce({ ...r, id: id('a', 3, A) });
    expect(refused.status).toBe('CLIENT');
    const first = Number(await redis.zscore(s.keys.crateT, id('a', 1, A)));
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(first + 5000 - t1 - 5);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(5000);
    expect(await redis.zcard(s.keys.rate)).toBe(2); // the refusal took no global entry
    for (let n = 4; n <= 6; n++) expect((await s.admitOnce({ ...r, id: id('a', n, B) })).status).toBe(n <= 5 ? 'ADMITTED' : 'CLIENT');
    expect((await s.admitOnce({ ...r, id: id('a', 7, '00000000000000cc') })).status).toBe('ADMITTED');
    expect((await s.admitOnce({ ...r, id: id('a', 8, '00000000000000dd') })).status).toBe('RATE_LIMITED'); // 5 of 5
  });

  test("an upgrade that never reached a backend (F) gives the client's window entry back; entries leave the window on their own", async () => {
    await s.reach('a', base.pods!);
    const r = { ...req, maxPerPod: 9, windowMs: 300, clientRate: 1 };
    const ok = await s.admitOnce({ ...r, id: id('a', 1, A) });
    expect((await s.admitOnce({ ...r, id: id('a', 2, A) })).status).toBe('CLIENT');
    await s.leases(30000, 0, [['F', id('a', 1, A), ok.pod]]);
    expect(await redis.exists(s.keys.crate, s.keys.crateT)).toBe(0);
    expect((await s.admitOnce({ ...r, id: id('a', 3, A) })).status).toBe('ADMITTED');
    await sleep(350);
    expect((await s.admitOnce({ ...r, id: id('a', 4, A) })).status).toBe('ADMITTED');
    // The entry that left the window was trimmed by that call: no key lives forever.
    expect(await redis.zcard(s.keys.crateT)).toBe(1);
    await sleep(350);
    await s.admitOnce({ ...r, id: id('a', 5, B) });
    expect(await redis.zrange(s.keys.crateT, 0, -1)).toEqual([id('a', 5, B)]);
  });

  test("a client's count follows its leases on every end: release, failure, expiry, a proxy's drain, a put-back", async () => {
    await s.reach('a', base.pods!);
    const r = { ...req, maxPerPod: 9, clientMax: 9 };
    const pods: string[] = [];
    for (let n = 1; n <= 5; n++) pods.push((await s.admitOnce({ ...r, id: id('a', n, A), ttlMs: n === 3 ? 20 : 30000 })).pod);
    await s.leases(30000, 0, [
      ['X', id('a', 1, A), pods[0]],
      ['F', id('a', 2, A), pods[1]],
    ]);
    await sleep(40);
    await s.snapshot(60000); // gives back the expired one
    expect(await redis.hget(s.keys.clients, A)).toBe('2');
    await redis.flushall('SYNC'); // a state loss: the agent puts back what Envoy reports open
    s.forget();
    await s.start();
    await s.leases(30000, 0, [
      ['R', id('a', 4, A), pods[3]],
      ['R', id('a', 5, A), pods[4]],
    ]);
    expect(await redis.hget(s.keys.clients, A)).toBe('2');
    await s.releaseProxy('a');
    expect(await redis.exists(s.keys.clients)).toBe(0);
    await expectConsistent();
  });

  test('one greedy client against ten polite ones, racing on one Redis: the greedy one never exceeds its caps, the polite ones all get in', async () => {
    await s.reach(
      'a',
      Array.from({ length: 10 }, (_, i) => `10.6.0.${i}:80`),
    );
    const r = { ...req, maxPerPod: 4, rateLimit: 0, clientPercent: 25, clientRate: 30, windowMs: 60000 };
    const greedy = Array.from({ length: 200 }, (_, n) => s.admitOnce({ ...r, id: id('a', n, A) }));
    const polite = Array.from({ length: 10 }, (_, n) =>
      s.admitOnce({ ...r, id: id('a', 1000 + n, (0x100 + n).toString(16).padStart(16, '0')) }),
    );
    const [g, p] = [await Promise.all(greedy), await Promise.all(polite)];
    // 25% of 10 x 4 = 10 open at most; the rate cap of 30 does not bind first.
    expect(g.filter((x) => x.status === 'ADMITTED')).toHaveLength(10);
    expect(new Set(g.filter((x) => x.status !== 'ADMITTED').map((x) => x.status))).toEqual(new Set(['CLIENT']));
    expect(p.every((x) => x.status === 'ADMITTED')).toBe(true);
    await expectConsistent();
  });
});

describe('ws_beat', () => {
  test('keeps a slot alive, lists live proxies, trims ended penalties, reports the epoch', async () => {
    const a = await s.reach('a', [P1]);
    await s.reach('b', [P1]);
    await redis.zadd(s.keys.down, String((await s.nowMs()) - 1), P2, String((await s.nowMs()) + 60000), P3);
    const epoch = await redis.hget(s.keys.stats, 'epoch');
    const r = await s.beat('a', a, true);
    expect({ ...r, live: [...r.live].sort() }).toEqual({ epoch, recoveringMs: 0, slotOk: true, live: ['a', 'b'], liveCount: 2 });
    expect(await redis.zrange(s.keys.down, 0, -1)).toEqual([P3]);
    expect((await s.beat('a', a)).live).toEqual([]);
  });
});

describe("ws_leases: renew, release and failed upgrades, in the order of the proxy's own record", () => {
  test('R renews a live lease from Redis TIME, never earlier than it was', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 1000 });
    const before = await s.nowMs();
    expect(await s.renew('a', P1, 50000)).toBe(1);
    const expiry = Number(await redis.zscore(s.keys.leases, lease('a', P1)));
    expect(expiry).toBeGreaterThanOrEqual(before + 50000);
    expect(await s.renew('a', P1, 1000)).toBe(1);
    expect(Number(await redis.zscore(s.keys.leases, lease('a', P1)))).toBe(expiry);
  });

  test('R puts back a lost lease regardless of the limit (the stream is open); new admissions wait until it fits', async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1 });
    expect(await s.renew('b', P1, 30000)).toBe(2);
    expect(await redis.zscore(s.keys.load, P1)).toBe('2');
    expect((await admit({ id: 'c', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await s.release('a', P1);
    expect((await admit({ id: 'd', pods: [P1], maxPerPod: 1 })).status).toBe('FULL'); // 1 left, limit 1
    await s.release('b', P1);
    expect((await admit({ id: 'e', pods: [P1], maxPerPod: 1 })).status).toBe('ADMITTED');
    expect(await stats()).toMatchObject({ reregistered: 1 });
    await expectConsistent();
  });

  test('R on a lapsed lease not yet given back renews it in place, counted once', async () => {
    await admit({ id: 'a', pods: [P1], ttlMs: 20 });
    await sleep(40);
    expect(await s.renew('a', P1, 30000)).toBe(2);
    expect(Number(await redis.zscore(s.keys.leases, lease('a', P1)))).toBeGreaterThan(await s.nowMs());
    expect(await redis.zscore(s.keys.load, P1)).toBe('1');
    await expectConsistent();
  });

  test("X: 1 then 0; counts only real removals; the pod's count follows; a released slot is free at once", async () => {
    await admit({ id: 'a', pods: [P1], maxPerPod: 1 });
    expect((await admit({ id: 'b', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    expect(await s.release('a', P1)).toBe(1);
    expect(await s.release('a', P1)).toBe(0);
    expect(await s.release('a', P2)).toBe(0);
    expect((await admit({ id: 'c', pods: [P1], maxPerPod: 1 })).status).toBe('ADMITTED');
    expect(await stats()).toEqual({ admitted: 2, released: 1, rejected_capacity: 1 });
    await expectConsistent();
  });

  test('F: an upgrade that never reached a backend gives back its lease and its window entry; its pod is passed over for the penalty', async () => {
    await admit({ id: 'a|0|1|0', pods: [P1, P2], rateLimit: 2 });
    expect(await redis.zcard(s.keys.rate)).toBe(1);
    expect(await s.leases(30000, 300, [['F', 'a|0|1|0', P1]])).toEqual([0, 0, 1, 1]);
    expect(await redis.zcard(s.keys.rate)).toBe(0);
    // P1 is the least loaded (0) but penalised: P2, for every proxy.
    await s.reach('b', [P1, P2]);
    expect(await admit({ id: 'a|0|2|0', pods: [P1, P2], rateLimit: 2 })).toMatchObject({ pod: P2 });
    expect(await s.admitOnce({ ...base, id: 'b|0|1|0', rateLimit: 2 })).toMatchObject({ pod: P2 });
    await sleep(320);
    expect(await s.admitOnce({ ...base, id: 'b|0|2|0', rateLimit: 9 })).toMatchObject({ pod: P1 });
    expect(await stats()).toMatchObject({ failed_upstream: 1, released: 1, admitted: 4 });
    await expectConsistent();
  });

  test('a retrying client never spends the rate budget on a dead pod', async () => {
    await s.reach('a', [P1]);
    for (let i = 0; i < 20; i++) {
      const r = await s.admitOnce({ ...base, id: `a|0|${i}|0`, rateLimit: 3, maxPerPod: 5 });
      expect(r.status).toBe('ADMITTED');
      await s.leases(30000, 0, [['F', `a|0|${i}|0`, P1]]);
    }
    expect(await redis.zcard(s.keys.rate)).toBe(0);
  });

  test('ops of one call apply in order: R then X leaves no lease; X then R puts it back', async () => {
    await admit({ id: 'a', pods: [P1] });
    expect(
      await s.leases(30000, 0, [
        ['R', 'a', P1],
        ['X', 'a', P1],
      ]),
    ).toEqual([1, 0, 1, 0]);
    expect(
      await s.leases(30000, 0, [
        ['X', 'b', P2],
        ['R', 'b', P2],
      ]),
    ).toEqual([0, 1, 0, 0]);
    expect(await redis.zrange(s.keys.leases, 0, -1)).toEqual([lease('b', P2)]);
    await expectConsistent();
  });

  test('a TTL of 1e14 ms and more is written as digits (no exponent form Redis would refuse half-way)', async () => {
    await admit({ id: 'a', pods: [P1] });
    expect(await s.renew('a', P1, 100000000000000)).toBe(1);
    expect(await redis.zscore(s.keys.leases, lease('a', P1))).toMatch(/^\d{15}$/);
  });
});

describe('expiry (short TTLs, real waiting)', () => {
  test('window edge: refused until exactly retryAfterMs has passed, then admitted', async () => {
    await admit({ id: 'a', rateLimit: 1, windowMs: 150 });
    const r = await admit({ id: 'b', rateLimit: 1, windowMs: 150 });
    expect(r.status).toBe('RATE_LIMITED');
    await sleep(r.retryAfterMs + 5);
    expect((await admit({ id: 'c', rateLimit: 1, windowMs: 150 })).status).toBe('ADMITTED');
  });

  test("an expired lease gives its slot back: removed, the pod's and proxy's counts lowered, counted as expired", async () => {
    await admit({ id: 'a|0|1|0', pods: [P1], maxPerPod: 1, ttlMs: 40 });
    expect((await admit({ id: 'a|0|2|0', pods: [P1], maxPerPod: 1 })).status).toBe('FULL');
    await sleep(60);
    expect(await admit({ id: 'a|0|3|0', pods: [P1], maxPerPod: 1 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 1 });
    expect(await redis.zrange(s.keys.leases, 0, -1)).toEqual([lease('a|0|3|0', P1)]);
    expect(await stats()).toMatchObject({ expired: 1, admitted: 2 });
    await expectConsistent();
  });

  test('a refusal is only made on exact counts: far more expired leases than one batch are all given back first', async () => {
    const other = Array.from({ length: 150 }, (_, i) => `10.2.0.${i}:80`);
    const mine = Array.from({ length: 150 }, (_, i) => `10.2.1.${i}:80`);
    await s.reach('dead', [...other, ...mine]);
    await s.reach('me', mine);
    // One call for all 300 (they expire together, whatever the machine's pace).
    await s.leases(
      1500,
      0,
      [...other, ...mine].map((pod) => ['R', `dead|0|${pod}|0`, pod] as const),
    );
    expect((await s.admitOnce({ ...base, id: 'me|0|1|0', maxPerPod: 1, rateLimit: 0 })).status).toBe('FULL');
    const last = Number((await redis.zrange(s.keys.leases, -1, -1, 'WITHSCORES'))[1]);
    while ((await s.nowMs()) <= last) await sleep(50);
    expect(await s.admitOnce({ ...base, id: 'me|0|2|0', maxPerPod: 1, rateLimit: 0 })).toMatchObject({
      status: 'ADMITTED',
      activeOnPod: 1,
    });
    expect(await stats()).toMatchObject({ expired: 300 });
    await expectConsistent();
  });

  test('while admitting, at most 64 expired leases are given back per call (bounded work), the rest later', async () => {
    const pods = Array.from({ length: 100 }, (_, i) => `10.3.0.${i}:80`);
    await s.reach('z', pods);
    for (let i = 0; i < 100; i++) await s.renew(`dead|0|${i}|0`, pods[i], 30);
    await sleep(50);
    await s.admitOnce({ ...base, id: 'z|0|1|0', maxPerPod: 5, rateLimit: 0 });
    expect(await stats()).toMatchObject({ expired: 64 });
    await s.admitOnce({ ...base, id: 'z|0|2|0', maxPerPod: 5, rateLimit: 0 });
    expect(await stats()).toMatchObject({ expired: 100 });
    await expectConsistent();
  });

  test('large per-pod limits are counted exactly', async () => {
    const big = { pods: [P1], rateLimit: 0 };
    for (let i = 0; i < 12; i++) expect((await admit({ ...big, id: `l${i}`, maxPerPod: 12 })).status).toBe('ADMITTED');
    expect((await admit({ ...big, id: 'l12', maxPerPod: 12 })).status).toBe('FULL');
    expect(await admit({ ...big, id: 'l13', maxPerPod: 13 })).toMatchObject({ status: 'ADMITTED', activeOnPod: 13 });
  });
});

describe('recovery: after a state loss nothing is admitted until every proxy put its streams back (ws_recover)', () => {
  beforeEach(async () => {
    await redis.flushall('SYNC');
    s.forget();
  });

  test('an empty state (no epoch) admits nothing: RECOVERING, nothing written', async () => {
    expect(await s.admitOnce({ ...base, id: 'a|0|1|0' })).toEqual({
      status: 'RECOVERING',
      pod: '',
      activeOnPod: 0,
      retryAfterMs: 1000,
      rateRemaining: 0,
    });
    expect(await redis.dbsize()).toBe(0);
  });

  test('the first agent makes the epoch and waits for the proxies it knew; each one back is counted; then admissions resume', async () => {
    const [epoch, left] = await s.recoverBegin('a', '0123456789abcdef', ['b', 'c']);
    expect(epoch).toBe('0123456789abcdef');
    expect(left).toBeGreaterThan(9000);
    // A second agent that knew another proxy too adds it; its own candidate epoch is not used.
    expect((await s.recoverBegin('b', 'ffffffffffffffff', ['d']))[0]).toBe(epoch);
    await s.reach('a', [P1]);
    await s.renew('a|0|1|0', P1, 30000); // a's open stream, put back
    expect(await s.admitOnce({ ...base, id: 'a|0|2|0' })).toMatchObject({ status: 'RECOVERING' });
    expect(await s.recoverDone('a')).toBe(3); // b, c, d still away
    expect(await s.recoverDone('b')).toBe(2);
    expect(await s.recoverDone('c')).toBe(1);
    expect(await s.admitOnce({ ...base, id: 'a|0|3|0' })).toMatchObject({ status: 'RECOVERING' });
    expect(await s.recoverDone('d')).toBe(0);
    // Everyone known is back, but an agent nobody knew may still be noticing the loss: not
    // before RECOVERY_MIN_MS (3 s) after the loss.
    const waiting = await s.admitOnce({ ...base, id: 'a|0|4|0' });
    expect(waiting.status).toBe('RECOVERING');
    expect(waiting.retryAfterMs).toBeLessThanOrEqual(3000);
    await sleep(waiting.retryAfterMs + 20);
    expect(await s.admitOnce({ ...base, id: 'a|0|4|0' })).toMatchObject({ status: 'ADMITTED', pod: P1, activeOnPod: 2 });
    await s.beat('d'); // the next beat after the minimum clears the recovery state
    expect(await redis.exists(s.keys.recovery)).toBe(0);
    expect(await redis.hget(s.keys.stats, 'recovering_until')).toBeNull();
    // A late agent of the same epoch: nothing to wait for any more.
    expect(await s.recoverBegin('e', 'eeeeeeeeeeeeeeee', ['f'])).toEqual([epoch, 0]);
    expect(await s.admitOnce({ ...base, id: 'a|0|5|0', maxPerPod: 3 })).toMatchObject({ status: 'ADMITTED' });
  });

  test('a proxy that never comes back holds up admissions for RECOVERY_MAX_MS at most', async () => {
    await s.recoverBegin('a', '0123456789abcdef', ['gone']);
    await s.recoverDone('a');
    await s.reach('a', [P1]);
    expect((await s.admitOnce({ ...base, id: 'a|0|1|0' })).status).toBe('RECOVERING');
    // Moved to the deadline instead of waiting 10 s.
    await redis.hset(s.keys.stats, 'recovering_until', String((await s.nowMs()) - 1));
    expect((await s.admitOnce({ ...base, id: 'a|0|1|0' })).status).toBe('ADMITTED');
  });
});

describe('ws_release_proxy', () => {
  test('removes every lease of one proxy (exact prefix), none of the others; counts follow', async () => {
    for (const id of ['ab|0|1|0', 'a|0|1|0', 'a|0|2|0', 'b|0|1|0']) await s.renew(id, P1, 30000);
    expect(await s.releaseProxy('a')).toEqual({ removed: 2, steps: 1 });
    expect((await redis.zrange(s.keys.leases, 0, -1)).map((m) => m.split(' ')[0]).sort()).toEqual(['ab|0|1|0', 'b|0|1|0']);
    expect(await stats()).toMatchObject({ released: 2 });
    await expectConsistent();
  });

  test('a scan in steps over many leases finds them all', async () => {
    const pods = Array.from({ length: 50 }, (_, i) => `10.4.0.${i}:80`);
    const ops: ['R', string, string][] = [];
    for (let i = 0; i < 3000; i++) ops.push(['R', `${i % 3 ? 'p' : 'q'}|0|${i}|0`, pods[i % 50]]);
    for (let i = 0; i < ops.length; i += 1000) await s.leases(30000, 0, ops.slice(i, i + 1000));
    const r = await s.releaseProxy('p');
    expect(r.removed).toBe(2000);
    expect(r.steps).toBeGreaterThan(1);
    expect(await redis.zcard(s.keys.leases)).toBe(1000);
    await expectConsistent();
  });
});

describe('ws_snapshot (the metrics view, one call)', () => {
  test('per-pod and per-proxy counts, counters, window usage, gauges; gives back expired leases', async () => {
    await admit({ id: 'envoy-a|0|1|0', maxPerPod: 9 });
    await admit({ id: 'envoy-a|0|2|0', maxPerPod: 9 });
    await admit({ id: 'envoy-b|0|1|0', maxPerPod: 9 });
    await admit({ id: 'envoy-b|0|2|0', maxPerPod: 9, ttlMs: 20 });
    await s.leases(30000, 60000, [['F', 'envoy-b|0|9|0', P3]]);
    await sleep(40);
    const snap = await s.snapshot(60000);
    expect(snap.windowUsed).toBe(4);
    expect(snap.pods).toEqual({ [P1]: 1, [P2]: 1, [P3]: 1 });
    expect(snap.proxies).toEqual({ 'envoy-a': 2, 'envoy-b': 1 });
    expect(snap.stats).toEqual({ admitted: 4, expired: 1, failed_upstream: 1 });
    expect(snap.gauges).toEqual({ pods_reachable: 3, pods_penalised: 1, proxies_live: 2, recovering: 0, clients_tracked: 0 });
    await expectConsistent();
  });

  test('window usage only counts the last window; an empty deployment snapshots empty', async () => {
    expect(await s.snapshot(60000)).toMatchObject({ windowUsed: 0, stats: {}, pods: {}, proxies: {} });
    await admit({ id: 'a', rateLimit: 5, windowMs: 30 });
    await sleep(50);
    expect((await s.snapshot(30)).windowUsed).toBe(0);
  });
});

describe('ws_request_rate (plain requests, limit_all_requests)', () => {
  test("its own window: never spends or is refused for the upgrades' budget", async () => {
    const rr = (id: string) => s.fcall('ws_request_rate', [s.keys.rateRequests, s.keys.stats], [2, 60000, id]);
    expect(await rr('q1')).toEqual(['ALLOWED', 0, 1]);
    expect(await rr('q2')).toEqual(['ALLOWED', 0, 0]);
    const r = (await rr('q3')) as [string, number, number];
    expect(r[0]).toBe('RATE_LIMITED');
    expect(r[1]).toBeGreaterThan(59000);
    expect((await admit({ id: 'a', rateLimit: 2 })).status).toBe('ADMITTED');
  });
});

describe('the counts stay exact under any sequence of calls', () => {
  test('400 random admissions, releases, failures, renewals, host changes and expiries by three proxies', async () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const pods = Array.from({ length: 6 }, (_, i) => `10.5.0.${i}:80`);
    const held: { id: string; pod: string }[] = [];
    for (let i = 0; i < 400; i++) {
      const proxy = `p${rand(3)}`;
      const op = rand(6);
      if (op <= 1) {
        const r = await admit({
          id: `${proxy}|0|${i}|0`,
          pods: pods.slice(rand(2), 3 + rand(4)),
          maxPerPod: 3,
          ttlMs: rand(3) === 0 ? 15 : 30000,
          rateLimit: 0,
        });
        if (r.status === 'ADMITTED') held.push({ id: `${proxy}|0|${i}|0`, pod: r.pod });
        else expect(r.status).toBe('FULL');
      } else if (op === 2 && held.length) {
        const [h] = held.splice(rand(held.length), 1);
        await s.leases(30000, rand(2) ? 0 : 20, [[rand(4) ? 'X' : 'F', h.id, h.pod]]);
      } else if (op === 3 && held.length) {
        const h = held[rand(held.length)];
        await s.renew(h.id, h.pod, 30000);
      } else if (op === 4) {
        await s.reach(proxy, pods.slice(rand(3), 2 + rand(5)));
      } else {
        await sleep(rand(20));
      }
      if (i % 25 === 0) await expectConsistent();
    }
    await expectConsistent();
  });
});

describe('bad input is refused with a clear error, and writes nothing', () => {
  const admitRaw = (args: string[]) => s.fcall('ws_admit', s.admitKeys(), args);
  const C = ['0', '0', '0']; // no per-client cap
  test.each([
    [['x', '60000', '2', '30000', 'id', ...C], "argument 1 (rate limit per window, 0 = off) must be an integer >= 0, got 'x'"],
    [['-1', '60000', '2', '30000', 'id', ...C], "argument 1 (rate limit per window, 0 = off) must be an integer >= 0, got '-1'"],
    [['inf', '60000', '2', '30000', 'id', ...C], "argument 1 (rate limit per window, 0 = off) must be an integer >= 0, got 'inf'"],
    [['', '60000', '2', '30000', 'id', ...C], "argument 1 (rate limit per window, 0 = off) must be an integer >= 0, got ''"],
    [['10', '0', '2', '30000', 'id', ...C], "argument 2 (window ms) must be an integer >= 1, got '0'"],
    [['10', '60000', '0', '30000', 'id', ...C], "argument 3 (max connections per pod) must be an integer >= 1, got '0'"],
    [['10', '60000', '2', '1.5', 'id', ...C], "argument 4 (lease TTL ms) must be an integer >= 1, got '1.5'"],
    [['10', '60000', '2', '30000', '', ...C], "argument 5 (connection id) must be 1-200 characters without spaces, got ''"],
    [['10', '60000', '2', '30000', 'a b', ...C], "argument 5 (connection id) must be 1-200 characters without spaces, got 'a b'"],
    [
      ['10', '60000', '2', '30000', 'id', '-1', '0', '0'],
      "argument 6 (max connections per client, 0 = off) must be an integer >= 0, got '-1'",
    ],
    [
      ['10', '60000', '2', '30000', 'id', '0', '101', '0'],
      "argument 7 (max share of the slots per client (%), 0 = off) must be at most 100, got '101'",
    ],
    [
      ['10', '60000', '2', '30000', 'id', '0', '0', 'x'],
      "argument 8 (rate limit per client per window, 0 = off) must be an integer >= 0, got 'x'",
    ],
    [['10', '60000', '2', '30000', 'id', ...C, 'a b'], 'argument 9 (client address for the inventory) must be at most 64 characters'],
    [['10', '60000', '2', '30000', 'id'], 'expected 11 keys and 8-9 arguments, got 11 keys and 5 arguments'],
  ])('ws_admit %j', async (args, message) => {
    const before = await redis.dbsize();
    await expect(admitRaw(args)).rejects.toThrow(`ERR ws_admit: ${message}`);
    expect(await redis.dbsize()).toBe(before);
  });

  test('ws_leases, ws_hosts, ws_beat, ws_recover, ws_release_proxy, ws_snapshot, ws_request_rate', async () => {
    const k = s.keys;
    const cases: [string, string[], (string | number)[], string][] = [
      [
        'ws_leases',
        s.leasesKeys(),
        [30000, 0, 'R', 'a'],
        'expected lease TTL ms, penalty ms, then triples <op> <connection id> <pod>; got 4 arguments',
      ],
      [
        'ws_leases',
        s.leasesKeys(),
        [30000, 0, 'Z', 'a', P1],
        "argument 3 (operation) must be R (renew), X (release) or F (failed upgrade), got 'Z'",
      ],
      ['ws_leases', s.leasesKeys(), [30000, 0, 'R', 'a', 'x y'], "argument 5 (pod) must be 1-64 characters without spaces, got 'x y'"],
      ['ws_leases', s.leasesKeys(), ['soon', 0], "argument 1 (lease TTL ms) must be an integer >= 1, got 'soon'"],
      ['ws_leases', s.leasesKeys().slice(1), [30000, 0], 'expected 10 keys and 2-3002 arguments, got 9 keys and 2 arguments'],
      [
        'ws_hosts',
        s.hostsKeys(),
        ['claim', 'Bad|Proxy'],
        "argument 2 (proxy id) must be 1-253 characters of a-z, 0-9, '.' and '-', got 'Bad|Proxy'",
      ],
      ['ws_hosts', s.hostsKeys(), ['grow', 'a', 0], "argument 1 (mode) must be claim, add, remove or commit, got 'grow'"],
      ['ws_hosts', s.hostsKeys(), ['add', 'a', 1024, P1], "argument 3 (slot) must be below 1024, got '1024'"],
      ['ws_hosts', s.hostsKeys(), ['add', 'a', 0, ''], "argument 4 (pod) must be 1-64 characters without spaces, got ''"],
      ['ws_beat', s.beatKeys(), ['a', '', 2], "argument 3 (list the live proxies) must be 0 or 1, got '2'"],
      ['ws_recover', [k.stats, k.recovery], ['begin', 'a', 'xyz'], "argument 3 (a new epoch) must be 16 hex digits, got 'xyz'"],
      ['ws_recover', [k.stats, k.recovery], ['end', 'a'], "argument 1 (mode) must be begin or done, got 'end'"],
      ['ws_release_proxy', s.releaseProxyKeys(), ['a', '-1'], "argument 2 (scan cursor) must be digits, got '-1'"],
      ['ws_snapshot', s.snapshotKeys(), [-5], "argument 1 (window ms) must be an integer >= 1, got '-5'"],
      [
        'ws_request_rate',
        [k.rateRequests, k.stats],
        [0, 60000, 'q'],
        "argument 1 (rate limit per window) must be an integer >= 1, got '0'",
      ],
    ];
    const before = await redis.dbsize();
    for (const [fn, keys, args, message] of cases) await expect(s.fcall(fn, keys, args)).rejects.toThrow(`ERR ${fn}: ${message}`);
    expect(await redis.dbsize()).toBe(before);
  });

  test('more items than one call may carry are refused (a function blocks Redis while it runs)', async () => {
    const ops = Array.from({ length: 1001 }, (_, i) => ['R', `a|0|${i}|0`, P1]).flat();
    await expect(s.fcall('ws_leases', s.leasesKeys(), [30000, 0, ...ops])).rejects.toThrow(
      'ERR ws_leases: expected 10 keys and 2-3002 arguments',
    );
    const pods = Array.from({ length: 1001 }, (_, i) => `10.7.${i >> 8}.${i & 255}:80`);
    await expect(s.hosts('add', 'a', 0, pods)).rejects.toThrow('ERR ws_hosts: expected 5 keys and 2-1003 arguments');
  });
});
