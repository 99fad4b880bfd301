// lua/envoy/filter.lua, the refusals: what ws_admit refuses (RATE_LIMITED, FULL, NOHOSTS,
// RECOVERING) becomes the filter's own answer (lua/envoy/responses.lua), and the worker's
// caches of Redis's last refusals answer a flood without a Redis call. The caches follow the
// worker's clock, which the tests drive (no sleeping); Redis keeps real time.
import * as fs from 'fs';
import * as path from 'path';
import { PODS, PROXY, useAdmissionRig } from '../support/admission-rig';
import { UPGRADE, Worker, admission, openSocket } from './harness/worker';

const rig = useAdmissionRig();
const [P1] = PODS;

/** The counters the workers of the test's proxy wrote (lua/envoy/worker_stats.lua), summed. */
function workerCounters(): Record<string, number> {
  const dir = rig.fleet.stateDir;
  const sum: Record<string, number> = {};
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.counters'))) {
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      const [k, v] = line.split(' ');
      if (k && /^\d+$/.test(v ?? '')) sum[k] = (sum[k] ?? 0) + Number(v);
    }
  }
  return sum;
}

/** Drives the worker's clock from now on; the counter files are written at most once per (driven) second. */
async function flushCounters(w: Worker): Promise<void> {
  await w.clock({ advance: 1001 });
  await w.request([
    [':method', 'GET'],
    [':path', '/'],
  ]);
}

describe('rate limited (429)', () => {
  it('GIVEN the window is full WHEN an upgrade comes THEN 429 with Retry-After and RateLimit-* from Redis, and nothing taken', async () => {
    const w = await rig.worker({ rate_limit: 2, rate_window_ms: 3000, max_connections_per_pod: 100 });
    await openSocket(w);
    await openSocket(w);
    const r = await w.request(UPGRADE);
    const h = r.reply!.headers;
    expect(h[':status']).toBe('429');
    expect(Number(h['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(h['retry-after'])).toBeLessThanOrEqual(3);
    expect(h).toMatchObject({
      'ratelimit-limit': '2',
      'ratelimit-remaining': '0',
      'ratelimit-reset': h['retry-after'],
      'x-ws-admission': 'rate_limited',
    });
    expect(r.override).toBeUndefined();
    expect(await rig.perPod()).toEqual({ [P1]: 1, [PODS[1]]: 1 });
    expect(await rig.stats()).toEqual({ admitted: 2, rejected_rate_limited: 1 });
  });

  it("THEN the worker refuses a flood from its cache without Redis until Redis's wait is over, then asks again", async () => {
    const w = await rig.worker({ rate_limit: 1, rate_window_ms: 1000, max_connections_per_pod: 100 });
    await w.clock({ at: Date.now() });
    await openSocket(w);
    const first = await w.request(UPGRADE);
    const wait = Number(first.reply!.headers['retry-after']) * 1000;
    const calls = await rig.calls('fcall');
    for (let i = 0; i < 20; i++) expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('429');
    expect(await rig.calls('fcall')).toBe(calls); // the flood never reached Redis
    expect(await rig.stats()).toEqual({ admitted: 1, rejected_rate_limited: 1 });
    // Past the wait (worker clock), Redis is asked again; its window moves in real time.
    await w.clock({ advance: wait });
    const deadline = Date.now() + 5000;
    let admitted = false;
    while (!admitted && Date.now() < deadline) {
      admitted = (await w.request(UPGRADE)).override !== undefined;
      if (!admitted) await w.clock({ advance: 1000 });
    }
    expect(admitted).toBe(true);
    await flushCounters(w);
    expect(workerCounters().rate_limited_cached_total).toBeGreaterThanOrEqual(20);
  });
});

describe('full (503 capacity)', () => {
  it('GIVEN every pod at its limit THEN 503 capacity with Retry-After (the first lease expiry, at most 5 s), nothing consumed', async () => {
    const w = await rig.worker({ max_connections_per_pod: 1, lease_ttl_ms: 3000, rate_limit: 10 });
    await openSocket(w);
    await openSocket(w);
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers).toMatchObject({ ':status': '503', 'x-ws-admission': 'capacity' });
    const retry = Number(r.reply?.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(3);
    expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(2); // the refusal took no budget
    expect(await rig.stats()).toEqual({ admitted: 2, rejected_capacity: 1 });
    const long = await rig.worker({ max_connections_per_pod: 1, lease_ttl_ms: 60000 }, { proxy: 'envoy-long' });
    expect(Number((await long.request(UPGRADE)).reply?.headers['retry-after'])).toBeLessThanOrEqual(5); // capped
  });

  it('THEN the worker answers from its capacity cache for capacity_cache_ms without Redis; a slot freed meanwhile waits for the cache to end', async () => {
    const cached = { max_connections_per_pod: 1, lease_ttl_ms: 30000, capacity_cache_ms: 400 };
    const w = await rig.worker(cached, { pods: [P1] });
    await w.clock({ at: Date.now() });
    const other = await rig.worker(cached, { proxy: 'envoy-b', pods: [P1] });
    const theirs = await other.request(UPGRADE);
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    const calls = await rig.calls('fcall');
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers).toMatchObject({ ':status': '503', 'x-ws-admission': 'capacity' });
    expect(Number(r.reply?.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The slot comes back (the other proxy's backend refused the upgrade) ...
    await other.response(theirs.sid, '403');
    expect(await rig.leases()).toEqual([]);
    // ... but this worker answers from its cache until it ends (the documented cost).
    await w.clock({ advance: 399 });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    expect(await rig.calls('fcall')).toBe(calls + 1); // only the other proxy's release
    await w.clock({ advance: 2 });
    expect((await w.request(UPGRADE)).override?.host).toBe(P1);
    expect(await rig.stats()).toMatchObject({ rejected_capacity: 1 });
  });

  it('GIVEN capacity_cache_ms 0 THEN every upgrade asks Redis', async () => {
    const w = await rig.worker({ max_connections_per_pod: 1, capacity_cache_ms: 0 }, { pods: [P1] });
    await openSocket(w);
    for (let i = 0; i < 3; i++) await w.request(UPGRADE);
    expect(await rig.stats()).toEqual({ admitted: 1, rejected_capacity: 3 });
  });
});

describe('no backend (503 no_backend): Redis knows no healthy host of this proxy', () => {
  it('GIVEN no hosts registered for the proxy (another proxy has some) THEN 503 no_backend, Retry-After 1, counted, logged, nothing written', async () => {
    await rig.f.reach('envoy-other', PODS);
    const w = await rig.worker({ rate_limit: 10 }, { pods: null });
    for (let i = 0; i < 3; i++) {
      const r = await w.request(UPGRADE);
      expect(r.reply?.headers).toMatchObject({ ':status': '503', 'retry-after': '1', 'x-ws-admission': 'no_backend' });
      expect(admission(r)).toEqual({});
    }
    expect(await rig.leases()).toEqual([]);
    expect(await rig.admin.zcard(rig.f.keys.rate)).toBe(0);
    const { logs } = await w.logs();
    expect(logs.filter((l) => l.msg.includes('Redis knows no healthy host of this proxy'))).toHaveLength(1); // once a second at most
    await flushCounters(w);
    expect(workerCounters().rejected_no_backend_total).toBe(3);
  });

  it('GIVEN an empty host list registered THEN the same; WHEN the agent registers hosts THEN the next upgrade is admitted (no cache)', async () => {
    const w = await rig.worker({}, { pods: [] });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('no_backend');
    await rig.f.reach(PROXY, [P1]);
    expect((await w.request(UPGRADE)).override?.host).toBe(P1);
  });
});

describe('recovering (503 recovering): Redis lost its state and the proxies are putting it back', () => {
  it('GIVEN no epoch (an emptied Redis) THEN 503 recovering, Retry-After 1, counted; cached for 250 ms of the worker clock', async () => {
    const w = await rig.worker();
    await w.clock({ at: Date.now() });
    await rig.admin.hdel(rig.f.keys.stats, 'epoch');
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers).toMatchObject({ ':status': '503', 'retry-after': '1', 'x-ws-admission': 'recovering' });
    const calls = await rig.calls('fcall');
    await w.clock({ advance: 249 });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('recovering');
    expect(await rig.calls('fcall')).toBe(calls);
    // The agents recover (begin, done): the next upgrade after the cache is admitted.
    await rig.f.start();
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('recovering'); // still cached
    await w.clock({ advance: 2 });
    expect((await w.request(UPGRADE)).override?.host).toBe(P1);
    await flushCounters(w);
    expect(workerCounters().rejected_recovering_total).toBe(3);
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg)).toContain(
      'ws-admission: Redis lost its state; upgrades wait until every proxy has put its streams back',
    );
  });

  it('GIVEN a recovery that waits for another proxy THEN Retry-After is its deadline (at most 10 s), and admissions resume when it is done', async () => {
    const w = await rig.worker();
    await rig.admin.flushall('SYNC');
    rig.f.forget();
    await rig.f.recoverBegin('envoy-agent-a', 'e2e2e2e2e2e2e2e2', ['envoy-agent-b']);
    await rig.f.reach(PROXY, PODS);
    await rig.f.recoverDone('envoy-agent-a');
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers['x-ws-admission']).toBe('recovering');
    const retry = Number(r.reply?.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(9);
    expect(retry).toBeLessThanOrEqual(10);
    await rig.f.recoverBegin('envoy-agent-b', 'e2e2e2e2e2e2e2e2');
    await rig.f.recoverDone('envoy-agent-b');
    // Everyone known is back: not before RECOVERY_MIN_MS (3 s) after the loss.
    const left = Number(await rig.admin.hget(rig.f.keys.stats, 'recovering_until')) - (await rig.f.nowMs());
    expect(left).toBeLessThanOrEqual(3000);
    await new Promise((res) => setTimeout(res, Math.max(0, left) + 50));
    await w.clock({ advance: 300 }); // past the worker's 250 ms cache
    expect((await w.request(UPGRADE)).override).toBeDefined();
  });
});

describe('the caches are per worker', () => {
  it('GIVEN one worker rate limited from its cache THEN another worker of the proxy still asks Redis (and is refused by it)', async () => {
    const s = { rate_limit: 1, rate_window_ms: 60000 };
    const a = await rig.worker(s);
    const b = await rig.worker(s);
    await openSocket(a);
    expect((await a.request(UPGRADE)).reply?.headers[':status']).toBe('429');
    expect((await a.request(UPGRADE)).reply?.headers[':status']).toBe('429'); // cached
    expect((await b.request(UPGRADE)).reply?.headers[':status']).toBe('429'); // Redis
    expect(await rig.stats()).toEqual({ admitted: 1, rejected_rate_limited: 2 });
  });
});
