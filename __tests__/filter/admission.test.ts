// The public filter (lua/envoy/filter.lua) run unchanged under LuaJIT + luasocket in the
// harness's reproduction of Envoy's Lua stream-handle API, against a real redis-server.
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, PLAIN, HeaderList, openSocket, sleep, liveLeases, commandCalls, statsHash, redisNowMs } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
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

describe('admission', () => {
  it('admits onto the least-loaded healthy pod, pins it strictly and records {connection_id, pod}', async () => {
    const w = await fleet.worker({ max_connections_per_pod: 2 });
    const pods: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await w.request(UPGRADE);
      expect(r.passed).toBe(true); // the upgrade goes on to the router, never held
      // Admitted; now watching client->server data -- except the first, whose decision
      // fetched the host list (httpCall) and which must return so Envoy passes it on.
      expect(r.state).toBe(i === 0 ? 'done' : 'waiting_body');
      expect(r.override?.strict).toBe(true);
      const md = r.metadata?.['ws.admission'] as { connection_id: string; pod: string };
      expect(md.pod).toBe(r.override?.host);
      expect(md.connection_id).toMatch(/^envoy-test-0\|[0-9a-f]{6}\|\d+\|[0-9a-f]{6}$/);
      pods.push(r.override!.host);
      await w.response(r.sid, '101');
    }
    // Least loaded first, ties to the first listed; the unhealthy 10.0.0.3 is never offered.
    expect(pods).toEqual(['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.1:8080', '10.0.0.2:8080']);
    expect(liveLeases(redis.cli, '10.0.0.1:8080')).toHaveLength(2);
    expect(liveLeases(redis.cli, '10.0.0.2:8080')).toHaveLength(2);
    expect(redis.cli('EXISTS', '{ws}:pod:10.0.0.3:8080')).toBe('0');
  });

  it('answers 503 with Retry-After when every healthy pod is full, and consumes nothing', async () => {
    const w = await fleet.worker({ max_connections_per_pod: 1, lease_ttl_ms: 5000 });
    await openSocket(w);
    await openSocket(w);
    const r = await w.request(UPGRADE);
    expect(r.state).toBe('responded');
    expect(r.override).toBeUndefined();
    expect(r.reply?.headers[':status']).toBe('503');
    expect(r.reply?.headers['x-ws-admission']).toBe('capacity');
    const retry = Number(r.reply?.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(5); // the earliest lease expiry, rounded up
    expect(statsHash(redis.cli)).toMatchObject({ admitted: 2, rejected_capacity: 1 });
  });

  it('after a FULL answer refuses from the worker cache (capacity_cache_ms) without Redis, until its own release or the cache ends', async () => {
    const cached = { max_connections_per_pod: 1, lease_ttl_ms: 5000, capacity_cache_ms: 400 };
    const w = await fleet.worker(cached);
    await w.clock({ at: Date.now() }); // this worker's time moves only when the test says
    const other = await fleet.worker(cached);
    const mine = await openSocket(w);
    const theirs = await openSocket(other);
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    expect(statsHash(redis.cli).rejected_capacity).toBe(1);
    const evals = commandCalls(redis.cli, 'evalsha');
    // Within the cache: the same answer and Retry-After, and no Redis call at all.
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('503');
    expect(r.reply?.headers['x-ws-admission']).toBe('capacity');
    expect(Number(r.reply?.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(commandCalls(redis.cli, 'evalsha')).toBe(evals);
    expect(statsHash(redis.cli).rejected_capacity).toBe(1);
    // A slot freed by another worker is not seen until the cache ends (the documented cost).
    await other.closeHandshake(theirs.sid);
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    await w.clock({ advance: 399 });
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity'); // 1 ms before its end
    await w.clock({ advance: 2 });
    const admitted = await w.request(UPGRADE);
    expect(admitted.override?.host).toBeDefined();
    await w.response(admitted.sid, '101');
    // Full again; this worker's own release ends its cache at once.
    expect((await w.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');
    await w.closeHandshake(mine.sid);
    expect((await w.request(UPGRADE)).override?.host).toBeDefined();
    const counters = await w.logs();
    expect(counters.logs.filter((l) => l.level === 'err')).toEqual([]);
  });

  it('answers 429 with Retry-After and RateLimit-* headers, then refuses from the worker cache without Redis', async () => {
    const w = await fleet.worker({ rate_limit: 2, rate_window_ms: 1500, max_connections_per_pod: 100 });
    await openSocket(w);
    await openSocket(w);
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('429');
    const h = r.reply!.headers;
    expect(Number(h['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(h['retry-after'])).toBeLessThanOrEqual(2);
    expect(h['ratelimit-limit']).toBe('2');
    expect(h['ratelimit-remaining']).toBe('0');
    expect(h['ratelimit-reset']).toBe(h['retry-after']);
    expect(h['x-ws-admission']).toBe('rate_limited');

    const before = commandCalls(redis.cli, 'evalsha');
    for (let i = 0; i < 20; i++) {
      const again = await w.request(UPGRADE);
      expect(again.reply?.headers[':status']).toBe('429');
    }
    expect(commandCalls(redis.cli, 'evalsha')).toBe(before); // the flood never reached Redis

    await sleep(1600); // the window has moved on
    const later = await w.request(UPGRADE);
    expect(later.override).toBeDefined();
  });

  it('releases the lease when the backend does not upgrade (non-101), e.g. strict override 503', async () => {
    const w = await fleet.worker();
    for (const status of ['403', '503', '200']) {
      const r = await w.request(UPGRADE);
      expect(liveLeases(redis.cli, r.override!.host)).toHaveLength(1);
      const resp = await w.response(r.sid, status);
      expect(resp.state).toBe('done');
      expect(liveLeases(redis.cli, r.override!.host)).toHaveLength(0);
    }
    expect(statsHash(redis.cli)).toMatchObject({ admitted: 3, released: 3 });
  });

  it('keeps the lease while the socket is open and releases it when the backend sends its Close frame', async () => {
    const w = await fleet.worker();
    const s = await openSocket(w);
    await w.data(s.sid, 'response');
    await w.data(s.sid, 'request');
    expect(liveLeases(redis.cli, s.pod!)).toHaveLength(1);
    // The client's Close starts the handshake: the backend still holds the connection.
    await w.data(s.sid, 'request', Buffer.from([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]));
    expect(liveLeases(redis.cli, s.pod!)).toHaveLength(1);
    // A Close frame split across two chunks, after a binary frame of 300 bytes (16-bit length).
    const frames = Buffer.concat([Buffer.from([0x82, 126, 0x01, 0x2c]), Buffer.alloc(300, 0x88), Buffer.from([0x88, 0x02, 0x03, 0xe8])]);
    await w.data(s.sid, 'response', frames.subarray(0, 305));
    expect(liveLeases(redis.cli, s.pod!)).toHaveLength(1);
    await w.data(s.sid, 'response', frames.subarray(305));
    expect(liveLeases(redis.cli, s.pod!)).toHaveLength(0);
    expect(statsHash(redis.cli).released).toBe(1);
    await w.reset(s.sid); // what Envoy does next, when the TCP connection closes
  });

  it('an upgraded stream has no normal end in Envoy: the harness refuses one, as Envoy never produces it', async () => {
    const w = await fleet.worker();
    const s = await openSocket(w);
    await expect(w.end(s.sid, 'response')).rejects.toThrow('an upgraded HTTP/1.1 stream never ends normally in Envoy');
    await w.reset(s.sid);
    // Reset without a close handshake: nothing of the filter ran, the lease is still held
    // (the lease log releases it in Envoy; __tests__/e2e/release.test.ts).
    expect(liveLeases(redis.cli, s.pod!)).toHaveLength(1);
  });

  it('renews on data in either direction: a busy socket keeps its slot past several lease TTLs, an idle one expires', async () => {
    const ttl = 900;
    const w = await fleet.worker({ lease_ttl_ms: ttl, renew_interval_ms: 250, max_connections_per_pod: 5 });
    const down = await openSocket(w); // server -> client traffic only
    const up = await openSocket(w); // client -> server traffic only
    const idle = await openSocket(w);
    const ids = (s: { req: { metadata?: Record<string, Record<string, unknown>> } }) =>
      s.req.metadata!['ws.admission'].connection_id as string;
    const calls0 = commandCalls(redis.cli, 'evalsha');
    let chunks = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 4 * ttl) {
      chunks += 2;
      await w.data(down.sid, 'response');
      await w.data(up.sid, 'request');
      await sleep(100);
    }
    const live = [...liveLeases(redis.cli, '10.0.0.1:8080'), ...liveLeases(redis.cli, '10.0.0.2:8080')];
    expect(live).toContain(ids(down));
    expect(live).toContain(ids(up));
    expect(live).not.toContain(ids(idle));
    // Renewals are rate limited: about one per renew interval per socket, not one per chunk.
    const renewals = commandCalls(redis.cli, 'evalsha') - calls0;
    expect(renewals).toBeLessThanOrEqual(2 * (Math.ceil((Date.now() - t0) / 250) + 1));
    expect(renewals).toBeLessThan(chunks / 2);
  });

  it('an upgrade whose decision fetched the host list is not held back, and renews on server->client data', async () => {
    // Envoy continues the request headers after an httpCall() only if the script returns;
    // waiting in bodyChunks() then would stall the upgrade (the client sends nothing before
    // its 101). The harness refuses a response to a held request, so openSocket() fails then.
    const ttl = 900;
    const w = await fleet.worker({ lease_ttl_ms: ttl, renew_interval_ms: 250, hosts_cache_ms: 1000, max_connections_per_pod: 5 });
    const cold = await w.request(UPGRADE); // empty cache: admin call in this stream
    expect(cold.override).toBeDefined();
    expect(cold.passed).toBe(true);
    expect(cold.state).toBe('done');
    const warm = await w.request(UPGRADE); // cached list: no yield before the decision
    expect(warm.passed).toBe(true);
    expect(warm.state).toBe('waiting_body');
    await sleep(1050);
    const refresh = await w.request(UPGRADE); // stale list: admin call again
    expect(refresh.passed).toBe(true);
    expect(refresh.state).toBe('done');
    expect((await w.logs()).admin_calls).toBe(2);
    for (const s of [cold, warm, refresh]) expect((await w.response(s.sid, '101')).state).toBe('waiting_body');

    const id = (r: { metadata?: Record<string, Record<string, unknown>> }) => r.metadata!['ws.admission'].connection_id as string;
    const t0 = Date.now();
    while (Date.now() - t0 < 3 * ttl) {
      await w.data(cold.sid, 'response'); // server -> client keeps the one-way stream
      await w.data(warm.sid, 'request'); // client -> server keeps the two-way stream
      await w.data(refresh.sid, 'request'); // not seen by the script: this one lapses
      await sleep(100);
    }
    const live = [...liveLeases(redis.cli, '10.0.0.1:8080'), ...liveLeases(redis.cli, '10.0.0.2:8080')];
    expect(live).toContain(id(cold));
    expect(live).toContain(id(warm));
    expect(live).not.toContain(id(refresh));
  });

  it('one host-list fetch at a time per worker: upgrades arriving meanwhile use the previous list and stay two-way', async () => {
    const w = await fleet.worker({ hosts_cache_ms: 1000, max_connections_per_pod: 100 });
    await openSocket(w); // cold: fetch #1
    await sleep(1050); // the list is stale now
    const a = await w.requestDeferred(UPGRADE); // fetch #2 in flight...
    expect(a.state).toBe('waiting_http');
    expect(a.passed).toBe(false);
    const b = await w.request(UPGRADE); // ...meanwhile: no second fetch, no yield
    expect(b.override).toBeDefined();
    expect(b.state).toBe('waiting_body');
    expect((await w.logs()).admin_calls).toBe(1); // only the cold fetch has been answered
    const done = await w.httpComplete(a.sid);
    expect(done.override).toBeDefined();
    expect(done.passed).toBe(true);
    expect(done.state).toBe('done');
    // A fetch whose stream was reset never completes: the next one may start after the admin timeout.
    await sleep(1050);
    const c = await w.requestDeferred(UPGRADE);
    await w.reset(c.sid);
    expect((await w.request(UPGRADE)).state).toBe('waiting_body'); // the reset fetch still counts as in flight
    await sleep(400);
    const d = await w.request(UPGRADE);
    expect(d.state).toBe('done'); // fetched itself
    expect((await w.logs()).admin_calls).toBe(3); // cold, a, d (c's call never completed)
  });

  it('a one-way stream whose lease lapsed is still re-registered when its server speaks again (not swept)', async () => {
    const ttl = 300;
    const w = await fleet.worker({ lease_ttl_ms: ttl, renew_interval_ms: 100, hosts_cache_ms: 60000, max_connections_per_pod: 1000 });
    const oneWay = await openSocket(w); // fetched the host list: one-way
    expect(oneWay.req.state).toBe('done');
    const id = oneWay.req.metadata!['ws.admission'].connection_id as string;
    await sleep(2 * ttl + 200); // no server data: lapsed, older than 2 TTLs
    for (let i = 0; i < 256; i++) {
      // the 256th admission sweeps the worker's table
      const r = await w.request(UPGRADE);
      await w.response(r.sid, '500');
    }
    expect(liveLeases(redis.cli, oneWay.pod!)).not.toContain(id);
    await w.data(oneWay.sid, 'response'); // server -> client: renew answers 0, re-register
    expect(liveLeases(redis.cli, oneWay.pod!)).toContain(id);
  });

  it('connection ids stay unique across workers of one proxy started at the same instant', async () => {
    // Same POD_NAME, started together: the worker token comes from /dev/urandom, not the clock.
    const ws = await Promise.all([0, 1, 2, 3, 4, 5].map(() => fleet.worker({ max_connections_per_pod: 100 })));
    const ids: string[] = [];
    for (const w of ws) {
      for (let i = 0; i < 3; i++) {
        const r = await w.request(UPGRADE);
        ids.push(r.metadata!['ws.admission'].connection_id as string);
      }
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids.map((id) => id.split('|')[1])).size).toBe(ws.length); // one token per worker
  });

  it('a reset stream never releases (the coroutine is abandoned); its slot comes back after the lease TTL', async () => {
    const ttl = 800;
    const w1 = await fleet.worker(
      { lease_ttl_ms: ttl, renew_interval_ms: 200, max_connections_per_pod: 1 },
      { hosts: [['10.0.0.1:8080', 'healthy']] },
    );
    const s = await openSocket(w1);
    await w1.data(s.sid, 'response');
    await w1.reset(s.sid);
    expect((await w1.request(UPGRADE)).reply?.headers[':status']).toBe('503');
    expect(liveLeases(redis.cli, '10.0.0.1:8080')).toHaveLength(1);
    await sleep(ttl + 100);
    const again = await w1.request(UPGRADE);
    expect(again.override?.host).toBe('10.0.0.1:8080');
    expect(statsHash(redis.cli)).toMatchObject({ expired: 1 });
    expect(statsHash(redis.cli).released ?? 0).toBe(0);
  });

  it('accepts an HTTP/2 extended CONNECT WebSocket (RFC 8441), which the filter sees as an H1 upgrade answered 101', async () => {
    const w = await fleet.worker();
    const h2: HeaderList = [
      [':method', 'CONNECT'],
      [':protocol', 'websocket'],
      [':path', '/ws'],
      [':authority', 'example.test'],
      [':scheme', 'https'],
    ];
    const r = await w.request(h2);
    expect(r.override).toBeDefined();
    // Envoy's HTTP/2 codec rewrote it before the filters (transformUpgradeRequestFromH2toH1).
    expect(r.headers).toContainEqual([':method', 'GET']);
    expect(r.headers).toContainEqual(['upgrade', 'websocket']);
    // The downstream's 200 is made from the 101 the filters see (transformUpgradeResponseFromH1toH2).
    const resp = await w.response(r.sid, '101');
    expect(resp.state).toBe('waiting_body');
    expect(liveLeases(redis.cli, r.override!.host)).toHaveLength(1);
  });
});

describe('non-WebSocket requests', () => {
  it('pass through untouched, without a Redis call, unless limit_all_requests', async () => {
    const w = await fleet.worker({ rate_limit: 1 });
    const before = commandCalls(redis.cli, 'evalsha') + commandCalls(redis.cli, 'script|load');
    for (let i = 0; i < 5; i++) {
      const r = await w.request(PLAIN);
      expect(r.state).toBe('done');
      expect(r.headers).toEqual(PLAIN);
      expect(r.override).toBeUndefined();
    }
    expect(commandCalls(redis.cli, 'evalsha') + commandCalls(redis.cli, 'script|load')).toBe(before);
  });

  it("with limit_all_requests have a window of their own: they never spend (nor are refused for) the upgrades' budget", async () => {
    const w = await fleet.worker({ rate_limit: 3, rate_window_ms: 5000, limit_all_requests: true, max_connections_per_pod: 10 });
    for (let i = 0; i < 3; i++) expect((await w.request(PLAIN)).state).toBe('done');
    const r = await w.request(PLAIN);
    expect(r.reply?.headers[':status']).toBe('429');
    expect(r.reply?.headers['ratelimit-limit']).toBe('3');
    expect(redis.cli('ZCARD', '{ws}:rate:requests')).toBe('3');
    // The plain requests' refusal is cached per worker: upgrades are not refused for it.
    for (let i = 0; i < 3; i++) expect((await w.request(UPGRADE)).override).toBeDefined();
    expect(redis.cli('ZCARD', '{ws}:rate')).toBe('3');
    const u = await w.request(UPGRADE);
    expect(u.reply?.headers[':status']).toBe('429');
    // ... and the upgrades' refusal does not refuse plain requests either (their window is full too here).
    expect((await w.request(PLAIN)).reply?.headers[':status']).toBe('429');
  });

  it('with limit_all_requests, a plain request does not make the window forget later upgrades', async () => {
    // A plain request first, upgrades half a window later: when the plain request leaves
    // the window, the upgrades must still count (the window key must not expire with it).
    const w = await fleet.worker({ rate_limit: 3, rate_window_ms: 800, limit_all_requests: true });
    expect((await w.request(PLAIN)).state).toBe('done');
    await sleep(400);
    expect((await w.request(UPGRADE)).override).toBeDefined();
    expect((await w.request(UPGRADE)).override).toBeDefined();
    await sleep(550); // the plain request has left the window; the two upgrades have not
    expect(redis.cli('EXISTS', '{ws}:rate')).toBe('1');
    expect((await w.request(UPGRADE)).override).toBeDefined();
    // The third upgrade of the window is the limit (plain requests count apart).
    expect((await w.request(UPGRADE)).reply?.headers[':status']).toBe('429');
  });
});

describe('connection inventory', () => {
  it('writes {ws}:conn:<id> (pod, proxy, client, start) with the admission, renews its expiry and deletes it on release', async () => {
    const w = await fleet.worker(
      { connection_inventory: true, max_connections_per_pod: 1, lease_ttl_ms: 5000 },
      { podName: 'envoy-inv-1' },
    );
    const s = await openSocket(w);
    const id = s.req.metadata!['ws.admission'].connection_id as string;
    const key = `{ws}:conn:${id}`;
    const [pod, proxy, client, start] = redis.cli('HMGET', key, 'pod', 'proxy', 'client', 'start_ms').split('\n');
    expect(pod).toBe(s.pod);
    expect(proxy).toBe('envoy-inv-1');
    expect(client).toBe('203.0.113.9:40000');
    expect(Math.abs(Number(start) - redisNowMs(redis.cli))).toBeLessThan(5000);
    const pttl = Number(redis.cli('PTTL', key));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(5000);

    // A refused attempt leaves no inventory entry.
    await openSocket(w);
    const refused = await w.request(UPGRADE);
    expect(refused.reply?.headers[':status']).toBe('503');
    expect(redis.cli('--scan', '--pattern', '{ws}:conn:*').split('\n')).toHaveLength(2);

    await w.closeHandshake(s.sid);
    expect(redis.cli('EXISTS', key)).toBe('0');
  });
});
